"""Hostile inputs through every entry point that reads or writes files (issue 10).

Each kind of hostile input is one test parametrized over (entry point, input shape); `COVERAGE`
lists the entry points each kind reaches. A case asserts one of the two outcomes the issue
accepts: exit 2 with exactly one `jetson-resolve: error:` line naming the file and what is
wrong, or, where glibc's loader would go on, a normal run (exit 0/1, a finding or a note, no
error line). Never a traceback, always within a time and memory bound (`run_hostile`), and no
file changed outside the folders the user named (`untouched`). The CLI runs as a subprocess on
real bytes (`hostile_inputs`): synthesised x86_64 libraries, recorded fixtures, FIFOs, devices.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import re
import resource
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

import pytest
from cli_helpers import synth_lib
from hostile_inputs import (
    GIB,
    SITE_AT,
    Run,
    Sandbox,
    assert_normal_run,
    assert_one_line_error,
    big_endian_copy,
    big_endian_library,
    build_sandbox,
    cli_env,
    deep_json_array,
    deep_toml_array,
    drop_dac_preexec,
    edit_files_json,
    ld_cache_of_nuls,
    pathological_version_py,
    python_impostor,
    tree_hash,
    write_zip_bomb,
)

from resolver.fixture.model import parse_fixture_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

Arg = str | bytes | os.PathLike[str]

# How each entry point is run on a sandbox: all of them exit 0 on `build_sandbox`'s tree.
ENTRY_ARGS: dict[str, Callable[[Sandbox], list[Arg]]] = {
    "diagnose-live": lambda s: ["diagnose", "--site-packages", s.site],
    "diagnose-root": lambda s: ["diagnose", "--root", s.root, "--site-packages", s.site],
    "diagnose-wheel": lambda s: ["diagnose", "--wheel", s.wheel, "--root", s.root],
    "diagnose-fixture": lambda s: ["diagnose", "--fixture", s.system_fixture,
                                   "--torch-fixture", s.torch_fixture],
    "record-root": lambda s: ["record", "--root", s.root, "--site-packages", s.site,
                              "--out", s.out],
    "record-site": lambda s: ["record", "--site-only", "--site-packages", s.site,
                              "--site-at", SITE_AT, "--out", s.out],
    "check-fixture": lambda s: ["check", "--fixture", s.system_fixture, "--torch-fixture",
                                s.torch_fixture, "--junit", s.junit],
    "check-wheel": lambda s: ["check", "--fixture", s.system_fixture, "--wheel", s.wheel,
                              "--junit", s.junit],
    "check-site": lambda s: ["check", "--fixture", s.system_fixture, "--site-packages", s.site,
                             "--junit", s.junit],
}
FIFO_TIMEOUT = 20  # a normal run takes under a second; a FIFO opened blocking never returns
BIG = 1.5  # GiB of address space for kind 2: a normal run needs under 0.5, the inputs 2 and 3


@dataclass(frozen=True, slots=True)
class Case:
    """One (entry point, input shape) of a kind: `body` builds the input, runs and asserts."""

    entry: str
    shape: str
    body: Callable[[Sandbox], None]
    needs: str = "libdep.so.1"  # the soname libtorch needs besides libc10
    provides: bool = True  # False: nothing provides `needs` (the baseline exits 1)
    caches: tuple[str, ...] = ()  # the caches the case goes through, for `COVERAGE`

    def param(self) -> object:
        return pytest.param(self, id=f"{self.entry}:{self.shape}")


def sandbox_for(case: Case, top: Path) -> Sandbox:
    return build_sandbox(top, needs=case.needs, provides=case.provides)


@contextlib.contextmanager
def untouched(sandbox: Sandbox, *allowed: Path) -> Iterator[None]:
    """Nothing in the sandbox changes but the caches, --out, --junit and `allowed`."""
    skip = [sandbox.cache, sandbox.top / "reference-cache", sandbox.out, sandbox.junit, *allowed]
    before = tree_hash(sandbox.top, skip=skip)
    yield
    assert tree_hash(sandbox.top, skip=skip) == before, "a file changed outside the output"


def run_in(sandbox: Sandbox, args: Sequence[Arg], *, allowed: Sequence[Path] = (),
           env: dict[str, str] | None = None, cwd: Path | None = None,
           stdout: IO[Any] | None = None, mem_gib: float = 3, timeout: float = 60,
           preexec: Callable[[], None] | None = None) -> Run:
    """`Sandbox.run`, asserting that nothing but the outputs (and `allowed`) changed."""
    with untouched(sandbox, *allowed):
        return sandbox.run(*args, env=env, cwd=cwd, stdout=stdout, mem_gib=mem_gib,
                           timeout=timeout, preexec=preexec)


def expect_error(sandbox: Sandbox, args: Sequence[Arg], *names: str | Path,
                 what: str | None = None, timeout: float = FIFO_TIMEOUT,
                 mem_gib: float = 3, preexec: Callable[[], None] | None = None) -> str:
    """The run exits 2 with one line naming `names`; a check leaves no report."""
    run = run_in(sandbox, args, timeout=timeout, mem_gib=mem_gib, preexec=preexec)
    line = assert_one_line_error(run, *names, what=what)
    if args[0] == "check":
        assert not sandbox.junit.exists(), "a check that failed left a report"
    return line


def reference_run(sandbox: Sandbox, args: Sequence[Arg]) -> Run:
    """The same run with a fresh, usable cache folder: what every cache problem must give."""
    env = cli_env(sandbox.top, XDG_CACHE_HOME=str(sandbox.top / "reference-cache"))
    return sandbox.run(*args, env=env)


def expect_same_answer(sandbox: Sandbox, entry: str, *, env: dict[str, str] | None = None,
                       timeout: float = FIFO_TIMEOUT, mem_gib: float = 3,
                       preexec: Callable[[], None] | None = None) -> None:
    """The entry point answers as it does with a usable cache (record: a readable fixture)."""
    args = ENTRY_ARGS[entry](sandbox)
    run = run_in(sandbox, args, env=env, timeout=timeout, mem_gib=mem_gib, preexec=preexec)
    assert_normal_run(run, (0,))
    if entry.startswith("record"):
        parse_fixture_dir(sandbox.out)
        return
    reference = reference_run(sandbox, args)
    assert run.stdout == reference.stdout, run.describe()


def expect_normal(sandbox: Sandbox, args: Sequence[Arg], codes: Sequence[int], *,
                  timeout: float = 60, mem_gib: float = 3,
                  preexec: Callable[[], None] | None = None) -> Run:
    """A run that answers (exit in `codes`), no error line, nothing changed but outputs."""
    run = run_in(sandbox, args, timeout=timeout, mem_gib=mem_gib, preexec=preexec)
    assert_normal_run(run, codes)
    return run


@functools.cache
def _dac_preexec() -> Callable[[], None] | None:
    return drop_dac_preexec()


def dac_or_skip() -> Callable[[], None]:
    """A preexec under which permission bits bite (see `drop_dac_preexec`), else skip."""
    drop = _dac_preexec()
    if drop is None:
        pytest.skip("root here cannot drop CAP_DAC_OVERRIDE: mode bits do not bite")
    return drop


def limit_file_size() -> None:
    """Files the run writes stop at 64 bytes: write(2) fails with EFBIG (Python ignores
    SIGXFSZ), after a partial write."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def dev_zero(path: Path) -> Path:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")
    return path


MAKERS: dict[str, Callable[[Path], Path]] = {"fifo": fifo, "dev-zero": dev_zero}


@pytest.mark.parametrize("entry", sorted(ENTRY_ARGS))
def test_baseline_of_every_entry_point_runs_clean(entry: str, tmp_path: Path) -> None:
    """The valid inputs every case starts from: exit 0 (1 when a soname is found nowhere).

    Pins the setup, not the issue: a hostile case fails for its input, not for its sandbox.
    """
    for provides, code in ((True, 0), (False, 0 if entry.startswith("record") else 1)):
        sandbox = build_sandbox(tmp_path / str(provides), provides=provides)
        run = run_in(sandbox, ENTRY_ARGS[entry](sandbox), timeout=30)
        assert_normal_run(run, (code,))
        if entry.startswith("record"):
            assert parse_fixture_dir(sandbox.out).manifest.name == "out"
        if entry.startswith("check"):
            suite = ET.parse(sandbox.junit).getroot()  # noqa: S314 - our own report
            assert suite.get("failures") == str(code)
        if entry.startswith("diagnose") and not provides:
            assert "libdep.so.1" in run.stdout


# Kind 1: files of the wrong type where a regular file is read (or written).


def _fixture_file(entry: str, which: str, name: str, maker: str) -> Case:
    """A fixture's manifest.toml or files.json is a FIFO (never opened blocking), or a link
    to /dev/zero (never read to the end)."""
    def body(sandbox: Sandbox) -> None:
        folder = sandbox.system_fixture if which == "system" else sandbox.torch_fixture
        bad = MAKERS[maker](folder / name)
        expect_error(sandbox, ENTRY_ARGS[entry](sandbox), bad,
                     what="FIFO" if maker == "fifo" else None)
    return Case(entry, f"{which}-{name}-{maker}", body)


def _composed_from(entry: str, maker: str) -> Case:
    def body(sandbox: Sandbox) -> None:
        bad = MAKERS[maker](sandbox.top / "composed.json")
        expect_error(sandbox, [*ENTRY_ARGS[entry](sandbox), "--composed-from", bad], bad,
                     what="FIFO" if maker == "fifo" else None)
        assert not (sandbox.out / "manifest.toml").exists()
    return Case(entry, f"composed-from-{maker}", body)


def _wheel_not_a_file(entry: str, shape: str) -> Case:
    """--wheel says what the path is: "a FIFO", "a directory", not "no such file"."""
    def body(sandbox: Sandbox) -> None:
        sandbox.wheel.unlink()
        what = None
        if shape == "fifo":
            os.mkfifo(sandbox.wheel)
            what = "a FIFO"
        elif shape == "directory":
            sandbox.wheel.mkdir()
            what = "a directory"
        else:
            sandbox.wheel.symlink_to("/dev/zero")
        expect_error(sandbox, ENTRY_ARGS[entry](sandbox), sandbox.wheel, what=what)
    return Case(entry, f"wheel-{shape}", body)


def _junit_fifo(entry: str) -> Case:
    def body(sandbox: Sandbox) -> None:
        fifo(sandbox.junit)
        run = run_in(sandbox, ENTRY_ARGS[entry](sandbox), timeout=FIFO_TIMEOUT)
        assert_one_line_error(run, sandbox.junit, what="FIFO")
        assert stat.S_ISFIFO(os.lstat(sandbox.junit).st_mode)
    return Case(entry, "junit-fifo", body)


def _facts_cache(entry: str, maker: str) -> Case:
    """The facts cache is never trusted and never fatal: a FIFO or /dev/zero there is a miss."""
    def body(sandbox: Sandbox) -> None:
        sandbox.facts_cache.parent.mkdir(parents=True)
        MAKERS[maker](sandbox.facts_cache)
        expect_same_answer(sandbox, entry)
    return Case(entry, f"facts-cache-{maker}", body, caches=("facts-cache",))


def keep_result(sandbox: Sandbox, args: Sequence[Arg]) -> tuple[Path, Run]:
    """Run once so that the result cache keeps the answer; its entry and the run.

    A result is not kept when what it read changed within 100 ms of the run's start
    (resolver/cli/result_cache.py), so the freshly built tree is left to age first.
    """
    time.sleep(0.25)
    first = sandbox.run(*args)
    assert_normal_run(first, (0,))
    kept = sorted((sandbox.cache / "jetson-resolve" / "results").glob("*.json"))
    assert len(kept) == 1, f"no result kept: {kept}"
    return kept[0], first


def _result_cache(entry: str, shape: str) -> Case:
    """A kept result that is a FIFO, /dev/zero or 100,000-deep JSON is a miss, not a hang."""
    def body(sandbox: Sandbox) -> None:
        args = ENTRY_ARGS[entry](sandbox)
        entry_file, first = keep_result(sandbox, args)
        if shape == "deep-json":
            entry_file.write_text(deep_json_array())
        else:
            MAKERS[shape](entry_file)
        again = run_in(sandbox, args, timeout=FIFO_TIMEOUT, mem_gib=BIG)
        assert_normal_run(again, (0,))
        assert again.stdout == first.stdout
    return Case(entry, f"result-cache-{shape}", body, caches=("result-cache",))


KIND_1 = [
    *(_fixture_file(entry, which, name, maker)
      for entry in ("diagnose-fixture", "check-fixture")
      for which in ("system", "torch")
      for name, maker in (("manifest.toml", "fifo"), ("files.json", "dev-zero"))),
    _fixture_file("diagnose-fixture", "system", "files.json", "fifo"),
    _fixture_file("diagnose-fixture", "torch", "manifest.toml", "dev-zero"),
    *(_composed_from(entry, maker) for entry in ("record-root", "record-site")
      for maker in ("fifo", "dev-zero")),
    *(_wheel_not_a_file(entry, shape) for entry in ("diagnose-wheel", "check-wheel")
      for shape in ("fifo", "directory", "dev-zero")),
    _junit_fifo("check-fixture"),
    _junit_fifo("check-site"),
    *(_facts_cache(entry, maker) for entry in (
        "diagnose-live", "diagnose-root", "diagnose-wheel", "diagnose-fixture", "record-root",
        "record-site", "check-fixture") for maker in ("fifo", "dev-zero")),
    *(_result_cache(entry, shape) for entry in ("diagnose-root", "diagnose-live")
      for shape in ("fifo", "dev-zero")),
]


@pytest.mark.parametrize("case", [c.param() for c in KIND_1])
def test_kind1_a_non_regular_file_is_named_never_waited_on(case: Case, tmp_path: Path) -> None:
    """A FIFO, a device or a directory where a file belongs: one line (or, for a cache, a
    miss), within seconds. A FIFO opened without O_NONBLOCK waits for a writer forever."""
    case.body(sandbox_for(case, tmp_path))


# Kind 2: small inputs that ask for unbounded work, under 1.5 GiB of address space.


def _zip_bomb(entry: str) -> Case:
    """A 2 MB wheel whose libc10.so inflates to 2 GiB: refused, or read without holding it."""
    def body(sandbox: Sandbox) -> None:
        torch = sandbox.site / "torch"
        others = {p.relative_to(sandbox.site).as_posix(): p.read_bytes()
                  for p in sorted(torch.rglob("*")) if p.is_file() and p.name != "libc10.so"}
        write_zip_bomb(sandbox.wheel, member="torch/lib/libc10.so", inflated=2 * GIB,
                       others=others)
        assert sandbox.wheel.stat().st_size < 3 << 20
        run = run_in(sandbox, ENTRY_ARGS[entry](sandbox), mem_gib=BIG)
        if run.code == 2:
            assert_one_line_error(run, sandbox.wheel)
        else:  # 2 GiB of zeros is no ELF: libc10.so cannot load
            assert_normal_run(run, (1,))
            assert "libc10.so" in run.stdout
    return Case(entry, "zip-bomb", body)


def _ld_cache_nuls(entry: str) -> Case:
    """A valid header counting 2 Mi entries, then 48 MiB of NULs: glibc uses it (nothing
    matches) and goes on; the libraries are found through torch's RPATH."""
    def body(sandbox: Sandbox) -> None:
        cache = sandbox.root / "etc" / "ld.so.cache"
        cache.write_bytes(ld_cache_of_nuls())
        run = run_in(sandbox, ENTRY_ARGS[entry](sandbox), mem_gib=BIG)
        if entry == "record-root" and run.code == 2:  # too many entries to record: say which
            assert_one_line_error(run, cache)
        else:
            assert_normal_run(run, (0,))
    return Case(entry, "ld-so-cache-48MiB-nuls", body)


MANY_NEEDED = tuple(f"libn{i:05d}.so.1" for i in range(65_536))
LONG_NEEDED = ("lib" + "x" * 3994 + ".so.1",)  # 4,000 bytes: over NAME_MAX, open() fails


def _needed(entry: str, shape: str) -> Case:
    """libc10.so needs 65,536 libraries, or one with a 4,000-byte name: none loads."""
    names = MANY_NEEDED if shape == "65536-needed" else LONG_NEEDED

    def body(sandbox: Sandbox) -> None:
        synth_lib(sandbox.lib, "libc10.so", soname="libc10.so", needed=names)
        sandbox.rezip()

        def change(entries: dict[str, Any]) -> None:
            entries[f"{SITE_AT}/torch/lib/libc10.so"]["facts"]["needed"] = list(names)

        edit_files_json(sandbox.torch_fixture, change)
        codes = (0,) if entry.startswith("record") else (1,)
        run = expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), codes, mem_gib=BIG)
        # glibc's answer: the first DT_NEEDED cannot be opened (not "invalid ELF").
        if entry.startswith("diagnose"):
            assert names[0][:40] in run.stdout, run.describe()
        elif entry.startswith("check"):
            assert names[0][:40] in sandbox.junit.read_text("utf-8"), run.describe()
    return Case(entry, shape, body)


def _sparse_os_release(entry: str) -> Case:
    """A 3 GiB sparse /etc/os-release: glibc never reads it; its first line is still read."""
    def body(sandbox: Sandbox) -> None:
        os.truncate(sandbox.root / "etc" / "os-release", 3 * GIB)
        expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), (0,), mem_gib=BIG)
    return Case(entry, "sparse-3GiB-os-release", body)


def _version_py(entry: str) -> Case:
    """A 600 KB torch/version.py of `cuda:` lines, quadratic for a backtracking regex."""
    def body(sandbox: Sandbox) -> None:
        text = pathological_version_py()
        (sandbox.site / "torch" / "version.py").write_text(text)
        sandbox.rezip()

        def change(entries: dict[str, Any]) -> None:
            entries[f"{SITE_AT}/torch/version.py"] = {"kind": "text", "text": text}

        edit_files_json(sandbox.torch_fixture, change)
        expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), (0, 1), mem_gib=BIG, timeout=30)
    return Case(entry, "600KB-version-py", body)


def _deep_fixture_file(entry: str, which: str, name: str) -> Case:
    """files.json a 100,000-deep JSON array, manifest.toml a 100,000-deep TOML array: the
    parsers recurse (RecursionError is no ValueError)."""
    def body(sandbox: Sandbox) -> None:
        folder = sandbox.system_fixture if which == "system" else sandbox.torch_fixture
        text = deep_json_array() if name == "files.json" else deep_toml_array()
        (folder / name).write_text(text)
        expect_error(sandbox, ENTRY_ARGS[entry](sandbox), folder / name, mem_gib=BIG,
                     timeout=60)
    return Case(entry, f"{which}-{name}-100000-deep", body)


def _deep_facts_cache(entry: str) -> Case:
    """A facts cache whose digest matches a 100,000-deep JSON array: a miss, not a crash."""
    def body(sandbox: Sandbox) -> None:
        warm = sandbox.run(*ENTRY_ARGS[entry](sandbox))
        assert_normal_run(warm, (0,))
        shutil.rmtree(sandbox.out, ignore_errors=True)
        sandbox.junit.unlink(missing_ok=True)
        header = sandbox.facts_cache.read_bytes().partition(b"\n")[0]
        payload = deep_json_array().encode()
        if b"sha256=" in header:
            import hashlib  # noqa: PLC0415

            header = header.rpartition(b"sha256=")[0] + b"sha256=" + \
                hashlib.sha256(payload).hexdigest().encode()
        sandbox.facts_cache.write_bytes(header + b"\n" + payload)
        expect_same_answer(sandbox, entry, timeout=60, mem_gib=BIG)
    return Case(entry, "facts-cache-100000-deep", body, caches=("facts-cache",))


INIT_SHAPES = {
    "parens": "(" * 100_000,
    "unary-chain": "cuda_libs = [" + "-" * 100_000 + "1]\n",
    "nested-list": "cuda_libs = " + "[" * 100_000 + "]" * 100_000 + "\n",
}


def _torch_init(entry: str, shape: str) -> Case:
    """A torch/__init__.py that no parser finishes: the preload list falls back, record goes
    on (ast.parse raises MemoryError for a long unary chain, not SyntaxError)."""
    def body(sandbox: Sandbox) -> None:
        (sandbox.site / "torch" / "__init__.py").write_text(INIT_SHAPES[shape])
        sandbox.rezip()
        expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), (0,), mem_gib=BIG)
    return Case(entry, f"torch-init-{shape}", body)


KIND_2 = [
    _zip_bomb("diagnose-wheel"),
    _zip_bomb("check-wheel"),
    *(_ld_cache_nuls(entry) for entry in ("diagnose-root", "diagnose-wheel", "record-root")),
    *(_needed(entry, shape) for shape in ("65536-needed", "4000-byte-needed") for entry in (
        "diagnose-live", "diagnose-root", "diagnose-wheel", "diagnose-fixture", "record-root",
        "record-site", "check-site")),
    *(_sparse_os_release(entry) for entry in ("diagnose-root", "diagnose-wheel", "record-root")),
    *(_version_py(entry) for entry in ("diagnose-live", "diagnose-root", "diagnose-wheel",
                                       "diagnose-fixture", "record-site", "check-site")),
    *(_deep_fixture_file(entry, which, name) for entry in ("diagnose-fixture", "check-fixture")
      for which, name in (("system", "files.json"), ("torch", "files.json"),
                          ("system", "manifest.toml"), ("torch", "manifest.toml"))),
    *(_deep_facts_cache(entry) for entry in ("diagnose-root", "record-root", "check-fixture")),
    *(_result_cache(entry, "deep-json") for entry in ("diagnose-root", "diagnose-live")),
    *(_torch_init(entry, shape) for shape in INIT_SHAPES
      for entry in ("record-site", "record-root", "diagnose-root", "diagnose-wheel")),
]


@pytest.mark.parametrize("case", [c.param() for c in KIND_2])
def test_kind2_small_input_costs_bounded_time_and_memory(case: Case, tmp_path: Path) -> None:
    """Each input is a few MB (or sparse) and asks for GBs or quadratic time: the run ends
    within 60 s under 1.5 GiB of address space, with an answer or one line."""
    case.body(sandbox_for(case, tmp_path))


# Kind 3: text that is not text. Names on Linux are bytes; what is not UTF-8 reaches Python as
# lone surrogates (PEP 383) and cannot be written to a UTF-8 stream or an XML report as is.

UNDECODABLE = "lib\udcffdep.so.1"  # b"lib\xffdep.so.1"
CONTROL = "lib\x1b[31mdep\n\x07.so.1"  # a terminal escape, a line break, a bell


def needs_in_torch(sandbox: Sandbox, name: str) -> None:
    """libtorch needs libc10.so and `name`, in the site, the wheel and the torch fixture."""
    synth_lib(sandbox.lib, "libtorch.so", soname="libtorch.so", needed=["libc10.so", name],
              rpath="$ORIGIN")
    sandbox.rezip()

    def change(entries: dict[str, Any]) -> None:
        entries[f"{SITE_AT}/torch/lib/libtorch.so"]["facts"]["needed"] = ["libc10.so", name]

    edit_files_json(sandbox.torch_fixture, change)


def library_entry(sandbox: Sandbox, soname: str) -> dict[str, Any]:
    """A files.json entry of a library with `soname` (libc10's facts, renamed)."""
    entries = json.loads((sandbox.torch_fixture / "files.json").read_text("utf-8"))["entries"]
    facts = dict(entries[f"{SITE_AT}/torch/lib/libc10.so"]["facts"])
    facts["soname"] = soname
    return {"kind": "elf", "facts": facts}


def assert_output_usable(sandbox: Sandbox, entry: str, run: Run, fragment: str) -> None:
    """What a run wrote is usable: JSON that parses as UTF-8, a JUnit report XML parses, a
    fixture diagnose reads; `fragment` (an ASCII part of the hostile name) is in it."""
    if "--json" in run.args:
        document = json.loads(run.stdout_bytes.decode("utf-8"))
        assert fragment in json.dumps(document, ensure_ascii=False), run.describe()
    elif entry.startswith("check"):
        suite = ET.parse(sandbox.junit).getroot()  # noqa: S314 - the report under test
        assert fragment in "".join(suite.itertext()), run.describe()
    elif entry.startswith("record"):
        parse_fixture_dir(sandbox.out)
    else:
        assert fragment in run.stdout, run.describe()


def _needed_text(entry: str, shape: str, *, json_output: bool = False) -> Case:
    """libtorch needs a name holding an undecodable byte, or control characters and a line
    break: a finding (exit 1) shown on one line, valid JSON, a JUnit report that parses."""
    name = UNDECODABLE if shape == "undecodable" else CONTROL

    def body(sandbox: Sandbox) -> None:
        needs_in_torch(sandbox, name)
        args = [*ENTRY_ARGS[entry](sandbox), *(["--json"] if json_output else [])]
        codes = (0,) if entry.startswith("record") else (1,)
        run = expect_normal(sandbox, args, codes)
        assert_output_usable(sandbox, entry, run, "dep")
        if entry.startswith("diagnose") and not json_output:
            assert "\x1b" not in run.stdout and "\x07" not in run.stdout, run.describe()
            assert not any(line.startswith(".so.1") for line in run.stdout.splitlines())
        if entry == "record-site":  # the recorded name reads back and gives the same finding
            again = expect_normal(sandbox, ["diagnose", "--fixture", sandbox.system_fixture,
                                            "--torch-fixture", sandbox.out], (1,))
            assert "dep" in again.stdout
    suffix = "-json" if json_output else ""
    return Case(entry, f"needed-{shape}{suffix}", body, provides=False)


def _os_release(entry: str) -> Case:
    """An /etc/os-release with bytes that are not UTF-8: the platform line shows them escaped."""
    def body(sandbox: Sandbox) -> None:
        (sandbox.root / "etc" / "os-release").write_bytes(b'ID=\xff\nVERSION_ID="1\xfe"\n')

        def change(entries: dict[str, Any]) -> None:
            entries["/etc/os-release"]["text"] = 'ID=\udcff\nVERSION_ID="1\udcfe"\n'

        edit_files_json(sandbox.system_fixture, change)
        run = expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), (0,))
        assert_output_usable(sandbox, entry, run, "x86_64" if entry.startswith("diag") else "")
    return Case(entry, "os-release-undecodable", body)


def _odd_folder(entry: str, shape: str, *, json_output: bool = False) -> Case:
    """libdep.so.1 lies only in /opt/<0xff>/lib (dir), or /usr/lib64/libdep.so.1 is a dangling
    link to lib<0xff>.so (symlink): found elsewhere or a broken link, shown escaped. record
    keeps the names (ld.so.conf lists the folder) and the fixture gives back the answer."""
    def body(sandbox: Sandbox) -> None:
        if shape == "dir":
            folder = os.fsencode(sandbox.root) + b"/opt/\xff/lib"
            os.makedirs(folder)
            synth_lib(Path(os.fsdecode(folder)), "libdep.so.1", soname="libdep.so.1")
            (sandbox.root / "etc" / "ld.so.conf").write_bytes(b"/opt/\xff/lib\n"
                                                              if entry == "record-root" else b"")
        else:
            (sandbox.root / "usr" / "lib64").mkdir(parents=True)
            os.symlink(b"lib\xff.so", os.fsencode(sandbox.root / "usr/lib64/libdep.so.1"))

        def change(entries: dict[str, Any]) -> None:
            if shape == "dir":
                entries.update({"/opt": {"kind": "dir"}, "/opt/\udcff": {"kind": "dir"},
                                "/opt/\udcff/lib": {"kind": "dir"},
                                "/opt/\udcff/lib/libdep.so.1": library_entry(sandbox,
                                                                             "libdep.so.1")})
            else:
                entries.update({"/usr/lib64": {"kind": "dir"}, "/usr/lib64/libdep.so.1":
                                {"kind": "symlink", "target": "lib\udcff.so"}})

        edit_files_json(sandbox.system_fixture, change)
        args = [*ENTRY_ARGS[entry](sandbox), *(["--json"] if json_output else [])]
        if entry.startswith("diagnose"):
            args.append("-vv")
        if entry == "record-root":
            expect_normal(sandbox, args, (0,))
            code = 0 if shape == "dir" else 1
            again = expect_normal(sandbox, ["diagnose", "--fixture", sandbox.out,
                                            "--torch-fixture", sandbox.torch_fixture], (code,))
            assert "Traceback" not in again.stderr
            return
        run = expect_normal(sandbox, args, (1,))
        assert_output_usable(sandbox, entry, run, "lib")
        if entry.startswith("diagnose") and not json_output:
            assert "/opt/" in run.stdout or "/usr/lib64/" in run.stdout, run.describe()
    suffix = "-json" if json_output else ""
    return Case(entry, f"{shape}-undecodable{suffix}", body, provides=False)


def _raw_byte(entry: str, name: str) -> Case:
    """A fixture file that is not UTF-8 at all (a raw 0xff inside a string): not JSON/TOML."""
    def body(sandbox: Sandbox) -> None:
        path = sandbox.system_fixture / name
        data = path.read_bytes()
        marker = b"ID=testos" if name == "files.json" else b'description = "'
        assert marker in data
        path.write_bytes(data.replace(marker, marker + b"\xff", 1))
        expect_error(sandbox, ENTRY_ARGS[entry](sandbox), path)
    return Case(entry, f"{name}-raw-0xff", body)


def _description_bytes(entry: str) -> Case:
    """`record --description` given bytes that are not UTF-8 (argv is bytes): either a
    fixture whose manifest reads back, or one line and no manifest at all."""
    def body(sandbox: Sandbox) -> None:
        run = run_in(sandbox, [*ENTRY_ARGS[entry](sandbox), b"--description", b"caf\xff"])
        if run.code == 2:
            assert_one_line_error(run, "--description")
            assert not (sandbox.out / "manifest.toml").exists()
        else:
            assert_normal_run(run, (0,))
            (sandbox.out / "manifest.toml").read_bytes().decode("utf-8")
            parse_fixture_dir(sandbox.out)
    return Case(entry, "description-undecodable", body)


KIND_3 = [
    *(_needed_text(entry, "undecodable") for entry in (
        "diagnose-live", "diagnose-root", "diagnose-wheel", "diagnose-fixture", "record-root",
        "record-site", "check-fixture", "check-wheel", "check-site")),
    _needed_text("diagnose-root", "undecodable", json_output=True),
    _needed_text("diagnose-fixture", "undecodable", json_output=True),
    *(_needed_text(entry, "control") for entry in (
        "diagnose-root", "diagnose-wheel", "check-fixture", "check-site")),
    *(_os_release(entry) for entry in ("diagnose-root", "diagnose-wheel", "diagnose-fixture",
                                       "record-root")),
    *(_odd_folder(entry, shape) for shape in ("dir", "symlink")
      for entry in ("diagnose-root", "diagnose-wheel", "diagnose-fixture", "record-root",
                    "check-fixture")),
    _odd_folder("diagnose-root", "dir", json_output=True),
    *(_raw_byte(entry, name) for entry in ("diagnose-fixture", "check-fixture")
      for name in ("files.json", "manifest.toml")),
    *(_description_bytes(entry) for entry in ("record-root", "record-site")),
]


@pytest.mark.parametrize("case", [c.param() for c in KIND_3])
def test_kind3_names_that_are_not_text_are_shown_escaped(case: Case, tmp_path: Path) -> None:
    """Undecodable bytes and control characters in names, targets and text files: the run
    answers (a finding, a note) and its stdout, JSON, JUnit report and fixture stay valid."""
    case.body(sandbox_for(case, tmp_path))


# Kind 4: output that is half-written, invalid, or written where the user did not ask.


def _bad_name(entry: str, name: str) -> Case:
    """--name must be a fixture name (it names the materialised folder): "../evil" is one
    line, and no manifest is left for diagnose to trip over later."""
    def body(sandbox: Sandbox) -> None:
        expect_error(sandbox, [*ENTRY_ARGS[entry](sandbox), "--name", name], name)
        assert not (sandbox.out / "manifest.toml").exists()
    return Case(entry, f"name-{name}", body)


def _spaced_out(entry: str) -> Case:
    """`record --out 'my fixture'` works, and diagnose/check read it by that folder name."""
    def body(sandbox: Sandbox) -> None:
        out = sandbox.top / ("my torch" if entry == "record-site" else "my fixture")
        args = ENTRY_ARGS[entry](sandbox)
        args[args.index(sandbox.out)] = out.name  # relative, from the sandbox's top
        run = run_in(sandbox, args, allowed=[out])
        assert_normal_run(run, (0,))
        follow: list[Arg]
        if entry == "record-site":
            follow = ["diagnose", "--fixture", sandbox.system_fixture, "--torch-fixture",
                      out.name]
        else:
            follow = ["diagnose", "--fixture", out.name, "--torch-fixture",
                      sandbox.torch_fixture]
        expect_normal(sandbox, follow, (0,))
        if entry == "record-root":
            expect_normal(sandbox, ["check", "--fixture", out.name, "--torch-fixture",
                                    sandbox.torch_fixture], (0,))
    return Case(entry, "out-with-space", body)


def _site_at(site_at: str) -> Case:
    """--site-at is where the site lives on the target: absolute and normal, or one line."""
    def body(sandbox: Sandbox) -> None:
        args = ENTRY_ARGS["record-site"](sandbox)
        args[args.index(SITE_AT)] = site_at
        expect_error(sandbox, args, "--site-at")
        assert not (sandbox.out / "manifest.toml").exists()
    return Case("record-site", f"site-at-{site_at}", body)


def _rerecord_bad_description(entry: str) -> Case:
    """Recording again over a good fixture with an unwritable description: the old manifest
    stays (or a new valid one replaces it), never an empty or partial one."""
    def body(sandbox: Sandbox) -> None:
        args = ENTRY_ARGS[entry](sandbox)
        assert_normal_run(sandbox.run(*args), (0,))
        before = (sandbox.out / "manifest.toml").read_bytes()
        run = run_in(sandbox, [*args, b"--description", b"caf\xff\n"])
        parse_fixture_dir(sandbox.out)
        if run.code == 2:
            assert_one_line_error(run, "--description")
            assert (sandbox.out / "manifest.toml").read_bytes() == before
        else:
            assert_normal_run(run, (0,))
    return Case(entry, "rerecord-description-undecodable", body)


def _junit_write_fails(entry: str, shape: str) -> Case:
    """A report that cannot be written is one line naming it and leaves no empty or partial
    report: /dev/full (ENOSPC), a read-only folder (EACCES), a 64-byte file size limit (EFBIG
    after a partial write) over an old report, which must stay as it was."""
    def body(sandbox: Sandbox) -> None:
        args = ENTRY_ARGS[entry](sandbox)
        warm = sandbox.run(*args)  # materialise the fixtures: the limits below hit the report
        assert_normal_run(warm, (0,))
        sandbox.junit.unlink()
        preexec: Callable[[], None] | None = None
        if shape == "dev-full":
            report = Path("/dev/full")
        elif shape == "read-only-dir":
            preexec = dac_or_skip()
            report = sandbox.top / "read-only" / "report.xml"
            report.parent.mkdir(mode=0o555)
        else:
            report = sandbox.junit
            report.write_bytes(b"<testsuite old='1'/>\n")
            preexec = limit_file_size
        args[args.index(sandbox.junit)] = report
        old = report.read_bytes() if shape == "file-size-limit" else None
        run = run_in(sandbox, args, preexec=preexec, timeout=FIFO_TIMEOUT)
        assert_one_line_error(run, report)
        if shape == "read-only-dir":
            assert os.listdir(report.parent) == []
        if old is not None:
            assert report.read_bytes() == old
    return Case(entry, f"junit-{shape}", body)


def _out_holds_symlink(entry: str, name: str) -> Case:
    """--out DIR where DIR/<name> is a symlink to a file elsewhere: that file is not written
    through the link (rename over the link, or one line)."""
    def body(sandbox: Sandbox) -> None:
        precious = sandbox.top / "elsewhere" / name
        precious.parent.mkdir()
        precious.write_bytes(b"# someone else's file\n")
        sandbox.out.mkdir()
        (sandbox.out / name).symlink_to(precious)
        run = run_in(sandbox, ENTRY_ARGS[entry](sandbox))  # `untouched` covers `precious`
        if run.code == 2:
            assert_one_line_error(run, name)
        else:
            assert_normal_run(run, (0,))
            assert not (sandbox.out / name).is_symlink()
            parse_fixture_dir(sandbox.out)
    return Case(entry, f"out-{name}-symlink", body)


def _out_is_a_file(entry: str) -> Case:
    def body(sandbox: Sandbox) -> None:
        out = sandbox.top / "a-file"
        out.write_bytes(b"not a folder\n")
        args = ENTRY_ARGS[entry](sandbox)
        args[args.index(sandbox.out)] = out
        expect_error(sandbox, args, out)
    return Case(entry, "out-is-a-file", body)


def _precious(sandbox: Sandbox) -> Path:
    precious = sandbox.top / "elsewhere" / "someone-elses-file"
    precious.parent.mkdir(exist_ok=True)
    precious.write_bytes(b"# someone else's file\n")
    return precious


def _facts_cache_symlink(entry: str) -> Case:
    """The facts cache a symlink to a file elsewhere: the cache is written beside it and
    renamed over the link; the file it pointed to is unchanged (`untouched`)."""
    def body(sandbox: Sandbox) -> None:
        sandbox.facts_cache.parent.mkdir(parents=True)
        sandbox.facts_cache.symlink_to(_precious(sandbox))
        expect_same_answer(sandbox, entry)
        assert not sandbox.facts_cache.is_symlink() and sandbox.facts_cache.stat().st_size > 0
    return Case(entry, "facts-cache-symlink", body, caches=("facts-cache",))


def _result_cache_symlink(entry: str) -> Case:
    """A kept result replaced by a symlink to a file elsewhere: a miss, and the new result
    replaces the link rather than writing through it."""
    def body(sandbox: Sandbox) -> None:
        args = ENTRY_ARGS[entry](sandbox)
        entry_file, first = keep_result(sandbox, args)
        entry_file.unlink()
        entry_file.symlink_to(_precious(sandbox))
        again = run_in(sandbox, args)
        assert_normal_run(again, (0,))
        assert again.stdout == first.stdout
        assert not entry_file.is_symlink(), "the result was not kept again, or through the link"
    return Case(entry, "result-cache-symlink", body, caches=("result-cache",))


KIND_4 = [
    *(_facts_cache_symlink(entry) for entry in ("diagnose-root", "record-root", "check-fixture")),
    *(_result_cache_symlink(entry) for entry in ("diagnose-root", "diagnose-live")),
    *(_bad_name(entry, name) for entry in ("record-root", "record-site")
      for name in ("../evil", "a/b", ".hidden")),
    *(_spaced_out(entry) for entry in ("record-root", "record-site")),
    *(_site_at(site_at) for site_at in ("usr/lib/python3/dist-packages", "./dist-packages",
                                        "/usr/../etc/x", "/usr//lib/python3")),
    *(_rerecord_bad_description(entry) for entry in ("record-root", "record-site")),
    *(_junit_write_fails(entry, shape) for entry in ("check-fixture", "check-site")
      for shape in ("dev-full", "read-only-dir", "file-size-limit")),
    *(_out_holds_symlink(entry, name) for entry in ("record-root", "record-site")
      for name in ("manifest.toml", "files.json")),
    *(_out_is_a_file(entry) for entry in ("record-root", "record-site")),
]


@pytest.mark.parametrize("case", [c.param() for c in KIND_4])
def test_kind4_output_is_whole_valid_and_where_asked(case: Case, tmp_path: Path) -> None:
    """What record and check write is complete and readable back, or not written at all,
    and nothing outside --out/--junit changes."""
    case.body(sandbox_for(case, tmp_path))


# Kind 5: inputs that are broken in a way that used to give a wrong answer, not an error.


def _big_endian(entry: str, shape: str) -> Case:
    """libc10.so big-endian: EI_DATA flipped on the little-endian file (flipped), or a
    well-formed big-endian library (whole). glibc's open_verify (elf/dl-load.c) refuses a
    byte order that is not the loader's, so it does not load (exit 1)."""
    def body(sandbox: Sandbox) -> None:
        lib = sandbox.lib / "libc10.so"
        if shape == "flipped":
            little = sandbox.top / "libc10-little.so"
            lib.rename(little)
            big_endian_copy(little, lib)
            little.unlink()
        else:
            big_endian_library(sandbox.lib, "libc10.so", soname="libc10.so")
        sandbox.rezip()

        def change(entries: dict[str, Any]) -> None:
            entries[f"{SITE_AT}/torch/lib/libc10.so"]["facts"]["endian"] = "big"

        edit_files_json(sandbox.torch_fixture, change)
        expect_blocked(sandbox, entry, "libc10.so")
    return Case(entry, f"big-endian-{shape}-library", body)


def _no_extension(entry: str) -> Case:
    """A torch folder without _C*.so: `import torch` fails on `from torch._C import *`."""
    def body(sandbox: Sandbox) -> None:
        for extension in (sandbox.site / "torch").glob("_C*.so"):
            extension.unlink()
        sandbox.rezip()

        def change(entries: dict[str, Any]) -> None:
            for path in [p for p in entries if p.startswith(f"{SITE_AT}/torch/_C")]:
                del entries[path]

        edit_files_json(sandbox.torch_fixture, change)
        expect_blocked(sandbox, entry, None)
    return Case(entry, "torch-without-_C", body)


def expect_blocked(sandbox: Sandbox, entry: str, subject: str | None) -> None:
    """The entry point says import torch fails (exit 1), naming `subject` when given; record
    goes on (exit 0) and the fixture it writes gives that answer."""
    run = expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), (0,) if entry.startswith("record")
                        else (1,))
    if entry == "record-site":
        run = expect_normal(sandbox, ["diagnose", "--fixture", sandbox.system_fixture,
                                      "--torch-fixture", sandbox.out], (1,))
    text = sandbox.junit.read_text("utf-8") if entry.startswith("check") else run.stdout
    assert subject is None or subject in text, run.describe()


def materialised(sandbox: Sandbox, name: str) -> Path:
    """The folder a fixture named `name` was materialised into under the cache."""
    found = [p for p in (sandbox.cache / "jetson-resolve" / "fixtures").glob(f"{name}-*")
             if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def _materialised_lib(sandbox: Sandbox) -> Path:
    return materialised(sandbox, "torch") / SITE_AT.lstrip("/") / "torch" / "lib"


def _replace_library(sandbox: Sandbox) -> None:
    synth_lib(_materialised_lib(sandbox), "libc10.so", soname="libc10.so",
              needed=["libnothere.so.1"])


def _change_os_release(sandbox: Sandbox) -> None:
    (materialised(sandbox, "system") / "etc" / "os-release").write_text("ID=elsewhere\n")


def _change_version_py(sandbox: Sandbox) -> None:
    version = materialised(sandbox, "torch") / SITE_AT.lstrip("/") / "torch" / "version.py"
    version.write_text("__version__ = '0.0.1'\ncuda = '13.0'\n")


DAMAGE: dict[str, Callable[[Sandbox], None]] = {
    "library-deleted": lambda s: (_materialised_lib(s) / "libc10.so").unlink(),
    "library-truncated": lambda s: os.truncate(_materialised_lib(s) / "libc10.so", 40),
    "library-replaced": _replace_library,
    "site-removed": lambda s: shutil.rmtree(materialised(s, "torch") / SITE_AT.lstrip("/")),
    "os-release-changed": _change_os_release,
    "version-py-changed": _change_version_py,
}


def _damaged_materialisation(entry: str, damage: str) -> Case:
    """A materialised fixture changed in the cache is not trusted: the next run answers as
    the first did (--no-cache keeps results and facts out of it; check has no such flag)."""
    def body(sandbox: Sandbox) -> None:
        args = [*ENTRY_ARGS[entry](sandbox), *(["--no-cache"] if entry == "diagnose-fixture"
                                               else [])]
        first = sandbox.run(*args)
        assert_normal_run(first, (0,))
        DAMAGE[damage](sandbox)
        again = run_in(sandbox, args)
        assert_normal_run(again, (first.code,))
        assert again.stdout == first.stdout
    return Case(entry, f"materialised-{damage}", body)


def _include_glob(entry: str, pattern: str) -> Case:
    """`include /etc/*/extra.conf`: ldconfig globs the whole pattern (glob(3) in
    elf/ldconfig.c parse_conf_include), and the folder that file lists is searched."""
    def body(sandbox: Sandbox) -> None:
        etc = sandbox.root / "etc"
        (etc / "ld.so.conf").write_text(f"include {pattern}\n")
        (etc / "vendor").mkdir()
        (etc / "vendor" / "extra.conf").write_text("/opt/vendor/lib\n")
        synth_lib(sandbox.root / "opt" / "vendor" / "lib", "libdep.so.1", soname="libdep.so.1")
        run = expect_normal(sandbox, [*ENTRY_ARGS[entry](sandbox), *(
            ["-v"] if entry.startswith("diagnose") else [])], (0,))
        if entry == "record-root":
            expect_normal(sandbox, ["diagnose", "--fixture", sandbox.out, "--torch-fixture",
                                    sandbox.torch_fixture], (0,))
        else:
            assert "libdep.so.1" not in run.stdout or "not found" not in run.stdout
    return Case(entry, f"include-{pattern}", body, provides=False)


KIND_5 = [
    *(_big_endian(entry, "flipped") for entry in ("diagnose-live", "diagnose-root",
                                                  "diagnose-wheel", "diagnose-fixture",
                                                  "record-site", "check-site", "check-wheel")),
    *(_big_endian(entry, "whole") for entry in ("diagnose-live", "diagnose-root",
                                                "diagnose-wheel", "record-site", "check-site")),
    *(_no_extension(entry) for entry in ("diagnose-live", "diagnose-root", "diagnose-wheel",
                                         "diagnose-fixture", "record-site", "check-site",
                                         "check-fixture")),
    *(_damaged_materialisation("diagnose-fixture", damage) for damage in DAMAGE),
    *(_damaged_materialisation("check-fixture", damage)
      for damage in ("library-replaced", "site-removed")),
    *(_include_glob(entry, pattern) for entry in ("diagnose-root", "diagnose-wheel",
                                                  "record-root")
      for pattern in ("/etc/*/extra.conf", "*/extra.conf")),
]


@pytest.mark.parametrize("case", [c.param() for c in KIND_5])
def test_kind5_broken_input_gives_the_loaders_answer(case: Case, tmp_path: Path) -> None:
    """Broken inputs that used to be answered wrongly: a big-endian library, a torch
    without its extension, a damaged cached fixture, an include glob in a folder name."""
    case.body(sandbox_for(case, tmp_path))


# Kind 6: what ld.so passes over must not stop the run. Runs drop CAP_DAC_OVERRIDE (as root)
# so that mode 000 means what it means for a user.


def _locked(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    synth_lib(path, "libunrelated.so.1", soname="libunrelated.so.1")
    path.chmod(0)
    return path


def _unlistable_elsewhere(entry: str) -> Case:
    """An unlistable folder where missing libraries are looked for (/opt, site/nvidia):
    the finding is made from what could be listed."""
    def body(sandbox: Sandbox) -> None:
        preexec = dac_or_skip()
        _locked(sandbox.root / "opt" / "locked")
        _locked(sandbox.site / "nvidia")
        run = expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), (1,), preexec=preexec)
        text = sandbox.junit.read_text("utf-8") if entry.startswith("check") else run.stdout
        assert "libdep.so.1" in text
    return Case(entry, "unlistable-folder-elsewhere", body, provides=False)


def _unreadable_library(entry: str) -> Case:
    """torch/lib/libc10.so mode 000: open(2) fails with EACCES, ld.so tries the next folder
    and fails that load; record notes the file and goes on."""
    def body(sandbox: Sandbox) -> None:
        preexec = dac_or_skip()
        (sandbox.lib / "libc10.so").chmod(0)
        codes = (0, 1) if entry.startswith("record") else (1,)
        run = expect_normal(sandbox, ENTRY_ARGS[entry](sandbox), codes, preexec=preexec)
        text = sandbox.junit.read_text("utf-8") if entry.startswith("check") else run.stdout
        assert "libc10.so" in text
    return Case(entry, "unreadable-library", body)


def _unsearchable_path(entry: str, shape: str) -> Case:
    """An LD_LIBRARY_PATH folder (option or variable) or an ld.so.conf folder of mode 000
    before the folder that holds libdep.so.1: ld.so skips it (EACCES) and finds libdep in the
    next one (exit 0); a record of the root gives that answer back."""
    def body(sandbox: Sandbox) -> None:
        preexec = dac_or_skip()
        live = entry == "diagnose-live"
        top = sandbox.top if live else sandbox.root
        locked = _locked(top / "locked")
        synth_lib(top / "dep", "libdep.so.1", soname="libdep.so.1")
        named = f"{locked}:{top / 'dep'}" if live else "/locked:/dep"
        args = ENTRY_ARGS[entry](sandbox)
        env = None
        if shape == "ld-library-path":
            args += ["--ld-library-path", named]
        elif shape == "LD_LIBRARY_PATH":
            env = {**sandbox.env, "LD_LIBRARY_PATH": named}
        else:
            (sandbox.root / "etc" / "ld.so.conf").write_text(named.replace(":", "\n") + "\n")
        run = run_in(sandbox, args, env=env, preexec=preexec)
        assert_normal_run(run, (0,))
        if entry == "record-root":
            expect_normal(sandbox, ["diagnose", "--fixture", sandbox.out, "--torch-fixture",
                                    sandbox.torch_fixture], (0,))
    return Case(entry, f"unsearchable-{shape}", body, provides=False)


def _passwd_home_cache() -> Path:
    """Where `~/.cache/jetson-resolve` lands when HOME is unset (expanduser asks passwd)."""
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "jetson-resolve"


def _cache_entries(folder: Path) -> set[Path]:
    """What a sandbox's run could leave in the user's cache: its own fixtures (named `system`
    and `torch` after their folders), kept results, the facts cache. Fixtures of other names
    are other processes' (a user's own diagnose while the tests run)."""
    found = {p for p in (folder / "fixtures").glob("*")
             if re.match(r"(system|torch)-[0-9a-f]{16}-", p.name)}
    found |= set((folder / "results").glob("*"))
    return found | {p for p in (folder, folder / "facts.json") if p.exists()}


def _unusable_cache(entry: str, shape: str) -> Case:
    """No usable cache folder: HOME and XDG_CACHE_HOME unset, XDG_CACHE_HOME a file, or a
    read-only one. The run answers as with a usable cache (fixtures materialised elsewhere);
    with HOME unset it does not fall back to the passwd home (the user named no cache)."""
    def body(sandbox: Sandbox) -> None:
        env, preexec = dict(sandbox.env), None
        if shape == "home-unset":
            del env["HOME"], env["XDG_CACHE_HOME"]
        elif shape == "xdg-is-a-file":
            (sandbox.top / "a-file").write_bytes(b"not a folder\n")
            env["XDG_CACHE_HOME"] = str(sandbox.top / "a-file")
        else:
            preexec = dac_or_skip()
            sandbox.cache.chmod(0o555)
        home_cache = _passwd_home_cache()
        before = _cache_entries(home_cache)
        try:
            expect_same_answer(sandbox, entry, env=env, preexec=preexec, timeout=30)
        finally:
            written = _cache_entries(home_cache) - before
            for path in sorted(written, reverse=True):  # this run's only: remove them again
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        assert not written, f"wrote into {home_cache}: {sorted(map(str, written))}"
    return Case(entry, f"cache-{shape}", body, caches=("facts-cache",))


KIND_6 = [
    *(_unlistable_elsewhere(entry) for entry in ("diagnose-live", "diagnose-root",
                                                 "diagnose-wheel", "check-site")),
    *(_unreadable_library(entry) for entry in ("diagnose-live", "diagnose-root",
                                               "record-root", "record-site", "check-site")),
    *(_unsearchable_path(entry, "ld-library-path") for entry in ("diagnose-live",
                                                                 "diagnose-root",
                                                                 "diagnose-wheel")),
    # The shell's LD_LIBRARY_PATH is the live root's only (another root's is --ld-library-path).
    _unsearchable_path("diagnose-live", "LD_LIBRARY_PATH"),
    *(_unsearchable_path(entry, "ld-so-conf") for entry in ("diagnose-root", "diagnose-wheel",
                                                            "record-root")),
    *(_unusable_cache(entry, shape) for shape in ("home-unset", "xdg-is-a-file", "read-only")
      for entry in ("diagnose-live", "diagnose-root", "diagnose-wheel", "diagnose-fixture",
                    "record-root", "check-fixture")),
]


@pytest.mark.parametrize("case", [c.param() for c in KIND_6])
def test_kind6_what_the_loader_passes_over_does_not_stop_the_run(case: Case,
                                                                  tmp_path: Path) -> None:
    """Unlistable, unreadable, unsearchable folders and files, and an unusable cache folder:
    exit 0/1 with the loader's answer, no error line."""
    case.body(sandbox_for(case, tmp_path))


# Kind 7: errors raised outside the commands' own handling.


def _deleted_cwd(entry: str, *, relative_out: bool = False) -> Case:
    """The working folder was deleted before the run: absolute paths still work (or one
    line); a relative --out cannot be placed (one line)."""
    def body(sandbox: Sandbox) -> None:
        gone = sandbox.top / "gone"
        gone.mkdir()

        def preexec() -> None:
            os.chdir(gone)
            os.rmdir(gone)

        args = ENTRY_ARGS[entry](sandbox)
        if relative_out:
            args[args.index(sandbox.out)] = "relative-out"
        run = run_in(sandbox, args, cwd=sandbox.top, preexec=preexec, allowed=[gone])
        if relative_out or run.code == 2:
            assert_one_line_error(run)
        else:
            assert_normal_run(run, (0,))
    return Case(entry, "deleted-cwd" + ("-relative-out" if relative_out else ""), body)


def _stdout_full(entry: str, *, json_output: bool = False, replay: bool = False) -> Case:
    """stdout on /dev/full: one line saying the output could not be written (ENOSPC), not a
    traceback from the interpreter's flush at exit."""
    def body(sandbox: Sandbox) -> None:
        args = [*ENTRY_ARGS[entry](sandbox), *(["--json"] if json_output else [])]
        if replay:  # the kept result is written by the replay, before typer is imported
            keep_result(sandbox, args)
        with Path("/dev/full").open("w") as full:
            run = run_in(sandbox, args, stdout=full)
        assert_one_line_error(run, what="No space left on device")
    shape = "stdout-dev-full" + ("-json" if json_output else "") + ("-replay" if replay else "")
    return Case(entry, shape, body, caches=("result-cache",) if replay else ())


def _gpu_arch(entry: str, value: str) -> Case:
    """--gpu-arch of Unicode digits (Arabic-Indic 110 is 110 to str.isdigit and int()): one
    line."""
    def body(sandbox: Sandbox) -> None:
        expect_error(sandbox, [*ENTRY_ARGS[entry](sandbox), "--gpu-arch", value], "--gpu-arch")
        assert not (sandbox.out / "manifest.toml").exists()
    return Case(entry, f"gpu-arch-{value.encode('unicode_escape').decode()}", body)


IMPOSTOR_OUTPUT = {
    "torch-is-a-number": '{"torch": 5, "path": "x"}',
    "a-list": "[1]",
    "a-string": '"torch"',
    "version-not-a-version": json.dumps({
        "torch": "/nowhere/torch/__init__.py", "path": ["/nowhere"], "version": "banana",
        "executable": "/nowhere/python", "maps": []}),
    "strings-for-lists": json.dumps({
        "torch": None, "path": "/usr/lib/python3", "version": "3.11",
        "executable": "/nowhere/python", "maps": "libc.so.6"}),
    "100000-deep": deep_json_array(),
}


def _python_impostor(entry: str, shape: str) -> Case:
    """A --python that answers the probe with well-formed JSON of the wrong shape: one line
    naming it, never a traceback or a run on nonsense."""
    def body(sandbox: Sandbox) -> None:
        python = python_impostor(sandbox.top / "python3", IMPOSTOR_OUTPUT[shape])
        args: list[Arg] = ["diagnose", "--python", python]
        if entry == "diagnose-live+site":
            args += ["--site-packages", sandbox.site]
        expect_error(sandbox, args, python)
    return Case(entry, f"python-{shape}", body)


KIND_7 = [
    *(_deleted_cwd(entry) for entry in ("diagnose-root", "diagnose-live", "diagnose-fixture",
                                        "record-root", "check-fixture")),
    _deleted_cwd("record-root", relative_out=True),
    *(_stdout_full(entry) for entry in ("diagnose-root", "diagnose-fixture", "record-root",
                                        "check-fixture")),
    _stdout_full("diagnose-root", json_output=True),
    _stdout_full("diagnose-root", replay=True),
    *(_gpu_arch(entry, value) for entry in ("diagnose-root", "diagnose-fixture", "record-root")
      for value in ("\u0661\u0661\u0660", "\u00b2", "\U0001d7cf\U0001d7cf\U0001d7ce",
                    "\uff11\uff11\uff10")),
    *(_python_impostor(entry, shape) for entry in ("diagnose-live", "diagnose-live+site")
      for shape in IMPOSTOR_OUTPUT),
]


@pytest.mark.parametrize("case", [c.param() for c in KIND_7])
def test_kind7_errors_outside_the_commands_are_one_line(case: Case, tmp_path: Path) -> None:
    """A deleted working folder, a full stdout, Unicode digits, an impostor interpreter:
    exit 2 with one line (or a normal run), never a traceback."""
    case.body(sandbox_for(case, tmp_path))


def test_an_internal_error_is_exit_70_with_its_traceback_saved(tmp_path: Path) -> None:
    """A bug of ours (here: open_source raising RuntimeError, injected by sitecustomize) is
    exit 70 and one line saying so and where the traceback is; --debug shows it instead."""
    sandbox = build_sandbox(tmp_path / "sandbox")
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import resolver.sources\n"
        "def _broken(*args, **kwargs):\n"
        "    raise RuntimeError('injected by the test')\n"
        "resolver.sources.open_source = _broken\n")
    env = {**sandbox.env, "PYTHONPATH": f"{inject}{os.pathsep}{sandbox.env['PYTHONPATH']}"}
    args = [*ENTRY_ARGS["diagnose-root"](sandbox), "--no-cache"]
    run = sandbox.run(*args, env=env)
    assert run.code == 70, run.describe()
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1, run.describe()
    line = run.stderr.splitlines()[0]
    assert line.startswith("jetson-resolve: error: ") and "bug" in line, line
    saved = [word.strip("();,.") for word in line.split() if word.strip("();,.").startswith("/")]
    assert saved and "RuntimeError: injected by the test" in Path(saved[-1]).read_text(), line
    debug = sandbox.run(*args, "--debug", env=env)
    assert debug.code != 0 and "RuntimeError: injected by the test" in debug.stderr


KINDS = {1: KIND_1, 2: KIND_2, 3: KIND_3, 4: KIND_4, 5: KIND_5, 6: KIND_6, 7: KIND_7}
# Which entry points (and caches) each kind reaches: "kind N: M entry points".
COVERAGE: dict[int, tuple[str, ...]] = {
    kind: tuple(sorted({c.entry for c in cases} | {x for c in cases for x in c.caches}))
    for kind, cases in KINDS.items()}


def test_every_kind_reaches_several_entry_points() -> None:
    """The table the closing note quotes: each kind goes through at least three entry points,
    and every case names a known one."""
    known = {*ENTRY_ARGS, "diagnose-live+site", "facts-cache", "result-cache"}
    for kind, entries in COVERAGE.items():
        assert set(entries) <= known, (kind, set(entries) - known)
        assert len(entries) >= 3, (kind, entries)
    ids = [f"{c.entry}:{c.shape}" for cases in KINDS.values() for c in cases]
    assert len(ids) == len(set(ids))
