"""ld.so.cache parsing and lookup, checked against glibc's own ldconfig and ld.so on real bytes.

The libraries are built with the host's gcc and the caches written by the host's ldconfig, so
their class and machine are the host's: lookups ask for the class and machine of the built
library, never a fixed one. The x86-64 glibc-hwcaps names are only directory names here;
ldconfig records them on any architecture, and ld.so searches the ones it supports.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import _data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.errors import InvalidLdCache
from resolver.target.ldcache import (
    CacheFlag,
    FloatAbi,
    LdCache,
    entry_matches,
    find_in_cache,
    parse_ld_so_cache,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

LDCONFIG = shutil.which("ldconfig") or shutil.which("/sbin/ldconfig")
GCC = shutil.which("gcc")
FORMATS = {"new": "new", "old": "old", "compat": "old+new"}
HWCAPS_LIB = "libx.so.1"
# Sonames whose numbers compare by value (_dl_cache_libcmp), so 9 < 10 < 100.
NUMBERED = ("libnum.so.9", "libnum.so.10", "libnum.so.100", "libnum-2.so.0", "libnum.so")

needs_tools = pytest.mark.skipif(
    LDCONFIG is None or GCC is None, reason="needs glibc's ldconfig and gcc on this host"
)


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def ldconfig_print(cache: Path) -> list[tuple[bytes, bytes, bytes]]:
    """(soname, description, path) of each line `ldconfig -p` prints, as raw bytes."""
    assert LDCONFIG is not None
    out = subprocess.run([LDCONFIG, "-p", "-C", str(cache)], capture_output=True, check=True)
    return re.findall(rb"^\t(.+?) \((.*)\) => (.*)$", out.stdout, re.MULTILINE)


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@pytest.fixture(scope="module")
def lib_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with tiny libraries (glibc-hwcaps and legacy tls copies too) and a program."""
    if LDCONFIG is None or GCC is None:
        pytest.skip("needs glibc's ldconfig and gcc on this host")
    root = tmp_path_factory.mktemp("root")
    src = root / "src"
    src.mkdir()
    (src / "x.c").write_text("int x(void) { return 1; }\n")
    (src / "m.c").write_text("int x(void); int main(void) { return x() - 1; }\n")
    run(GCC, "-c", "-fPIC", "-o", src / "x.o", src / "x.c")
    libs = {
        "opt/a": [HWCAPS_LIB],
        "opt/a/glibc-hwcaps/x86-64-v2": [HWCAPS_LIB],
        "opt/a/glibc-hwcaps/x86-64-v3": [HWCAPS_LIB],
        "opt/b": ["liby.so.2"],
        "opt/c": list(NUMBERED),
        "opt/t": ["libt.so.1"],
        "opt/t/tls": ["libt.so.1"],
    }
    for folder, sonames in libs.items():
        (root / folder).mkdir(parents=True)
        for soname in sonames:
            out = root / folder / soname
            run(GCC, "-shared", f"-Wl,-soname,{soname}", "-o", out, src / "x.o")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/opt/a\n/opt/b\n/opt/c\n")
    # Legacy `tls` copies only in the new format: glibc 2.36's ldconfig overruns its old-format
    # array when an entry carries a legacy hwcap (elf/cache.c save_cache indexes it by idx_new).
    (root / "etc/tls.conf").write_text("/opt/a\n/opt/b\n/opt/c\n/opt/t\n")
    if _data.HOST_LOADER is not None and _data.host_library("libc.so.6") is not None:
        # What the host's own ld.so needs to run inside the root (test_lookup_agrees_with_ld_so).
        _data.make_host_root(root, ["libc.so.6"])
        (root / "bin").mkdir()
        dirs: list[str | Path] = ["-Wl,--no-as-needed", "-L", root / "opt/a", "-L", root / "opt/b"]
        needs = ["-l:libx.so.1", "-l:liby.so.2"]
        run(GCC, "-o", root / "bin/prog", src / "m.c", *dirs, *needs)
        # libt.so.1 and its tls copy are only in the new cache: a program of its own.
        run(
            GCC,
            "-o",
            root / "bin/tls",
            src / "m.c",
            *dirs,
            "-L",
            root / "opt/t",
            *needs,
            "-l:libt.so.1",
        )
    for name in FORMATS:
        conf = "/etc/tls.conf" if name == "new" else "/etc/ld.so.conf"
        run(LDCONFIG, "-c", name, "-r", root, "-f", conf, "-C", f"/etc/{name}.cache", "-X")
    return root


@pytest.fixture(scope="module")
def built(lib_root: Path) -> tuple[int, int]:
    """(ELF class, machine) of the libraries gcc built: the host's."""
    return _data.elf_identity(lib_root / "opt/a" / HWCAPS_LIB)


def other_machine(machine: int) -> int:
    return _data.EM_AARCH64 if machine != _data.EM_AARCH64 else _data.EM_X86_64


def cache_file(root: Path, name: str) -> Path:
    return root / "etc" / f"{name}.cache"


def load(root: Path, name: str) -> LdCache:
    path = cache_file(root, name)
    return parse_ld_so_cache(path.read_bytes(), origin=str(path))


@pytest.mark.skipif(not Path("/etc/ld.so.cache").exists(), reason="this host has no ld.so.cache")
@needs_tools
def test_host_cache_lists_what_ldconfig_prints() -> None:
    cache = parse_ld_so_cache(Path("/etc/ld.so.cache").read_bytes(), origin="/etc/ld.so.cache")
    printed = [(soname, path) for soname, _, path in ldconfig_print(Path("/etc/ld.so.cache"))]
    assert [(raw(e.soname), raw(e.path)) for e in cache.entries] == printed
    assert printed


@pytest.mark.skipif(not Path("/etc/ld.so.cache").exists(), reason="this host has no ld.so.cache")
def test_host_cache_lookup_is_first_fitting_entry_in_file_order() -> None:
    cache = parse_ld_so_cache(Path("/etc/ld.so.cache").read_bytes(), origin="/etc/ld.so.cache")
    elf_class, machine = _data.HOST_ELF_CLASS, _data.HOST_MACHINE
    for soname in {entry.soname for entry in cache.entries}:
        fitting = [
            e.path
            for e in cache.entries
            if e.soname == soname
            and not e.hwcap & ~(1 << 63)
            and entry_matches(e.flags, elf_class, machine)
        ]
        expected = fitting[0] if fitting else None
        found = find_in_cache(cache, soname, elf_class=elf_class, machine=machine)
        assert found == expected, soname
    assert find_in_cache(cache, "libnot-there.so.1", elf_class=elf_class, machine=machine) is None
    # The host's own libc is in its cache for its own class and machine.
    assert find_in_cache(cache, "libc.so.6", elf_class=elf_class, machine=machine) is not None


@pytest.mark.parametrize("name", list(FORMATS))
def test_built_cache_lists_what_ldconfig_prints(lib_root: Path, name: str) -> None:
    cache = load(lib_root, name)
    printed = ldconfig_print(cache_file(lib_root, name))
    assert cache.format == FORMATS[name]
    assert [(raw(e.soname), raw(e.path)) for e in cache.entries] == [(s, p) for s, _, p in printed]
    # ldconfig -p shows `hwcap: "NAME"` for extension entries; compat files make it read other
    # bytes than the writer meant (file- versus header-relative offsets), and so do we.
    shown = [re.search(rb'hwcap: "(.*)"', description) for _, description, _ in printed]
    assert [None if e.hwcap_subdir is None else raw(e.hwcap_subdir) for e in cache.entries] == [
        None if match is None else match.group(1) for match in shown
    ]


def test_new_cache_names_its_glibc_hwcaps_subdirectories(lib_root: Path) -> None:
    cache = load(lib_root, "new")
    assert cache.hwcap_subdirs == ("x86-64-v2", "x86-64-v3")  # sorted by strcmp, as written
    named = {e.hwcap_subdir: e.path for e in cache.entries if e.soname == HWCAPS_LIB}
    assert named == {
        "x86-64-v2": "/opt/a/glibc-hwcaps/x86-64-v2/libx.so.1",
        "x86-64-v3": "/opt/a/glibc-hwcaps/x86-64-v3/libx.so.1",
        None: "/opt/a/libx.so.1",
    }


@pytest.mark.parametrize(
    ("name", "hwcaps", "expected"),
    [
        ("new", (), "/opt/a/libx.so.1"),
        ("new", ("x86-64-v4", "x86-64-v3", "x86-64-v2"), "/opt/a/glibc-hwcaps/x86-64-v3/libx.so.1"),
        ("new", ("x86-64-v2",), "/opt/a/glibc-hwcaps/x86-64-v2/libx.so.1"),
        ("new", ("x86-64-v4",), "/opt/a/libx.so.1"),
        ("compat", ("x86-64-v3", "x86-64-v2"), "/opt/a/libx.so.1"),
        ("old", (), "/opt/a/glibc-hwcaps/x86-64-v2/libx.so.1"),
    ],
    ids=[
        "new-no-hwcaps",
        "new-best-supported",
        "new-v2-only",
        "new-unlisted-subdir",
        "compat-misread-names-never-match",
        "old-format-lists-hwcaps-copies-as-plain",
    ],
)
def test_lookup_picks_what_ld_so_picks(
    lib_root: Path, built: tuple[int, int], name: str, hwcaps: tuple[str, ...], expected: str
) -> None:
    cache = load(lib_root, name)
    elf_class, machine = built
    found = find_in_cache(cache, HWCAPS_LIB, elf_class=elf_class, machine=machine, hwcaps=hwcaps)
    assert found == expected


@pytest.mark.parametrize("name", list(FORMATS))
def test_lookup_compares_numbers_by_value(
    lib_root: Path, built: tuple[int, int], name: str
) -> None:
    cache = load(lib_root, name)
    elf_class, machine = built
    for soname in NUMBERED:
        found = find_in_cache(cache, soname, elf_class=elf_class, machine=machine)
        assert found == f"/opt/c/{soname}"
    assert find_in_cache(cache, "libnum.so.1", elf_class=elf_class, machine=machine) is None
    found = find_in_cache(cache, "libnum.so.09", elf_class=elf_class, machine=machine)
    assert found == "/opt/c/libnum.so.9"
    assert find_in_cache(cache, "liby.so.2", elf_class=elf_class, machine=machine) is not None
    # The same entries do not fit another machine or the other class.
    other = other_machine(machine)
    assert find_in_cache(cache, "liby.so.2", elf_class=elf_class, machine=other) is None
    assert find_in_cache(cache, "liby.so.2", elf_class=3 - elf_class, machine=machine) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("new", "/opt/a/glibc-hwcaps/x86-64-v2/libx.so.1"),
        ("old", "/opt/a/glibc-hwcaps/x86-64-v3/libx.so.1"),
    ],
    ids=["new-first-fitting-wins", "old-default-id-replaces-earlier-fit"],
)
def test_arm_float_abi_entries_follow_search_cache(
    lib_root: Path, name: str, expected: str
) -> None:
    # Relabel the three libx.so.1 entries as ARM ones: hard-float, unmarked libc6, hard-float.
    data = bytearray(cache_file(lib_root, name).read_bytes())
    cache = parse_ld_so_cache(bytes(data), origin=name)
    first = next(i for i, e in enumerate(cache.entries) if e.soname == HWCAPS_LIB)
    header, size = (48, 24) if name == "new" else (16, 12)
    flags = (CacheFlag.ARM_LIBHF | CacheFlag.ELF_LIBC6, CacheFlag.ELF_LIBC6, 0x903)
    for index, flag in zip(range(first, first + 3), flags, strict=True):
        struct.pack_into("<i", data, header + index * size, flag)
        if name == "new":
            struct.pack_into("<Q", data, header + index * size + 16, 0)
    arm = parse_ld_so_cache(bytes(data), origin=name)
    assert find_in_cache(arm, HWCAPS_LIB, elf_class=1, machine=40) == expected
    assert find_in_cache(arm, HWCAPS_LIB, elf_class=1, machine=40, float_abi="soft") == (
        "/opt/a/glibc-hwcaps/x86-64-v3/libx.so.1"
    )


def chroot_ld_so(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["chroot", str(root), str(_data.HOST_LOADER), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("mask", [None, "x86-64-v2", "x86-64-v3", "none-at-all"])
def test_lookup_agrees_with_ld_so(
    lib_root: Path, built: tuple[int, int], name: str, mask: str | None
) -> None:
    if not (lib_root / "bin/prog").exists() or os.geteuid() != 0:
        pytest.skip("needs root and a glibc host with libc.so.6 in its cache, to run ld.so in "
                    "a chroot")
    shutil.copy(cache_file(lib_root, name), lib_root / "etc/ld.so.cache")
    masking = [] if mask is None else ["--glibc-hwcaps-mask", mask]
    shown = chroot_ld_so(lib_root, *masking, "--help")
    if shown.returncode != 0:
        pytest.skip(f"cannot run ld.so in a chroot here: {shown.stderr.strip()}")
    # The glibc-hwcaps section of `ld.so --help`, up to the legacy one after a blank line.
    section = shown.stdout.partition("Subdirectories of glibc-hwcaps")[2].partition("\n\n")[0]
    searched = tuple(re.findall(r"^  (\S+) \(supported, searched\)$", section, re.MULTILINE))
    program, sonames = "/bin/prog", ["libx.so.1", "liby.so.2"]
    if name == "new":
        program, sonames = "/bin/tls", [*sonames, "libt.so.1"]
    listed = chroot_ld_so(lib_root, *masking, "--list", program)
    assert listed.returncode == 0, listed.stderr
    loaded = dict(re.findall(r"^\t(\S+) => (\S+) \(0x", listed.stdout, re.MULTILINE))
    cache = load(lib_root, name)
    elf_class, machine = built
    for soname in sonames:
        ours = find_in_cache(cache, soname, elf_class=elf_class, machine=machine, hwcaps=searched)
        assert ours == loaded[soname], (soname, searched)


@pytest.mark.parametrize(
    ("flags", "elf_class", "machine", "float_abi", "fits"),
    [
        (0x0303, 2, 62, "hard", True),
        (0x0303, 2, 183, "hard", False),
        (0x0A03, 2, 183, "hard", True),
        (0x0A03, 2, 62, "hard", False),
        (0x0A03, 1, 183, "hard", False),
        (0x0803, 1, 62, "hard", True),
        (0x0003, 1, 3, "hard", True),
        (0x0001, 1, 3, "hard", True),
        (0x0303, 1, 3, "hard", False),
        (0x0903, 1, 40, "hard", True),
        (0x0003, 1, 40, "hard", True),
        (0x0B03, 1, 40, "hard", False),
        (0x0B03, 1, 40, "soft", True),
        (0x1003, 2, 243, "hard", True),
        (0x0F03, 2, 243, "hard", False),
        (0x0F03, 2, 243, "soft", True),
        (0x0503, 2, 21, "hard", True),
        (0x0403, 2, 22, "hard", True),
        (0x0003, 2, 8, "hard", False),
    ],
)
def test_entry_matches_follows_dl_cache_check_flags(
    flags: int, elf_class: int, machine: int, float_abi: FloatAbi, fits: bool
) -> None:
    assert entry_matches(flags, elf_class, machine, float_abi=float_abi) is fits


@pytest.mark.network
def test_arm64_cache_from_arm64_ldconfig(arm64_root: Path) -> None:
    # The session's arm64 Debian root: its cache was written by its own ldconfig under qemu.
    path = arm64_root / "etc/ld.so.cache"
    cache = parse_ld_so_cache(path.read_bytes(), origin=str(path))
    assert cache.format == "new"
    libc = next(e for e in cache.entries if e.soname == "libc.so.6")
    assert libc.flags == CacheFlag.AARCH64_LIB64 | CacheFlag.ELF_LIBC6
    assert entry_matches(libc.flags, 2, 183)
    assert not entry_matches(libc.flags, 2, 62)
    found = find_in_cache(cache, "libc.so.6", elf_class=2, machine=183)
    assert found == "/lib/aarch64-linux-gnu/libc.so.6"
    assert (arm64_root / found.lstrip("/")).exists()
    assert find_in_cache(cache, "libc.so.6", elf_class=2, machine=62) is None
    if LDCONFIG is not None:
        printed = [(soname, p) for soname, _, p in ldconfig_print(path)]
        assert [(raw(e.soname), raw(e.path)) for e in cache.entries] == printed


def truncations(lib_root: Path) -> Iterator[tuple[str, bytes, int]]:
    for name in FORMATS:
        data = cache_file(lib_root, name).read_bytes()
        for length in range(len(data)):
            yield name, data, length


def test_every_truncation_is_refused(lib_root: Path) -> None:
    count = 0
    for name, data, length in truncations(lib_root):
        with pytest.raises(InvalidLdCache, match=rf"^{name}-cut: ld\.so\.cache "):
            parse_ld_so_cache(data[:length], origin=f"{name}-cut")
        count += 1
    assert count > 500


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda d: b"GLIBC" + d[5:], r"unknown magic b'GLIBC-ld"),
        (lambda _: b"", r"is empty"),
        (lambda d: d[:20] + struct.pack("<I", 0xFFFFFFFF) + d[24:], r"at entry \d+ of 4294967295"),
        (lambda d: d[:28] + b"\x01" + d[29:], r"byte order marked invalid"),
        (lambda d: d[:32] + struct.pack("<I", 2) + d[36:], r"extension directory at 2"),
        (lambda d: d[:32] + struct.pack("<I", 48) + d[36:], r"bad extension magic"),
        (lambda d: d[:52] + struct.pack("<I", len(d)) + d[56:], r"entry 0 of \d+: soname.*past"),
        (lambda d: d[:52] + struct.pack("<I", len(d) - 3) + d[56:], r"soname .* without a NUL"),
    ],
    ids=["magic", "empty", "huge-count", "endian", "ext-misaligned", "ext-magic", "key", "nul"],
)
def test_bad_new_cache_is_refused(
    lib_root: Path, patch: Callable[[bytes], bytes], message: str
) -> None:
    data = cache_file(lib_root, "new").read_bytes()
    with pytest.raises(InvalidLdCache, match=rf"^bad\.cache: .*{message}"):
        parse_ld_so_cache(patch(data), origin="bad.cache")


def test_old_cache_with_huge_count_or_bad_offset_is_refused(lib_root: Path) -> None:
    data = cache_file(lib_root, "old").read_bytes()
    with pytest.raises(
        InvalidLdCache, match=r"^old: ld\.so\.cache cut short at entry \d+ of 2147483647"
    ):
        parse_ld_so_cache(data[:12] + b"\xff\xff\xff\x7f" + data[16:], origin="old")
    with pytest.raises(InvalidLdCache, match=r"entry 0 of \d+: soname at offset \d+ is past"):
        parse_ld_so_cache(data[:20] + b"\xff\xff\0\0" + data[24:], origin="old")
    last = data.rindex(b"\0", 0, len(data) - 1) + 1
    with pytest.raises(InvalidLdCache, match=r"without a NUL"):
        parse_ld_so_cache(data[:last] + b"x" * 9, origin="old")


def big_endian(data: bytes) -> bytes:
    """Rewrite a little-endian new-format cache as a big-endian ldconfig would write it."""
    out = bytearray(data)
    nlibs, strings_len, flags, extension_at = struct.unpack_from("<IIB3xI", data, 20)
    struct.pack_into(">IIB3xI", out, 20, nlibs, strings_len, flags | 3, extension_at)
    for index in range(nlibs):
        struct.pack_into(
            ">iIIIQ", out, 48 + 24 * index, *struct.unpack_from("<iIIIQ", data, 48 + 24 * index)
        )
    magic, count = struct.unpack_from("<II", data, extension_at)
    struct.pack_into(">II", out, extension_at, magic, count)
    for index in range(count):
        at = extension_at + 8 + 16 * index
        tag, _flags, offset, size = fields = struct.unpack_from("<IIII", data, at)
        struct.pack_into(">IIII", out, at, *fields)
        if tag == 1:
            words = struct.unpack_from(f"<{size // 4}I", data, offset)
            struct.pack_into(f">{size // 4}I", out, offset, *words)
    return bytes(out)


def test_big_endian_and_unmarked_caches_parse_alike(lib_root: Path) -> None:
    data = cache_file(lib_root, "new").read_bytes()
    little = parse_ld_so_cache(data, origin="le")
    assert parse_ld_so_cache(big_endian(data), origin="be") == little
    unmarked = data[:28] + b"\0" + data[29:]  # written by an ldconfig older than glibc 2.32
    assert parse_ld_so_cache(unmarked, origin="old-ldconfig") == little


def mutate(data: bytes, ops: list[tuple[int, int, int]], donor: bytes) -> bytes:
    out = bytearray(data)
    for kind, where, value in ops:
        if not out:
            break
        at = where % len(out)
        if kind == 0:  # flip a bit
            out[at] ^= 1 << (value % 8)
        elif kind == 1:  # cut short
            del out[at:]
        elif kind == 2:  # splice in a slice of another cache
            start = value % len(donor)
            out[at:at] = donor[start : start + 1 + value % 64]
        elif kind == 3:  # overwrite an aligned word with a telling value
            at -= at % 4
            word = (0, 0xFFFFFFFF, len(out), len(out) - 1, 1 << 31, value)[value % 6]
            out[at : at + 4] = struct.pack("<I", word & 0xFFFFFFFF)
        else:  # drop a run
            del out[at : at + 1 + value % 32]
    return bytes(out)


@pytest.mark.fuzz
def test_mutated_caches_parse_or_fail_cleanly(lib_root: Path, built: tuple[int, int]) -> None:
    corpus = [cache_file(lib_root, name).read_bytes() for name in FORMATS]
    if Path("/etc/ld.so.cache").exists():
        corpus.append(Path("/etc/ld.so.cache").read_bytes())
    op = st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 1 << 32))

    @settings(
        max_examples=3000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.integers(0, len(corpus) - 1), st.lists(op, min_size=1, max_size=6))
    def check(pick: int, ops: list[tuple[int, int, int]]) -> None:
        data = mutate(corpus[pick], ops, corpus[(pick + 1) % len(corpus)])
        started = time.monotonic()
        outcome: LdCache | str
        try:
            outcome = parse_ld_so_cache(data, origin="fuzz.cache")
        except InvalidLdCache as err:
            outcome = str(err)
        if isinstance(outcome, str):
            assert outcome.startswith("fuzz.cache: ld.so.cache ")
            assert "\n" not in outcome
        else:
            names = ["libx.so.1", "libnum.so.10", *(e.soname for e in outcome.entries[:3])]
            for name in names:
                find_in_cache(outcome, name, elf_class=built[0], machine=built[1],
                              hwcaps=("x86-64-v2",))
        assert time.monotonic() - started < 1.0

    check()


@pytest.mark.fuzz
@pytest.mark.parametrize("fill", [b"\0", b"\0\0\0\0libx.so.1\0", b"A"],
                         ids=["nul", "names", "no-nul"])
def test_a_cache_flooded_after_its_header_costs_time_and_memory_linear_in_its_size(
        lib_root: Path, fill: bytes) -> None:
    """A valid header, then 8 MiB of one pattern with the entry count to match (issue 10).

    ld.so maps the file and bisects it; the parse must not build an object per byte (a first
    version indexed every NUL: 2 GB for 48 MiB of NULs) nor rescan strings per entry.
    """
    import tracemalloc  # noqa: PLC0415

    header = bytearray(cache_file(lib_root, "new").read_bytes()[:48])
    body = (fill * ((8 << 20) // len(fill) + 1))[: 8 << 20]
    struct.pack_into("<I", header, 20, len(body) // 24)  # nlibs: every 24 bytes an entry
    struct.pack_into("<I", header, 32, 0)  # no extension directory
    data = bytes(header) + body
    tracemalloc.start()
    started = time.monotonic()
    try:
        outcome: LdCache | str = parse_ld_so_cache(data, origin="flood")
    except InvalidLdCache as err:
        outcome = str(err)
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 5.0
    assert peak < 3 * len(data), f"{peak / len(data):.1f} bytes of memory per byte of cache"
    if isinstance(outcome, str):
        assert outcome.startswith("flood: ld.so.cache ")
    else:
        assert len(outcome.entries) == len(body) // 24
