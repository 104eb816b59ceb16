"""Run the CLI in-process at a fixed terminal width and validate its JSON against the schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from referencing import Registry, Resource
from typer.testing import CliRunner

from resolver.cli.app import build_app
from resolver.elf.facts import ElfClass, ElfFacts, Endian, Machine
from resolver.elf.reader import read_elf_facts
from resolver.fixture.synth.elf import synthesize_elf

if TYPE_CHECKING:
    from collections.abc import Sequence

WIDTH = 100


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data


def run_cli(*args: str, env: dict[str, str] | None = None) -> Run:
    runner = CliRunner()
    result = runner.invoke(build_app(), list(args), env={"COLUMNS": str(WIDTH), **(env or {})},
                           catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


def validate(command: str, document: dict[str, Any]) -> None:
    """Validate against the command's schema; schemas may refer to each other by file name."""
    schemas = resources.files("resolver.cli").joinpath("schemas")
    loaded = [json.loads(f.read_text("utf-8")) for f in schemas.iterdir()
              if f.name.endswith(".json")]
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in loaded)
    schema = next(s for s in loaded if s["$id"].endswith(f"/{command}.json"))
    jsonschema.validate(document, schema, registry=registry)


def subjects(document: dict[str, Any], severity: str, kind: str | None = None) -> set[str]:
    return {f["subject"] for f in document["findings"]
            if f["severity"] == severity and (kind is None or f["kind"] == kind)}


def synth_lib(
    directory: Path,
    name: str,
    *,
    soname: str | None = None,
    needed: Sequence[Path | str] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    nodeflib: bool = False,
    version_script: str | None = None,
    source: str = "",
    link_dirs: Sequence[Path] = (),
) -> Path:
    """An x86_64 library with exactly these facts, synthesised (any host, no compiler).

    The synthesiser's bytes are checked against readelf and the real loader in test_synth.py;
    CLI tests use them so that their answers (and golden files) are the same on every host.
    """
    del version_script, source, link_dirs  # only the facts that reach the dynamic section
    names = [item if isinstance(item, str) else (_soname_of(item) or str(item)) for item in needed]
    facts = ElfFacts(elf_class=ElfClass.ELF64, endian=Endian.LITTLE, machine=Machine.X86_64,
                     osabi=0, elf_type=3, soname=soname, needed=tuple(names), rpath=rpath,
                     runpath=runpath, nodeflib=nodeflib)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    out.write_bytes(synthesize_elf(facts))
    return out


def _soname_of(path: Path) -> str | None:
    with path.open("rb") as handle:
        return read_elf_facts(handle, origin=str(path), size=path.stat().st_size).soname


GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    """`text` equals `tests/golden/<name>`; JR_UPDATE_GOLDEN=1 rewrites the file instead."""
    import os  # noqa: PLC0415

    import pytest  # noqa: PLC0415

    golden = GOLDEN / name
    if os.environ.get("JR_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
        pytest.skip(f"{golden} rewritten (JR_UPDATE_GOLDEN=1)")
    assert text == golden.read_text()


class QuietProgress:
    """An apply `Progress` that tells nobody (tests drive the apply engine directly)."""

    def round(self, number: int, diagnosis: object, plan: object) -> None:
        """Nothing."""

    def step(self, number: int, action: object) -> None:
        """Nothing."""

    def step_done(self, number: int, outcome: object) -> None:
        """Nothing."""

    def verifying(self) -> None:
        """Nothing."""
