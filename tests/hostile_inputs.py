"""Hostile inputs for the CLI (issue 10), and the harness that runs `python -m resolver` on them.

Every builder writes real bytes into a test's sandbox (`Sandbox`): FIFOs, symlinks to devices,
sparse files, a zip bomb, deeply nested JSON and TOML, undecodable names, libraries with absurd
dynamic sections. `run_hostile` runs the CLI as a real subprocess, under a memory limit and a
timeout, in its own session (a FIFO that blocks it, or a loop, ends the test, not the suite);
`assert_one_line_error` and `assert_normal_run` state the two outcomes the issue accepts, and
`tree_hash` shows that a run changed nothing outside the folders the user named.

It does not decide what a particular input must give; `test_hostile.py` does.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cli_helpers import run_cli, synth_lib
from test_cli_diagnose import empty_root, make_mini_torch

import resolver
from resolver.elf.facts import ElfClass, ElfFacts, Endian, Machine
from resolver.fixture.synth.elf import synthesize_elf

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "ERROR_PREFIX",
    "GIB",
    "MIB",
    "REPO",
    "SITE_AT",
    "Run",
    "Sandbox",
    "assert_normal_run",
    "assert_one_line_error",
    "big_endian_copy",
    "big_endian_library",
    "build_sandbox",
    "cli_env",
    "deep_json_array",
    "deep_toml_array",
    "drop_dac_preexec",
    "edit_files_json",
    "ld_cache_of_nuls",
    "pathological_version_py",
    "python_impostor",
    "run_hostile",
    "tree_hash",
    "write_zip_bomb",
]

REPO = Path(resolver.__file__).resolve().parent.parent
SITE_AT = "/usr/lib/python3/dist-packages"  # where the sandbox's torch lives in its root
GIB = 1 << 30
MIB = 1 << 20
ERROR_PREFIX = "jetson-resolve: error: "
# stderr lines a command may print before its one error line (check's progress).
_PROGRESS = ("checked ",)
_HASH_WHOLE_UP_TO = 64 * MIB  # bigger regular files (sparse ones) are hashed by size and mtime


@dataclass(frozen=True, slots=True)
class Run:
    """One finished CLI run."""

    args: tuple[str, ...]
    code: int
    stdout: str  # decoded with backslashreplace: undecodable bytes show as \\xff
    stderr: str
    seconds: float
    stdout_bytes: bytes = b""

    def describe(self) -> str:
        """The run, for an assertion message."""
        return (f"jetson-resolve {' '.join(self.args)}\nexit {self.code} after "
                f"{self.seconds:.1f} s\n--- stderr\n{self.stderr[-3000:]}\n--- stdout\n"
                f"{self.stdout[-1500:]}")


def cli_env(top: Path, **changes: str | None) -> dict[str, str]:
    """A clean environment for a run whose caches and home lie in `top`; None removes a name.

    PYTHONIOENCODING makes stdout strict UTF-8, as it is under a user's UTF-8 locale
    (en_US.UTF-8); this container's C.UTF-8 would let undecodable names through as raw bytes.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "HOME": str(top / "home"),
        "XDG_CACHE_HOME": str(top / "cache"),
        "XDG_STATE_HOME": str(top / "state"),
        "COLUMNS": "100",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8:strict",
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_hostile(
    args: Sequence[str | bytes | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdout: IO[Any] | None = None,
    mem_gib: float = 3,
    timeout: float = 60,
    preexec: Callable[[], None] | None = None,
) -> Run:
    """Run `python -m resolver ARGS` with an address-space limit and a timeout.

    The process runs in a session of its own, so a run past `timeout` is killed with its
    children and fails the test ("no answer within ..."). `stdout` is a file object to write to
    instead of a pipe (/dev/full). `env` must be given (`cli_env`): a run never sees the user's
    caches.
    """
    shown = tuple(os.fsdecode(a) for a in args)
    argv = [sys.executable, "-m", "resolver", *(os.fspath(a) for a in args)]
    limit = int(mem_gib * GIB)

    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if preexec is not None:
            preexec()

    started = time.monotonic()
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE if stdout is None else stdout,
                          stderr=subprocess.PIPE, env=dict(env), cwd=cwd,
                          preexec_fn=setup,  # noqa: PLW1509 - pytest runs tests on one thread
                          start_new_session=True) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            message = f"jetson-resolve {' '.join(shown)}: no answer within {timeout} s (killed)"
            raise AssertionError(message) from None
    seconds = time.monotonic() - started
    return Run(shown, process.returncode, (out or b"").decode("utf-8", "backslashreplace"),
               err.decode("utf-8", "backslashreplace"), seconds, out or b"")


def _mentions(line: str, name: str | Path) -> bool:
    if isinstance(name, Path):
        return str(name) in line or name.name in line
    return name in line


def assert_one_line_error(run: Run, *names: str | Path, what: str | None = None) -> str:
    """Exit 2 with one `jetson-resolve: error: ...` line naming each of `names`; returns it.

    A `Path` may be named by its full path or its basename. `what` (case-insensitive) must be
    in the line too: what is wrong ("FIFO"). Only `check`'s progress lines may come before it.
    """
    assert "Traceback" not in run.stderr, run.describe()
    assert run.code == 2, run.describe()
    lines = run.stderr.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, run.describe()
    assert lines[-1] == errors[0], run.describe()
    assert all(line.startswith(_PROGRESS) for line in lines[:-1]), run.describe()
    line = errors[0]
    for name in names:
        assert _mentions(line, name), f"{name} not named\n{run.describe()}"
    if what is not None:
        assert what.lower() in line.lower(), f"{what!r} not said\n{run.describe()}"
    return line


def assert_normal_run(run: Run, codes: Iterable[int] = (0, 1)) -> None:
    """A run that answered (exit in `codes`) with no error line and no traceback."""
    assert "Traceback" not in run.stderr, run.describe()
    assert not any(line.startswith(ERROR_PREFIX) for line in run.stderr.splitlines()), \
        run.describe()
    assert run.code in tuple(codes), run.describe()


def tree_hash(top: Path, *, skip: Iterable[Path] = ()) -> str:
    """A digest of everything under `top` but `skip`: names, modes, link targets, file bytes.

    Walked with lstat: symlinks are never followed, FIFOs and devices never opened. Regular
    files over 64 MiB (the sparse ones) count by size and mtime, not bytes.
    """
    skipped = {os.fsencode(p) for p in skip}
    digest = hashlib.sha256()

    def visit(path: bytes) -> None:
        info = os.lstat(path)
        digest.update(os.path.relpath(path, os.fsencode(top)) + b"\0"
                      + f"{info.st_mode:o}".encode() + b"\0")
        if stat.S_ISLNK(info.st_mode):
            digest.update(os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            if info.st_size > _HASH_WHOLE_UP_TO:
                digest.update(f"{info.st_size}:{info.st_mtime_ns}".encode())
            else:
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
        elif stat.S_ISDIR(info.st_mode):
            try:
                names = sorted(os.listdir(path))
            except PermissionError:
                digest.update(b"unlistable")
                return
            for name in names:
                child = os.path.join(path, name)
                if child not in skipped:
                    visit(child)
        digest.update(b"\n")

    visit(os.fsencode(top))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """One test's world: a root holding a torch, that torch as a wheel and as fixtures.

    libtorch needs `needs` (besides libc10); when the sandbox `provides` it, a library of that
    soname sits in torch/lib and every entry point's baseline exits 0, else it is found nowhere
    and the baseline exits 1.
    """

    top: Path
    root: Path  # a small x86_64 root: /etc/os-release and the torch site, nothing else
    site: Path  # root + SITE_AT
    wheel: Path  # the site's torch package as a wheel
    system_fixture: Path  # `record --root` of the root, before any test changed it
    torch_fixture: Path  # `record --site-only` of the site, at SITE_AT
    out: Path  # where record writes; absent until a test records
    junit: Path  # where check writes its report
    cache: Path  # XDG_CACHE_HOME of `env`
    needs: str
    env: dict[str, str]

    @property
    def facts_cache(self) -> Path:
        """The facts cache file (`resolver.elf.cache.default_cache_path`) under `cache`."""
        return self.cache / "jetson-resolve" / "facts.json"

    @property
    def lib(self) -> Path:
        """torch/lib of the site."""
        return self.site / "torch" / "lib"

    def run(self, *args: str | bytes | os.PathLike[str], env: Mapping[str, str] | None = None,
            cwd: Path | None = None, stdout: IO[Any] | None = None, mem_gib: float = 3,
            timeout: float = 60, preexec: Callable[[], None] | None = None) -> Run:
        """`run_hostile` with this sandbox's environment, from its top folder."""
        return run_hostile(args, env=self.env if env is None else env,
                           cwd=self.top if cwd is None else cwd, stdout=stdout,
                           mem_gib=mem_gib, timeout=timeout, preexec=preexec)

    def rezip(self) -> None:
        """Write the wheel again from the site (after a test changed the site)."""
        zip_site(self.site, self.wheel)


WHEEL_NAME = "torch-9.9.9-cp311-cp311-linux_x86_64.whl"


def zip_site(site: Path, wheel: Path) -> None:
    """The torch package of `site` as a wheel (stored members, sorted, no directories)."""
    wheel.unlink(missing_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in sorted((site / "torch").rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(site).as_posix())


def build_sandbox(top: Path, *, needs: str = "libdep.so.1", provides: bool = True) -> Sandbox:
    """A sandbox in `top` (see `Sandbox`): real synthesised x86_64 libraries, real fixtures.

    The torch is `test_cli_diagnose.make_mini_torch`'s (_C needs libtorch, libtorch needs
    libc10 and `needs`). The fixtures are recorded in-process (`cli_helpers.run_cli`) before
    any test changes the tree; a test that wants a hostile fixture edits their files.
    """
    root = empty_root(top / "root")
    site = root / SITE_AT.lstrip("/")
    make_mini_torch(site, synth_lib, missing=needs)
    if provides:
        synth_lib(site / "torch" / "lib", needs, soname=needs)
    wheel = top / "wheels" / WHEEL_NAME
    wheel.parent.mkdir()
    zip_site(site, wheel)
    fixtures = top / "fixtures"
    system, torch = fixtures / "system", fixtures / "torch"
    for args in (("record", "--root", str(root), "--out", str(system)),
                 ("record", "--site-only", "--site-packages", str(site), "--site-at", SITE_AT,
                  "--out", str(torch))):
        recorded = run_cli(*args)
        assert recorded.code == 0, recorded.stderr
    for folder in ("home", "cache", "state"):
        (top / folder).mkdir()
    return Sandbox(top=top, root=root, site=site, wheel=wheel, system_fixture=system,
                   torch_fixture=torch, out=top / "out", junit=top / "report.xml",
                   cache=top / "cache", needs=needs, env=cli_env(top))


def edit_files_json(fixture: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Load a fixture's files.json, let `change` edit its entries, write it back.

    Strings keep lone surrogates: json writes them as `\\udcff` escapes, which read back as
    the undecodable byte 0xff of a path (PEP 383).
    """
    path = fixture / "files.json"
    document = json.loads(path.read_text("utf-8"))
    change(document["entries"])
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", "utf-8")


def deep_json_array(depth: int = 100_000) -> str:
    """`[[[...]]]`, `depth` deep: valid JSON that a recursive parser cannot finish."""
    return "[" * depth + "]" * depth


def deep_toml_array(depth: int = 100_000) -> str:
    """`a = [[[...]]]`, `depth` deep: a valid TOML document as far as its grammar goes."""
    return "a = " + "[" * depth + "]" * depth + "\n"


def pathological_version_py(size: int = 600_000) -> str:
    """A torch/version.py of `size` bytes on which a backtracking `^cuda\\s*(?::[^=]*)?=` costs
    quadratic time: every line starts a match whose `[^=]*` runs to the end of the file."""
    return "cuda:\n" * (size // 6)


def ld_cache_of_nuls(nuls: int = 48 * MIB) -> bytes:
    """A new-format `ld.so.cache` header that counts `nuls // 24` entries, then that many NULs.

    The header is valid (glibc's `_dl_load_cache_lookup` checks the magic and that the entries
    fit in the file, both true), so the loader uses the cache and finds nothing in it.
    """
    count = nuls // 24
    # sysdeps/generic/dl-cache.h struct cache_file_new: magic+version, nlibs, len_strings,
    # flags (2: little-endian), 3 unused, extension_offset, 3 unused uint32.
    header = struct.pack("<20sIIB3xI12x", b"glibc-ld.so.cache1.1", count, 0, 2, 0)
    return header + bytes(nuls)


def big_endian_copy(source: Path, target: Path) -> Path:
    """`source` (a little-endian ELF) copied with EI_DATA set to ELFDATA2MSB (2)."""
    data = bytearray(source.read_bytes())
    assert data[:4] == b"\x7fELF" and data[5] == 1, source
    data[5] = 2
    target.write_bytes(bytes(data))
    return target


def big_endian_library(directory: Path, name: str, *, soname: str) -> Path:
    """A well-formed big-endian x86_64 library (the synthesiser writes either byte order)."""
    facts = ElfFacts(elf_class=ElfClass.ELF64, endian=Endian.BIG, machine=Machine.X86_64,
                     osabi=0, elf_type=3, soname=soname)
    path = directory / name
    path.write_bytes(synthesize_elf(facts))
    return path


def python_impostor(path: Path, output: str) -> Path:
    """An executable that answers the interpreter probe with `output` (and exits 0)."""
    path.write_text(f"#!/bin/sh\ncat <<'JSON'\n{output}\nJSON\n")
    path.chmod(0o755)
    return path


def drop_dac_preexec() -> Callable[[], None] | None:
    """A preexec that makes permission bits bite even for root, or None when it cannot.

    Tests run as root, whose CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH ignore mode bits. Dropping
    both from the bounding set before exec leaves root without them after exec (it stays uid 0,
    so it can still run the interpreter under /root). A non-root runner needs nothing.
    """
    if os.geteuid() != 0:
        return lambda: None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, dac_override, dac_read_search = 24, 1, 2

    def drop() -> None:
        for capability in (dac_override, dac_read_search):
            if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    probe = subprocess.run([sys.executable, "-c", "import os; os.listdir('/proc/1/root')"],
                           preexec_fn=drop, capture_output=True, check=False)
    return drop if probe.returncode != 0 else None


# A zip written by hand: zipfile cannot take a deflate stream that is already compressed, and
# deflating 2 GiB of zeros through it takes ten seconds. APPNOTE.TXT 4.3.7 (local header),
# 4.3.12 (central header), 4.3.16 (end of central directory), 4.5.3 (zip64 extra field).
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_ZIP64_EXTRA = struct.Struct("<HHQQ")
_DOS_DATE = (1 << 5) | 1  # 1980-01-01


def _zeros_deflated(size: int, chunk: int = MIB) -> tuple[bytes, int]:
    """A raw deflate stream of `size` zero bytes (a multiple of `chunk`) and its CRC-32.

    Each chunk is compressed from a fresh dictionary and ended with a full flush, so its bytes
    are the same every time: the stream is one block repeated, then an empty final block.
    """
    assert size % chunk == 0
    zeros = bytes(chunk)
    block_of = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = block_of.compress(zeros) + block_of.flush(zlib.Z_FULL_FLUSH)
    again = block_of.compress(zeros) + block_of.flush(zlib.Z_FULL_FLUSH)
    assert block == again
    crc = 0
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    return block * (size // chunk) + block_of.flush(zlib.Z_FINISH), crc


def write_zip_bomb(path: Path, *, member: str, inflated: int,
                   others: Mapping[str, bytes]) -> Path:
    """A zip holding `others` (stored) and `member`: `inflated` zero bytes, deflated.

    2 GiB of zeros deflate to about 2 MB. The member's sizes are in a zip64 extra field, as
    zipfile writes them with force_zip64.
    """
    bomb, bomb_crc = _zeros_deflated(inflated)
    rows: list[tuple[bytes, int, int, int, int, bytes]] = []  # name, method, crc, sizes, data
    rows += [(name.encode(), 0, zlib.crc32(data), len(data), len(data), data)
             for name, data in others.items()]
    rows.append((member.encode(), 8, bomb_crc, len(bomb), inflated, bomb))
    body, central = bytearray(), bytearray()
    for name, method, crc, packed, size, data in rows:
        offset = len(body)
        wide = size >= 0xFFFFFFFF or packed >= 0xFFFFFFFF
        extra = _ZIP64_EXTRA.pack(1, 16, size, packed) if wide else b""
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if wide else (packed, size)
        version = 45 if wide else 20
        body += _LOCAL.pack(0x04034B50, version, 0, method, 0, _DOS_DATE, crc, *sizes,
                            len(name), len(extra)) + name + extra + data
        central += _CENTRAL.pack(0x02014B50, (3 << 8) | version, version, 0, method, 0,
                                 _DOS_DATE, crc, *sizes, len(name), len(extra), 0, 0, 0,
                                 0o100644 << 16, offset) + name + extra
    end = _END.pack(0x06054B50, 0, 0, len(rows), len(rows), len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def copy_tree(source: Path, target: Path) -> Path:
    """`source` copied to `target`, symlinks kept as symlinks."""
    shutil.copytree(source, target, symlinks=True)
    return target
