"""The shipped recipes' plans for the bundled fixtures, applied to a scratch copy of the root
and re-diagnosed: nothing may block `import torch` afterwards.

The simulation applies each action's file effects only: a pip step's requirements become
dist-info folders, and the sonames its recipe provides (and opens) become synthesised aarch64
libraries in the folder the recipe activates; an activation becomes its `ld.so.conf.d` file.
The root's `ld.so.cache` is removed so that the loader's lookups are answered as `ldconfig`
would have rebuilt them from `ld.so.conf`. It does not model what the installed libraries
themselves need (their own DT_NEEDED): the re-diagnosis checks that every file the plan adds is
where the loader looks for it.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from cli_helpers import run_cli, validate
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from resolver.elf.facts import ElfClass, ElfFacts, Endian, Machine
from resolver.fixture.catalog import find_fixture
from resolver.fixture.materialize import materialize
from resolver.fixture.model import parse_fixture_dir
from resolver.fixture.synth.elf import synthesize_elf
from resolver.recipes.database import load_database
from resolver.shipped_data import recipes_root

if TYPE_CHECKING:
    from pathlib import Path

SITE = "/usr/local/lib/python3.12/dist-packages"


def _plan(fixture: str, torch: str) -> dict[str, Any]:
    run = run_cli("plan", "--fixture", fixture, "--torch-fixture", torch, "--json")
    document = run.json()
    validate("plan", document)
    return document


def _scratch(tmp_path: Path, fixture: str, torch: str) -> Path:
    root = tmp_path / "root"
    shutil.copytree(materialize(parse_fixture_dir(find_fixture(fixture))), root, symlinks=True)
    site = materialize(parse_fixture_dir(find_fixture(torch))) / SITE.lstrip("/")
    shutil.copytree(site, root / SITE.lstrip("/"), symlinks=True, dirs_exist_ok=True)
    return root


def _library(path: Path, soname: str) -> None:
    facts = ElfFacts(elf_class=ElfClass.ELF64, endian=Endian.LITTLE, machine=Machine.AARCH64,
                     osabi=0, elf_type=3, soname=soname, needed=("libc.so.6",))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(synthesize_elf(facts))


def _apply_effects(root: Path, plan: dict[str, Any]) -> None:
    recipes = {r.id: r for r in load_database(recipes_root())}
    for action in plan["actions"]:
        if action["kind"] == "activate":
            for conf in action["writes"]:
                (root / conf.lstrip("/")).write_text(action["directory"] + "\n")
        elif action["kind"] == "pip":
            recipe = recipes[action["recipe"]]
            method = next(m for m in recipe.methods if m.id == action["method"])
            folder = next(s.directory for s in method.steps if s.kind.value == "activate")
            assert folder is not None
            target = root / folder.replace("{site}", SITE).lstrip("/")
            for name in (*recipe.provides.sonames, *recipe.provides.opens):
                if not any(c in name for c in "*?["):
                    _library(target / name, name)
            for text in action["argv"][0][4:]:
                requirement = Requirement(text)
                pins = [s.version for s in requirement.specifier if s.operator == "=="]
                if pins:
                    dist = str(canonicalize_name(requirement.name)).replace("-", "_")
                    (root / SITE.lstrip("/") / f"{dist}-{pins[0]}.dist-info").mkdir()
        else:
            raise AssertionError(f"the simulation does not model {action['kind']} steps")
    (root / "etc" / "ld.so.cache").unlink()


def _rediagnose(root: Path) -> dict[str, Any]:
    run = run_cli("diagnose", "--root", str(root), "--site-packages",
                  str(root / SITE.lstrip("/")), "--gpu-arch", "sm_110", "--json", "--no-cache")
    document = run.json()
    validate("diagnose", document)
    return document


def _left(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["kind"], f["subject"]) for f in document["findings"]
            if f["severity"] != "info"}


def test_thor_plan_installs_exactly_the_cuda_13_sbsa_parts_and_comes_out_clean(
        tmp_path: Path) -> None:
    plan = _plan("thor-jp7.0", "torch-2.11.0-aarch64")
    assert plan["unfixable"] == [] and plan["deferred"] == []
    installed = [r for a in plan["actions"] if a["kind"] == "pip" for r in a["argv"][0][4:]]
    assert all("cu12" not in r for r in installed)
    assert {Requirement(r).name for r in installed} >= {
        "nvidia-cusparselt-cu13", "nvidia-nccl-cu13", "nvidia-nvshmem-cu13", "nvidia-cudnn-cu13"}
    assert any(a["directory"] == "/usr/local/cuda/extras/CUPTI/lib64" for a in plan["actions"])
    root = _scratch(tmp_path, "thor-jp7.0", "torch-2.11.0-aarch64")
    before = _rediagnose(root)
    assert before["summary"]["blocks_import"]
    _apply_effects(root, plan)
    after = _rediagnose(root)
    assert not after["summary"]["blocks_import"], _left(after)
    assert _left(after) == set()


def test_seed_story_brings_nvpl_and_a_cudss_of_soname_0_and_comes_out_clean(
        tmp_path: Path) -> None:
    plan = _plan("thor-jp7.0", "torch-2.11.0-aarch64-ai-lab")
    recipes = {a["recipe"] for a in plan["actions"]}
    assert {"nvpl-pip", "cudss-0-cu13-pip"} <= recipes
    cudss = next(a for a in plan["actions"] if a["recipe"] == "cudss-0-cu13-pip"
                 and a["kind"] == "pip")
    assert all(Requirement(r).specifier.contains("0.8.0.10") and
               not Requirement(r).specifier.contains("1.0.0.35") for r in cudss["argv"][0][4:])
    root = _scratch(tmp_path, "thor-jp7.0", "torch-2.11.0-aarch64-ai-lab")
    _apply_effects(root, plan)
    after = _rediagnose(root)
    assert _left(after) == set()


def test_orin_plan_is_a_jetpack_6_torch() -> None:
    plan = _plan("orin-jp6.2", "torch-2.11.0-aarch64")
    assert [a["kind"] for a in plan["actions"]] == ["torch-wheel"]
    assert plan["actions"][0]["recipe"] == "torch-orin-jp6"
    assert "jp6/cu126" in " ".join(plan["actions"][0]["argv"][0])
    assert "libcudart.so.13" in plan["deferred"]


def test_prefer_apt_takes_the_apt_recipes_where_there_are_some() -> None:
    run = run_cli("plan", "--fixture", "thor-jp7.0", "--torch-fixture", "torch-2.11.0-aarch64",
                  "--prefer", "apt", "--json")
    plan = run.json()
    kinds = {a["recipe"]: a["kind"] for a in plan["actions"] if a["kind"] in ("pip", "apt")}
    assert kinds["nccl-cu13-apt"] == "apt" and "nccl-cu13-pip" not in kinds
    assert kinds["nvshmem-cu13-pip"] == "pip"  # no apt recipe for NVSHMEM: pip still
    # NVIDIA's repository comes first, once: its keyring package, then the package lists.
    first, *later = [a for a in plan["actions"] if a["kind"] == "apt"]
    assert first["argv"][:2] == [["dpkg", "-i", "cuda-keyring_1.1-1_all.deb"],
                                 ["apt-get", "update"]]
    assert first["argv"][2][:3] == ["apt-get", "install", "-y"] and first["needs_root"]
    assert later and all(a["argv"][0][:2] == ["apt-get", "install"] for a in later)
    assert any(a["recipe"] == "nccl-cu13-apt" for a in later)
