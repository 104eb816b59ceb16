"""Time `jetson-resolve diagnose` against what users run today (ldd, lddtree, auditwheel).

A report, not a test: exits 0 even when a target is missed, 1 only when a command fails in a way
it should not (diagnose exits 1 for findings that block import; that is expected for the bare
wheel). Run from the repository root: ``python bench/bench_diagnose.py --repeat 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import _data  # noqa: E402  (the test-data helpers, so inputs are the tests' own paths)

SO_GLOB = "torch/lib/*.so nvidia/*/lib/*.so*"
LDD_CMD = f'ldd {SO_GLOB} | grep "not found"'  # the reference command, verbatim
LDDTREE_CMD = f"lddtree {SO_GLOB}"
NOT_FOUND = re.compile(r"^\s*(\S+) => not found$", re.MULTILINE)
LDDTREE_NONE = re.compile(r"^\s*(\S+) => None$", re.MULTILINE)


class BenchError(RuntimeError):
    """A command exited with a code it should not have."""


@dataclass
class Bench:
    group: str  # "start-up", "site" or "wheel"; ratios are against the group's baseline
    tool: str
    input: str
    argv: list[str]
    ok: frozenset[int] = frozenset({0})
    cwd: Path | None = None
    env: dict[str, str] | None = None
    target: float | None = None  # seconds, or with target_is_ratio a ratio to the baseline
    target_is_ratio: bool = False
    baseline: bool = False
    runs: list[float] = field(default_factory=list)
    stdout: str = ""

    def run(self) -> float:
        start = time.perf_counter()
        proc = subprocess.run(
            self.argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        if proc.returncode not in self.ok:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BenchError(f"{self.tool} on {self.input}: exit {proc.returncode}\n{tail}")
        self.stdout = proc.stdout
        return elapsed


def resolve_script(name: str) -> str:
    """The console script next to this interpreter (no pyenv shim in the timing), else PATH's."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else (shutil.which(name) or name)


def build_benches(only: str | None, scratch: Path, notes: list[str]) -> list[Bench]:
    data_dir = _data.data_dir_from_env(os.environ)
    jr = resolve_script("jetson-resolve")
    env_nocache = {**os.environ, "XDG_CACHE_HOME": str(scratch / "unused-cache")}
    env_cache = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache")}
    benches = [
        Bench("start-up", "jetson-resolve --help", "-", [jr, "--help"], baseline=True),
        Bench("start-up", "python -m resolver --help", "-", [sys.executable, "-m", "resolver",
                                                             "--help"], cwd=REPO),
        Bench("start-up", "python -c pass", "-", [sys.executable, "-c", "pass"]),
    ]
    on_path = shutil.which("jetson-resolve")
    if on_path and Path(on_path).resolve() != Path(jr).resolve():
        benches.append(Bench("start-up", "PATH jetson-resolve --help", "-", [on_path, "--help"]))
        notes.append(f"PATH's jetson-resolve is {on_path} (a wrapper); timings use {jr}")
    notes.append(f"jetson-resolve runs as: {jr}")
    if only in (None, "site"):
        site = _data.ensure_torch_x86_full(data_dir)
        diag = [jr, "diagnose", "--site-packages", str(site), "--json"]
        # The kept result removed before each run: what a re-diagnose costs after a change.
        # Its own cache folder, so the other rows keep theirs.
        env_recompute = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache-recompute")}
        results = scratch / "cache-recompute" / "jetson-resolve" / "results"
        recompute = f"rm -rf {shlex.quote(str(results))} && {shlex.join(diag)}"
        benches += [
            Bench("site", "jetson-resolve diagnose --no-cache", "site", [*diag, "--no-cache"],
                  env=env_nocache, target=0.3),
            Bench("site", "jetson-resolve diagnose (facts cached)", "site",
                  ["bash", "-c", recompute], env=env_recompute, target=0.5,
                  target_is_ratio=True),
            Bench("site", "jetson-resolve diagnose (result kept)", "site", diag, env=env_cache,
                  target=0.3, target_is_ratio=True),
            Bench("site", "ldd *.so | grep 'not found'", "site", ["bash", "-c", LDD_CMD],
                  ok=frozenset({0, 1}), cwd=site, baseline=True),
        ]
        if shutil.which("lddtree"):
            benches.append(Bench("site", "lddtree", "site", ["bash", "-c", LDDTREE_CMD], cwd=site))
        else:
            notes.append("lddtree not installed (apt-get install pax-utils): row skipped")
    if only in (None, "wheel"):
        wheel = _data.ensure_torch_x86_wheel(data_dir)
        diag = [jr, "diagnose", "--wheel", str(wheel), "--json"]
        benches += [
            Bench("wheel", "jetson-resolve diagnose --no-cache", "wheel", [*diag, "--no-cache"],
                  ok=frozenset({0, 1}), env=env_nocache, target=2.5, baseline=True),
            Bench("wheel", "jetson-resolve diagnose (cached)", "wheel", diag,
                  ok=frozenset({0, 1}), env=env_cache),
            Bench("wheel", "auditwheel show", "wheel",
                  [resolve_script("auditwheel"), "show", str(wheel)]),
        ]
    return benches


def measure(benches: list[Bench], repeat: int, scratch: Path, notes: list[str]) -> None:
    for bench in benches:  # warm-up: fills the page cache and, for "(cached)", the facts cache
        bench.run()
    cache_files = [p for p in (scratch / "cache").rglob("*") if p.is_file()]
    if any("cached" in b.tool for b in benches):
        size = sum(p.stat().st_size for p in cache_files)
        notes.append(f"facts cache after warm-up: {len(cache_files)} file(s), {size} bytes")
    for _ in range(repeat):  # round-robin, so a load spike hits every tool alike
        for bench in benches:
            bench.runs.append(bench.run())


def rows(benches: list[Bench]) -> list[dict[str, object]]:
    base = {b.group: statistics.median(b.runs) for b in benches if b.baseline}
    out: list[dict[str, object]] = []
    for b in benches:
        med = statistics.median(b.runs)
        out.append({
            "group": b.group, "tool": b.tool, "input": b.input, "argv": b.argv,
            "runs": b.runs, "median": med, "min": min(b.runs),
            "ratio": med / base[b.group] if base.get(b.group) else None,
            "target": b.target, "target_is_ratio": b.target_is_ratio,
            "target_met": None if b.target is None else (
                (med / base[b.group] if b.target_is_ratio else med) <= b.target),
        })
    return out


def correctness(benches: list[Bench]) -> dict[str, object] | None:
    by_tool = {(b.group, b.tool): b for b in benches}
    ldd, diag = by_tool.get(("site", "ldd *.so | grep 'not found'")), by_tool.get(
        ("site", "jetson-resolve diagnose --no-cache"))
    if ldd is None or diag is None or ldd.cwd is None:
        return None
    report = json.loads(diag.stdout)
    diag_missing = {f["subject"]: f["severity"] for f in report["findings"]
                    if f["kind"] == "missing-library"}
    loaded = {o["real"] for o in report["objects"]}
    ldd_missing = set(NOT_FOUND.findall(ldd.stdout))
    who: dict[str, list[str]] = {}  # soname -> files ldd says need it (one ldd per file)
    for path in sorted(p for g in SO_GLOB.split() for p in ldd.cwd.glob(g)):
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for name in NOT_FOUND.findall(out.stdout):
            who.setdefault(name, []).append(str(path.relative_to(ldd.cwd)))
    in_loaded = {n for n, files in who.items()
                 if any(str((ldd.cwd / f).resolve()) in loaded for f in files)}
    tree = by_tool.get(("site", "lddtree"))
    return {
        "ldd_not_found": sorted(ldd_missing),
        "lddtree_none": None if tree is None else sorted(set(LDDTREE_NONE.findall(tree.stdout))),
        "diagnose_missing": diag_missing,
        "diagnose_exit_code": report["exit_code"],
        "ldd_only": {n: who.get(n, []) for n in sorted(ldd_missing - diag_missing.keys())},
        "diagnose_only": sorted(diag_missing.keys() - ldd_missing),
        "ldd_missing_in_files_diagnose_loads": sorted(in_loaded),
        "agree_on_loaded_files": in_loaded == set(diag_missing),
    }


def print_table(table: list[dict[str, object]]) -> None:
    head = ("tool", "input", "median s", "min s", "ratio", "target")
    lines = [head]
    for r in table:
        unit = "x" if r["target_is_ratio"] else " s"
        target = "" if r["target"] is None else (
            f"<= {r['target']}{unit} {'ok' if r['target_met'] else 'MISSED'}")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append((str(r["tool"]), str(r["input"]), f"{r['median']:.3f}", f"{r['min']:.3f}",
                      ratio, target))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for n, line in enumerate(lines):
        print("  ".join(c.rjust(w) if 2 <= i <= 4 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_correctness(check: dict[str, object]) -> None:
    print("\ncorrectness (site): missing sonames")
    print(f"  ldd loop 'not found':    {check['ldd_not_found']}")
    if check["lddtree_none"] is not None:
        print(f"  lddtree '=> None':       {check['lddtree_none']}")
    print(f"  diagnose missing-library: {check['diagnose_missing']} "
          f"(exit {check['diagnose_exit_code']})")
    only = check["ldd_only"]
    assert isinstance(only, dict)  # noqa: S101
    for name, files in only.items():
        print(f"  ldd only: {name:<20} needed by {', '.join(files)}")
    print(f"  diagnose only: {check['diagnose_only']}")
    print(f"  ldd misses inside files diagnose loads: "
          f"{check['ldd_missing_in_files_diagnose_loads']} -> "
          f"{'agree' if check['agree_on_loaded_files'] else 'DISAGREE'} with diagnose")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--only", choices=("site", "wheel"), help="only this input")
    args = parser.parse_args(argv)
    warm_note = (
        "one untimed warm-up run of every command first: all tools read from the page cache"
        " (it is not dropped); timed runs then go round-robin over the commands"
    )
    notes = [warm_note]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="jr-bench-") as scratch_name:
        scratch = Path(scratch_name)
        try:
            benches = build_benches(args.only, scratch, notes)
            measure(benches, max(1, args.repeat), scratch, notes)
        except BenchError as err:
            print(f"bench: {err}", file=sys.stderr)
            return 1
        table, check = rows(benches), correctness(benches)
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"repeat": args.repeat, "load": load, "notes": notes, "rows": table,
                          "correctness": check}, indent=2))
        return 0
    print(f"jetson-resolve diagnose benchmark, {args.repeat} timed run(s) per command")
    for note in notes:
        print(f"  note: {note}")
    print("  load average (1/5/15 min) before: {:.2f} {:.2f} {:.2f}".format(*load["before"])
          + ", after: {:.2f} {:.2f} {:.2f}".format(*load["after"]) + f", cpus: {load['cpus']}\n")
    print_table(table)
    print("\nratio = median / median of the group's baseline (site: the ldd loop; wheel: "
          "diagnose --no-cache; start-up: jetson-resolve --help)")
    if check is not None:
        print_correctness(check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
