"""record -> materialise -> diagnose on real roots, and readelf on every synthesised file."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

import pytest
from cli_helpers import run_cli, validate
from test_reader import ours, readelf_facts

from resolver.fixture.materialize import materialize
from resolver.fixture.model import parse_fixture_dir

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.slow


def _findings(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((f["kind"], f["severity"], f["subject"]) for f in document["findings"])


def _objects(document: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted((str(o["soname"]), o["real"].rsplit("/", 1)[-1], tuple(o["gpu_code"]))
                  for o in document["objects"])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, arm64_root: Path,
             torch_arm_site: Path) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("fixtures")
    system = run_cli("record", "--root", str(arm64_root), "--out", str(out / "arm64"),
                     "--gpu-arch", "110", "--json")
    assert system.code == 0, system.stderr
    site = run_cli("record", "--site-only", "--site-packages", str(torch_arm_site), "--site-at",
                   "/usr/local/lib/python3.12/dist-packages", "--out", str(out / "torch"))
    assert site.code == 0, site.stderr
    return out / "arm64", out / "torch"


def test_replay_gives_the_same_diagnosis_as_the_original_root(
        recorded: tuple[Path, Path], arm64_root: Path, torch_arm_site: Path) -> None:
    system, torch = recorded
    replayed = run_cli("diagnose", "--fixture", str(system), "--torch-fixture", str(torch),
                       "--json")
    original = run_cli("diagnose", "--root", str(arm64_root), "--site-packages",
                       str(torch_arm_site), "--gpu-arch", "110", "--json")
    assert replayed.code == original.code == 1
    validate("diagnose", replayed.json())
    assert _findings(replayed.json()) == _findings(original.json())
    assert _objects(replayed.json()) == _objects(original.json())
    assert replayed.json()["target"]["gpu_arch"] == 110  # from the manifest


def test_readelf_reads_back_every_synthesised_file(recorded: tuple[Path, Path]) -> None:
    for directory in recorded:
        fixture = parse_fixture_dir(directory)
        top = materialize(fixture)
        elves = {p: e[1] for p, e in fixture.entries.items() if e[0] == "elf"}
        assert len(elves) > 15
        for path, facts in elves.items():
            assert readelf_facts(top / path.lstrip("/")) == ours(facts), path


def test_materialised_cache_is_the_recorded_one(recorded: tuple[Path, Path],
                                                arm64_root: Path) -> None:
    import subprocess  # noqa: PLC0415

    top = materialize(parse_fixture_dir(recorded[0]))

    def listing(cache: Path) -> list[str]:
        out = subprocess.run(["ldconfig", "-p", "-C", str(cache)], capture_output=True,
                             text=True, check=True).stdout
        return [line for line in out.splitlines()[1:] if "=>" in line]

    assert listing(top / "etc" / "ld.so.cache") == listing(arm64_root / "etc" / "ld.so.cache")


def test_check_exit_codes_and_junit(recorded: tuple[Path, Path], torch_cpu: Path,
                                    tmp_path: Path) -> None:
    system, torch = recorded
    report = tmp_path / "report.xml"
    bad = run_cli("check", "--fixture", str(system), "--torch-fixture", str(torch), "--junit",
                  str(report))
    assert bad.code == 1
    suite = ET.parse(report).getroot()  # noqa: S314 - our own report
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and "libcudart.so.13" in (failure.text or "")
    good = run_cli("check", "--fixture", str(system), "--site-packages", str(torch_cpu),
                   "--json", "--junit", str(report))
    document = good.json()
    # torch 2.13.0+cpu is an x86_64 build: on an aarch64 target it must not pass.
    assert good.code == 1 and document["fixtures"][0]["import_torch"] == "fails"


def _replace(path: Path, old: str, new: str, count: int = -1) -> None:
    path.write_text(path.read_text().replace(old, new, count))


def _unknown_schema(fixture: Path) -> None:
    _replace(fixture / "manifest.toml", "schema = 1", "schema = 7")


def _missing_kind(fixture: Path) -> None:
    _replace(fixture / "manifest.toml", 'kind = "system"', "")


def _path_escapes(fixture: Path) -> None:
    _replace(fixture / "files.json", '"/etc"', '"/../etc"', 1)


def _unknown_entry_kind(fixture: Path) -> None:
    _replace(fixture / "files.json", '"kind": "dir"', '"kind": "sock"', 1)


def _no_entries(fixture: Path) -> None:
    (fixture / "files.json").write_text(json.dumps({"schema": 1}))


def _missing_fact(fixture: Path) -> None:
    _replace(fixture / "files.json", '"soname"', '"sonam"', 1)


def _unknown_key(fixture: Path) -> None:
    manifest = fixture / "manifest.toml"
    manifest.write_text(manifest.read_text() + "\nsurprise = 1\n")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_unknown_schema, "schema"),
        (_missing_kind, ".kind"),
        (_path_escapes, "escapes the root"),
        (_unknown_entry_kind, "unknown kind"),
        (_no_entries, ".entries"),
        (_missing_fact, "facts.soname"),
        (_unknown_key, "unknown keys"),
    ],
    ids=["unknown-schema", "missing-kind", "path-escapes", "unknown-entry-kind", "no-entries",
         "missing-fact", "unknown-key"],
)
def test_bad_fixture_is_one_line_naming_file_and_field(
        recorded: tuple[Path, Path], tmp_path: Path, edit: Callable[[Path], None],
        field: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(recorded[0], broken)
    edit(broken)
    run = run_cli("diagnose", "--fixture", str(broken), "--site-packages", str(tmp_path))
    assert run.code == 2
    assert field in run.stderr
    assert str(broken) in run.stderr
    assert run.stderr.count("\n") == 1


def test_live_root_recorded_then_replayed_gives_the_live_diagnosis(
        tmp_path: Path, torch_x86_alone: Path) -> None:
    import sys  # noqa: PLC0415

    out = tmp_path / "host"
    recorded = run_cli("record", "--root", "/", "--python", sys.executable, "--out", str(out))
    assert recorded.code == 0, recorded.stderr
    replayed = run_cli("diagnose", "--fixture", str(out), "--site-packages", str(torch_x86_alone),
                       "--json")
    live = run_cli("diagnose", "--site-packages", str(torch_x86_alone), "--json",
                   "--ld-library-path", "")
    # Whatever this host is (an x86_64 torch is the wrong architecture on an aarch64 one, a
    # CUDA install may supply what the wheel lacks), the recording tells the same story.
    assert replayed.code == live.code
    assert _findings(replayed.json()) == _findings(live.json())


@pytest.mark.fuzz
def test_mutated_fixtures_give_a_fixture_or_one_line_invalid_fixture(
        recorded: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    from hypothesis import HealthCheck, given, settings  # noqa: PLC0415
    from hypothesis import strategies as st  # noqa: PLC0415

    from resolver.errors import InvalidFixture  # noqa: PLC0415

    original = (recorded[0] / "files.json").read_text()
    manifest = (recorded[0] / "manifest.toml").read_text()

    # Besides random text, the shapes of issue 10: JSON escapes of a lone surrogate (one that
    # names no file, one an undecodable byte), of NUL, a deep array, raw undecodable bytes.
    hostile = st.sampled_from(["\\ud800", "\\udcff", "\\u0000", "[" * 5000, "\udcff\udcfe",
                               '"\\u001b[31m"', "1e999999", "-" + "9" * 5000])

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(0, len(original) - 1), st.text(max_size=8) | hostile, st.integers(0, 8))
    def mutate(at: int, insert: str, cut: int) -> None:
        directory = tmp_path_factory.mktemp("fuzzed")
        (directory / "manifest.toml").write_text(manifest)
        (directory / "files.json").write_bytes(
            (original[:at] + insert + original[at + cut:]).encode("utf-8", "surrogateescape"))
        try:
            fixture = parse_fixture_dir(directory)
        except InvalidFixture as err:
            assert str(err).startswith(str(directory))
            assert "\n" not in str(err)
            return
        try:
            materialize(fixture, tmp_path_factory.mktemp("cache"))
        except InvalidFixture as err:
            assert "\n" not in str(err)

    mutate()


def test_fixture_cannot_write_outside_its_directory(recorded: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    from resolver.errors import InvalidFixture  # noqa: PLC0415

    # A directory a link in the fixture points to: entries under the link would land in it.
    outside = tmp_path / "outside"
    outside.mkdir()
    escaping = {
        "/escape": ("symlink", str(outside)),
        "/escape/sub": ("dir", None),
        "/escape/sub/x": ("text", "x"),
    }
    broken = tmp_path / "under-link"
    shutil.copytree(recorded[0], broken)
    files = json.loads((broken / "files.json").read_text())
    files["entries"]["/escape"] = {"kind": "symlink", "target": str(outside)}
    files["entries"]["/escape/sub"] = {"kind": "dir"}
    files["entries"]["/escape/sub/x"] = {"kind": "text", "text": "x"}
    (broken / "files.json").write_text(json.dumps(files))
    with pytest.raises(InvalidFixture, match="lies under the symlink /escape"):
        parse_fixture_dir(broken)
    # materialize refuses such entries too, when given them without the parser's check.
    fixture = parse_fixture_dir(recorded[0])
    unchecked = replace(fixture, entries={**fixture.entries, **escaping}, digest="0" * 64)
    with pytest.raises(InvalidFixture, match="lies under a recorded symlink /escape"):
        materialize(unchecked, tmp_path / "cache")
    assert list(outside.iterdir()) == []
    renamed = tmp_path / "renamed"
    shutil.copytree(recorded[0], renamed)
    manifest = (renamed / "manifest.toml").read_text()
    (renamed / "manifest.toml").write_text(
        manifest.replace('name = "arm64"', f'name = "{tmp_path}/ESCAPED"'))
    with pytest.raises(InvalidFixture, match=r"\.name: expected letters"):
        parse_fixture_dir(renamed)
