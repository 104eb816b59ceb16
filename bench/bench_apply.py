"""Time `jetson-resolve apply` and `rollback` against what users run instead, on the same input.

A report, not a test. The input is the tests' own: a venv holding torch 2.13.0+cpu and the
folder `pip download torch==2.14.1 -d DIR` fills (both built on first use, as the tests do).
Each measurement runs on a fresh copy of the venv:

- what a user runs: `pip install --no-index --find-links DIR torch-2.14.1-...whl`, then, to go
  back, `pip install --no-index --find-links ... torch==2.13.0+cpu` (and the CUDA wheels stay);
- `jetson-resolve apply --wheel ... --offline --wheelhouse DIR`, split from its journal into the
  pip step itself and the rest (keeping the known-good state, pip's dry-run report, diagnosing,
  verifying), then `jetson-resolve rollback`.

Run from the repository root: ``python bench/bench_apply.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import _data  # noqa: E402  (the test-data helpers, so inputs are the tests' own paths)


def _timed(argv: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start, done


def main() -> int:
    """Print the table; exit 1 when a command fails."""
    data = _data.data_dir_from_env(os.environ)
    wheelhouse = _data.ensure_x86_wheelhouse(data)
    venv = _data.ensure_cpu_venv(data, wheelhouse)
    wheel = next(wheelhouse.glob("torch-2.14.1-*.whl"))
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as scratch:
        work = Path(scratch)
        plain = work / "plain"
        shutil.copytree(venv, plain, symlinks=True)
        pip = [str(plain / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
               "--find-links", str(wheelhouse)]
        seconds, done = _timed([*pip, str(wheel)])
        if done.returncode:
            print(done.stderr)
            return 1
        rows.append(("pip install the 2.14.1 wheel (what users run)", seconds))
        # The +cpu build comes from pip's configured sources, as the venv's did.
        seconds, done = _timed([*pip, "torch==2.13.0+cpu"])
        rows.append(("pip install torch==2.13.0+cpu back (CUDA wheels stay)"
                     + ("" if done.returncode == 0 else " FAILED"), seconds))

        mine = work / "apply"
        shutil.copytree(venv, mine, symlinks=True)
        state = work / "state"
        seconds, done = _timed([sys.executable, "-m", "resolver", "apply", "--python",
                                str(mine / "bin" / "python"), "--wheel", str(wheel),
                                "--offline", "--wheelhouse", str(wheelhouse), "--state-dir",
                                str(state), "--json"], cwd=work)
        if done.returncode:
            print(done.stderr)
            return 1
        report = json.loads(done.stdout)
        step = sum(s["seconds"] or 0 for s in report["steps"])
        rows += [("jetson-resolve apply --wheel (all)", seconds),
                 ("  of which the pip step", step),
                 ("  of which verification (the venv's python)", report["verified"]["seconds"]),
                 ("  the rest: known-good copy, pip dry-run, 2 diagnoses", seconds - step
                  - report["verified"]["seconds"])]
        seconds, done = _timed([sys.executable, "-m", "resolver", "rollback", "--state-dir",
                                str(state)], cwd=work)
        rows.append(("jetson-resolve rollback (byte for byte, offline)", seconds))
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
