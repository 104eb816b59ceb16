"""Matching findings to recipes on the bundled Thor and Orin fixtures, end to end through
`diagnose --json --recipes DIR` with a recipe folder written here: what fits, in which order,
why the others do not, an activation for a file that is there, and plain words for no recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cli_helpers import run_cli, validate

if TYPE_CHECKING:
    from pathlib import Path

TORCH = "torch-2.11.0-aarch64"


def _recipe(folder: Path, rid: str, *, sonames: str, applies: str, step: str,
            version: str | None = None, prefer: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{rid}.toml").write_text(
        f'schema = 1\nsummary = "{rid}"\nsources = ["https://example.org/{rid}"]\n'
        f"prefer = {prefer}\n[provides]\nsonames = [{sonames}]\n"
        + (f'version = "{version}"\n' if version else "")
        + f'[applies]\n{applies}\n[[methods]]\nid = "m"\n[[methods.steps]]\n{step}\n')


def _fixes(fixture: str, recipes: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    run = run_cli("diagnose", "--fixture", fixture, "--torch-fixture", TORCH, "--json",
                  "--recipes", str(recipes))
    document = run.json()
    validate("diagnose", document)
    return document, {fix["wanted"]: fix for fix in document["fixes"]}


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "recipes"
    pip13 = 'kind = "pip"\nrequirements = ["nvidia-nccl-cu13==2.27.7"]'
    _recipe(folder, "nccl-cu13", sonames='"libnccl.so.2"',
            applies='flavour = ["sbsa"]\ncuda = ">=13,<14"', step=pip13)
    _recipe(folder, "nccl-apt", sonames='"libnccl.so.*"', prefer=-1,
            applies='flavour = ["sbsa"]\ncuda = ">=13,<14"',
            step='kind = "apt"\npackages = ["libnccl2"]')
    _recipe(folder, "nccl-cu12", sonames='"libnccl.so.2"',
            applies='cuda = ">=12,<13"', step='kind = "pip"\nrequirements = ["nvidia-nccl-cu12"]')
    for rid, version in (("cudnn-old", "9.12.0"), ("cudnn-new", "9.19.0.56")):
        _recipe(folder, rid, sonames='"libcudnn.so.9"', version=version, applies='cuda = ">=13"',
                step=f'kind = "pip"\nrequirements = ["nvidia-cudnn-cu13=={version}"]')
    _recipe(folder, "torch-jp6", sonames='"libtorch_cuda.so"',
            applies='flavour = ["tegra"]\nl4t = ">=36,<37"',
            step='kind = "torch-wheel"\nrequirements = ["torch==2.8.0"]')
    _recipe(folder, "cupti-pip", sonames='"libcupti.so.13"', applies='cuda = ">=13"',
            step='kind = "pip"\nrequirements = ["nvidia-cuda-cupti==13.0.85"]')
    return folder


def test_thor_fixes_fit_cuda_13_sbsa_best_first(tmp_path: Path) -> None:
    document, fixes = _fixes("thor-jp7.0", _folder(tmp_path))
    nccl = fixes["libnccl.so.2"]
    assert nccl["recipes"] == ["nccl-cu13", "nccl-apt"]  # prefer decides the order
    assert nccl["excluded"] == [{"recipe": "nccl-cu12",
                                 "why": "needs CUDA <13,>=12, the target has 13.0.2"}]
    # The file is under the root, off every search path: activate its folder, not reinstall.
    cupti = fixes["libcupti.so.13"]
    assert cupti["activate"] == "/usr/local/cuda/extras/CUPTI/lib64"
    # Torch refuses cuDNN 9.12: only a recipe of 9.19 or newer fits.
    cudnn = fixes["libcudnn.so.9"]
    assert cudnn["recipes"] == ["cudnn-new"]
    assert cudnn["excluded"] == [{"recipe": "cudnn-old",
                                  "why": "provides cuDNN 9.12.0, torch needs 9.19 or newer"}]
    assert document["findings"][cudnn["finding"]]["kind"] == "cudnn-too-old"
    # Nothing provides these: said plainly.
    assert fixes["libnvshmem_host.so.3"]["recipes"] == []
    human = run_cli("diagnose", "--fixture", "thor-jp7.0", "--torch-fixture", TORCH,
                    "--recipes", str(tmp_path / "recipes")).stdout
    assert "    fix: nccl-cu13  nccl-cu13" in human
    assert "    no recipe provides libnvshmem_host.so.3" in human
    assert "    fix: make /usr/local/cuda/extras/CUPTI/lib64 findable" in human


def test_orin_gets_a_jetpack_6_torch_not_cuda_13_libraries(tmp_path: Path) -> None:
    _, fixes = _fixes("orin-jp6.2", _folder(tmp_path))
    assert fixes["torch"]["recipes"] == ["torch-jp6"]
    nccl = fixes["libnccl.so.2"]
    assert nccl["recipes"] == ["nccl-cu12"]  # the toolkit is 12.6: no CUDA 13 library fits
    assert {e["recipe"] for e in nccl["excluded"]} == {"nccl-cu13", "nccl-apt"}
    assert all("sbsa" in e["why"] for e in nccl["excluded"])
    cublas = fixes["libcublas.so.13"]
    assert cublas["recipes"] == [] and "libcublas.so.12" in cublas["family"]
