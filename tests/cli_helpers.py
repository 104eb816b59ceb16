"""Run the CLI in-process at a fixed terminal width and validate its JSON against the schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
from typer.testing import CliRunner

from resolver.cli.app import get_app

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
    result = runner.invoke(get_app(), list(args), env={"COLUMNS": str(WIDTH), **(env or {})},
                           catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


def validate(command: str, document: dict[str, Any]) -> None:
    text = resources.files("resolver.cli").joinpath(f"schemas/{command}.json").read_text("utf-8")
    jsonschema.validate(document, json.loads(text))


def subjects(document: dict[str, Any], severity: str, kind: str | None = None) -> set[str]:
    return {f["subject"] for f in document["findings"]
            if f["severity"] == severity and (kind is None or f["kind"] == kind)}
