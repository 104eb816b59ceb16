"""The known-good snapshot on a real pip install: kept from its RECORD, another version
installed over it, put back byte for byte (every file matching its RECORD again)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from resolver.apply.snapshot import (
    find_dist_info,
    parse_record,
    restore_snapshot,
    take_snapshot,
    verify_record,
)
from resolver.errors import ApplyError


def _venv(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway venv (its pip does real upgrades: the old version is uninstalled)."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(python), "-c", probe], check=True, capture_output=True,
                          text=True)
    return python, Path(site.stdout.strip())


def _install(python: Path, wheel: Path) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True)


def _tree(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(site.rglob("*six*")) if p.is_file() and "__pycache__" not in p.parts}


def test_snapshot_survives_an_upgrade_and_comes_back_byte_for_byte(
        tmp_path: Path, six_wheels: tuple[Path, Path]) -> None:
    old, new = six_wheels
    python, site = _venv(tmp_path)
    _install(python, old)
    dist = find_dist_info(site, "six")
    assert dist == "six-1.16.0.dist-info"
    assert verify_record(site, dist) == ()
    before = _tree(site)
    snapshot = take_snapshot(site, dist, tmp_path / "snapshot")
    assert {f.path for f in snapshot.files} >= {"six.py", f"{dist}/METADATA"}
    _install(python, new)
    assert find_dist_info(site, "six") == "six-1.17.0.dist-info"
    assert _tree(site) != before
    restored = restore_snapshot(tmp_path / "snapshot", site, find_dist_info(site, "six"))
    assert restored == len(snapshot.files)
    assert find_dist_info(site, "six") == dist
    assert verify_record(site, dist) == ()
    assert _tree(site) == before


def test_a_changed_file_is_not_kept_as_known_good(tmp_path: Path,
                                                 six_wheels: tuple[Path, Path]) -> None:
    python, site = _venv(tmp_path)
    _install(python, six_wheels[0])
    (site / "six.py").write_text("# edited by hand\n")
    dist = find_dist_info(site, "six")
    assert dist is not None and verify_record(site, dist) == ("six.py",)
    with pytest.raises(ApplyError, match=r"1 file\(s\) differ from its RECORD \(six.py\)"):
        take_snapshot(site, dist, tmp_path / "snapshot")


def test_record_entries_that_escape_the_prefix_are_refused() -> None:
    good = parse_record("six.py,sha256=AAAA,10\n../../bin/tool,,\n", where="RECORD")
    assert [e.path for e in good] == ["six.py", "../../bin/tool"]
    for line in ("/etc/passwd,,\n", "../../../../etc/passwd,,\n", "a,b\n"):
        with pytest.raises(ApplyError, match="RECORD:1"):
            parse_record(line, where="RECORD")
