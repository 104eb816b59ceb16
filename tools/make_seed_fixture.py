"""Compose the seed-story torch fixture from the bundled PyPI torch 2.11.0 aarch64 fixture.

Jetson AI Lab's `sbsa/cu130` torch wheels link NVPL and cuDSS without bundling or declaring them
(pollen-robotics/microduck_rl#38 and #39; NVIDIA/Isaac-GR00T
scripts/deployment/thor/install_deps.sh; ../shared/FACTS.md, "How torch wheels find them"),
while PyPI's aarch64 wheel bundles NVPL in torch/lib. This script models the AI Lab wheel from
the PyPI one, and says so in the fixture's provenance: the four bundled NVPL libraries are
removed from torch/lib, and `libcudss.so.0` is added to the DT_NEEDED of libtorch_cuda.so.
Every other fact is PyPI's wheel's own. Run from the repository root:
``python tools/make_seed_fixture.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from resolver import __version__
from resolver.fixture.model import parse_fixture_dir, render_files_json, render_manifest

TOP = Path(__file__).resolve().parent.parent
SOURCE = TOP / "fixtures" / "torch-2.11.0-aarch64"
OUT = TOP / "fixtures" / "torch-2.11.0-aarch64-ai-lab"
NAME = "torch-2.11.0-aarch64-ai-lab"


def main() -> None:
    fixture = parse_fixture_dir(SOURCE)
    site = fixture.manifest.site or ""
    lib = f"{site}/torch/lib"
    removed = sorted(p for p in fixture.entries
                     if p.startswith(f"{lib}/libnvpl_") and fixture.entries[p][0] == "elf")
    assert len(removed) == 4, removed
    entries = {p: e for p, e in fixture.entries.items() if p not in removed}
    cuda = f"{lib}/libtorch_cuda.so"
    kind, facts = entries[cuda]
    assert kind == "elf" and "libcudss.so.0" not in facts.needed
    entries[cuda] = ("elf", dataclasses.replace(facts, needed=(*facts.needed, "libcudss.so.0")))
    why = ("modelled on Jetson AI Lab's sbsa/cu130 torch wheels, which link NVPL and cuDSS "
           "without bundling or declaring them (pollen-robotics/microduck_rl#38, #39; "
           "NVIDIA/Isaac-GR00T scripts/deployment/thor/install_deps.sh)")
    manifest = dataclasses.replace(
        fixture.manifest, name=NAME,
        description=("PyPI's torch 2.11.0 aarch64 (CUDA 13.0 SBSA) changed to model a Jetson AI "
                     "Lab sbsa/cu130 wheel: NVPL not bundled, libcudss.so.0 needed"),
        notes=(*fixture.manifest.notes,
               (f"Composed by tools/make_seed_fixture.py from the {SOURCE.name} fixture: the "
                f"bundled NVPL libraries ({', '.join(Path(p).name for p in removed)}) are "
                "removed from torch/lib and libcudss.so.0 is added to the DT_NEEDED of "
                f"libtorch_cuda.so, {why}. Every other fact is PyPI's wheel's own.")),
        source={**fixture.manifest.source,
                "command": "python tools/make_seed_fixture.py",
                "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                "tool": f"jetson-resolve {__version__}"},
        hand_written=(*fixture.manifest.hand_written,
                      {"path": cuda, "why": f"libcudss.so.0 added to DT_NEEDED: {why}"},
                      *({"path": p, "why": f"removed (not bundled): {why}"} for p in removed)))
    OUT.mkdir(exist_ok=True)
    (OUT / "files.json").write_text(render_files_json(entries))
    (OUT / "manifest.toml").write_text(render_manifest(manifest))
    parse_fixture_dir(OUT)  # what it wrote, read back by the reader that will read it
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
