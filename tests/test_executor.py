"""Executors: real commands and real files on a scratch root, their dry-run twin changing
nothing, a failed command an outcome, and no write through a symlink."""

from __future__ import annotations

import hashlib
import shutil
import sys
from typing import TYPE_CHECKING

import pytest
from cli_helpers import synth_lib

from resolver.apply.executor import DryRunExecutor, SubprocessExecutor
from resolver.errors import ApplyError
from resolver.plan import Action
from resolver.recipes.schema import StepKind
from resolver.target.ldcache import find_in_cache, parse_ld_so_cache

if TYPE_CHECKING:
    from pathlib import Path


def _tree(top: Path) -> dict[str, str]:
    return {str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(top.rglob("*")) if p.is_file() and not p.is_symlink()}


def _activation(root: Path, folder: str) -> Action:
    conf = "/etc/ld.so.conf.d/jetson-resolve-vendor.conf"
    return Action(recipe="activate", method="activate", kind=StepKind.ACTIVATE,
                  argv=(("ldconfig", "-r", str(root)),), effect="activate", writes=(conf,),
                  directory=folder, needs_root=True, fixes=("libvendor.so.1",))


@pytest.mark.skipif(shutil.which("ldconfig") is None, reason="needs glibc's ldconfig")
def test_activation_writes_the_conf_and_the_real_ldconfig_registers_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "ld.so.conf.d").mkdir(parents=True)
    (root / "etc" / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    synth_lib(root / "opt" / "vendor" / "lib", "libvendor.so.1", soname="libvendor.so.1")
    outcome = SubprocessExecutor(root=root).run(_activation(root, "/opt/vendor/lib"))
    assert outcome.ok, outcome.output
    conf = root / "etc" / "ld.so.conf.d" / "jetson-resolve-vendor.conf"
    assert conf.read_text() == "/opt/vendor/lib\n"
    cache = parse_ld_so_cache((root / "etc" / "ld.so.cache").read_bytes(), origin="test")
    assert find_in_cache(cache, "libvendor.so.1", elf_class=2, machine=62) == (
        "/opt/vendor/lib/libvendor.so.1")


def test_pip_step_runs_for_real_and_a_failure_is_an_outcome(
        tmp_path: Path, six_wheels: tuple[Path, Path]) -> None:
    target = tmp_path / "site"
    install = Action(recipe="six", method="pip", kind=StepKind.PIP, argv=((
        sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
        str(six_wheels[0].parent), "--target", str(target), "six==1.16.0"),),
        effect="install six", fixes=("six",))
    assert SubprocessExecutor(root=tmp_path).run(install).ok
    assert (target / "six.py").is_file()
    missing = Action(recipe="six", method="pip", kind=StepKind.PIP, argv=(
        (sys.executable, "-c", "pass"),
        (sys.executable, "-m", "pip", "install", "--no-index", "--find-links",
         str(tmp_path / "empty"), "--target", str(target), "no-such-dist==1"),
        (sys.executable, "-c", "raise SystemExit('never reached')")),
        effect="install", fixes=("x",))
    outcome = SubprocessExecutor(root=tmp_path).run(missing)
    assert not outcome.ok and outcome.returncode == 1 and len(outcome.ran) == 2
    assert "no-such-dist" in outcome.output


def test_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    before = _tree(root)
    dry = DryRunExecutor()
    outcome = dry.run(_activation(root, "/opt/vendor/lib"))
    assert outcome.ok and _tree(root) == before
    written = "would write /etc/ld.so.conf.d/jetson-resolve-vendor.conf: /opt/vendor/lib"
    assert dry.log == [written, f"would run: ldconfig -r {root}"]


def test_no_write_through_a_symlink_and_no_half_run_of_unsupported_steps(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "ld.so.conf.d").mkdir(parents=True)
    outside = tmp_path / "outside.conf"
    outside.write_text("precious\n")
    (root / "etc" / "ld.so.conf.d" / "jetson-resolve-vendor.conf").symlink_to(outside)
    with pytest.raises(ApplyError, match="refusing to write through a symlink"):
        SubprocessExecutor(root=root).run(_activation(root, "/opt/vendor/lib"))
    assert outside.read_text() == "precious\n"
    redist = Action(recipe="nvpl-redist", method="redist", kind=StepKind.REDIST, argv=(),
                    effect="download nvpl", fixes=("libnvpl_blas_core.so.0",))
    for executor in (SubprocessExecutor(root=root), DryRunExecutor()):
        with pytest.raises(ApplyError, match="a redist step cannot be run yet"):
            executor.run(redist)
