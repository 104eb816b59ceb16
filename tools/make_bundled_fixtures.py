"""Rebuild the bundled fixtures in fixtures/ from real public packages.

1. `tools/compose_roots.py` assembles the Thor and Orin roots from arm64 Debian packages and
   NVIDIA's aarch64 wheels on PyPI (see each root's provenance.json).
2. Here, for each root: a hard-linked working copy gets the L4T driver's `libcuda.so.1`, which no
   public package carries, synthesised from hand-written facts (and marked so in the manifest);
   the root's own arm64 `ldconfig` (under qemu) then rewrites `etc/ld.so.cache`.
3. `jetson-resolve record` records each root, and the torch wheels from PyPI as site-packages
   fixtures, into fixtures/<name>/ with their provenance.

Needs root (ldconfig -r chroots), qemu-user-static, and the network for the first run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
BUNDLED = TOP / "fixtures"
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "tools"))

from compose_roots import main as compose_main  # noqa: E402

from resolver.elf.facts import ElfClass, ElfFacts, Endian, Machine  # noqa: E402
from resolver.fixture.synth.elf import synthesize_elf  # noqa: E402

DATA = Path.home() / ".cache" / "jr-data"
SYSTEMS = {
    "thor-jp7.0": (110, ("Jetson AGX Thor, JetPack 7.0 (L4T R38.2), Ubuntu 24.04, aarch64 SBSA, "
                         "CUDA 13.0, cuDNN 9.12, GPU sm_110; no NVPL, cuDSS, cuSPARSELt, NCCL")),
    "orin-jp6.2": (87, ("Jetson AGX Orin, JetPack 6.2 (L4T R36.4.3), Ubuntu 22.04, aarch64 "
                        "Tegra, CUDA 12.6, cuDNN 9.3, GPU sm_87")),
}
TORCH = {
    "torch-2.11.0-aarch64": ("2.11.0", ("PyPI's torch 2.11.0 for manylinux_2_28_aarch64 (a CUDA "
                                        "13.0 SBSA build), installed without its dependencies")),
    "torch-2.9.1-aarch64-cpu": ("2.9.1", ("PyPI's torch 2.9.1 for manylinux_2_28_aarch64 (a CPU "
                                          "build): a known-good fallback")),
}
SITE = "/usr/local/lib/python3.12/dist-packages"


def run(argv: list[str]) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def add_driver(root: Path, spec: dict[str, object]) -> None:
    """Synthesise the hand-written libcuda facts and its links into the root."""
    needed = spec["needed"]
    assert isinstance(needed, list)
    facts = ElfFacts(elf_class=ElfClass.ELF64, endian=Endian.LITTLE, machine=Machine.AARCH64,
                     osabi=0, elf_type=3, soname=str(spec["soname"]),
                     needed=tuple(str(n) for n in needed))
    target = root / str(spec["path"]).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(synthesize_elf(facts))
    links = spec["symlinks"]
    assert isinstance(links, dict)
    for link, to in links.items():
        path = root / str(link).lstrip("/")
        path.unlink(missing_ok=True)
        path.symlink_to(str(to))


def provenance_for_record(
    prov: dict[str, object], extra_hand: list[dict[str, str]]
) -> dict[str, object]:
    composed = prov["composed_from"]
    hand = prov["hand_written"]
    notes = prov["notes"]
    assert isinstance(composed, list) and isinstance(hand, list) and isinstance(notes, list)
    return {
        "packages": [{"name": p["package"], "version": p["version"], "origin": p["source"],
                      "file": p["file"], "sha256": p["sha256"]} for p in composed],
        "hand_written": [{"path": h["path"], "why": h["why"]} for h in hand] + extra_hand,
        "notes": notes,
    }


def build_system(name: str, work: Path) -> None:
    compose = DATA / "compose" / name
    prov = json.loads((compose / "provenance.json").read_text())
    root = work / name
    run(["cp", "-al", str(compose / "root"), str(root)])
    driver = prov["hand_written_elf"]
    add_driver(root, driver)
    (root / "etc" / "ld.so.cache").unlink(missing_ok=True)  # a hard link: write a new file
    run(["qemu-aarch64-static", str(root / "usr/sbin/ldconfig"), "-r", str(root)])
    extra = [{"path": driver["path"], "why": "synthesised from hand-written ELF facts by "
              "tools/make_bundled_fixtures.py: " + driver["why"]}]
    prov_file = work / f"{name}.json"
    prov_file.write_text(json.dumps(provenance_for_record(prov, extra)))
    gpu, description = SYSTEMS[name]
    out = BUNDLED / name
    shutil.rmtree(out, ignore_errors=True)
    run(["jetson-resolve", "record", "--root", str(root), "--out", str(out), "--name", name,
         "--gpu-arch", str(gpu), "--composed-from", str(prov_file), "--description", description])


def build_torch(name: str, work: Path) -> None:
    version, description = TORCH[name]
    wheel_dir = DATA / "arm"
    wheel = wheel_dir / f"torch-{version}-cp312-cp312-manylinux_2_28_aarch64.whl"
    if not wheel.exists():
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux_2_28_aarch64", "--python-version", "3.12",
             f"torch=={version}", "-d", str(wheel_dir)])
    site = work / name
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    prov = {
        "packages": [{"name": "torch", "version": version, "origin": "pypi",
                      "file": wheel.name, "sha256": digest}],
        "hand_written": [{"path": f"{SITE}/torch/__init__.py",
                          "why": "reduced to its cuda_libs list by record; every other fact is "
                                 "read from the wheel's own files"}],
        "notes": [f"The wheel unzipped and recorded as if installed at {SITE}."],
    }
    prov_file = work / f"{name}.json"
    prov_file.write_text(json.dumps(prov))
    out = BUNDLED / name
    shutil.rmtree(out, ignore_errors=True)
    run(["jetson-resolve", "record", "--site-only", "--site-packages", str(site), "--site-at",
         SITE, "--out", str(out), "--name", name, "--composed-from", str(prov_file),
         "--description", description])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", default=[*SYSTEMS, *TORCH])
    args = parser.parse_args()
    systems = [n for n in args.names if n in SYSTEMS]
    if systems and compose_main(systems) != 0:
        return 1
    with tempfile.TemporaryDirectory(prefix="jr-bundle-") as scratch:
        for name in args.names:
            if name in SYSTEMS:
                build_system(name, Path(scratch))
            elif name in TORCH:
                build_torch(name, Path(scratch))
            else:
                parser.error(f"unknown fixture {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
