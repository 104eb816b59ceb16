"""Session fixtures for the real test data every integration test uses.

Each fixture builds its data once into the cache (``JR_DATA``, default ``~/.cache/jr-data``,
see `tests._data`) and hands back a `Path` or a function. A download that fails for lack of
network skips the tests that asked for it; any other failure is an error.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import _data
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _get(make: Callable[[], Path]) -> Path:
    try:
        return make()
    except _data.DataUnavailable as err:
        pytest.skip(f"test data unavailable (no network?): {err}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data cache directory, created if missing."""
    path = _data.data_dir_from_env(os.environ)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def torch_x86_wheel(data_dir: Path) -> Path:
    """torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl (CUDA 13 build)."""
    return _get(lambda: _data.ensure_torch_x86_wheel(data_dir))


@pytest.fixture(scope="session")
def torch_x86_alone(data_dir: Path) -> Path:
    """A site-packages directory holding torch 2.14.1 and nothing else."""
    return _get(lambda: _data.ensure_torch_x86_alone(data_dir))


@pytest.fixture(scope="session")
def torch_x86_full(data_dir: Path) -> Path:
    """site-packages with torch 2.14.1 and its pinned CUDA 13 dependencies (nvidia/*/lib)."""
    return _get(lambda: _data.ensure_torch_x86_full(data_dir))


@pytest.fixture(scope="session")
def torch_cpu(data_dir: Path) -> Path:
    """A site-packages directory holding torch 2.13.0+cpu and nothing else."""
    return _get(lambda: _data.ensure_torch_cpu(data_dir))


@pytest.fixture(scope="session")
def torch_arm_wheel(data_dir: Path) -> Path:
    """torch-2.11.0-cp312-cp312-manylinux_2_28_aarch64.whl from PyPI (CUDA 13 build)."""
    return _get(lambda: _data.ensure_torch_arm_wheel(data_dir))


@pytest.fixture(scope="session")
def torch_arm_site(data_dir: Path, torch_arm_wheel: Path) -> Path:
    """`torch_arm_wheel` unzipped into a site-packages directory."""
    return _get(lambda: _data.ensure_torch_arm_site(data_dir, torch_arm_wheel))


@pytest.fixture(scope="session")
def arm64_root(data_dir: Path) -> Path:
    """A merged-/usr arm64 Debian root (libc6, libstdc++6, libgcc-s1, libgomp1, ...).

    Shared by the whole session: tests must not change it; build a variant with
    `tests._data.make_arm64_root` in ``tmp_path`` instead.
    """
    return _get(lambda: _data.ensure_arm64_root(data_dir))


@pytest.fixture(scope="session")
def qemu_trace() -> _data.QemuTrace:
    """``qemu_trace(root, file, env=None)``: the root's arm64 loader traces `file` under qemu."""
    return _data.run_qemu_trace


@pytest.fixture(scope="session")
def host_trace() -> _data.HostTrace:
    """``host_trace(file, env=None)``: the host's x86_64 loader traces `file`."""
    return _data.run_host_trace


@pytest.fixture(scope="session")
def build_lib() -> _data.BuildLib:
    """``build_lib(dir, name, *, soname=..., needed=..., rpath=..., ...)``: a tiny real .so."""
    return _data.build_lib
