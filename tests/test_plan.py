"""`plan` on the bundled Thor and Orin fixtures with a recipe folder written here: the order,
one action per recipe, one ldconfig, root and no-root activation, the wheelhouse, a torch
replacement first; and the JSON its schema allows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from cli_helpers import run_cli, synth_lib, validate
from test_cli_diagnose import empty_root, make_mini_torch
from test_match import TORCH, _recipe

if TYPE_CHECKING:
    from pathlib import Path


def _plan(tmp_path: Path, fixture: str, *extra: str) -> tuple[int, dict[str, Any]]:
    run = run_cli("plan", "--fixture", fixture, "--torch-fixture", TORCH, "--json",
                  "--recipes", str(tmp_path / "recipes"), *extra)
    document = run.json()
    validate("plan", document)
    return run.code, document


def _folder(tmp_path: Path) -> None:
    folder = tmp_path / "recipes"
    sbsa = 'flavour = ["sbsa"]\ncuda = ">=13,<14"'
    _recipe(folder, "comm-pip", sonames='"libnccl.so.2", "libnvshmem_host.so.3"', applies=sbsa,
            step='kind = "pip"\nrequirements = ["nvidia-nccl-cu13==2.27.7", '
                 '"nvidia-nvshmem-cu13==3.4.5"]')
    _recipe(folder, "sparse-apt", sonames='"libcusparseLt.so.0"', applies=sbsa, prefer=1,
            step='kind = "apt"\npackages = ["libcusparselt0-cuda-13"]')
    (folder / "sparse-apt.toml").write_text((folder / "sparse-apt.toml").read_text().replace(
        'id = "m"', 'id = "m"\nneeds_root = true').replace(
        "prefer = 1\n", 'prefer = 1\nneeds = ["libnccl.so.2"]\n') + (
        '[[methods.steps]]\nkind = "activate"\n'
        'directory = "/usr/lib/{triplet}/libcusparseLt/13"\n'))
    _recipe(folder, "sparse-pip", sonames='"libcusparseLt.so.0"', applies=sbsa,
            step='kind = "pip"\nrequirements = ["nvidia-cusparselt-cu13==0.8.1"]')
    _recipe(folder, "torch-jp6", sonames='"libtorch_cuda.so"',
            applies='flavour = ["tegra"]\nl4t = ">=36,<37"',
            step='kind = "torch-wheel"\nrequirements = ["torch==2.8.0"]\n'
                 'index_url = "https://pypi.jetson-ai-lab.io/jp6/cu126"')


def test_thor_plan_orders_dedups_and_rebuilds_the_cache_once(tmp_path: Path) -> None:
    _folder(tmp_path)
    code, plan = _plan(tmp_path, "thor-jp7.0")
    actions = plan["actions"]
    # CUPTI is there: its folder is activated first; one pip action serves two sonames.
    assert actions[0]["kind"] == "activate" and actions[0]["fixes"] == ["libcupti.so.13"]
    assert actions[0]["writes"] == [
        "/etc/ld.so.conf.d/jetson-resolve-usr-local-cuda-extras-cupti-lib64.conf"]
    comm = [a for a in actions if a["recipe"] == "comm-pip"]
    assert len(comm) == 1
    assert sorted(comm[0]["fixes"]) == ["libnccl.so.2", "libnvshmem_host.so.3"]
    # The installed torch pins NCCL 2.28.9 in its Requires-Dist: its pin wins over the recipe's.
    assert comm[0]["argv"] == [["python3", "-m", "pip", "install", "nvidia-nccl-cu13==2.28.9",
                                "nvidia-nvshmem-cu13==3.4.5"]]
    assert "torch's own pins: nvidia-nccl-cu13==2.27.7 -> nvidia-nccl-cu13==2.28.9" in (
        comm[0]["effect"])
    assert comm[0]["needs_root"]  # the torch's site is the system's
    # Each action says how it is taken back: pip's from what was kept before it ran (no
    # command), an activation's file put back and the cache rebuilt.
    assert comm[0]["undo"] == []
    assert "put back, byte for byte, what it replaced" in comm[0]["undo_effect"]
    assert actions[0]["undo"] == [["ldconfig"]]
    apt = next(a for a in actions if a["kind"] == "apt")
    assert apt["undo"] == [["apt-get", "remove", "-y", "libcusparselt0-cuda-13"]]
    # sparse-apt is preferred, needs root, and needs NCCL: it comes after comm-pip.
    order = [a["recipe"] for a in actions]
    assert order.index("comm-pip") < order.index("sparse-apt")
    assert ["apt-get", "install", "-y", "libcusparselt0-cuda-13"] in [
        argv for a in actions for argv in a["argv"]]
    activation = next(a for a in actions if a["recipe"] == "sparse-apt"
                      and a["kind"] == "activate")
    assert "/usr/lib/aarch64-linux-gnu/libcusparseLt/13" in activation["effect"]
    # ldconfig once, after the last ld.so.conf.d file.
    ldconfig = [n for n, a in enumerate(actions) if ["ldconfig"] in a["argv"]]
    assert ldconfig == [max(n for n, a in enumerate(actions) if a["writes"])]
    # cuDNN: no recipe here; said, and the exit code says something is left.
    assert {u["wanted"] for u in plan["unfixable"]} == {"libcudnn.so.9"}
    assert code == 1
    human = run_cli("plan", "--fixture", "thor-jp7.0", "--torch-fixture", TORCH,
                    "--recipes", str(tmp_path / "recipes")).stdout
    assert "     $ python3 -m pip install nvidia-nccl-cu13==2.28.9 nvidia-nvshmem-cu13==3.4.5" in (
        human)


def test_no_root_on_a_system_site_plans_nothing_that_needs_root(tmp_path: Path) -> None:
    _folder(tmp_path)
    code, plan = _plan(tmp_path, "thor-jp7.0", "--no-root")
    assert plan["actions"] == [] and code == 1
    why = {u["wanted"]: u["why"] for u in plan["unfixable"]}
    assert "belongs to the system" in why["libnccl.so.2"]
    # sparse-apt needs root; sparse-pip would write into the system's site.
    assert "sparse-apt needs root (--no-root)" in why["libcusparseLt.so.0"]
    assert "sparse-pip: /usr/local/lib/python3.12/dist-packages belongs to the system" in (
        why["libcusparseLt.so.0"])
    assert "without root no object that needs it can be patched" in why["libcupti.so.13"]


def test_no_root_in_a_users_site_patches_the_rpath(tmp_path: Path) -> None:

    site = make_mini_torch(tmp_path / "site", synth_lib)
    root = empty_root(tmp_path / "root")
    synth_lib(root / "opt" / "vendor" / "lib", "libmissing.so.1", soname="libmissing.so.1")
    run = run_cli("plan", "--site-packages", str(site), "--root", str(root), "--no-root",
                  "--json", "--recipes", str(tmp_path / "none"))
    assert run.code == 2 and "not a directory of recipes" in run.stderr
    (tmp_path / "none").mkdir()
    run = run_cli("plan", "--site-packages", str(site), "--root", str(root), "--no-root",
                  "--json", "--recipes", str(tmp_path / "none"))
    plan = run.json()
    validate("plan", plan)
    [action] = plan["actions"]
    assert action["argv"] == [["patchelf", "--force-rpath", "--add-rpath", "/opt/vendor/lib",
                               str(site / "torch" / "lib" / "libtorch.so")]]
    assert not action["needs_root"] and action["writes"] == []


def test_offline_wheelhouse_names_what_it_lacks(tmp_path: Path) -> None:
    _folder(tmp_path)
    house = tmp_path / "wheels"
    house.mkdir()
    (house / "nvidia_nccl_cu13-2.28.9-py3-none-manylinux_2_18_aarch64.whl").write_bytes(b"")
    _, plan = _plan(tmp_path, "thor-jp7.0", "--offline", "--wheelhouse", str(house))
    lacking = {u["wanted"]: u["why"] for u in plan["unfixable"]}
    assert "the wheelhouse lacks nvidia-nvshmem-cu13==3.4.5" in lacking["libnccl.so.2"]
    assert "nvidia-cusparselt-cu13==0.8.0" in lacking["libcusparseLt.so.0"]  # torch's pin
    # apt and redist need the network: an offline plan never takes them.
    assert "sparse-apt needs the network (--offline)" in lacking["libcusparseLt.so.0"]


def test_orin_plan_replaces_torch_first(tmp_path: Path) -> None:
    _folder(tmp_path)
    code, plan = _plan(tmp_path, "orin-jp6.2")
    assert [a["kind"] for a in plan["actions"]] == ["torch-wheel"]
    assert plan["actions"][0]["effect"] == (
        "install, in place of the current torch, torch==2.8.0")
    assert plan["actions"][0]["argv"] == [[
        "python3", "-m", "pip", "install", "--upgrade", "--index-url",
        "https://pypi.jetson-ai-lab.io/jp6/cu126", "torch==2.8.0"]]
    assert "libcublas.so.13" in plan["deferred"] and plan["unfixable"] == []
    assert code == 0


def test_bad_plan_options_are_one_line() -> None:
    for args, message in ((["--prefer", "conda"], "--prefer: expected one of pip, apt, redist"),
                          (["--offline"], "give --offline and --wheelhouse DIR together")):
        run = run_cli("plan", "--fixture", "thor-jp7.0", "--torch-fixture", TORCH, *args)
        assert run.code == 2 and message in run.stderr and run.stderr.count("\n") == 1


def _pip_dry_run(argv: list[str], target: Path) -> subprocess.CompletedProcess[str]:
    """The plan's pip command, run for real by pip in dry-run mode for the aarch64 target."""
    pins = ["--dry-run", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
            "--target", str(target), "--platform", "manylinux_2_17_aarch64",
            "--platform", "manylinux2014_aarch64"]
    command = [sys.executable, *argv[1:4], *pins, *argv[4:]]
    return subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def test_offline_plan_commands_resolve_against_a_real_wheelhouse(tmp_path: Path,
                                                                  cudart_wheel: Path) -> None:
    _recipe(tmp_path / "recipes", "cudart-pip", sonames='"libcudart.so.13"', applies="",
            step='kind = "pip"\nrequirements = ["nvidia-cuda-runtime==13.0.96"]')
    house = tmp_path / "wheels"
    house.mkdir()
    shutil.copy(cudart_wheel, house)
    # Orin lacks libcudart.so.13 (its toolkit is 12.6); no torch recipe here, so it is planned.
    _, plan = _plan(tmp_path, "orin-jp6.2", "--offline", "--wheelhouse", str(house))
    [action] = [a for a in plan["actions"] if a["recipe"] == "cudart-pip"]
    argv = action["argv"][0]
    assert argv[:6] == ["python3", "-m", "pip", "install", "--no-index", "--find-links"]
    done = _pip_dry_run(argv, tmp_path / "target")
    assert done.returncode == 0, done.stderr
    assert "Would install nvidia-cuda-runtime-13.0.96" in done.stdout
    # Without the wheel, the plan says what the wheelhouse lacks, and pip agrees it cannot.
    (house / cudart_wheel.name).unlink()
    _, plan = _plan(tmp_path, "orin-jp6.2", "--offline", "--wheelhouse", str(house))
    lacking = {u["wanted"]: u["why"] for u in plan["unfixable"]}
    assert "the wheelhouse lacks nvidia-cuda-runtime==13.0.96" in lacking["libcudart.so.13"]
    assert _pip_dry_run(argv, tmp_path / "target").returncode != 0


def test_source_build_only_when_asked_and_cherry_picks_what_the_tag_lacks(
        tmp_path: Path) -> None:
    known = "9c5601ecc316e5be548038bc24411acd7c74a032"
    unknown = "0" * 40
    step = ('kind = "source-build"\nrepository = "https://github.com/pytorch/pytorch"\n'
            f'tag = "v2.9.0"\ncommits = [\n  {{sha = "{known}", url = "https://github.com/'
            'pytorch/pytorch/pull/156176", first_release = "2.9.0"},\n'
            f'  {{sha = "{unknown}", url = "https://github.com/pytorch/pytorch/pull/1"}},\n]')
    _recipe(tmp_path / "recipes", "torch-build", sonames='"libtorch_cuda.so"',
            applies='flavour = ["tegra"]', step=step)
    code, plan = _plan(tmp_path, "orin-jp6.2")
    assert plan["actions"] == [] and code == 1
    assert any("--source-build allows it" in u["why"] for u in plan["unfixable"])
    _, plan = _plan(tmp_path, "orin-jp6.2", "--source-build")
    [build] = plan["actions"]
    assert build["kind"] == "source-build"
    # v2.9.0 has the first; the second names no release, so it is cherry-picked.
    assert f"1 upstream commit(s) cherry-picked: {unknown[:12]}" in build["effect"]
    assert "(1 more already in v2.9.0)" in build["effect"]


def _shipped(recipe_id: str) -> Any:
    from resolver.recipes.database import load_database  # noqa: PLC0415
    from resolver.shipped_data import recipes_root  # noqa: PLC0415

    return next(r for r in load_database(recipes_root()) if r.id == recipe_id)


def test_apt_for_another_root_downloads_its_architecture_to_unpack_there() -> None:
    from resolver.findings.model import MissingLibrary, Severity  # noqa: PLC0415
    from resolver.plan import PlanOptions, make_plan  # noqa: PLC0415
    from resolver.recipes.match import Fix  # noqa: PLC0415

    finding = MissingLibrary(severity=Severity.BLOCKS_IMPORT, soname="libgomp.so.1",
                             requested_by=("libtorch_cpu.so",), searched=())
    fix = Fix(finding=finding, wanted="libgomp.so.1", recipes=(_shipped("libgomp-apt"),),
              excluded=())
    options = PlanOptions(python="python3", site="/usr/local/lib/python3.11/dist-packages",
                          root="/srv/thor", deb_arch="arm64")
    (action,) = make_plan([fix], options).actions
    assert action.argv == (("apt-get", "download", "libgomp1:arm64"),)
    assert action.unpack_into == "/srv/thor"
    live = make_plan([fix], PlanOptions(python="python3", site="/usr/lib/python3/dist-packages"))
    assert live.actions[0].argv[-1] == ("apt-get", "install", "-y", "libgomp1")
    assert live.actions[0].unpack_into is None


def test_torch_requirements_missing_from_the_site_come_first(torch_arm_site: Path) -> None:
    from resolver.plan import PlanOptions, make_plan, missing_requirements  # noqa: PLC0415

    metadata = (torch_arm_site / "torch-2.11.0.dist-info" / "METADATA").read_text()
    requires = tuple(line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                     if line.startswith("Requires-Dist: "))
    markers = {"platform_machine": "aarch64", "platform_system": "Linux",
               "sys_platform": "linux", "python_version": "3.12"}
    options = PlanOptions(python="python3", site="/usr/lib/python3/dist-packages",
                          torch_requires=requires, installed=frozenset({"torch", "filelock"}),
                          markers=markers)
    missing = missing_requirements(options)
    assert "filelock" not in missing and "nvidia-cudnn-cu13==9.19.0.56" in missing
    assert not [m for m in missing if m.startswith(("optree", "pyyaml"))]  # extras not asked
    assert missing_requirements(PlanOptions(python="p", site="/s", torch_requires=requires)
                                ) == ()  # the site's contents unknown: nothing claimed
    plan = make_plan([], options)
    assert [a.recipe for a in plan.actions] == ["torch-requires"]
    assert plan.actions[0].argv[0][-len(missing):] == missing
