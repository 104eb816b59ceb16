"""The bundled fixtures diagnose as a Thor (or Orin) user would expect; they ship in the package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_golden, run_cli, subjects, validate
from packaging.version import Version

from resolver.fixture.catalog import bundled_fixtures, find_fixture
from resolver.fixture.model import parse_fixture_dir
from resolver.target.platform import find_jetson_release, jetson_releases

TOP = Path(__file__).resolve().parent.parent


def test_every_bundled_fixture_parses_and_says_it_was_composed() -> None:
    names = bundled_fixtures()
    expected = {"thor-jp7.0", "orin-jp6.2", "torch-2.11.0-aarch64", "torch-2.9.1-aarch64-cpu"}
    assert expected <= set(names)
    for name in names:
        fixture = parse_fixture_dir(find_fixture(name))
        assert fixture.manifest.provenance == "composed"  # never "recorded on hardware"
        assert fixture.manifest.packages, name
        assert all(p["origin"] in ("pypi", "debian") for p in fixture.manifest.packages)
        assert fixture.manifest.hand_written, name


def test_thor_driver_is_marked_hand_written() -> None:
    thor = parse_fixture_dir(find_fixture("thor-jp7.0"))
    written = {row["path"] for row in thor.manifest.hand_written}
    assert "/usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1.1" in written
    assert "/etc/nv_tegra_release" in written


def test_torch_2_11_on_thor() -> None:
    run = run_cli("diagnose", "--fixture", "thor-jp7.0", "--torch-fixture",
                  "torch-2.11.0-aarch64", "--json")
    assert run.code == 1
    document = run.json()
    validate("diagnose", document)
    target = document["target"]
    assert (target["l4t"], target["jetpack"], target["gpu_arch"]) == ("38.2.0", "7.0", 110)
    assert target["cuda_flavour"] == "sbsa"
    blocking = subjects(document, "blocks-import")
    # JetPack ships none of these; the wheel needs them.
    assert {"libcusparseLt.so.0", "libnccl.so.2", "libnvshmem_host.so.3"} <= blocking
    # The CUDA 13 runtime comes from the toolkit, registered through etc/ld.so.conf.d.
    toolkit = "/usr/local/cuda-13.0/targets/sbsa-linux/lib"
    assert toolkit in target["ld_so_conf_dirs"]
    for name in ("libcudart.so.13", "libcublas.so.13", "libcufft.so.12", "libcusparse.so.12"):
        assert name not in blocking
        loaded = [o for o in document["objects"] if o["soname"] == name and o["loaded"]]
        assert loaded and loaded[0]["real"].startswith(toolkit), name
    # cuDNN 9.12 on the system, torch built with 9.19: refused at first use.
    [cudnn] = [f for f in document["findings"] if f["kind"] == "cudnn-too-old"]
    assert (cudnn["runtime"], cudnn["built_with"]) == ("9.12.0", "9.19.0.56")
    assert cudnn["library"] == "/lib/aarch64-linux-gnu/libcudnn.so.9"
    # CUPTI sits in the toolkit's extras, which no search path names: the finding says where.
    [cupti] = [f for f in document["findings"] if f["subject"] == "libcupti.so.13"]
    assert cupti["found_elsewhere"][0] == {
        "path": "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13", "name": "libcupti.so.13",
        "same_soname": True}
    # Root causes come first: nothing here blocks before the missing libraries.
    assert [f["kind"] for f in document["findings"]][:4] == ["missing-library"] * 4
    # The wheel carries sm_110 code: no kernel finding.
    assert "no-kernel-for-gpu" not in {f["kind"] for f in document["findings"]}
    cuda = next(o for o in document["objects"] if o["soname"] == "libtorch_cuda.so")
    assert "sm_110" in cuda["gpu_code"]


def test_torch_2_11_on_orin_fails_on_cuda_13_and_the_driver() -> None:
    run = run_cli("diagnose", "--fixture", "orin-jp6.2", "--torch-fixture",
                  "torch-2.11.0-aarch64", "--json")
    assert run.code == 1
    document = run.json()
    blocking = subjects(document, "blocks-import", "missing-library")
    assert {"libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"} <= blocking
    assert all(".so.13" in n or n in {"libcufft.so.12", "libcusparseLt.so.0", "libnccl.so.2",
                                      "libnvshmem_host.so.3"} for n in blocking)
    validate("diagnose", document)
    [driver] = [f for f in document["findings"] if f["kind"] == "driver-too-old"]
    assert (driver["driver"], driver["needed_branch"], driver["cuda"]) == ("540", 580, "13.0")
    # The wheel is cp312, JetPack 6's Python is 3.10: the first finding, a root cause.
    first = document["findings"][0]
    assert (first["kind"], first["mismatch"], first["target_python"]) == (
        "wheel-tag-mismatch", "python", "3.10")
    assert "cp312-cp312-manylinux_2_28_aarch64" in first["tags"]
    assert document["findings"][1]["kind"] == "driver-too-old"


def test_cpu_torch_loads_on_thor_and_check_says_so(tmp_path: Path) -> None:
    good = run_cli("check", "--fixture", "thor-jp7.0", "--torch-fixture",
                   "torch-2.9.1-aarch64-cpu", "--junit", str(tmp_path / "good.xml"))
    assert good.code == 0
    report = (tmp_path / "good.xml").read_text()
    assert 'tests="1"' in report and 'failures="0"' in report
    assert "torch-2.9.1-aarch64-cpu on thor-jp7.0" in report
    bad = run_cli("check", "--fixture", "thor-jp7.0", "--fixture", "orin-jp6.2",
                  "--torch-fixture", "torch-2.11.0-aarch64", "--json")
    assert bad.code == 1
    validate("check", bad.json())
    assert [f["import_torch"] for f in bad.json()["fixtures"]] == ["fails", "fails"]
    thor = bad.json()["fixtures"][0]
    assert {f["soname"] for f in thor["blocking"]} >= {"libnccl.so.2", "libcupti.so.13"}


def test_check_requires_cuda_of_a_cuda_build_and_import_of_a_cpu_build(tmp_path: Path) -> None:
    # The CPU build on Thor: CUDA is unusable (a finding of its own severity), but a CPU build
    # is checked for the import only, unless --require cuda.
    cpu = ("check", "--fixture", "thor-jp7.0", "--torch-fixture", "torch-2.9.1-aarch64-cpu")
    relaxed = run_cli(*cpu, "--json")
    assert relaxed.code == 0
    validate("check", relaxed.json())
    [thor] = relaxed.json()["fixtures"]
    assert (thor["required"], thor["passed"]) == ("import", True)
    assert [f["kind"] for f in thor["cuda_unusable"]] == ["cpu-only-torch"]
    strict = run_cli(*cpu, "--require", "cuda", "--junit", str(tmp_path / "cuda.xml"))
    assert strict.code == 1
    report = (tmp_path / "cuda.xml").read_text()
    assert 'failures="1"' in report and 'type="cuda-unusable"' in report
    assert "CPU-only build" in report
    # The CUDA build on Orin (driver 540, CUDA 13 needs 580): required to run CUDA by default;
    # --require import still fails it, on what blocks the import.
    orin = ("check", "--fixture", "orin-jp6.2", "--torch-fixture", "torch-2.11.0-aarch64")
    document = run_cli(*orin, "--json").json()
    [fixture] = document["fixtures"]
    assert fixture["required"] == "cuda" and not fixture["passed"]
    assert [f["kind"] for f in fixture["cuda_unusable"]] == ["driver-too-old"]
    assert run_cli(*orin, "--require", "import").code == 1
    assert run_cli(*orin, "--require", "gpu").code == 2


def test_bundled_fixtures_name_no_path_of_the_machine_that_made_them() -> None:
    for path in (TOP / "fixtures").rglob("*"):
        if path.is_file():
            text = path.read_text()
            for prefix in ("/tmp/", "/work/", "/root/", "/home/", str(TOP)):
                assert prefix not in text, f"{path}: names {prefix}"


def test_record_writes_placeholders_for_host_paths(tmp_path: Path) -> None:
    root = tmp_path / "scratch-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=testos\n")
    out = tmp_path / "made-here"
    run = run_cli("record", "--root", str(root), f"--out={out}", "--name", "demo")
    assert run.code == 0, run.stderr
    command = parse_fixture_dir(out).manifest.source["command"]
    assert command == "jetson-resolve record --root '<root>' --out '<out>' --name demo"
    assert str(tmp_path) not in (out / "manifest.toml").read_text()


@pytest.mark.parametrize(("flags", "golden"), [
    ((), "thor_torch_2_11.txt"),
    (("-v",), "thor_torch_2_11_v.txt"),
], ids=["default", "verbose"])
def test_thor_report_reads_first(flags: tuple[str, ...], golden: str) -> None:
    run = run_cli("diagnose", "--fixture", "thor-jp7.0", "--torch-fixture",
                  "torch-2.11.0-aarch64", *flags)
    assert run.code == 1
    lines = run.stdout.splitlines()
    assert lines[4].startswith("✗ import torch will fail: 4 problems block it")
    assert_golden(golden, run.stdout)


def test_record_site_only_needs_where_the_target_has_it(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    run = run_cli("record", "--site-only", "--site-packages", str(site), "--out",
                  str(tmp_path / "out"))
    assert run.code == 2 and "--site-only needs --site-at" in run.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_cli("record", "--site-only", "--site-packages", str(empty), "--site-at",
                  "/usr/lib/python3/dist-packages", "--out", str(tmp_path / "out"))
    assert run.code == 2 and "no torch package here" in run.stderr
    assert not (tmp_path / "out").exists()


def test_record_takes_the_gpu_as_diagnose_does(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    run = run_cli("record", "--root", str(root), "--out", str(tmp_path / "fx"), "--gpu-arch",
                  "sm_110")
    assert run.code == 0, run.stderr
    assert parse_fixture_dir(tmp_path / "fx").manifest.gpu_arch == 110


def _orin_as(tmp_path: Path, tegra_release: str) -> Path:
    """The bundled Orin fixture, its GPU not recorded and its L4T release replaced."""
    copy = tmp_path / "orin-as"
    shutil.copytree(TOP / "fixtures" / "orin-jp6.2", copy)
    manifest = copy / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("gpu_arch = 87\n", ""))
    files = json.loads((copy / "files.json").read_text())
    files["entries"]["/etc/nv_tegra_release"]["text"] = tegra_release
    (copy / "files.json").write_text(json.dumps(files))
    return copy


def test_a_release_on_several_gpus_says_so_and_gpu_arch_decides(tmp_path: Path) -> None:
    # L4T R35 (JetPack 5) runs on Xavier (sm_72) and Orin (sm_87); torch 2.11.0's CUDA 13
    # code covers sm_87 only, and R35's driver runs CUDA 11.4.
    fixture = _orin_as(tmp_path, "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: "
                                 "t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n")
    run = run_cli("diagnose", "--fixture", str(fixture), "--torch-fixture",
                  "torch-2.11.0-aarch64", "--json")
    document = run.json()
    validate("diagnose", document)
    assert document["target"]["gpu_arch"] is None
    [undetermined] = [f for f in document["findings"] if f["kind"] == "gpu-undetermined"]
    assert (undetermined["candidates"], undetermined["covered"]) == ([72, 87], [87])
    assert undetermined["severity"] == "info"
    [driver] = [f for f in document["findings"] if f["kind"] == "driver-too-old"]
    assert (driver["driver"], driver["driver_cuda"], driver["severity"]) == (
        None, "11.4", "cuda-unusable")
    xavier = run_cli("diagnose", "--fixture", str(fixture), "--torch-fixture",
                     "torch-2.11.0-aarch64", "--json", "--gpu-arch", "72").json()
    assert not [f for f in xavier["findings"] if f["kind"] == "gpu-undetermined"]
    no_kernel = [f for f in xavier["findings"] if f["kind"] == "no-kernel-for-gpu"]
    assert no_kernel and {f["severity"] for f in no_kernel} == {"cuda-unusable"}
    assert {f["gpu_arch"] for f in no_kernel} == {72}


def test_the_release_table_covers_r32_to_r39() -> None:
    releases = jetson_releases()
    assert {r.l4t.major for r in releases} == {32, 34, 35, 36, 38, 39}
    assert all(set(r.gpus) <= {53, 62, 72, 87, 110} and r.gpus for r in releases)
    assert all(r.cuda is not None and r.driver_dir for r in releases)
    thor = find_jetson_release(Version("38.2"))
    assert thor is not None and (thor.gpus, str(thor.driver), str(thor.cuda)) == (
        (110,), "580", "13.0")
    nano = find_jetson_release(Version("32.7.1"))
    assert nano is not None and nano.gpu_arch is None and 53 in nano.gpus
    assert str(nano.cuda) == "10.2" and nano.jetpack == Version("4.6.1")
