"""The diagnose stage: one torch install, one root, everything that will fail to load and why.

It wires the pure pieces together: the root's loader configuration (`ld.so.cache`, or, when a
root has none, what `ldconfig` would make of its `ld.so.conf`), a `Namespace` that plays the
loader, torch's own loading sequence, and the findings. It reads only through `RootFS` and
returns an immutable `Diagnosis`; rendering it is the CLI's job.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.version import Version

from resolver.errors import InvalidLdCache, RootFsError
from resolver.findings.derive import (
    cpu_only_findings,
    cudnn_findings,
    driver_findings,
    gpu_findings,
    gpu_undetermined_findings,
    load_findings,
    pin_findings,
)
from resolver.findings.model import (
    CAUSE_ORDER,
    FileElsewhere,
    Finding,
    LdSoCacheIgnored,
    Severity,
)
from resolver.findings.wheel_tags import parse_wheel_metadata_tags, wheel_tag_findings
from resolver.loader.extensions import Extension, find_extensions, import_phase
from resolver.loader.torch_import import (
    attempt_preloaded,
    emulate_torch,
    find_torch_install,
    import_extension,
    start_interpreter,
)
from resolver.loader.walk import LoadedObject, Namespace, Request
from resolver.target.ldcache import MAX_LD_SO_CACHE, find_in_cache, parse_ld_so_cache
from resolver.target.ldconf import iter_conf_dirs

if TYPE_CHECKING:
    from collections.abc import Callable

    from resolver.elf.cache import FactsCache
    from resolver.loader.binding import StaticTls
    from resolver.loader.torch_import import Attempt, TorchInstall
    from resolver.sources import Opened
    from resolver.target.platform import Platform
    from resolver.target.rootfs import RootFS

__all__ = ["Diagnosis", "LoaderConfig", "diagnose", "diagnose_source", "read_loader_config"]

# Where a library that is on no search path tends to sit on a Jetson or a CUDA machine.
_ELSEWHERE_DIRS = ("/usr/local", "/opt", "/usr/lib")
_ELSEWHERE_DEPTH = 6
# Below the first level, only directories whose names say they may hold libraries are entered,
# so a live root's /usr/lib costs a few dozen listings, not thousands.
_LIBRARY_DIR = re.compile(
    r"lib|lib32|lib64|.*-linux(-gnu)?|nvidia|cuda.*|targets|cu\d+|\d+(\.\d+)*|cudnn|cudss|"
    r"nccl|nvshmem|cusparselt|libcusparseLt|libcudss|nvpl|tensorrt|tegra.*|site-packages|"
    r"dist-packages|python3(\.\d+)?|local|torch|extras|CUPTI|.*\.libs")


# LoaderConfig.cache_source when the root's cache is not read (the JSON shows these words).
_CACHE_IGNORED = "unreadable, ignored"
_CACHE_EMULATED = "emulated from ld.so.conf"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoaderConfig:
    """The root's `ld.so.conf` directories and where the loader's cache answers come from."""

    conf_dirs: tuple[str, ...]
    cache_source: str  # "/etc/ld.so.cache", "emulated from ld.so.conf", or "unreadable, ignored"
    cache_problem: str | None = None  # why the cache is missing or ignored (None: read fine)


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """What a diagnose found; every field is a plain value."""

    platform: Platform
    torch: TorchInstall | None
    loader: LoaderConfig
    objects: tuple[LoadedObject, ...]  # every object the walk loaded (rolled back included)
    unloaded: frozenset[int]  # indices of objects a failed dlopen rolled back
    requests: tuple[Request, ...]
    attempts: tuple[Attempt, ...]
    findings: tuple[Finding, ...]  # root causes first (`CAUSE_ORDER`), then by severity
    interpreter: str | None = None  # the main program modelled (root namespace), if any
    sys_path: tuple[str, ...] = ()  # where torch's preload looked
    symbols_unjudged: tuple[tuple[str, str], ...] = ()  # (phase, why) symbols were not bound
    static_tls: StaticTls | None = None  # the block after torch's loads; None: not modelled
    unreadable: tuple[tuple[str, str], ...] = ()  # (host path, why): passed over, as ld.so does

    @property
    def blocks_import(self) -> bool:
        """True when `import torch` will fail."""
        return any(f.severity is Severity.BLOCKS_IMPORT for f in self.findings)


def read_loader_config(rootfs: RootFS, platform: Platform
                       ) -> tuple[LoaderConfig, Callable[[str], str | None]]:
    """Read the root's `ld.so.conf` (with includes) and its `ld.so.cache`.

    Returns the configuration and the cache lookup (soname -> path, None when the cache has no
    entry). A cache of another format or cut short is ignored, as glibc ignores it; a root
    without one is answered as `ldconfig` would have built it from `ld.so.conf`.
    """
    conf_dirs = tuple(iter_conf_dirs(rootfs.read_text, rootfs.glob))
    try:
        data = rootfs.read_bytes("/etc/ld.so.cache", MAX_LD_SO_CACHE)
        cache = None if data is None else parse_ld_so_cache(
            data, origin=rootfs.host_label("/etc/ld.so.cache"))
    except (InvalidLdCache, RootFsError) as err:
        # glibc ignores a cache it cannot open or read (elf/dl-cache.c _dl_load_cache_lookup).
        return (LoaderConfig(conf_dirs=conf_dirs, cache_source=_CACHE_IGNORED,
                             cache_problem=str(err)),
                lambda _name: None)
    if cache is not None:

        def lookup(name: str) -> str | None:
            return find_in_cache(cache, name, elf_class=int(platform.elf_class),
                                 machine=platform.machine)

        return LoaderConfig(conf_dirs=conf_dirs, cache_source="/etc/ld.so.cache"), lookup

    dirs = tuple(dict.fromkeys((*conf_dirs, *platform.system_dirs)))

    def emulated(name: str) -> str | None:
        for directory in dirs:
            found = rootfs.find_file(directory, name)
            if found is not None and found.ok:
                return posixpath.join(directory, name)
        return None

    # A live machine without a cache is unusual but harmless to say nothing of: ldconfig runs
    # at boot. A directory root often lacks one because nobody ran ldconfig in it.
    problem = None if rootfs.live else "the root has no /etc/ld.so.cache"
    return (LoaderConfig(conf_dirs=conf_dirs, cache_source=_CACHE_EMULATED,
                         cache_problem=problem),
            emulated)


def _stem(name: str) -> str:
    """What precedes `.so` in a library file name: `libfoo` of `libfoo.so.1.2`."""
    return name.split(".so", 1)[0]


# The rest of a file name of some version of a library, `.so.N[.M...]`. The unversioned
# `libfoo.so` is a development link, not a version of its own.
_VERSIONED = re.compile(r"\.so(\.\d+)+")


class _Elsewhere:
    """Index of library file names under the places they tend to be left, built on demand."""

    def __init__(self, rootfs: RootFS, extra: tuple[str, ...]) -> None:
        self.rootfs = rootfs
        self.tops = (*extra, *_ELSEWHERE_DIRS)
        self._index: dict[str, list[str]] | None = None
        self._by_stem: dict[str, list[str]] = {}  # _stem -> the versioned names, sorted

    def _scan(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        seen: set[str] = set()
        # Under /opt vendors pick their own folder names; elsewhere only library-like names.
        stack = [(top, 0) for top in reversed(self.tops)]
        permissive = {"/opt"}
        while stack:
            directory, depth = stack.pop()
            open_names = depth == 0 and directory in permissive
            real = self.rootfs.resolve(directory).real
            if real is None or real in seen:
                continue
            seen.add(real)
            for name, entry in sorted(self.rootfs.list_dir(directory).items(), reverse=True):
                path = posixpath.join(directory, name)
                if ".so" in name:
                    index.setdefault(name, []).append(path)
                elif (entry.kind != "file" and depth < _ELSEWHERE_DEPTH
                      and (open_names or _LIBRARY_DIR.fullmatch(name))):
                    stack.append((path, depth + 1))
        return index

    def __call__(self, soname: str) -> tuple[FileElsewhere, ...]:
        """Files of `soname` first, then of other versions of its library, that resolve."""
        if self._index is None:
            self._index = self._scan()
            for name in sorted(self._index):
                stem = _stem(name)
                if _VERSIONED.fullmatch(name, len(stem)):
                    self._by_stem.setdefault(stem, []).append(name)
        names = [soname, *(n for n in self._by_stem.get(_stem(soname), ()) if n != soname)]
        return tuple(
            FileElsewhere(path=path, name=name, same_soname=name == soname)
            for name in names
            for path in self._index.get(name, ())
            if self.rootfs.resolve(path).ok
        )


def _cudnn_version(rootfs: RootFS, platform: Platform
                   ) -> Callable[[LoadedObject], Version | None]:
    def version(obj: LoadedObject) -> Version | None:
        match = re.search(r"libcudnn\.so\.(\d+\.\d+(?:\.\d+)?)$", obj.real)
        if match:
            return Version(match.group(1))
        # pip's nvidia-cudnn: the dist-info beside site-packages/nvidia/cudnn/lib says it.
        site = posixpath.dirname(posixpath.dirname(posixpath.dirname(posixpath.dirname(obj.real))))
        for name in rootfs.list_dir(site):
            dist = re.fullmatch(r"nvidia_cudnn_cu\d+-(\d+\.\d+\.\d+)[\d.]*\.dist-info", name)
            if dist:
                return Version(dist.group(1))
        system = obj.real.startswith(("/usr/lib", "/lib"))
        return platform.cudnn if system else None

    return version


def _extensions(rootfs: RootFS, torch: TorchInstall, cache: FactsCache
                ) -> tuple[Extension, ...]:
    """The packages on torch's sys.path that load torch (`resolver.loader.extensions`)."""
    from resolver.elf.cache import read_facts  # noqa: PLC0415
    from resolver.errors import InvalidElf  # noqa: PLC0415

    def needed_of(path: str) -> tuple[str, ...]:
        resolved = rootfs.resolve(path)
        if not resolved.ok or resolved.real is None:
            return ()
        try:
            return read_facts(rootfs, resolved.real, cache).needed
        except (InvalidElf, RootFsError):
            return ()

    return find_extensions(rootfs, torch.sys_path, torch.site, torch.lib_files, needed_of)


def _sort_key(finding: Finding) -> tuple[int, int, str]:
    severities = list(Severity)
    return (CAUSE_ORDER.index(type(finding)), severities.index(finding.severity),
            finding.subject)


def diagnose(  # noqa: PLR0913 - the four inputs of a diagnosis, then keyword-only options
    rootfs: RootFS,
    platform: Platform,
    site: str,
    cache: FactsCache,
    *,
    ld_library_path: str = "",
    sys_path: tuple[str, ...] = (),
    wheel_tags: tuple[str, ...] | None = None,
    wheel_name: str | None = None,
    interpreter: str | None = None,
    ld_preload: tuple[str, ...] = (),
    preloaded: tuple[str, ...] = (),
) -> Diagnosis:
    """Diagnose the torch in `site` (a directory of the root's namespace) on `rootfs`.

    `interpreter` (a path in the root) is started first as the main program, with
    `ld_preload` as LD_PRELOAD; `preloaded` are libraries the process opened before torch.

    Raises:
        RootFsError: there is no torch in `site`.

    """
    torch = find_torch_install(rootfs, site, sys_path)
    if torch is None:
        raise RootFsError(f"{rootfs.host_label(site)}: no torch package here")
    loader, lookup = read_loader_config(rootfs, platform)
    ns = Namespace(rootfs, platform, cache, ld_library_path=ld_library_path,
                   find_in_cache=lookup)
    started: list[Attempt] = []
    if interpreter is not None:
        started.append(start_interpreter(ns, interpreter, ld_preload))
    loaded_real = {o.real for o in ns.objects}
    started += [attempt_preloaded(ns, name) for name in preloaded
                if ns.find_loaded(name) is None and rootfs.resolve(name).real not in loaded_real]
    attempts = (*started, *emulate_torch(ns, torch))
    extensions = _extensions(rootfs, torch, cache)
    for extension in extensions:
        attempts += import_extension(ns, extension)
    objects = ns.all_objects
    elsewhere = _Elsewhere(rootfs, torch.sys_path)
    findings = list(load_findings(attempts, ns.requests, objects, ns.version_problems,
                                  locate_elsewhere=elsewhere, symbols=ns.symbol_problems,
                                  tls=ns.tls_problems))
    live = ns.objects  # after torch's own loading, including what a failed import._C found
    # torch's own GPU code decides whether torch runs on the target GPU; NVIDIA's libraries of
    # a CUDA release cover that release's GPUs and may carry code kinds (LTO-IR) we do not read.
    own = tuple(o for o in live if o.path.startswith(posixpath.join(site, "torch") + "/"))
    if platform.gpu_arch is not None or platform.gpu_candidates:
        from resolver.elf.fatbin import find_kernel_for  # noqa: PLC0415

        findings += gpu_findings(own, platform, find_kernel_for)
        findings += gpu_undetermined_findings(own, platform, find_kernel_for)
    findings += cudnn_findings(torch, live, _cudnn_version(rootfs, platform))
    findings += driver_findings(torch, platform.driver, platform.driver_cuda)
    findings += cpu_only_findings(torch, platform)
    findings += pin_findings(extensions, torch, import_phase, platform)
    if wheel_tags is None:
        wheel_tags = ()
        for name in sorted(rootfs.list_dir(site)):
            if name.startswith("torch-") and name.endswith(".dist-info"):
                text = rootfs.read_text(posixpath.join(site, name, "WHEEL"))
                wheel_tags = parse_wheel_metadata_tags(text or "")
    findings += wheel_tag_findings(wheel_tags, platform, wheel=wheel_name or "torch")
    if loader.cache_problem is not None:
        findings.append(LdSoCacheIgnored(
            severity=Severity.INFO, path="/etc/ld.so.cache",
            present=loader.cache_source == _CACHE_IGNORED,
            reason=loader.cache_problem))
    findings.sort(key=_sort_key)
    return Diagnosis(platform=platform, torch=torch, loader=loader, objects=objects,
                     unloaded=frozenset(o.index for o in objects) - {o.index for o in live},
                     requests=ns.requests, attempts=attempts, findings=tuple(findings),
                     interpreter=interpreter, sys_path=torch.sys_path,
                     symbols_unjudged=ns.unjudged, static_tls=ns.static_tls,
                     unreadable=tuple(sorted(rootfs.unreadable().items())))


def diagnose_source(opened: Opened) -> Diagnosis:
    """`diagnose` of an opened source (`resolver.sources.open_source`).

    Raises:
        RootFsError: there is no torch in the source's site.

    """
    from resolver.target.python_env import (  # noqa: PLC0415
        default_interpreter,
        find_interpreter,
        site_sys_path,
    )

    rootfs, site = opened.rootfs, opened.site
    interpreter = opened.interpreter
    if interpreter is None and opened.wheel_name is None:
        interpreter = find_interpreter(rootfs, site)
    elif interpreter is None:
        interpreter = default_interpreter(rootfs)  # a wheel: the root's python3 would import it
    platform = opened.platform
    named = re.search(r"python(\d+\.\d+)$", interpreter or "")
    if platform.python is None and named:
        # The root has no /usr/bin/python3 to say it; the interpreter's name does.
        platform = dataclasses.replace(platform, python=Version(named.group(1)))
    sys_path = opened.sys_path
    if not sys_path and opened.wheel_name is None:
        python = platform.python
        sys_path = site_sys_path(rootfs, site, str(python) if python else None)
    return diagnose(rootfs, platform, site, opened.cache,
                    ld_library_path=opened.source.ld_library_path, sys_path=sys_path,
                    wheel_tags=opened.wheel_tags, wheel_name=opened.wheel_name,
                    interpreter=interpreter, ld_preload=opened.source.ld_preload,
                    preloaded=opened.source.preloaded)
