"""A redist step through `apply`, against a real HTTP server on 127.0.0.1 (`--redist-mirror`).

The root is the Thor root with torch 2.11.0 and all it pins but `nvidia-cufile`, so
`libcufile.so.0` blocks `import torch`. A recipe folder made here holds one redist recipe for
it; the archive is NVIDIA's layout (`<component>-<platform>-<version>-archive/lib/...`) holding
the real aarch64 libcufile from PyPI's nvidia-cufile wheel, with a manifest pinning its size
and sha256. `apply` downloads it, unpacks it under its prefix, activates the prefix with the
root's own ldconfig under qemu, and verifies with the root's python3.11; `rollback` puts the
root back byte for byte. Then the hostile downloads: a wrong checksum, a truncated archive, a
server error, a stalled server, a `../` member, an absolute symlink: each refused in one line,
the root unchanged.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from functools import partial
from typing import TYPE_CHECKING, Any

import _data
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the root's ldconfig -r chroots")

_MANIFEST = "/compute/cufile/redist/redistrib_1.15.1.json"
_TOP = "libcufile-linux-sbsa-1.15.1.6-archive"
_RELATIVE = f"libcufile/linux-sbsa/{_TOP}.tar.xz"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path.startswith("/error/"):
            self.send_error(500, "internal error")
            return
        if self.path.startswith("/stall/"):
            time.sleep(4)
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    served = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            partial(_Handler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def root(arm_wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Thor root with everything torch pins but nvidia-cufile (link-copy it to change)."""
    return _data.make_thor_root_complete(tmp_path_factory.mktemp("thor") / "root",
                                         arm_wheelhouse, without=("nvidia_cufile",))


def _copy(root: Path, dest: Path) -> Path:
    return _data.link_copy(root, dest)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o755
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def cufile_archive(wheelhouse: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """NVIDIA's archive layout around the real aarch64 libcufile of PyPI's wheel."""
    wheel = next(wheelhouse.glob("nvidia_cufile-*aarch64.whl"))
    with zipfile.ZipFile(wheel) as archive:
        library = archive.read("nvidia/cu13/lib/libcufile.so.0")
        rdma = archive.read("nvidia/cu13/lib/libcufile_rdma.so.1")
        header = archive.read("nvidia/cu13/include/cufile.h")
    return [_file(f"{_TOP}/lib/libcufile.so.0", library),
            _file(f"{_TOP}/lib/libcufile_rdma.so.1", rdma),
            _link(f"{_TOP}/lib/libcufile.so", "libcufile.so.0"),
            _file(f"{_TOP}/include/cufile.h", header)]


def _publish(served: Path, blob: bytes, tmp_path: Path, *, served_blob: bytes | None = None
             ) -> Path:
    """Serve `served_blob` (default `blob`) under NVIDIA's tree with a manifest pinning `blob`;
    a recipe folder whose one recipe names that manifest and those pins."""
    sha256, size = hashlib.sha256(blob).hexdigest(), len(blob)
    archive = served / "compute" / "cufile" / "redist" / _RELATIVE
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(served_blob if served_blob is not None else blob)
    (served / _MANIFEST.lstrip("/")).write_text(json.dumps({
        "release_date": "2025-08-08", "release_label": "1.15.1", "release_product": "cufile",
        "libcufile": {"name": "NVIDIA cuFile", "license": "CUDA Toolkit", "version": "1.15.1.6",
                      "linux-sbsa": {"relative_path": _RELATIVE, "sha256": sha256,
                                     "md5": hashlib.md5(blob).hexdigest(),  # noqa: S324
                                     "size": str(size)}}}))
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / "cufile-redist-sbsa.toml").write_text(f"""schema = 1
summary = "cuFile 1.15.1.6 (linux-sbsa) redist archive: libcufile.so.0 under /opt/nvidia"
sources = ["https://developer.download.nvidia.com/compute/cufile/redist/"]

[provides]
sonames = ["libcufile.so.0", "libcufile_rdma.so.1"]
version = "1.15.1.6"

[applies]
arch = ["aarch64"]

[[methods]]
id = "redist"
needs_root = true
[[methods.steps]]
kind = "redist"
manifest_url = "https://developer.download.nvidia.com{_MANIFEST}"
component = "libcufile"
version = "1.15.1.6"
platform = "linux-sbsa"
sha256 = "{sha256}"
size = {size}
prefix = "/opt/nvidia/{{component}}-{{version}}"
[[methods.steps]]
kind = "activate"
directory = "{{prefix}}/lib"
""")
    return recipes


def _apply(root: Path, recipes: Path, mirror: str, state: Path
           ) -> tuple[int, dict[str, Any] | None, str]:
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "apply", "--root", str(root), "--site-packages",
         str(root / _data.THOR_SITE.lstrip("/")), "--recipes", str(recipes),
         "--redist-mirror", mirror, "--download-timeout", "2", "--state-dir", str(state),
         "--json"], capture_output=True, text=True, check=False, timeout=1800)
    try:
        document = json.loads(done.stdout)
    except ValueError:
        document = None
    return done.returncode, document, done.stderr


def test_redist_download_unpack_activate_verify_then_rollback(
        root: Path, server: tuple[str, Path], arm_wheelhouse: Path, tmp_path: Path) -> None:
    base, served = server
    target = _copy(root, tmp_path / "root")
    before = _data.tree_hash(target)
    recipes = _publish(served, _tar(cufile_archive(arm_wheelhouse)), tmp_path)
    code, document, stderr = _apply(target, recipes, base, tmp_path / "state")
    assert code == 0, stderr
    assert document is not None
    assert [s["kind"] for s in document["steps"]] == ["redist", "activate"]
    assert document["verified"]["ok"], document["verified"]["problems"]
    prefix = target / "opt" / "nvidia" / "libcufile-1.15.1.6"
    assert (prefix / "lib" / "libcufile.so.0").is_file()
    assert os.readlink(prefix / "lib" / "libcufile.so") == "libcufile.so.0"
    conf = target / "etc" / "ld.so.conf.d" / "jetson-resolve-cufile-redist-sbsa.conf"
    assert conf.read_text() == "/opt/nvidia/libcufile-1.15.1.6/lib\n"
    rolled = subprocess.run([sys.executable, "-m", "resolver", "rollback", "--state-dir",
                             str(tmp_path / "state")], capture_output=True, text=True,
                            check=False)
    assert rolled.returncode == 0, rolled.stderr
    assert _data.tree_hash(target) == before  # the prefix, the conf and the rebuilt cache


def _hostile(wheelhouse: Path) -> list[tuple[str, bytes, bytes | None, str, str]]:
    """(case, pinned archive, served bytes or None, mirror suffix, what the line says)."""
    good = _tar(cufile_archive(wheelhouse))
    escaping = _tar([*cufile_archive(wheelhouse)[:1], _file(f"{_TOP}/../../evil", b"x")])
    absolute = _tar([*cufile_archive(wheelhouse)[:1], _link(f"{_TOP}/lib/evil", "/etc/passwd")])
    return [
        ("wrong checksum", good, bytes(len(good)), "", "expected"),
        ("truncated", good, good[: len(good) // 2], "", f"expected {len(good)} bytes"),
        ("server error", good, None, "/error", "500"),
        ("stalled server", good, None, "/stall", "timed out"),
        ("../ member", escaping, None, "", "leaves the archive's folder"),
        ("absolute symlink", absolute, None, "", "points outside the prefix"),
    ]


def test_hostile_downloads_are_refused_in_one_line_and_change_nothing(
        root: Path, server: tuple[str, Path], arm_wheelhouse: Path, tmp_path: Path) -> None:
    base, served = server
    target = _copy(root, tmp_path / "root")
    before = _data.tree_hash(target)
    for case, pinned, served_blob, suffix, says in _hostile(arm_wheelhouse):
        folder = tmp_path / case.replace(" ", "-").replace("/", "")
        folder.mkdir()
        recipes = _publish(served, pinned, folder, served_blob=served_blob)
        code, document, stderr = _apply(target, recipes, base + suffix, folder / "state")
        assert code == 1, (case, stderr)  # the step failed; kept (nothing to keep)
        assert "Traceback" not in stderr
        assert document is not None
        step = document["steps"][0]
        assert step["kind"] == "redist" and step["state"] == "failed", case
        assert "\n" not in step["output"].strip() and says in step["output"], (case, step)
        assert _data.tree_hash(target) == before, case
