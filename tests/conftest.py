"""Session fixtures for the real test data every integration test uses, and the test session's
own cache.

Each data fixture builds its data once into the data cache (``JR_DATA``, default
``~/.cache/jr-data``, see `tests._data`) and hands back a `Path` or a function. A download that
fails for lack of network skips the tests that asked for it, except under CI (``CI`` set to
``true`` or ``1``), where it fails them: CI must not pass by skipping. Any other failure is an
error. Every test that uses downloaded data is marked ``network`` (``-m "not network"`` runs the
rest offline).

jetson-resolve's own cache (facts, materialised fixtures, kept results) goes to a folder of the
session's, never to the user's ``~/.cache/jetson-resolve``.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import _data
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# The fixtures that download (pip, apt-get) on a machine that has not cached their data yet.
NETWORK_FIXTURES = frozenset({
    "torch_x86_wheel", "torch_x86_alone", "torch_x86_full", "torch_cpu", "torch_arm_wheel",
    "torch_arm_site", "arm64_root", "nvidia_tools", "library", "cudart_wheel",
    "six_wheels",
    "x86_wheelhouse",
    "cpu_venv",
    "cuda_venv_lacking",
    "arm_wheelhouse",
    "thor_root_complete",
    "torch_arm_cpu_wheel",
    "torchvision_arm_wheels",
})


def in_ci() -> bool:
    """True on CI, where missing data fails a test instead of skipping it."""
    return os.environ.get("CI", "").lower() in {"true", "1"}


def unavailable(reason: str) -> None:
    """Skip (or, on CI, fail) a test whose data could not be downloaded."""
    if in_ci():
        pytest.fail(f"test data unavailable on CI: {reason}")
    pytest.skip(f"test data unavailable (no network?): {reason}")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NETWORK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point XDG_CACHE_HOME at a folder of this session's; pip keeps the user's pip cache."""
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    private = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_CACHE_DIR", os.environ.get("PIP_CACHE_DIR") or str(user_cache / "pip"))
        patch.setenv("XDG_CACHE_HOME", str(private))
        yield private


def _get(make: Callable[[], Path]) -> Path:
    try:
        return make()
    except _data.DataUnavailable as err:
        unavailable(str(err))
        raise  # unavailable() never returns


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
    """``host_trace(file, env=None)``: the loader of the running interpreter traces `file`."""
    return _data.run_host_trace


@pytest.fixture(scope="session")
def build_lib() -> _data.BuildLib:
    """``build_lib(dir, name, *, soname=..., needed=..., rpath=..., ...)``: a tiny real .so."""
    return _data.build_lib


@pytest.fixture(scope="session")
def cudart_wheel(data_dir: Path) -> Path:
    """nvidia_cuda_runtime-13.0.96-...aarch64.whl from PyPI, for a local wheelhouse."""
    return _get(lambda: _data.ensure_cudart_arm_wheel(data_dir))


@pytest.fixture(scope="session")
def six_wheels(data_dir: Path) -> tuple[Path, Path]:
    """six 1.16.0 and 1.17.0 wheels from PyPI: a real distribution in two versions."""
    try:
        return _data.ensure_six_wheels(data_dir)
    except _data.DataUnavailable as err:
        unavailable(str(err))
        raise


@pytest.fixture(scope="session")
def x86_wheelhouse(data_dir: Path) -> Path:
    """What `pip download torch==2.14.1 -d DIR` gathers (x86_64, cp311): ~3 GB of wheels."""
    return _get(lambda: _data.ensure_x86_wheelhouse(data_dir))


@pytest.fixture(scope="session")
def cpu_venv(data_dir: Path, x86_wheelhouse: Path) -> Path:
    """A venv with torch 2.13.0+cpu installed by pip; shared: copy it (`copy_venv`) to use."""
    if sys.version_info[:2] != (3, 11):
        unavailable("the x86 torch wheels on disk are cp311; this interpreter is not 3.11")
    return _get(lambda: _data.ensure_cpu_venv(data_dir, x86_wheelhouse))


@pytest.fixture(scope="session")
def cuda_venv_lacking(data_dir: Path, x86_wheelhouse: Path) -> Path:
    """A venv with torch 2.14.1 and its CUDA wheels but two (`_data.CRASH_WITHHELD`); shared:
    link-copy it to use."""
    if sys.version_info[:2] != (3, 11):
        unavailable("the x86 torch wheels on disk are cp311; this interpreter is not 3.11")
    return _get(lambda: _data.ensure_cuda_venv_lacking(data_dir, x86_wheelhouse))


@pytest.fixture(scope="session")
def arm_wheelhouse(data_dir: Path) -> Path:
    """What `pip download torch==2.11.0` gathers from PyPI for aarch64 cp311 (~2.7 GB)."""
    return _get(lambda: _data.ensure_arm_wheelhouse(data_dir))


@pytest.fixture(scope="session")
def thor_root_complete(data_dir: Path, arm_wheelhouse: Path) -> Path:
    """An arm64 Debian root with python3.11 and every wheel of `arm_wheelhouse` in
    `_data.THOR_SITE` (built once, ~6 GB); change a `_data.link_copy` of it."""
    if os.geteuid() != 0:
        pytest.skip("building the root's ld.so.cache runs its ldconfig -r, which chroots")
    return _get(lambda: _data.ensure_thor_root_complete(data_dir, arm_wheelhouse))


@pytest.fixture(scope="session")
def torch_arm_cpu_wheel(data_dir: Path) -> Path:
    """PyPI's torch 2.9.1 aarch64 cp311 wheel, a CPU-only build."""
    return _get(lambda: _data.ensure_torch_arm_cpu_wheel(data_dir))


@pytest.fixture(scope="session")
def torchvision_arm_wheels(data_dir: Path) -> dict[str, Path]:
    """PyPI's torchvision 0.26.0 (for torch 2.11.0) and 0.24.1 (for 2.9.1), aarch64 cp311."""
    wheels = {}
    for version in ("0.26.0", "0.24.1"):
        wheels[version] = _get(functools.partial(_data.ensure_torchvision_arm_wheel, data_dir,
                                                 version))
    return wheels
