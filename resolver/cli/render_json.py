"""JSON rendering: one envelope with `"schema": 1` and sorted keys, per command.

Each command's shape has a JSON Schema in `resolver/cli/schemas/`; a test validates real output.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resolver.diagnose import Diagnosis
    from resolver.findings import Finding
    from resolver.rootfs import RootFS

__all__ = ["diagnosis_json", "dump", "finding_json"]

SCHEMA_VERSION = 1


def dump(envelope: dict[str, Any]) -> str:
    """The envelope as sorted, indented JSON with a final newline."""
    return json.dumps(envelope, sort_keys=True, indent=2) + "\n"


def finding_json(finding: Finding) -> dict[str, Any]:
    """One finding as plain data."""
    return {
        "kind": finding.kind.value,
        "severity": finding.severity.value,
        "subject": finding.subject,
        "message": finding.message,
        "requested_by": list(finding.requested_by),
        "phases": list(finding.phases),
        "searched": [
            {"via": c.via.value, "path": c.path, "outcome": c.outcome.value, "owner": c.owner,
             "detail": c.detail}
            for c in finding.searched
        ],
        "found_elsewhere": list(finding.found_elsewhere),
        "provider": finding.provider,
    }


def diagnosis_json(result: Diagnosis, rootfs: RootFS, exit_code: int, *,
                   fixture: str | None = None, torch_fixture: str | None = None
                   ) -> dict[str, Any]:
    """The `diagnose` envelope."""
    platform = result.platform
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
            "arch": platform.arch,
            "machine": platform.machine,
            "glibc": platform.glibc,
            "os": {"id": platform.os_id, "version": platform.os_version},
            "l4t": platform.l4t,
            "jetpack": platform.jetpack,
            "cuda": platform.cuda,
            "cuda_flavour": platform.cuda_flavour,
            "cudnn": platform.cudnn,
            "python": platform.python,
            "gpu_arch": platform.gpu_arch,
            "driver": platform.driver,
            "system_dirs": list(platform.system_dirs),
            "ld_so_conf_dirs": list(result.loader.conf_dirs),
            "ld_so_cache": result.loader.cache_source,
        },
        "torch": None if torch is None else {
            "site": torch.site,
            "fixture": torch_fixture,
            "version": torch.version,
            "cuda": torch.cuda,
            "preload_source": torch.preload_source,
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
             "gpu_code": [str(c) for c in o.facts.gpu_code]}
            for o in result.objects
        ],
        "findings": [finding_json(f) for f in result.findings],
    }
