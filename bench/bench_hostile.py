"""Time and peak memory of `jetson-resolve` on issue 10's small-but-hostile inputs, beside the
tools users reach for on the same bytes (ldd, readelf, ldconfig -p, unzip -t).

A report, not a test: each command runs as a child of its own, and its wall time and peak
resident memory (getrusage's ru_maxrss of that child) are printed. The inputs are the ones
`tests/test_hostile.py` builds (`tests/hostile_inputs.py`): a library with 65,536 DT_NEEDED, an
`ld.so.cache` of 48 MiB of NULs after a valid header, a 2 MB wheel whose libc10.so inflates to
2 GiB, a 600 KB torch/version.py that a backtracking regular expression chokes on. Run from the
repository root: ``python bench/bench_hostile.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from cli_helpers import synth_lib  # noqa: E402
from hostile_inputs import (  # noqa: E402
    GIB,
    Sandbox,
    build_sandbox,
    ld_cache_of_nuls,
    pathological_version_py,
    write_zip_bomb,
)

# Runs one command and prints {"seconds", "max_rss_kib", "code"}: the child's own peak memory.
_MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(json.dumps({"seconds": time.perf_counter() - started, "code": code,
                  "max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measure(args: list[str], env: dict[str, str], repeat: int) -> dict[str, float]:
    """Best wall time and the peak memory of `args` over `repeat` runs."""
    runs = [json.loads(subprocess.run([sys.executable, "-c", _MEASURE, *args], env=env,
                                      capture_output=True, text=True, check=True).stdout)
            for _ in range(repeat)]
    return {"seconds": min(r["seconds"] for r in runs),
            "max_rss_mib": max(r["max_rss_kib"] for r in runs) / 1024, "code": runs[0]["code"]}


def diagnose(*extra: str) -> list[str]:
    return [sys.executable, "-m", "resolver", "diagnose", "--no-cache", *extra]


def cases(top: Path) -> list[tuple[str, Sandbox, list[tuple[str, list[str]]]]]:
    """(input, its sandbox, [(command name, argv)]) for each hostile input."""
    found = []
    many = build_sandbox(top / "many")
    synth_lib(many.lib, "libc10.so", soname="libc10.so",
              needed=tuple(f"libn{i:05d}.so.1" for i in range(65_536)))
    library = str(many.lib / "libc10.so")
    found.append(("libc10.so with 65,536 DT_NEEDED", many, [
        ("jetson-resolve diagnose --root", diagnose("--root", str(many.root),
                                                    "--site-packages", str(many.site))),
        ("ldd", ["ldd", library]),
        ("readelf -d", ["readelf", "-dW", library])]))
    nuls = build_sandbox(top / "nuls")
    cache = nuls.root / "etc" / "ld.so.cache"
    cache.write_bytes(ld_cache_of_nuls())
    found.append(("ld.so.cache: 48 MiB of NULs after a valid header", nuls, [
        ("jetson-resolve diagnose --root", diagnose("--root", str(nuls.root),
                                                    "--site-packages", str(nuls.site))),
        ("ldconfig -p -C", ["ldconfig", "-p", "-C", str(cache)])]))
    bomb = build_sandbox(top / "bomb")
    others = {p.relative_to(bomb.site).as_posix(): p.read_bytes()
              for p in sorted((bomb.site / "torch").rglob("*"))
              if p.is_file() and p.name != "libc10.so"}
    write_zip_bomb(bomb.wheel, member="torch/lib/libc10.so", inflated=2 * GIB, others=others)
    found.append((f"wheel of {bomb.wheel.stat().st_size >> 10} KiB, libc10.so inflating to 2 GiB",
                  bomb, [("jetson-resolve diagnose --wheel",
                          diagnose("--wheel", str(bomb.wheel), "--root", str(bomb.root))),
                         ("unzip -t", ["unzip", "-tq", str(bomb.wheel)])]))
    version = build_sandbox(top / "version")
    (version.site / "torch" / "version.py").write_text(pathological_version_py())
    found.append(("torch/version.py of 600 KB `cuda:` lines", version, [
        ("jetson-resolve diagnose --root", diagnose("--root", str(version.root),
                                                    "--site-packages", str(version.site)))]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="jr-bench-hostile-"))
    try:
        for title, sandbox, commands in cases(top):
            print(title)
            env = {**sandbox.env, "PYTHONPATH": str(REPO)}
            for name, args in commands:
                if shutil.which(args[0]) is None:
                    print(f"  {name:34} not installed")
                    continue
                result = measure(args, env, options.repeat)
                print(f"  {name:34} {result['seconds']:7.2f} s  {result['max_rss_mib']:7.0f} MiB"
                      f"  exit {result['code']}")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
