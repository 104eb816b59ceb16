"""Every kind of finding is ordered, described in words, and has a shape in the JSON Schema."""

from __future__ import annotations

import json
from importlib import resources

from resolver.cli.sentences import describe
from resolver.findings import model
from resolver.findings.model import CAUSE_ORDER, Finding


def _kinds() -> set[type[Finding]]:
    """The finding classes the model exports that name a kind."""
    exported = (getattr(model, name) for name in model.__all__)
    return {cls for cls in exported
            if isinstance(cls, type) and issubclass(cls, Finding) and "kind" in vars(cls)}


def test_every_kind_is_ordered_and_described() -> None:
    kinds = _kinds()
    assert len(kinds) >= 11
    assert set(CAUSE_ORDER) == kinds
    assert len({cls.kind for cls in kinds}) == len(kinds)
    assert all(cls in describe.registry for cls in kinds)


def test_every_kind_has_a_schema_shape_with_its_fields() -> None:
    text = resources.files("resolver.cli").joinpath("schemas/diagnose.json").read_text("utf-8")
    shapes = {s["properties"]["kind"]["const"]: s
              for s in json.loads(text)["$defs"]["finding"]["oneOf"]}
    kinds = _kinds()
    assert set(shapes) == {cls.kind for cls in kinds}
    for cls in kinds:
        fields = set(cls.__dataclass_fields__) - {"kind"}
        assert set(shapes[cls.kind]["required"]) == fields | {"kind", "subject", "message"}, cls
