"""ld.so.conf parsing and include walking, checked against glibc's ldconfig on a real tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from resolver.target.ldconf import ConfKind, ConfLine, iter_conf_dirs, parse_ld_so_conf

if TYPE_CHECKING:
    from pathlib import Path

LDCONFIG = shutil.which("ldconfig") or shutil.which("/sbin/ldconfig")


class Tree:
    """A target root on disk, read the way a RootFS hands files to iter_conf_dirs."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def read_text(self, path: str) -> str | None:
        target = self.root / path.lstrip("/")
        return target.read_text() if target.is_file() else None

    def glob(self, pattern: str) -> list[str]:
        return ["/" + str(p.relative_to(self.root)) for p in self.root.glob(pattern.lstrip("/"))]

    def dirs(self, path: str = "/etc/ld.so.conf") -> list[str]:
        return list(iter_conf_dirs(self.read_text, self.glob, path))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def dirs_of(text: str) -> list[str]:
    return [line.value for line in parse_ld_so_conf(text) if line.kind is ConfKind.DIRECTORY]


def test_parse_drops_comments_blank_lines_and_leading_space() -> None:
    text = "# libc default configuration\n\n   \n  /usr/local/lib # trailing\n\t/opt/x\n#/off\n"
    assert parse_ld_so_conf(text) == (
        ConfLine(kind=ConfKind.DIRECTORY, value="/usr/local/lib", lineno=4),
        ConfLine(kind=ConfKind.DIRECTORY, value="/opt/x", lineno=5),
    )


def test_parse_keeps_a_whole_line_as_one_directory_as_ldconfig_does() -> None:
    # glibc's add_dir_1 takes the rest of the line: no splitting at ':', ',' or blanks.
    assert dirs_of("/opt/a:/opt/b\n/opt/c, /opt/d\n/opt/e /opt/f\n") == [
        "/opt/a:/opt/b",
        "/opt/c, /opt/d",
        "/opt/e /opt/f",
    ]


def test_parse_trims_type_suffix_trailing_space_and_slashes() -> None:
    text = "/lib/libc5=libc5\n/usr/lib/ =libc6\n/opt/crlf\r\n/opt/slash///\n/\n///\n  =libc6\n"
    assert dirs_of(text) == ["/lib/libc5", "/usr/lib", "/opt/crlf", "/opt/slash"]


def test_parse_stops_a_line_at_nul() -> None:
    assert dirs_of("/opt/nul\0/ignored\n/next\n") == ["/opt/nul", "/next"]


def test_parse_include_takes_every_blank_separated_pattern() -> None:
    lines = parse_ld_so_conf("/first\ninclude  /etc/a/*.conf \tb.conf\t c.conf # more\n")
    assert lines[1:] == tuple(
        ConfLine(kind=ConfKind.INCLUDE, value=value, lineno=2)
        for value in ("/etc/a/*.conf", "b.conf", "c.conf")
    )


def test_parse_include_needs_a_blank_after_the_keyword() -> None:
    lines = parse_ld_so_conf("include\nincludes /x\ninclude\t/y.conf\nINCLUDE /z.conf\n")
    assert [(line.kind, line.value) for line in lines] == [
        (ConfKind.DIRECTORY, "include"),
        (ConfKind.DIRECTORY, "includes /x"),
        (ConfKind.INCLUDE, "/y.conf"),
        (ConfKind.DIRECTORY, "INCLUDE /z.conf"),
    ]


def test_parse_include_pattern_keeps_a_carriage_return() -> None:
    # Only spaces and tabs split words, so a CRLF file names "x.conf\r", which matches nothing.
    assert parse_ld_so_conf("include x.conf\r\n")[0].value == "x.conf\r"


def test_parse_ignores_hwcap_lines_in_any_case() -> None:
    assert dirs_of("hwcap 1 nosegneg\nHWCAP 0 foo\nhwcaps\n/kept\n") == ["hwcaps", "/kept"]


def test_conf_dirs_follow_includes_in_sorted_order_without_duplicates(tree: Tree) -> None:
    tree.write("/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n/usr/local/lib\n/b\n")
    tree.write("/etc/ld.so.conf.d/zz-cuda.conf", "/usr/local/cuda/lib64\n")
    tree.write("/etc/ld.so.conf.d/b.conf", "/b\n")
    tree.write("/etc/ld.so.conf.d/a.conf", "/a\n/b\n")
    tree.write("/etc/ld.so.conf.d/README", "/not-a-conf\n")
    assert tree.dirs() == ["/a", "/b", "/usr/local/cuda/lib64", "/usr/local/lib"]


def test_relative_include_is_relative_to_the_including_file(tree: Tree) -> None:
    tree.write("/etc/ld.so.conf", "include ld.so.conf.d/*.conf\n")
    tree.write("/etc/ld.so.conf.d/a.conf", "/a\ninclude ../extra/*.conf\n")
    tree.write("/etc/extra/x.conf", "/x\ninclude sub/nested.conf\n")
    tree.write("/etc/extra/sub/nested.conf", "/nested\n")
    tree.write("/etc/sub/nested.conf", "/wrong-directory\n")
    assert tree.dirs() == ["/a", "/x", "/nested"]


def test_missing_files_and_unmatched_includes_add_nothing(tree: Tree) -> None:
    assert tree.dirs() == []
    tree.write("/etc/ld.so.conf", "include /etc/missing/*.conf /etc/nope.conf\n/kept\n")
    assert tree.dirs() == ["/kept"]


def test_include_cycles_stop(tree: Tree) -> None:
    tree.write("/etc/ld.so.conf", "include /etc/loop.conf\n/top\n")
    tree.write("/etc/loop.conf", "/loop\ninclude ld.so.conf\ninclude ./loop.conf\n")
    assert tree.dirs() == ["/loop", "/top"]


def test_include_through_a_directory_that_contains_itself_stops(tree: Tree) -> None:
    # etc/deep/sub -> . gives ever longer names for the same file: only the depth cap ends it.
    tree.write("/etc/ld.so.conf", "include deep/a.conf\n")
    tree.write("/etc/deep/a.conf", "/deep\ninclude sub/a.conf\n")
    (tree.root / "etc/deep/sub").symlink_to(".")
    assert tree.dirs() == ["/deep"]


def test_a_file_included_twice_is_read_once(tree: Tree) -> None:
    tree.write("/etc/ld.so.conf", "include /etc/a.conf\n/middle\ninclude /etc/a.conf\n")
    tree.write("/etc/a.conf", "/a\n")
    reads: list[str] = []

    def read_text(path: str) -> str | None:
        reads.append(path)
        return tree.read_text(path)

    assert list(iter_conf_dirs(read_text, tree.glob)) == ["/a", "/middle"]
    assert reads == ["/etc/ld.so.conf", "/etc/a.conf"]


@pytest.mark.skipif(LDCONFIG is None, reason="needs glibc's ldconfig")
@pytest.mark.skipif(os.geteuid() != 0, reason="ldconfig -r refuses relative includes unless root")
def test_conf_dirs_match_what_ldconfig_reads(tree: Tree) -> None:
    tree.write(
        "/etc/ld.so.conf",
        "include /etc/ld.so.conf.d/*.conf\n# comment\n  /usr/local/lib/ # trailing\n"
        "/opt/a:/opt/b\n/opt/c, /opt/d\n/opt/e /opt/f\n/opt/crlf\r\n/lib/libc5=libc5\n"
        "hwcap 1 foo\ninclude /etc/missing/*.conf /etc/nope.conf\n/\n",
    )
    tree.write("/etc/ld.so.conf.d/b.conf", "/b\n/a\n")
    tree.write("/etc/ld.so.conf.d/a.conf", "/a\ninclude ../extra/*.conf\n")
    tree.write("/etc/extra/x.conf", "/x\n/a\n")
    ours = tree.dirs()
    for directory in ours:  # ldconfig only reports directories that exist
        (tree.root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    assert LDCONFIG is not None
    argv = [LDCONFIG, "-v", "-N", "-X", "-r", str(tree.root)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    read = re.findall(r"^(.*): \(from (?!<builtin>).*:\d+\)$", done.stdout, re.MULTILINE)
    assert ours == read
    assert "/opt/a:/opt/b" in ours
