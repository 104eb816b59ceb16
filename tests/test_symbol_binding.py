"""Symbol binding, one rule per test, each checked against the real loader: ctypes' dlopen
(RTLD_NOW) in a child Python process, on libraries built here with gcc.

The rules (elf/dl-lookup.c, elf/dl-open.c): a reference binds against the global scope (the
main program, its libraries, RTLD_GLOBAL ones) and the local scope of the dlopen that loaded
it; a library opened RTLD_LOCAL by an earlier dlopen is invisible; weak references may stay
unbound; hidden definitions bind nothing outside their object.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import _data

from resolver.cli.sentences import describe
from resolver.elf.cache import FactsCache
from resolver.findings.derive import load_findings
from resolver.findings.model import VersionNotFound
from resolver.loader.torch_import import Attempt
from resolver.loader.walk import Namespace
from resolver.target.platform import read_platform
from resolver.target.rootfs import RootFS

if TYPE_CHECKING:
    from pathlib import Path

CALLS = "extern int {call}(void);\nint jr_use(void) {{ return {call}(); }}"


def _real(steps: list[tuple[Path, bool]]) -> str | None:
    """dlopen each (path, RTLD_GLOBAL?) in order in a fresh interpreter: the first error."""
    script = ("import ctypes, json, sys\n"
              "for path, glob in json.loads(sys.argv[1]):\n"
              "    try:\n"
              "        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL if glob else ctypes.RTLD_LOCAL)\n"
              "    except OSError as err:\n"
              "        print(err); break\n")
    done = subprocess.run([sys.executable, "-c", script,
                           json.dumps([[str(p), g] for p, g in steps])],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip() or None


def _ours(steps: list[tuple[Path, bool]]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The same dlopens in our namespace, the interpreter started first: each problem as
    (library, symbols, defined elsewhere)."""
    rootfs = RootFS("/")
    ns = Namespace(rootfs, read_platform(rootfs), FactsCache(None),
                   find_in_cache=lambda _name: None)
    assert ns.start_process(os.path.realpath(sys.executable))
    for path, glob in steps:
        ns.dlopen(str(path), rtld_global=glob)
    objects = ns.all_objects
    return [(objects[p.requester].path, p.symbols,
             tuple(objects[i].path for i in p.defined_elsewhere)) for p in ns.symbol_problems]


def test_a_local_neighbour_is_not_in_scope(tmp_path: Path, build_lib: _data.BuildLib) -> None:
    provider = build_lib(tmp_path, "libprov.so", source="int jr_provided(void) { return 1; }")
    user = build_lib(tmp_path, "libuser.so", source=CALLS.format(call="jr_provided"))
    said = _real([(provider, False), (user, False)])
    assert said is not None and "undefined symbol: jr_provided" in said
    assert _ours([(provider, False), (user, False)]) == [
        (str(user), ("jr_provided",), (str(provider),))]


def test_rtld_global_puts_it_in_everyone_s_scope(tmp_path: Path,
                                                 build_lib: _data.BuildLib) -> None:
    provider = build_lib(tmp_path, "libprov.so", source="int jr_provided(void) { return 1; }")
    user = build_lib(tmp_path, "libuser.so", source=CALLS.format(call="jr_provided"))
    assert _real([(provider, True), (user, False)]) is None
    assert _ours([(provider, True), (user, False)]) == []


def test_a_dependency_is_in_the_local_scope(tmp_path: Path, build_lib: _data.BuildLib) -> None:
    provider = build_lib(tmp_path, "libprov.so", soname="libprov.so",
                         source="int jr_provided(void) { return 1; }")
    user = build_lib(tmp_path, "libuser.so", needed=[provider],
                     source=CALLS.format(call="jr_provided"), rpath=str(tmp_path))
    assert _real([(user, False)]) is None
    assert _ours([(user, False)]) == []


def test_weak_references_may_stay_unbound(tmp_path: Path, build_lib: _data.BuildLib) -> None:
    user = build_lib(tmp_path, "libuser.so", source=(
        "extern int jr_absent(void) __attribute__((weak));\n"
        "int jr_use(void) { return jr_absent ? jr_absent() : 0; }"))
    assert _real([(user, False)]) is None
    assert _ours([(user, False)]) == []


def test_hidden_definitions_bind_nothing_outside(tmp_path: Path,
                                                 build_lib: _data.BuildLib) -> None:
    provider = build_lib(tmp_path, "libprov.so", soname="libprov.so", source=(
        '__attribute__((visibility("hidden"))) int jr_hidden(void) { return 1; }\n'
        "int jr_shown(void) { return jr_hidden(); }"))
    user = build_lib(tmp_path, "libuser.so", needed=[provider], rpath=str(tmp_path),
                     source=CALLS.format(call="jr_hidden"))
    said = _real([(user, False)])
    assert said is not None and "undefined symbol: jr_hidden" in said
    assert _ours([(user, False)]) == [(str(user), ("jr_hidden",), ())]


def test_versioned_reference_binds_its_version(tmp_path: Path,
                                               build_lib: _data.BuildLib) -> None:
    """A reference made against `jr_v@@V2` binds to V2; a provider that moves the default to V3
    but keeps V2 (non-default) still satisfies it, as glibc's check_match matches the name."""
    script_v2 = "V2 { global: jr_v; local: *; };"
    old = build_lib(tmp_path / "old", "libprov.so", soname="libprov.so",
                    version_script=script_v2, source="int jr_v(void) { return 2; }")
    user = build_lib(tmp_path, "libuser.so", needed=[old], rpath=str(tmp_path / "new"),
                     source=CALLS.format(call="jr_v"))
    build_lib(tmp_path / "new", "libprov.so", soname="libprov.so",
              version_script="V2 { global: jr_v; }; V3 { global: jr_v; } V2; V4 { local: *; };",
              source=("int jr_v2(void) { return 2; }\nint jr_v3(void) { return 3; }\n"
                      '__asm__(".symver jr_v2, jr_v@V2");\n'
                      '__asm__(".symver jr_v3, jr_v@@V3");'))
    assert _real([(user, False)]) is None
    assert _ours([(user, False)]) == []


def _tls_lib(build_lib: _data.BuildLib, directory: Path, name: str, size: int) -> Path:
    """A library with `size` bytes of initial-exec TLS (GNU ld then sets DF_STATIC_TLS)."""
    stem = name.split(".", maxsplit=1)[0]
    return build_lib(directory, name, source=(
        f'__thread char jr_tls_{stem}[{size}] __attribute__((tls_model("initial-exec")));\n'
        f"char *jr_tls_at_{stem}(void) {{ return jr_tls_{stem}; }}"))


def _ours_tls(steps: list[Path], preload: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    rootfs = RootFS("/")
    ns = Namespace(rootfs, read_platform(rootfs), FactsCache(None),
                   find_in_cache=lambda _name: None)
    assert ns.start_process(os.path.realpath(sys.executable), preload)
    for path in steps:
        ns.dlopen(str(path))
    return [(ns.all_objects[p.requester].path, p.needed) for p in ns.tls_problems]


def test_static_tls_surplus_runs_out(tmp_path: Path, build_lib: _data.BuildLib) -> None:
    """Two 1000-byte initial-exec blocks: the first fits the 1664-byte surplus, the second not;
    preloaded at start, both load."""
    first = _tls_lib(build_lib, tmp_path, "libtlsa.so", 1000)
    second = _tls_lib(build_lib, tmp_path, "libtlsb.so", 1000)
    said = _real([(first, False), (second, False)])
    assert said is not None and "cannot allocate memory in static TLS block" in said
    assert str(second) in said
    assert _ours_tls([first, second]) == [(str(second), 1000)]
    env = {**os.environ, "LD_PRELOAD": str(second)}
    script = f"import ctypes; ctypes.CDLL({str(first)!r}); ctypes.CDLL({str(second)!r})"
    done = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert _ours_tls([first, second], preload=(str(second),)) == []


def test_interpreter_rpath_brings_an_old_provider(tmp_path: Path,
                                                  build_lib: _data.BuildLib) -> None:
    """A conda-style interpreter (DT_RPATH $ORIGIN/../lib) whose lib holds an older build of a
    library: a library without DT_RPATH/DT_RUNPATH of its own gets that one, and misses the
    version it was linked against, as the loader says; the finding names the RPATH."""
    new = build_lib(tmp_path / "new", "libprov.so", soname="libprov.so",
                    version_script="V1 { global: jr_v1; local: *; }; V2 { global: jr_v2; } V1;",
                    source="int jr_v1(void) { return 1; }\nint jr_v2(void) { return 2; }")
    user = build_lib(tmp_path, "libuser.so", needed=[new], source=CALLS.format(call="jr_v2"))
    conda = tmp_path / "conda"
    build_lib(conda / "lib", "libprov.so", soname="libprov.so",
              version_script="V1 { global: jr_v1; local: *; };",
              source="int jr_v1(void) { return 1; }")
    (conda / "bin").mkdir()
    python = conda / "bin" / "python3"
    host = os.path.realpath(sys.executable)
    shutil.copy2(host, python)
    own = os.path.join(os.path.dirname(os.path.dirname(host)), "lib")
    _data.patchelf("--force-rpath", "--set-rpath", f"$ORIGIN/../lib:{own}", str(python))
    done = subprocess.run([str(python), "-c", f"import ctypes; ctypes.CDLL({str(user)!r})"],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "version `V2' not found" in done.stderr
    assert f"{conda}/bin/../lib/libprov.so" in done.stderr  # as glibc names it

    rootfs = RootFS("/")
    ns = Namespace(rootfs, read_platform(rootfs), FactsCache(None),
                   find_in_cache=lambda _name: None)
    assert ns.start_process(str(python))
    assert not ns.dlopen(str(user))
    [problem] = ns.version_problems
    provider = ns.all_objects[problem.provider]
    assert (problem.version, problem.fatal) == ("V2", True)
    assert provider.real == str(conda / "lib" / "libprov.so")
    assert provider.found is not None and provider.found.owner == str(python)
    [finding] = [f for f in load_findings(
        [Attempt(phase="import", name=str(user), why="test", ok=False,
                 requests=range(len(ns.requests)), versions=range(1))],
        ns.requests, ns.all_objects, ns.version_problems, locate_elsewhere=lambda _n: ())
        if isinstance(f, VersionNotFound)]
    assert f"found through the DT_RPATH of {python}" in describe(finding)


def test_static_tls_boundary_matches_the_loader(tmp_path: Path,
                                                build_lib: _data.BuildLib) -> None:
    """Around the surplus's end, one block each in a fresh interpreter: where the real loader
    stops fitting, so do we (the startup blocks and the block's rounding to the TCB's
    alignment give a few bytes more than 1664)."""
    sizes = (1536, 1600, 1632, 1664, 1696, 1728, 1760)
    libs = {size: _tls_lib(build_lib, tmp_path / str(size), f"libtls{size}.so", size)
            for size in sizes}
    real = {size: _real([(lib, False)]) is None for size, lib in libs.items()}
    ours = {size: not _ours_tls([lib]) for size, lib in libs.items()}
    assert True in real.values() and False in real.values(), real
    assert ours == real
