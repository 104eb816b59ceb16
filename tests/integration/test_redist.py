"""Redist steps against a real HTTP server on 127.0.0.1 serving a manifest and an archive made
here: the step's archive is found in the flat and the nested manifest forms, its pins are
checked against the manifest, and the download is refused unless its bytes are the pinned ones.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from resolver.apply.download import Fetcher
from resolver.errors import ApplyError, RecipeError
from resolver.recipes.redist import MAX_MANIFEST_BYTES, find_archive, parse_manifest
from resolver.recipes.schema import Step, StepKind

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path.startswith("/error"):
            self.send_error(500, "boom")
            return
        if self.path.startswith("/stall"):
            time.sleep(3)
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _archive(root: Path, relative: str) -> tuple[str, int]:
    """A tar.xz holding one library, as NVIDIA's archives do; its sha256 and size."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        data = b"\x7fELF" + bytes(60)
        info = tarfile.TarInfo("libcudss-linux-sbsa-0.8.0.10_cuda13-archive/lib/libcudss.so.0")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_bytes(blob)
    return hashlib.sha256(blob).hexdigest(), len(blob)


def _step(url: str, sha256: str, size: int, variant: str | None = "cuda13") -> Step:
    return Step(kind=StepKind.REDIST, manifest_url=url, component="libcudss",
                version="0.8.0.10", platform="linux-sbsa", cuda_variant=variant, sha256=sha256,
                size=size, prefix="/opt/nvidia/cudss")


def _manifest(root: Path, relative: str, sha256: str, size: int, *, nested: bool) -> str:
    entry = {"relative_path": relative, "sha256": sha256, "md5": "0" * 32, "size": str(size)}
    platform = {"cuda12": {**entry, "sha256": "1" * 64}, "cuda13": entry} if nested else entry
    document = {"release_date": "2026-06-01", "release_label": "0.8.0",
                "release_product": "cudss",
                "libcudss": {"name": "NVIDIA cuDSS library", "version": "0.8.0.10",
                             "linux-sbsa": platform,
                             **({"cuda_variant": ["12", "13"]} if nested else {})}}
    name = f"redist/redistrib_{'nested' if nested else 'flat'}.json"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(document))
    return name


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
def test_step_resolves_and_downloads_the_pinned_archive(server: tuple[str, Path],
                                                        tmp_path: Path, nested: bool) -> None:
    base, root = server
    relative = "libcudss/linux-sbsa/libcudss-linux-sbsa-0.8.0.10_cuda13-archive.tar.xz"
    sha256, size = _archive(root / "redist", relative)
    url = f"{base}/{_manifest(root, relative, sha256, size, nested=nested)}"
    fetcher = Fetcher(read_timeout=5)
    manifest = parse_manifest(fetcher.fetch_bytes(url, MAX_MANIFEST_BYTES), url=url)
    archive = find_archive(manifest, _step(url, sha256, size, "cuda13" if nested else None),
                           url=url)
    assert archive.url == f"{base}/redist/{relative}"
    saved = fetcher.download(archive, tmp_path)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha256
    with tarfile.open(saved) as tar:
        assert tar.getnames()[0].endswith("lib/libcudss.so.0")


def test_pins_that_disagree_with_the_manifest_are_refused(server: tuple[str, Path]) -> None:
    base, root = server
    relative = "libcudss/linux-sbsa/a.tar.xz"
    sha256, size = _archive(root / "redist", relative)
    url = f"{base}/{_manifest(root, relative, sha256, size, nested=True)}"
    manifest = parse_manifest(Fetcher().fetch_bytes(url, MAX_MANIFEST_BYTES), url=url)
    cases = [
        (_step(url, "f" * 64, size), "the recipe pins ffff"),
        (_step(url, sha256, size + 1), f"is {size} bytes, the recipe says {size + 1}"),
        (_step(url, sha256, size, "cuda11"), "no variant 'cuda11' (it has cuda12, cuda13)"),
        (_step(url, sha256, size, None), "no variant None"),
    ]
    for step, message in cases:
        with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            find_archive(manifest, step, url=url)
    escaping = json.loads((root / "redist/redistrib_nested.json").read_text())
    escaping["libcudss"]["linux-sbsa"]["cuda13"]["relative_path"] = "../../etc/passwd"
    with pytest.raises(RecipeError, match="leaves the manifest's folder"):
        find_archive(escaping, _step(url, sha256, size), url=url)


def test_bad_downloads_fail_in_one_line_and_leave_nothing(server: tuple[str, Path],
                                                         tmp_path: Path) -> None:
    base, root = server
    relative = "libcudss/linux-sbsa/b.tar.xz"
    sha256, size = _archive(root / "redist", relative)
    url = f"{base}/{_manifest(root, relative, sha256, size, nested=True)}"
    manifest = parse_manifest(Fetcher().fetch_bytes(url, MAX_MANIFEST_BYTES), url=url)
    archive = find_archive(manifest, _step(url, sha256, size), url=url)
    out = tmp_path / "out"
    out.mkdir()
    # Bytes changed on the server after the manifest was written: refused, nothing kept.
    (root / "redist" / relative).write_bytes(b"x" * size)
    with pytest.raises(ApplyError, match=r"expected \d+ bytes with sha256"):
        Fetcher(retries=0).download(archive, out)
    (root / "redist" / relative).write_bytes(b"x" * (size + 10))
    with pytest.raises(ApplyError, match="larger than"):
        Fetcher(retries=0).download(archive, out)
    assert list(out.iterdir()) == []
    for path, message in (("/error/x.json", "500"), ("/missing.json", "404"),
                          ("/stall/redist/redistrib_nested.json", "timed out")):
        with pytest.raises(ApplyError, match=message) as caught:
            Fetcher(read_timeout=1, retries=0).fetch_bytes(f"{base}{path}", 1000)
        assert "\n" not in str(caught.value)
    with pytest.raises(ApplyError, match="larger than 100 bytes"):
        Fetcher().fetch_bytes(url, 100)
    with pytest.raises(ApplyError, match="not https"):
        Fetcher().fetch_bytes("http://example.org/redistrib.json", 100)
    with pytest.raises(RecipeError, match="not JSON"):
        parse_manifest(b"{", url=url)


class _RangeHandler(_Handler):
    """Serves `Range: bytes=N-` (RFC 9110 §14.2) with 206, as NVIDIA's CDN does."""

    def do_GET(self) -> None:
        asked = self.headers.get("Range", "")
        if not asked.startswith("bytes=") or self.path.startswith(("/error", "/stall")):
            super().do_GET()
            return
        data = Path(self.translate_path(self.path)).read_bytes()
        start = int(asked.removeprefix("bytes=").split("-", 1)[0])
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        type(self).ranges.append(start)

    ranges: list[int] = []  # noqa: RUF012 - what the test asks the server


def test_a_partial_download_is_resumed_and_still_checked(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            partial(_RangeHandler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        relative = "libcudss/linux-sbsa/c.tar.xz"
        sha256, size = _archive(served / "redist", relative)
        url = f"{base}/{_manifest(served, relative, sha256, size, nested=True)}"
        manifest = parse_manifest(Fetcher().fetch_bytes(url, MAX_MANIFEST_BYTES), url=url)
        archive = find_archive(manifest, _step(url, sha256, size), url=url)
        out = tmp_path / "out"
        out.mkdir()
        blob = (served / "redist" / relative).read_bytes()
        (out / "c.tar.xz.part").write_bytes(blob[: size // 2])  # a download cut short
        saved = Fetcher(retries=0).download(archive, out)
        assert _RangeHandler.ranges == [size // 2]  # only the rest was asked for
        assert saved.read_bytes() == blob and not (out / "c.tar.xz.part").exists()
        # A kept part whose bytes are wrong is not trusted: the whole is checked at the end.
        (out / "c.tar.xz").unlink()
        (out / "c.tar.xz.part").write_bytes(b"\0" * (size // 2))
        with pytest.raises(ApplyError, match="expected"):
            Fetcher(retries=0).download(archive, out)
        assert list(out.iterdir()) == []
    finally:
        httpd.shutdown()
        httpd.server_close()
