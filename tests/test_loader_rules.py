"""One test per loader rule, on tiny real libraries built with gcc, checked against real ld.so.

Each test builds a small tree, walks it with our `Namespace` over the live root, and asserts both
the rule's specific outcome and that the real glibc loader in trace mode
(``LD_TRACE_LOADED_OBJECTS=1 LOADER FILE``, LOADER the interpreter's own PT_INTERP:
``/lib64/ld-linux-x86-64.so.2`` on x86_64, ``/lib/ld-linux-aarch64.so.1`` on aarch64) found
exactly the same files and missed exactly the same names. gcc builds for the host, so the
libraries are always of the loader's machine. A rule that needs a particular ``ld.so.cache``
builds a root of its own and runs the host's loader there under ``chroot``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import _data
import pytest

from resolver.diagnose import read_loader_config
from resolver.elf.cache import FactsCache
from resolver.elf.facts import ElfClass, ElfFacts, Endian
from resolver.fixture.synth.elf import synthesize_elf
from resolver.loader.search import Via
from resolver.loader.walk import Namespace, Outcome
from resolver.target.platform import read_platform
from resolver.target.rootfs import RootFS

if TYPE_CHECKING:
    from collections.abc import Callable

    from _data import BuildLib, HostTrace, TraceResult

pytestmark = pytest.mark.skipif(
    _data.HOST_LOADER is None, reason="needs a glibc host (the interpreter names no loader)"
)


def walk(file: Path | str, ld_library_path: str = "", root: Path | str = "/") -> Namespace:
    rootfs = RootFS(str(root))
    platform = read_platform(rootfs)
    _, lookup = read_loader_config(rootfs, platform)
    ns = Namespace(rootfs, platform, FactsCache(None), ld_library_path=ld_library_path,
                   find_in_cache=lookup)
    ns.dlopen(str(file), keep_on_failure=True)
    return ns


def missing(ns: Namespace) -> set[str]:
    return {r.name for r in ns.requests if r.target is None}


def assert_same_as_loader(ns: Namespace, trace: TraceResult,
                          real: Callable[[str], str] = os.path.realpath) -> None:
    ours = {o.path: real(o.real) for o in ns.objects}
    by_name = {}
    for obj in ns.objects:
        # ld.so prints a NEEDED path with a DST under its expanded form: index both.
        for name in (*obj.names, obj.path):
            by_name[name] = real(obj.real)
    for name, path in trace.found.items():
        if "ld-linux" in name or (name == path and path not in ours):
            continue
        assert by_name.get(name) == real(path), (name, path, by_name.get(name))
    assert missing(ns) == set(trace.not_found)
    real_versions = {line.split("version `")[1].split("'")[0] for line in trace.version_errors}
    assert {p.version for p in ns.version_problems if p.fatal} == real_versions


def env(ld_library_path: str = "") -> dict[str, str]:
    return {"LD_LIBRARY_PATH": ld_library_path} if ld_library_path else {}


def test_rpath_searched_before_ld_library_path(tmp_path: Path, build_lib: BuildLib,
                                               host_trace: HostTrace) -> None:
    build_lib(tmp_path / "a", "libx.so.1", soname="libx.so.1")
    build_lib(tmp_path / "b", "libx.so.1", soname="libx.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libx.so.1"], rpath=str(tmp_path / "a"),
                    link_dirs=[tmp_path / "a"])
    ns = walk(top, str(tmp_path / "b"))
    assert ns.find_loaded("libx.so.1").path == f"{tmp_path}/a/libx.so.1"  # type: ignore[union-attr]
    assert_same_as_loader(ns, host_trace(top, env(str(tmp_path / "b"))))


def test_runpath_searched_after_ld_library_path(tmp_path: Path, build_lib: BuildLib,
                                                host_trace: HostTrace) -> None:
    build_lib(tmp_path / "a", "libx.so.1", soname="libx.so.1")
    build_lib(tmp_path / "b", "libx.so.1", soname="libx.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libx.so.1"], runpath=str(tmp_path / "a"),
                    link_dirs=[tmp_path / "a"])
    ns = walk(top, str(tmp_path / "b"))
    assert ns.find_loaded("libx.so.1").path == f"{tmp_path}/b/libx.so.1"  # type: ignore[union-attr]
    assert_same_as_loader(ns, host_trace(top, env(str(tmp_path / "b"))))


def test_rpath_inherited_by_dependencies(tmp_path: Path, build_lib: BuildLib,
                                         host_trace: HostTrace) -> None:
    deep = tmp_path / "deep"
    build_lib(deep, "libleaf.so.1", soname="libleaf.so.1")
    build_lib(tmp_path / "mid", "libmid.so.1", soname="libmid.so.1", needed=["libleaf.so.1"],
              link_dirs=[deep])
    top = build_lib(tmp_path, "libtop.so", needed=["libmid.so.1"],
                    rpath=f"{tmp_path}/mid:{deep}", link_dirs=[tmp_path / "mid", deep])
    ns = walk(top)
    leaf = ns.find_loaded("libleaf.so.1")
    assert leaf is not None and leaf.path == f"{deep}/libleaf.so.1"
    assert_same_as_loader(ns, host_trace(top))


def test_rpath_of_parents_parent(tmp_path: Path, build_lib: BuildLib,
                                 host_trace: HostTrace) -> None:
    far = tmp_path / "far"
    build_lib(far, "libc3.so.1", soname="libc3.so.1")
    build_lib(tmp_path / "l2", "libc2.so.1", soname="libc2.so.1", needed=["libc3.so.1"],
              link_dirs=[far])
    build_lib(tmp_path / "l1", "libc1.so.1", soname="libc1.so.1", needed=["libc2.so.1"],
              rpath=f"{tmp_path}/l2", link_dirs=[tmp_path / "l2", far])
    top = build_lib(tmp_path, "libtop.so", needed=["libc1.so.1"], rpath=f"{tmp_path}/l1:{far}",
                    link_dirs=[tmp_path / "l1", tmp_path / "l2", far])
    ns = walk(top)
    c3 = next(r for r in ns.requests if r.name == "libc3.so.1")
    assert c3.target is not None
    owners = [c.owner for c in c3.candidates if c.via is Via.RPATH]
    # libc2's loader is libc1, whose loader is libtop: both RPATHs, nearest first.
    assert owners[0] == f"{tmp_path}/l1/libc1.so.1"
    assert owners[-1] == str(top)
    assert_same_as_loader(ns, host_trace(top))


def test_runpath_not_inherited(tmp_path: Path, build_lib: BuildLib, host_trace: HostTrace) -> None:
    hidden = tmp_path / "hidden"
    build_lib(hidden, "libleaf.so.1", soname="libleaf.so.1")
    build_lib(tmp_path / "mid", "libmid.so.1", soname="libmid.so.1", needed=["libleaf.so.1"],
              link_dirs=[hidden])
    top = build_lib(tmp_path, "libtop.so", needed=["libmid.so.1"],
                    runpath=f"{tmp_path}/mid:{hidden}", link_dirs=[tmp_path / "mid", hidden])
    ns = walk(top)
    assert missing(ns) == {"libleaf.so.1"}
    assert_same_as_loader(ns, host_trace(top))


def test_runpath_of_object_disables_rpath_of_its_loaders(tmp_path: Path, build_lib: BuildLib,
                                                         host_trace: HostTrace) -> None:
    hidden = tmp_path / "hidden"
    build_lib(hidden, "libleaf.so.1", soname="libleaf.so.1")
    build_lib(tmp_path / "mid", "libmid.so.1", soname="libmid.so.1", needed=["libleaf.so.1"],
              runpath="/nonexistent", link_dirs=[hidden])
    top = build_lib(tmp_path, "libtop.so", needed=["libmid.so.1"],
                    rpath=f"{tmp_path}/mid:{hidden}", link_dirs=[tmp_path / "mid", hidden])
    ns = walk(top)
    leaf = next(r for r in ns.requests if r.name == "libleaf.so.1")
    assert leaf.target is None
    assert not any(c.via is Via.RPATH for c in leaf.candidates)
    assert_same_as_loader(ns, host_trace(top))


def test_origin_is_where_found_not_realpath(tmp_path: Path, build_lib: BuildLib,
                                            host_trace: HostTrace) -> None:
    real = tmp_path / "real"
    build_lib(real / "sub", "libleaf.so.1", soname="libleaf.so.1")
    build_lib(tmp_path / "view" / "sub", "libleaf.so.1", soname="libleaf.so.1")
    build_lib(real, "libmid.so.1", soname="libmid.so.1", needed=["libleaf.so.1"],
              rpath="$ORIGIN/sub", link_dirs=[real / "sub"])
    (tmp_path / "view" / "libmid.so.1").symlink_to(real / "libmid.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libmid.so.1"],
                    runpath=f"{tmp_path}/view", link_dirs=[real])
    ns = walk(top)
    leaf = ns.find_loaded("libleaf.so.1")
    assert leaf is not None and leaf.path == f"{tmp_path}/view/sub/libleaf.so.1"
    assert_same_as_loader(ns, host_trace(top))


def host_ldconfig() -> str:
    found = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if Path(p).is_file()), None)
    if found is None:
        pytest.skip("needs glibc's ldconfig")
    return found


def test_nodeflib_refuses_default_dirs_even_from_the_cache(tmp_path: Path,
                                                            build_lib: BuildLib) -> None:
    # A root of the host's loader, libc and libm, with a library registered in its ld.so.cache
    # from /opt/registered. libm.so.6's cache entry is in a default directory: refused. The
    # entry elsewhere is still used.
    if os.geteuid() != 0:
        pytest.skip("needs root: ldconfig -r and the loader in a chroot")
    root = _data.make_host_root(tmp_path / "root", ["libc.so.6", "libm.so.6"])
    libm_dir = _data.host_library("libm.so.6")
    assert libm_dir is not None
    registered = root / "opt" / "registered"
    build_lib(registered, "libreg.so.1", soname="libreg.so.1")
    (root / "etc" / "ld.so.conf").write_text(f"{libm_dir.parent}\n/opt/registered\n")
    subprocess.run([host_ldconfig(), "-r", str(root)], check=True, capture_output=True)
    build_lib(root / "top", "libtop.so", needed=["libm.so.6", "libreg.so.1"], nodeflib=True,
              link_dirs=[registered])
    ns = walk("/top/libtop.so", root=root)
    libm = next(r for r in ns.requests if r.name == "libm.so.6")
    assert libm.target is None
    assert [c.via for c in libm.candidates] == [Via.LD_SO_CACHE]
    assert libm.candidates[0].path == str(libm_dir)
    assert "DF_1_NODEFLIB" in str(libm.candidates[0].detail)
    assert not any(c.via is Via.DEFAULT for r in ns.requests for c in r.candidates)
    registered_lib = ns.find_loaded("libreg.so.1")
    assert registered_lib is not None and registered_lib.path == "/opt/registered/libreg.so.1"
    trace = _data.run_chroot_trace(root, "/top/libtop.so")
    assert trace.returncode == 0, trace.raw
    assert trace.found["libreg.so.1"] == "/opt/registered/libreg.so.1"
    assert_same_as_loader(ns, trace, real=lambda path: path)


def test_dst_in_a_needed_path_is_expanded(tmp_path: Path, build_lib: BuildLib,
                                          host_trace: HostTrace) -> None:
    # A SONAME with a DST: linking against the file records it as the DT_NEEDED string.
    dep = build_lib(tmp_path, "libdep.so", soname="$ORIGIN/libdep.so")
    top = build_lib(tmp_path, "libtop.so", needed=[dep])
    ns = walk(top)
    request = next(r for r in ns.requests if r.name == "$ORIGIN/libdep.so")
    assert request.target is not None
    assert [c.path for c in request.candidates] == [f"{tmp_path}/libdep.so"]
    assert_same_as_loader(ns, host_trace(top))


def test_wrong_machine_candidate_is_skipped(tmp_path: Path, build_lib: BuildLib,
                                            host_trace: HostTrace) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    # The same library for another machine than the host's (aarch64, or x86_64 on an aarch64
    # host), as the fixture synthesiser writes it.
    other = _data.EM_AARCH64 if _data.HOST_MACHINE != _data.EM_AARCH64 else _data.EM_X86_64
    foreign = ElfFacts(elf_class=ElfClass(_data.HOST_ELF_CLASS), endian=Endian.LITTLE,
                       machine=other, osabi=0, elf_type=3, soname="libx.so.1")
    (first / "libx.so.1").write_bytes(synthesize_elf(foreign))
    build_lib(second, "libx.so.1", soname="libx.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libx.so.1"], rpath=f"{first}:{second}",
                    link_dirs=[second])
    ns = walk(top)
    request = next(r for r in ns.requests if r.name == "libx.so.1")
    assert [c.outcome for c in request.candidates] == [Outcome.WRONG_MACHINE, Outcome.FOUND]
    assert_same_as_loader(ns, host_trace(top))


def test_loaded_soname_is_reused(tmp_path: Path, build_lib: BuildLib,
                                 host_trace: HostTrace) -> None:
    build_lib(tmp_path / "one", "libx.so.1", soname="libx.so.1")
    build_lib(tmp_path / "two", "libx.so.1", soname="libx.so.1")
    build_lib(tmp_path / "side", "libside.so.1", soname="libside.so.1", needed=["libx.so.1"],
              runpath=f"{tmp_path}/two", link_dirs=[tmp_path / "two"])
    top = build_lib(tmp_path, "libtop.so", needed=["libside.so.1", "libx.so.1"],
                    rpath=f"{tmp_path}/side:{tmp_path}/one",
                    link_dirs=[tmp_path / "side", tmp_path / "one"])
    ns = walk(top)
    x = ns.find_loaded("libx.so.1")
    assert x is not None and x.path == f"{tmp_path}/one/libx.so.1"
    reused = [r for r in ns.requests if r.name == "libx.so.1" and r.reused]
    assert len(reused) == 1 and reused[0].candidates == ()
    assert_same_as_loader(ns, host_trace(top))


def test_breadth_first_load_order(tmp_path: Path, build_lib: BuildLib,
                                  host_trace: HostTrace) -> None:
    lib = tmp_path / "lib"
    build_lib(lib, "libd.so.1", soname="libd.so.1")
    build_lib(lib, "libb.so.1", soname="libb.so.1", needed=["libd.so.1"])
    build_lib(lib, "libc.so.9", soname="libc.so.9")
    top = build_lib(tmp_path, "libtop.so", needed=["libb.so.1", "libc.so.9"], rpath=str(lib),
                    link_dirs=[lib])
    ns = walk(top)
    order = [o.facts.soname for o in ns.objects if o.facts.soname in
             {"libb.so.1", "libc.so.9", "libd.so.1"}]
    assert order == ["libb.so.1", "libc.so.9", "libd.so.1"]
    trace = host_trace(top)
    real_order = [n for n in trace.found if n in {"libb.so.1", "libc.so.9", "libd.so.1"}]
    assert real_order == order
    assert_same_as_loader(ns, trace)


def test_needed_with_slash_is_a_path(tmp_path: Path, build_lib: BuildLib,
                                     host_trace: HostTrace) -> None:
    lib = build_lib(tmp_path / "p", "libpath.so")  # no SONAME: NEEDED records the path
    top = build_lib(tmp_path, "libtop.so", needed=[lib])
    ns = walk(top)
    request = next(r for r in ns.requests if r.name == str(lib))
    assert [c.via for c in request.candidates] == [Via.PATH]
    assert_same_as_loader(ns, host_trace(top))


def test_version_not_found(tmp_path: Path, build_lib: BuildLib, host_trace: HostTrace) -> None:
    both = "V1 { global: jr_v1; }; V2 { global: jr_v2; } V1;"
    build_lib(tmp_path / "new", "libv.so.1", soname="libv.so.1", version_script=both,
              source="int jr_v1(void){return 1;} int jr_v2(void){return 2;}")
    top = build_lib(tmp_path, "libtop.so", needed=["libv.so.1"], rpath=f"{tmp_path}/old",
                    link_dirs=[tmp_path / "new"],
                    source="int jr_v2(void); int f(void){return jr_v2();}")
    build_lib(tmp_path / "old", "libv.so.1", soname="libv.so.1",
              version_script="V1 { global: jr_v1; };", source="int jr_v1(void){return 1;}")
    ns = walk(top)
    assert [(p.version, p.fatal) for p in ns.version_problems] == [("V2", True)]
    assert_same_as_loader(ns, host_trace(top))


def test_dangling_symlink_is_skipped(tmp_path: Path, build_lib: BuildLib,
                                     host_trace: HostTrace) -> None:
    dangling, good = tmp_path / "dangling", tmp_path / "good"
    dangling.mkdir()
    (dangling / "libx.so.1").symlink_to(tmp_path / "nowhere.so")
    build_lib(good, "libx.so.1", soname="libx.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libx.so.1"], rpath=f"{dangling}:{good}",
                    link_dirs=[good])
    ns = walk(top)
    request = next(r for r in ns.requests if r.name == "libx.so.1")
    assert [(c.outcome, c.detail) for c in request.candidates] == [
        (Outcome.BROKEN, "dangling symlink"), (Outcome.FOUND, None)]
    assert_same_as_loader(ns, host_trace(top))


def test_symlink_loop_abandons_the_rest_of_its_search_list(
        tmp_path: Path, build_lib: BuildLib, host_trace: HostTrace) -> None:
    loop, good, env_dir = tmp_path / "loop", tmp_path / "good", tmp_path / "env"
    loop.mkdir()
    (loop / "libx.so.1").symlink_to(loop / "liby.so.1")
    (loop / "liby.so.1").symlink_to(loop / "libx.so.1")
    build_lib(good, "libx.so.1", soname="libx.so.1")
    build_lib(env_dir, "libx.so.1", soname="libx.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libx.so.1"], rpath=f"{loop}:{good}",
                    link_dirs=[good])
    ns = walk(top, str(env_dir))
    request = next(r for r in ns.requests if r.name == "libx.so.1")
    assert [c.via for c in request.candidates] == [Via.RPATH, Via.LD_LIBRARY_PATH]
    assert "loop" in str(request.candidates[0].detail)
    assert_same_as_loader(ns, host_trace(top, env(str(env_dir))))
    ns = walk(top)
    assert "libx.so.1" in missing(ns)
    assert_same_as_loader(ns, host_trace(top))


def test_directory_in_place_of_a_library_is_fatal(tmp_path: Path, build_lib: BuildLib,
                                                  host_trace: HostTrace) -> None:
    odd, good = tmp_path / "odd", tmp_path / "good"
    (odd / "libx.so.1").mkdir(parents=True)
    build_lib(good, "libx.so.1", soname="libx.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libx.so.1"], rpath=f"{odd}:{good}",
                    link_dirs=[good])
    ns = walk(top)
    request = next(r for r in ns.requests if r.name == "libx.so.1")
    assert request.target is None and request.error is not None
    assert "cannot read file data" in host_trace(top).raw


def test_missing_trail_follows_glibc_order(tmp_path: Path, build_lib: BuildLib,
                                           host_trace: HostTrace) -> None:
    top = build_lib(tmp_path, "libtop.so", needed=["libnowhere.so.7"], rpath=f"{tmp_path}/r")
    ns = walk(top, f"{tmp_path}/env")
    request = next(r for r in ns.requests if r.name == "libnowhere.so.7")
    vias = [c.via for c in request.candidates]
    assert vias[:3] == [Via.RPATH, Via.LD_LIBRARY_PATH, Via.LD_SO_CACHE]
    assert set(vias[3:]) == {Via.DEFAULT}
    assert_same_as_loader(ns, host_trace(top, env(f"{tmp_path}/env")))


def test_dollar_lib_and_platform_expand_for_the_target(tmp_path: Path, build_lib: BuildLib,
                                                       host_trace: HostTrace) -> None:
    platform = read_platform(RootFS("/"))
    build_lib(tmp_path / platform.lib_token / platform.platform_token, "libx.so.1",
              soname="libx.so.1")
    top = build_lib(tmp_path, "libtop.so", needed=["libx.so.1"], rpath="$ORIGIN/$LIB/${PLATFORM}",
                    link_dirs=[tmp_path / platform.lib_token / platform.platform_token])
    ns = walk(top)
    assert "libx.so.1" not in missing(ns)
    assert_same_as_loader(ns, host_trace(top))
