"""What `import torch` loads, in its order, and what torch opens later for a feature.

`import torch` first loads `torch/lib/libtorch_global_deps.so` with RTLD_GLOBAL. When that fails
on a CUDA library, `torch/__init__.py` looks for each library of its `cuda_libs` list under
`sys.path` (`nvidia/<folder>/lib`, `nvidia/cu<major>/lib`, `<folder>/lib`), loads what it finds
by path and tries again; when it succeeds and libcudart is loaded, it preloads whatever of that
list is present, best effort (`_load_global_deps`, `_preload_cuda_deps`; pytorch PRs #163661,
#186450). Then Python loads `torch/_C*.so`. The `cuda_libs` list is read from the installed
`torch/__init__.py` itself (its literal, through `ast`), falling back to a data file when the
source cannot be read.

Libraries torch opens only when a feature is used come from `dlopen.json`; each is opened in a
namespace that holds what `import torch` loaded, and its failures break that feature, not the
import. Nothing here decides severities or renders anything (`resolver.findings.derive`).
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import json
import posixpath
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from resolver.loader.walk import INTERPRETER, PRELOADED

if TYPE_CHECKING:
    from resolver.loader.extensions import Extension
    from resolver.loader.walk import Namespace
    from resolver.target.rootfs import RootFS

__all__ = [
    "IMPORT",
    "Attempt",
    "TorchInstall",
    "attempt_preloaded",
    "emulate_torch",
    "find_torch_install",
    "import_extension",
    "start_interpreter",
]

IMPORT = "import"


@dataclass(frozen=True, slots=True, kw_only=True)
class TorchInstall:
    """A torch installation as found in a site-packages directory of the root."""

    site: str  # the site-packages directory (root namespace)
    version: str | None
    cuda: str | None  # torch.version.cuda
    version_known: bool = True  # False when torch/version.py could not be read
    extension: str | None  # torch/_C*.so
    has_global_deps: bool
    preload: tuple[tuple[str, str], ...]  # (folder, glob) of torch's cuda_libs
    preload_source: str  # "torch/__init__.py" or "built-in list"
    requires: tuple[str, ...]  # Requires-Dist lines of the dist-info
    sys_path: tuple[str, ...]  # where torch's preload looks (root namespace)
    lib_files: frozenset[str]  # names in torch/lib


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One dlopen torch (or python) makes, and whether it worked."""

    phase: str  # "import" or the feature's description
    name: str  # what was opened (a path, or a soname from a library)
    why: str  # who opens it and how
    ok: bool
    requests: range  # indices into Namespace.requests made by this attempt
    versions: range = range(0)  # indices into Namespace.version_problems found by it
    symbols: range = range(0)  # indices into Namespace.symbol_problems found by it
    tls: range = range(0)  # indices into Namespace.tls_problems found by it
    superseded: bool = False  # failed, but torch recovered (a retry) or ignores the failure
    preload: tuple[str, str] | None = None  # (folder, glob) of a `_preload_cuda_lib` lookup
    preload_dirs: tuple[str, ...] = ()  # the sys.path entries that lookup searched


def _data() -> dict[str, Any]:
    text = resources.files("resolver.loader").joinpath("dlopen.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


# `__version__ = '2.11.0+cu130'` and `cuda: Optional[str] = '13.0'` of torch/version.py, each
# on one line: no part may cross a line, so a long file without them is one linear pass.
_VERSION = re.compile(r"^__version__[ \t]*=[ \t]*['\"]([^'\"\n]+)", re.MULTILINE)
_CUDA = re.compile(r"^cuda[ \t]*(?::[^=\n]*)?=[ \t]*['\"]([^'\"\n]+)", re.MULTILINE)
MAX_TORCH_INIT = 4 << 20  # torch 2.11's __init__.py is about 110 KB
_CUDA_LIBS = re.compile(r"^[ \t]*cuda_libs\s*(?::[^=\n]*)?=\s*(?=[\[{])", re.MULTILINE)


def _literal_at(source: str, start: int) -> str | None:
    """The bracketed Python literal starting at `start`, found with the tokenizer."""
    import io  # noqa: PLC0415
    import tokenize  # noqa: PLC0415

    depth = 0
    lines = source[start:].splitlines(keepends=True)
    try:
        for token in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    row, col = token.end
                    return "".join(lines[: row - 1]) + lines[row - 1][:col]
    except (tokenize.TokenError, SyntaxError):
        return None
    return None


def _parse_cuda_libs(source: str) -> tuple[tuple[str, str], ...] | None:
    """The `cuda_libs` literal of torch/__init__.py, or None when it is not there.

    Only the literal is tokenised and evaluated: parsing the whole 100 KB file would cost more
    than the rest of a cached diagnose.
    """
    for match in _CUDA_LIBS.finditer(source):
        text = _literal_at(source, match.end())
        if text is None:
            continue
        try:
            literal = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        pairs = literal.items() if isinstance(literal, dict) else literal
        try:
            return tuple((str(a), str(b)) for a, b in pairs)
        except (TypeError, ValueError):
            continue
    return None


def find_torch_install(rootfs: RootFS, site: str, extra_sys_path: tuple[str, ...] = ()
                       ) -> TorchInstall | None:
    """Read what matters of the torch in `site` (root namespace), None when there is none."""
    listing = rootfs.list_dir(posixpath.join(site, "torch"))
    if not listing:
        return None
    version_py = rootfs.read_text(posixpath.join(site, "torch", "version.py")) or ""
    version = _VERSION.search(version_py)
    cuda = _CUDA.search(version_py)
    extension = next((n for n in sorted(listing) if n.startswith("_C.") and n.endswith(".so")),
                     None)
    lib_files = frozenset(rootfs.list_dir(posixpath.join(site, "torch", "lib")))
    init = rootfs.read_text(posixpath.join(site, "torch", "__init__.py"), MAX_TORCH_INIT)
    preload = _parse_cuda_libs(init) if init else None
    source = "torch/__init__.py"
    if preload is None:
        preload = tuple((a, b) for a, b in _data()["preload_default"])
        source = "built-in list"
    requires: tuple[str, ...] = ()
    for name in sorted(rootfs.list_dir(site)):
        if name.startswith("torch-") and name.endswith(".dist-info"):
            metadata = rootfs.read_text(posixpath.join(site, name, "METADATA")) or ""
            requires = tuple(line.split(":", 1)[1].strip() for line in metadata.splitlines()
                             if line.startswith("Requires-Dist:"))
            break
    return TorchInstall(
        site=site, version=version.group(1) if version else None,
        version_known=bool(version_py),
        cuda=cuda.group(1) if cuda else None, extension=extension,
        has_global_deps="libtorch_global_deps.so" in lib_files, preload=preload,
        preload_source=source, requires=requires,
        # sys.path in its own order when it holds the site (torch's preload searches it in
        # order); the site first when it does not (it is where the user says torch is).
        sys_path=extra_sys_path if site in extra_sys_path else (site, *extra_sys_path),
        lib_files=lib_files,
    )


def _find_preload(rootfs: RootFS, torch: TorchInstall, folder: str, pattern: str) -> str | None:
    """`_get_cuda_dep_paths` over sys.path: the first match, as torch's glob would give it."""
    for entry in torch.sys_path:
        dirs = [posixpath.join(entry, "nvidia", folder, "lib")]
        if torch.cuda:
            dirs.append(posixpath.join(entry, "nvidia", f"cu{torch.cuda.split('.')[0]}", "lib"))
        dirs.append(posixpath.join(entry, folder, "lib"))
        for directory in dirs:
            # glob.glob order is the directory's order; we sort, which only matters when two
            # files match one pattern (then torch's own choice is unspecified too).
            names = sorted(n for n in rootfs.list_dir(directory) if fnmatch.fnmatchcase(n, pattern))
            if names:
                return posixpath.join(directory, names[0])
    return None


def _attempt(  # noqa: PLR0913 - Namespace.dlopen's arguments, plus why it is called
    ns: Namespace, name: str, why: str, phase: str, requester: int | None = None,
    *, keep: bool = False, rtld_global: bool = False,
) -> Attempt:
    first, first_version = len(ns.requests), len(ns.version_problems)
    first_symbol, first_tls = len(ns.symbol_problems), len(ns.tls_problems)
    ok = ns.dlopen(name, phase=phase, requester=requester, keep_on_failure=keep,
                   rtld_global=rtld_global)
    return Attempt(phase=phase, name=name, why=why, ok=ok,
                   requests=range(first, len(ns.requests)),
                   versions=range(first_version, len(ns.version_problems)),
                   symbols=range(first_symbol, len(ns.symbol_problems)),
                   tls=range(first_tls, len(ns.tls_problems)))


def attempt_preloaded(ns: Namespace, name: str) -> Attempt:
    """A library the process opened before torch (RTLD_LOCAL: it shares names, not symbols)."""
    main = ns.main.index if ns.main is not None else None
    return _attempt(ns, name, "already loaded before import torch", PRELOADED, requester=main)


def start_interpreter(ns: Namespace, interpreter: str, preload: tuple[str, ...] = ()
                      ) -> Attempt:
    """Start the interpreter (a path in the root) with `preload` as LD_PRELOAD."""
    first, first_version = len(ns.requests), len(ns.version_problems)
    first_symbol = len(ns.symbol_problems)
    ok = ns.start_process(interpreter, preload)
    return Attempt(phase=INTERPRETER, name=interpreter, why="the interpreter starts", ok=ok,
                   requests=range(first, len(ns.requests)),
                   versions=range(first_version, len(ns.version_problems)),
                   symbols=range(first_symbol, len(ns.symbol_problems)))


def _first_missing(ns: Namespace, attempt: Attempt) -> str | None:
    requests = ns.requests
    return next((requests[i].name for i in attempt.requests if requests[i].target is None), None)


def _preload_best_effort(ns: Namespace, torch: TorchInstall) -> list[Attempt]:
    """The preload after a successful CDLL: what is present, until the first load that fails.

    torch wraps it in `except Exception: pass`, so a failure here breaks nothing by itself
    (`_C` then meets the same library through its own DT_NEEDED): it is recorded, superseded.
    """
    attempts = []
    for folder, pattern in torch.preload:
        path = _find_preload(ns.rootfs, torch, folder, pattern)
        if path is None:
            continue
        attempt = _attempt(ns, path, "torch/__init__.py: best-effort preload", IMPORT,
                           rtld_global=True)
        if not attempt.ok:
            attempts.append(dataclasses.replace(attempt, superseded=True))
            break
        attempts.append(attempt)
    return attempts


def _preload_required(ns: Namespace, torch: TorchInstall) -> tuple[list[Attempt], bool]:
    """`_preload_cuda_deps(err)`: each library in order, required; True when all loaded.

    The first one that cannot be found raises ValueError, the first that fails to load raises
    OSError; either ends the preloading.
    """
    attempts: list[Attempt] = []
    for folder, pattern in torch.preload:
        path = _find_preload(ns.rootfs, torch, folder, pattern)
        if path is None:
            attempts.append(Attempt(
                phase=IMPORT, name=pattern,
                why=f"torch/__init__.py: _preload_cuda_lib({folder!r}) finds no "
                    f"nvidia/{folder}/lib/{pattern} on sys.path",
                ok=False, requests=range(len(ns.requests), len(ns.requests)),
                preload=(folder, pattern), preload_dirs=torch.sys_path))
            return attempts, False
        preload = _attempt(ns, path, "torch/__init__.py: preload after failure", IMPORT,
                           rtld_global=True)
        attempts.append(preload)
        if not preload.ok:
            return attempts, False
    return attempts, True


def _global_deps_attempts(ns: Namespace, torch: TorchInstall, lib: str) -> list[Attempt]:
    """torch/__init__.py's `_load_global_deps`: the CDLL, then the preloads it may fall back on."""
    global_deps = posixpath.join(lib, "libtorch_global_deps.so")
    first = _attempt(ns, global_deps, "torch/__init__.py: CDLL(RTLD_GLOBAL)", IMPORT,
                     rtld_global=True)
    attempts = [first]
    missing = _first_missing(ns, first)
    prefixes = {pattern.split(".", 1)[0] for _, pattern in torch.preload}
    if first.ok and any((o.facts.soname or "").startswith("libcudart.so") for o in ns.objects):
        attempts += _preload_best_effort(ns, torch)
    elif not first.ok and missing and missing.split(".", 1)[0] in prefixes:
        preloads, recovered = _preload_required(ns, torch)
        attempts += preloads
        if recovered:
            retry = _attempt(ns, global_deps, "torch/__init__.py: CDLL(RTLD_GLOBAL), retry",
                             IMPORT, rtld_global=True)
            attempts.append(retry)
            if retry.ok:
                attempts[0] = dataclasses.replace(first, superseded=True)
    return attempts


def emulate_torch(ns: Namespace, torch: TorchInstall) -> tuple[Attempt, ...]:
    """Run `import torch`, then every known feature dlopen, in `ns`; return the attempts."""
    attempts: list[Attempt] = []
    lib = posixpath.join(torch.site, "torch", "lib")
    if torch.has_global_deps:
        attempts += _global_deps_attempts(ns, torch, lib)
    # Kept even when it fails, as ld.so's trace mode goes on: what did load stays loaded, so
    # the features torch opens later are diagnosed too, not hidden behind the import. With no
    # torch/_C*.so at all, `import torch` fails at `from torch._C import *`: the plainest name
    # Python would try (`_C.so`) is opened, and is missing.
    attempts.append(_attempt(ns, posixpath.join(torch.site, "torch", torch.extension or "_C.so"),
                             "python: import torch._C" if torch.extension else
                             "python: import torch._C (the install has no torch/_C*.so)",
                             IMPORT, keep=True))
    data = _data()
    for item in data["torch_lib_files"]:
        if item["file"] in torch.lib_files:
            attempts.append(_attempt(ns, posixpath.join(lib, item["file"]),
                                     "torch: dlopen on first use", item["feature"]))
    for item in data["by_soname"]:
        by = ns.find_loaded(item["by"])
        if by is not None:
            attempts.append(_attempt(ns, item["name"], f"{item['by']}: dlopen", item["feature"],
                                     requester=by.index))
    return tuple(attempts)


def import_extension(ns: Namespace, extension: Extension) -> tuple[Attempt, ...]:
    """`import <package>` after torch: each compiled module opened RTLD_NOW, RTLD_LOCAL."""
    from resolver.loader.extensions import import_phase  # noqa: PLC0415

    phase = import_phase(extension)
    return tuple(_attempt(ns, module, f"{extension.name}: python imports its compiled module",
                          phase, keep=True)
                 for module in extension.modules)
