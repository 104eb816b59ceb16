"""`jetson-resolve check`: diagnose one torch against several recorded targets, for CI.

It exits 1 when the torch fails what is required of it on any of the fixtures: that `import
torch` loads, and for a CUDA build (or with `--require cuda`) that CUDA is usable too (no
`cuda-unusable` finding: a CPU-only build on a GPU machine, no code for its GPU, a driver too
old). `--require import` asks only for the import. It can write a JUnit XML report (one test
case per fixture; the failing findings as its failure) that any CI shows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path  # noqa: TC003 - typer reads the annotations at run time
from typing import TYPE_CHECKING, Annotated

import typer

from resolver.cli.errors import ExitCode, fail

if TYPE_CHECKING:
    from resolver.diagnose import Diagnosis
    from resolver.findings.model import Finding

__all__ = ["REQUIREMENTS", "failing", "junit_xml", "register", "required_of"]


REQUIREMENTS = ("import", "cuda")


def required_of(result: Diagnosis, require: str | None) -> str:
    """What must work: `require` when given, else "cuda" for a CUDA build, "import" for CPU."""
    if require is not None:
        return require
    return "cuda" if result.torch is not None and result.torch.cuda else "import"


def failing(result: Diagnosis, required: str) -> list[Finding]:
    """The findings that fail `required`: blocking ones, and with "cuda" the CUDA-unusable."""
    from resolver.findings.model import Severity  # noqa: PLC0415

    bad = {Severity.BLOCKS_IMPORT} | ({Severity.CUDA_UNUSABLE} if required == "cuda" else set())
    return [f for f in result.findings if f.severity in bad]


def junit_xml(results: list[tuple[str, Diagnosis, float]], input_name: str,
              require: str | None = None) -> str:
    """A JUnit report: a test case per fixture, failed when it fails what is required.

    Names and sentences from the target pass through `xml_text`: XML 1.0 cannot hold control
    characters or undecodable bytes, and a report CI cannot parse hides the failure.
    """
    from xml.etree import ElementTree as ET  # noqa: PLC0415

    from resolver.cli.sentences import describe  # noqa: PLC0415
    from resolver.cli.text import xml_text  # noqa: PLC0415
    from resolver.findings.model import Severity  # noqa: PLC0415

    failures = sum(1 for _, result, _ in results
                   if failing(result, required_of(result, require)))
    suite = ET.Element("testsuite", name="jetson-resolve check", tests=str(len(results)),
                       failures=str(failures), errors="0",
                       time=f"{sum(t for _, _, t in results):.3f}")
    for name, result, seconds in results:
        required = required_of(result, require)
        case = ET.SubElement(suite, "testcase", classname=f"jetson-resolve.{required}",
                             name=xml_text(f"{input_name} on {name}"), time=f"{seconds:.3f}")
        bad = failing(result, required)
        if bad:
            what = "import-torch-fails" if result.blocks_import else "cuda-unusable"
            failure = ET.SubElement(case, "failure", type=what,
                                    message=f"{len(bad)} finding(s) fail '{required}'")
            failure.text = xml_text("\n".join(describe(f) for f in bad))
        later = [describe(f) for f in result.findings if f.severity is Severity.BREAKS_FEATURE]
        if later:
            ET.SubElement(case, "system-out").text = xml_text("breaks a feature:\n"
                                                              + "\n".join(later))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _write_report(path: Path, report: str) -> None:
    """Write the JUnit report atomically, parsed back first: never a half-written report."""
    from xml.etree import ElementTree as ET  # noqa: PLC0415

    from resolver.host_files import write_atomic  # noqa: PLC0415

    # Our own report, parsed back: no entity of anyone else's is ever expanded.
    write_atomic(path, report.encode("utf-8"), check=ET.parse)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("check")
    def check_command(
        fixture: Annotated[list[str], typer.Option(
            "--fixture", help="A recorded target (bundled name or directory); repeat it.")],
        wheel: Annotated[Path | None, typer.Option("--wheel", help="The torch wheel.")] = None,
        site_packages: Annotated[Path | None, typer.Option(
            "--site-packages", help="A site-packages directory holding torch.")] = None,
        torch_fixture: Annotated[str | None, typer.Option(
            "--torch-fixture", help="A recorded torch install.")] = None,
        junit: Annotated[Path | None, typer.Option(
            "--junit", help="Write a JUnit XML report.")] = None,
        require: Annotated[str | None, typer.Option(
            "--require", help="What must work: import, or cuda (default: cuda for a CUDA "
            "build, import for a CPU build).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,  # noqa: ARG001 - read by the app (resolver.cli.app)
    ) -> None:
        """Exit non-zero if the torch would fail to import on any of the recorded targets."""
        from resolver.cli.commands.diagnose import make_source, run_diagnose  # noqa: PLC0415

        if wheel is None and site_packages is None and torch_fixture is None:
            raise fail("give the torch to check: --wheel, --site-packages or --torch-fixture")
        if junit is not None and not junit.resolve().parent.is_dir():
            raise fail(f"--junit {junit}: its folder does not exist")
        if require is not None and require not in REQUIREMENTS:
            raise fail(f"--require {require}: give import or cuda")
        results: list[tuple[str, Diagnosis, float]] = []
        for name in fixture:
            source = make_source(python=None, site_packages=site_packages, wheel=wheel,
                                 root=None, ld_library_path="", gpu_arch=None,
                                 no_cache=False, fixture=name, torch_fixture=torch_fixture)
            started = time.perf_counter()
            result, _ = run_diagnose(source)
            results.append((name, result, time.perf_counter() - started))
            sys.stderr.write(f"checked {name}\n")
        input_name = str(wheel or site_packages or torch_fixture)
        if junit is not None:
            report = junit_xml(results, input_name, require)
            _write_report(junit, report)
        failed = [name for name, result, _ in results
                  if failing(result, required_of(result, require))]
        code = ExitCode.FINDINGS if failed else ExitCode.OK
        if as_json:
            from resolver.cli.render_json import check_json, dump  # noqa: PLC0415

            sys.stdout.write(dump(check_json(results, input_name, code, require)))
        else:
            from resolver.cli.render_human import render_check  # noqa: PLC0415

            render_check(results, input_name, require)
        raise typer.Exit(int(code))
