"""JSON rendering: one envelope with `"schema": 3` and sorted keys, per command.

A finding is rendered from its dataclass fields, so every typed fact a recipe matcher needs is
there (versions as strings, paths in the root's namespace), plus `kind`, `subject` and a
`message` written by `resolver.cli.sentences`. Each command's shape has a JSON Schema in
`resolver/cli/schemas/`; a test validates real output against it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from resolver.cli.sentences import describe
from resolver.elf.facts import GpuCode
from resolver.loader.binding import STATIC_TLS_SURPLUS
from resolver.loader.walk import Candidate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resolver.apply.runs import Run
    from resolver.diagnose import Diagnosis
    from resolver.findings.model import Finding
    from resolver.plan import Plan
    from resolver.recipes.match import Fix
    from resolver.recipes.schema import Recipe, Step
    from resolver.target.platform import Platform
    from resolver.target.rootfs import RootFS

__all__ = [
    "SCHEMA_VERSION",
    "check_json",
    "diagnosis_json",
    "dump",
    "finding_json",
    "fixes_json",
    "plan_json",
    "platform_json",
    "recipe_json",
    "run_json",
]

SCHEMA_VERSION = 3


def dump(envelope: dict[str, Any]) -> str:
    """The envelope as sorted, indented JSON with a final newline."""
    return json.dumps(envelope, sort_keys=True, indent=2) + "\n"


def _plain(value: object) -> Any:  # noqa: ANN401 - JSON values
    """A finding's field as JSON: versions and GPU codes as strings, enums by value."""
    if isinstance(value, Version | GpuCode):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Candidate):
        return {"via": value.via.value, "path": value.path, "outcome": value.outcome.value,
                "owner": value.owner, "detail": value.detail}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def finding_json(finding: Finding) -> dict[str, Any]:
    """One finding: its typed fields, `kind`, `subject` and a `message` for people."""
    document: dict[str, Any] = {
        f.name: _plain(getattr(finding, f.name)) for f in dataclasses.fields(finding)}
    document.update(kind=finding.kind, subject=finding.subject, message=describe(finding))
    return document


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def platform_json(platform: Platform) -> dict[str, Any]:
    """The target's platform facts; versions as strings, None where the root does not say."""
    return {
        "arch": platform.arch,
        "machine": platform.machine,
        "glibc": _text(platform.glibc),
        "os": {"id": platform.os_id, "version": platform.os_version},
        "l4t": _text(platform.l4t),
        "jetpack": _text(platform.jetpack),
        "jetpack_label": platform.jetpack_label,
        "cuda": _text(platform.cuda),
        "cuda_flavour": platform.cuda_flavour,
        "cudnn": _text(platform.cudnn),
        "python": _text(platform.python),
        "gpu_arch": platform.gpu_arch,
        "driver": _text(platform.driver),
        "system_dirs": list(platform.system_dirs),
    }


def fixes_json(result: Diagnosis, fixes: Sequence[Fix]) -> list[dict[str, Any]]:
    """Each fix, pointing at its finding by index in `findings`."""
    index = {id(f): n for n, f in enumerate(result.findings)}
    return [{"finding": index[id(fix.finding)], "wanted": fix.wanted,
             "recipes": [r.id for r in fix.recipes],
             "excluded": [{"recipe": r.id, "why": why} for r, why in fix.excluded],
             "activate": fix.activate, "family": list(fix.family)}
            for fix in fixes if id(fix.finding) in index]


def diagnosis_json(result: Diagnosis, rootfs: RootFS, exit_code: int, *,  # noqa: PLR0913
                   fixture: str | None = None, torch_fixture: str | None = None,
                   fixes: Sequence[Fix] = ()) -> dict[str, Any]:
    """The `diagnose` envelope."""
    torch = result.torch
    counts: dict[str, int] = {}
    for finding in result.findings:
        counts[finding.severity.value] = counts.get(finding.severity.value, 0) + 1
    loaded = [o for o in result.objects if o.index not in result.unloaded]
    return {
        "schema": SCHEMA_VERSION,
        "command": "diagnose",
        "exit_code": exit_code,
        "target": {
            "root": rootfs.root,
            "fixture": fixture,
            **platform_json(result.platform),
            "ld_so_conf_dirs": list(result.loader.conf_dirs),
            "ld_so_cache": result.loader.cache_source,
            "unreadable": [{"path": path, "why": why} for path, why in result.unreadable],
        },
        "torch": None if torch is None else {
            "site": torch.site,
            "fixture": torch_fixture,
            "version": torch.version,
            "cuda": torch.cuda,
            "preload_source": torch.preload_source,
        },
        "process": {
            "interpreter": result.interpreter,
            "sys_path": list(result.sys_path),
            "symbols_unjudged": [{"phase": phase, "why": why}
                                 for phase, why in dict.fromkeys(result.symbols_unjudged)],
            "static_tls": None if result.static_tls is None else {
                "surplus": STATIC_TLS_SURPLUS,
                "used_by_dlopen": result.static_tls.used - result.static_tls.at_start,
                "free": result.static_tls.free},
        },
        "summary": {
            "blocks_import": result.blocks_import,
            "objects_loaded": len(loaded),
            "findings": counts,
        },
        "attempts": [
            {"phase": a.phase, "name": a.name, "why": a.why, "ok": a.ok,
             "superseded": a.superseded}
            for a in result.attempts
        ],
        "objects": [
            {"path": o.path, "real": o.real, "soname": o.facts.soname, "phase": o.phase,
             "loaded": o.index not in result.unloaded,
             "found_via": None if o.found is None else {"rule": o.found.via.value,
                                                        "owner": o.found.owner},
             "gpu_code": [str(c) for c in o.facts.gpu_code]}
            for o in result.objects
        ],
        "findings": [finding_json(f) for f in result.findings],
        "fixes": fixes_json(result, fixes),
    }


def check_json(results: list[tuple[str, Diagnosis, float]], input_name: str, exit_code: int,
               require: str | None = None) -> dict[str, Any]:
    """The `check` envelope: per fixture, what is required, whether it passed, the findings."""
    from resolver.cli.commands.check import failing, required_of  # noqa: PLC0415
    from resolver.findings.model import Severity  # noqa: PLC0415

    return {
        "schema": SCHEMA_VERSION, "command": "check", "input": input_name,
        "exit_code": exit_code,
        "fixtures": [{
            "fixture": name, "required": required_of(result, require),
            "passed": not failing(result, required_of(result, require)),
            "import_torch": "fails" if result.blocks_import else "loads",
            "blocking": [finding_json(f) for f in result.findings
                         if f.severity is Severity.BLOCKS_IMPORT],
            "cuda_unusable": [finding_json(f) for f in result.findings
                              if f.severity is Severity.CUDA_UNUSABLE],
            "breaks_feature": [finding_json(f) for f in result.findings
                               if f.severity is Severity.BREAKS_FEATURE],
        } for name, result, _ in results],
    }


def recipe_json(recipe: Recipe) -> dict[str, Any]:
    """A recipe as plain data: specifiers and versions as strings, sets sorted."""

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    applies = recipe.applies
    return {
        "id": recipe.id, "summary": recipe.summary, "sources": list(recipe.sources),
        "prefer": recipe.prefer, "needs": list(recipe.needs),
        "provides": {"sonames": list(recipe.provides.sonames),
                     "opens": list(recipe.provides.opens),
                     "version": text(recipe.provides.version)},
        "applies": {
            "arch": sorted(applies.arch), "flavour": sorted(applies.flavour),
            "distro": sorted(applies.distro), "cuda": text(applies.cuda),
            "l4t": text(applies.l4t), "jetpack": text(applies.jetpack),
            "distro_version": text(applies.distro_version), "python": text(applies.python),
            "glibc": text(applies.glibc)},
        "methods": [{"id": m.id, "needs_root": m.needs_root,
                     "steps": [_step_json(s) for s in m.steps]} for m in recipe.methods],
        "check": {"sonames": list(recipe.check.sonames), "python": recipe.check.python},
    }


def _step_json(step: Step) -> dict[str, Any]:
    """A step's kind and the fields its kind uses (empty ones left out)."""
    document: dict[str, Any] = {"kind": step.kind.value}
    for field in dataclasses.fields(step):
        value = getattr(step, field.name)
        if field.name != "kind" and value not in (None, ()):
            document[field.name] = _plain(value) if field.name != "env" else dict(value)
    return document


def plan_json(plan: Plan, exit_code: int) -> dict[str, Any]:
    """The `plan` envelope: the actions in order, with their exact argument lists."""
    return {
        "schema": SCHEMA_VERSION, "command": "plan", "exit_code": exit_code,
        "actions": [{"recipe": a.recipe, "method": a.method, "kind": a.kind.value,
                     "argv": [list(argv) for argv in a.argv], "effect": a.effect,
                     "writes": list(a.writes), "directory": a.directory,
                     "needs_root": a.needs_root,
                     "undo": [list(argv) for argv in a.undo], "undo_effect": a.undo_effect,
                     "fixes": list(a.fixes)} for a in plan.actions],
        "unfixable": [{"wanted": wanted, "why": why} for wanted, why in plan.unfixable],
        "deferred": list(plan.deferred),
    }


def run_json(run: Run, command: str, exit_code: int) -> dict[str, Any]:
    """An apply run as its journal tells it.

    The envelope of `apply`, `rollback`, `resume` and `status`.
    """
    from resolver.apply.journal import Event  # noqa: PLC0415
    from resolver.apply.runs import steps_of  # noqa: PLC0415

    records = run.records()
    state = run.state()
    last = {record.event: dict(record.data) for record in records}
    request = dict(records[0].data) if records else {}
    return {
        "schema": SCHEMA_VERSION, "command": command, "exit_code": exit_code,
        "run": run.id, "journal": str(run.journal_path),
        "target": {"root": request.get("root"), "site": request.get("site"),
                   "wheel": request.get("wheel")},
        "outcome": state.outcome, "in_doubt": state.in_doubt,
        "ending": last.get(Event.RUN_FINISHED, {}).get("ending"),
        "remaining": [{"wanted": str(u[0]), "why": str(u[1])} for u in last.get(
            Event.RUN_FINISHED, {}).get("remaining", last.get(Event.ROUND, {}).get(
                "unfixable", []))],
        "error": last.get(Event.ERROR, {}).get("message"),
        "steps": [{"number": s.number, "recipe": s.recipe, "kind": s.kind, "effect": s.effect,
                   "state": s.state, "seconds": s.seconds, "output": s.output}
                  for s in steps_of(records)],
        "freeze": list(last.get(Event.SNAPSHOT, {}).get("freeze", [])),
        "verified": last.get(Event.VERIFIED),
        "restored": last.get(Event.RESTORED),
    }
