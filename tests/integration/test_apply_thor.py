"""aarch64, the Thor story, end to end on this x86 machine.

An arm64 root of Debian packages (libc6, libstdc++6, ..., python3.11) with PyPI's torch 2.11.0
aarch64 (cp311, CUDA 13) installed without its dependencies. `apply --root` installs what the
plan says from a local wheelhouse of PyPI's aarch64 wheels (pip here, for the root's platform,
merged into its site), and the root's own python3.11 verifies under qemu-user: a real
`import torch` of the CUDA 13 build (CUDA unavailable: no GPU, no driver). `rollback` puts the
root back byte for byte. Then a run whose step fails (a wheel withheld): kept as it failed,
exit 1, and `rollback` again leaves the root as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import _data
import pytest
from cli_helpers import validate

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building the root's ld.so.cache "
                                "runs its ldconfig -r, which chroots")


def _cli(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    done = subprocess.run([sys.executable, "-m", "resolver", *args], capture_output=True,
                          text=True, check=False, timeout=1800)
    try:
        document = json.loads(done.stdout) if "--json" in args else None
    except ValueError:
        document = None
    return done.returncode, document, done.stderr


def _apply(root: Path, wheelhouse: Path, state: Path) -> tuple[int, dict[str, Any] | None, str]:
    return _cli("apply", "--root", str(root), "--site-packages",
                str(root / _data.THOR_SITE.lstrip("/")), "--offline", "--wheelhouse",
                str(wheelhouse), "--state-dir", str(state), "--json")


def test_thor_apply_verify_under_qemu_then_rollback(arm_wheelhouse: Path,
                                                    tmp_path: Path) -> None:
    root = _data.make_thor_root(tmp_path / "root", arm_wheelhouse)
    before = _data.tree_hash(root)
    code, document, stderr = _apply(root, arm_wheelhouse, tmp_path / "state")
    assert code == 0, stderr
    assert document is not None
    validate("run", document)
    assert [s["recipe"] for s in document["steps"]] == ["torch-requires"]
    report = document["verified"]["report"]
    assert document["verified"]["ok"], document["verified"]["problems"]
    assert report["version"] == "2.11.0+cu130" and report["cuda"] == "13.0"
    assert report["cudnn"] >= 91900 and report["cuda_available"] is False
    assert report["errors"] == []  # CPU matmul and torch.linalg.svd (NVPL) ran right
    # The build's own CUDA architectures, read without a driver.
    assert report["arch_list"]
    assert all(a.startswith(("sm_", "compute_")) for a in report["arch_list"])
    # torch's own scripts are still there: pip installed beside them, not over `bin/`.
    site = root / _data.THOR_SITE.lstrip("/")
    assert (site / "bin" / "torchrun").is_file()

    code, diagnosis, _ = _cli("diagnose", "--root", str(root), "--site-packages", str(site),
                              "--json", "--no-cache")
    assert code == 0
    assert diagnosis is not None
    assert not [f for f in diagnosis["findings"] if f["severity"] == "blocks-import"]

    code, rolled, stderr = _cli("rollback", "--state-dir", str(tmp_path / "state"), "--json")
    assert code == 0, stderr
    assert rolled is not None and rolled["restored"]["problems"] == []
    assert _data.tree_hash(root) == before


def test_thor_step_fails_kept_then_rolled_back(arm_wheelhouse: Path, tmp_path: Path) -> None:
    root = _data.make_thor_root(tmp_path / "root", arm_wheelhouse)
    before = _data.tree_hash(root)
    partial = tmp_path / "wheelhouse"
    partial.mkdir()
    for wheel in arm_wheelhouse.glob("*.whl"):
        if not wheel.name.startswith("nvidia_nccl"):
            (partial / wheel.name).symlink_to(wheel)
    code, document, stderr = _apply(root, partial, tmp_path / "state")
    assert code == 1, stderr
    assert document is not None
    assert document["outcome"] == "failed"
    assert document["steps"][-1]["state"] == "failed"
    assert "nccl" in document["steps"][-1]["output"].lower()
    code, _, stderr = _cli("rollback", "--state-dir", str(tmp_path / "state"))
    assert code == 0, stderr
    assert _data.tree_hash(root) == before
