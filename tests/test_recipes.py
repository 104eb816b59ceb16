"""The recipe database: the shipped recipes lint clean; a broken set shows every error, each
with its file and dotted field; the commands print what they read, as JSON their schema allows."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli, validate
from packaging.specifiers import SpecifierSet

from resolver.recipes.database import applies_overlap, lint_database, load_database
from resolver.recipes.schema import Applies, StepKind
from resolver.shipped_data import recipes_root

BROKEN = Path(__file__).parent / "recipes_broken"

# (file, field, what the message says): every problem the broken set holds, and no other.
EXPECTED = {
    ("Bad_Name.toml", "(file name)", "a recipe id is lowercase"),
    ("bad-redist.toml", "methods[0].steps[0].manifest_url", "not an https URL"),
    ("bad-redist.toml", "methods[0].steps[0].cuda_variant", "expected cudaNN"),
    ("bad-redist.toml", "methods[0].steps[0].sha256", "64 lowercase hex digits"),
    ("bad-redist.toml", "methods[0].steps[0].size", "expected an integer"),
    ("bad-redist.toml", "methods[0].steps[0].prefix", "absolute path"),
    ("bad-requirement.toml", "provides.sonames[1]", "not a soname"),
    ("bad-requirement.toml", "methods[0].steps[0].requirements[0]", "PEP 508"),
    ("bad-requirement.toml", "methods[0].steps[0].requirements", "installs something"),
    ("bad-requirement.toml", "methods[1].id", "unique lowercase id"),
    ("bad-requirement.toml", "methods[1].steps[0].kind", "got 'teleport'"),
    ("bad-specifier.toml", "applies.flavour[0]", "'jetson' is not one of"),
    ("bad-specifier.toml", "applies.cuda", "not a PEP 440 specifier"),
    ("no-methods.toml", "schema", "expected schema = 1"),
    ("no-methods.toml", "summary", "required"),
    ("no-methods.toml", "sources", "at least one public source"),
    ("no-methods.toml", "provides.sonames", "at least one soname"),
    ("no-methods.toml", "methods", "at least one method"),
    ("not-toml.toml", "", "not TOML"),
    ("source-build-bad-commit.toml", "methods[0].steps[0].commits[0].sha", "40-digit commit"),
    ("source-build-bad-commit.toml", "methods[0].steps[0].env.MAX_JOBS", "expected a string"),
    ("source-build-bad-commit.toml", "methods[0].steps[1].min_branch", "required"),
    ("source-build-bad-commit.toml", "methods[0].steps[1].where", "required"),
    ("stray.txt", "", "not a recipe"),
    ("unknown-key.toml", "colour", "unknown key"),
    ("unknown-key.toml", "methods[0].steps[0].extra", "unknown key"),
    ("overlap-a.toml", "provides.sonames", "as overlap-b does, where both apply"),
}


def test_broken_set_shows_every_error_with_file_and_field() -> None:
    recipes, problems = lint_database(BROKEN)
    seen = {(Path(p.file).name, p.field, p.message) for p in problems}
    for file, field, fragment in EXPECTED:
        assert any(f == file and d == field and fragment in m for f, d, m in seen), (
            file, field, fragment)
    assert len(problems) == len(EXPECTED), sorted(seen)
    # Valid ones load; the one with a preference does not clash with the overlapping pair.
    assert {r.id for r in recipes} == {"overlap-a", "overlap-b", "disjoint-c"}


def test_lint_command_prints_every_problem_and_exits_1() -> None:
    run = run_cli("recipes", "lint", "--recipes", str(BROKEN))
    assert run.code == 1
    lines = run.stdout.splitlines()
    assert len(lines) == len(EXPECTED) + 1
    assert lines[-1].startswith("3 valid recipe(s), 27 problem(s)")
    document = run_cli("recipes", "lint", "--recipes", str(BROKEN), "--json").json()
    validate("recipes", document)
    assert document["exit_code"] == 1 and len(document["problems"]) == len(EXPECTED)


def test_commands_that_use_recipes_refuse_a_broken_one_in_one_line() -> None:
    run = run_cli("recipes", "list", "--recipes", str(BROKEN))
    assert run.code == 2
    assert run.stderr.count("\n") == 1 and "Bad_Name.toml: (file name)" in run.stderr


def test_shipped_recipes_lint_clean() -> None:
    recipes, problems = lint_database(recipes_root())
    assert problems == ()
    assert len(recipes) == len(list(recipes_root().glob("*.toml"))) >= 1
    run = run_cli("recipes", "lint")
    assert run.code == 0, run.stdout


def test_list_and_show_print_what_the_files_say() -> None:
    recipes = load_database(recipes_root())
    listed = run_cli("recipes", "list", "--json")
    assert listed.code == 0
    validate("recipes", listed.json())
    assert [r["id"] for r in listed.json()["recipes"]] == [r.id for r in recipes]
    cudss = next(r for r in recipes if r.id == "cudss-0-cu13-pip")
    shown = run_cli("recipes", "show", cudss.id, "--json").json()
    validate("recipes", shown)
    steps = shown["recipe"]["methods"][0]["steps"]
    assert steps[0] == {"kind": "pip", "requirements": list(cudss.methods[0].steps[0].requirements)}
    assert cudss.methods[0].steps[0].kind is StepKind.PIP
    human = run_cli("recipes", "show", cudss.id)
    assert "pip install nvidia-cudss-cu13==" in human.stdout
    missing = run_cli("recipes", "show", "no-such-recipe")
    assert missing.code == 2 and "no-such-recipe: no such recipe" in missing.stderr


@pytest.mark.parametrize(("a", "b", "overlap"), [
    (">=13", "<13", False),
    (">=12", "<14", True),
    ("==13.0.*", ">=13,<14", True),
    (">=13", "==12.6", False),
    (">=13,<14", ">=14", False),
    ("~=12.6", ">=12.8", True),
], ids=["touching", "crossing", "wildcard", "below", "adjacent", "compatible-release"])
def test_cuda_constraints_overlap_as_versions_do(a: str, b: str, overlap: bool) -> None:
    assert applies_overlap(Applies(cuda=SpecifierSet(a)), Applies(cuda=SpecifierSet(b))) is overlap
    assert applies_overlap(Applies(cuda=SpecifierSet(a), flavour=frozenset({"sbsa"})),
                           Applies(cuda=SpecifierSet(b), flavour=frozenset({"tegra"}))) is False
