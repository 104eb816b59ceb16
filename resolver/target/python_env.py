"""The Python process a torch is imported in, as a root holds it: its interpreter and sys.path.

Where no interpreter can be asked, both are derived from the site-packages directory the torch
sits in, as CPython's own start-up would derive them:

- the interpreter is `<prefix>/bin/pythonX.Y` for a `<prefix>/lib*/pythonX.Y/site-packages`,
  the `home` of a venv's `pyvenv.cfg`, and `/usr/bin/pythonX.Y` for Debian's
  `/usr/local/lib/pythonX.Y/dist-packages`; it must be an ELF file (a shell shim is not the
  process), else there is none;
- sys.path's site directories are those of `site.getsitepackages()` for the prefix: platlib
  (`lib64`) before purelib (`lib`) where they differ (Lib/site.py, `sys.platlibdir`), Debian's
  three dist-packages directories, and the directories named by the `.pth` files in each
  (Lib/site.py `addpackage`: a line is a path relative to the directory, a line starting with
  `import` is code and is skipped here, `#` starts a comment).

User site directories are not guessed (the user is unknown); give them with `--sys-path`.
Nothing here runs anything: asking a live interpreter is the CLI's business.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING

from resolver.elf.reader import ELF_MAGIC

if TYPE_CHECKING:
    from resolver.target.rootfs import RootFS

__all__ = ["default_interpreter", "find_interpreter", "site_sys_path", "split_site",
           "with_pth_dirs"]

_SITE = re.compile(
    r"^(?P<prefix>.*?)/(?P<lib>lib|lib64)/python(?P<version>\d+\.\d+)/(?P<kind>site|dist)-packages$")
_DEBIAN_SHARED = re.compile(r"^(?P<prefix>/usr(?:/local)?)/lib/python3/dist-packages$")
_MAX_PTH_LINES = 1000


def split_site(site: str) -> tuple[str, str | None]:
    """(prefix, "X.Y") of a site directory; the version is None for Debian's `python3`."""
    site = site.rstrip("/") or "/"
    match = _SITE.match(site)
    if match:
        return match.group("prefix") or "/", match.group("version")
    shared = _DEBIAN_SHARED.match(site)
    if shared:
        return shared.group("prefix"), None
    return posixpath.dirname(site), None


def _is_elf(rootfs: RootFS, path: str) -> bool:
    resolved = rootfs.resolve(path)
    if not resolved.ok or resolved.real is None or rootfs.kind_of(resolved.real) != "file":
        return False
    return rootfs.read_bytes(resolved.real, 4, prefix=True) == ELF_MAGIC


def _venv_config(rootfs: RootFS, prefix: str) -> dict[str, str] | None:
    """The `key = value` lines of a venv's pyvenv.cfg (PEP 405), None when there is none."""
    text = rootfs.read_text(posixpath.join(prefix, "pyvenv.cfg"), 65536)
    if text is None:
        return None
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def find_interpreter(rootfs: RootFS, site: str) -> str | None:
    """The interpreter that imports from `site` (a path in the root), None when not found.

    The first candidate that is an ELF file, in this order: the prefix's `bin/pythonX.Y`,
    `bin/python3`, `bin/python`; a venv's `home` with the same names; for `/usr/local`,
    `/usr/bin`'s (Debian's python puts `/usr/local/lib/pythonX.Y/dist-packages` on sys.path).
    """
    prefix, version = split_site(site)
    names = [f"python{version}"] if version else []
    names += ["python3", "python"]
    dirs = [posixpath.join(prefix, "bin")]
    home = (_venv_config(rootfs, prefix) or {}).get("home")
    if home is not None and home.startswith("/"):
        dirs.append(home)
    if prefix == "/usr/local":
        dirs.append("/usr/bin")
    for directory in dirs:
        for name in names:
            path = posixpath.join(directory, name)
            if _is_elf(rootfs, path):
                return path
    return None


def default_interpreter(rootfs: RootFS) -> str | None:
    """What would import a wheel: the root's `/usr/bin/python3`, else its newest python3.X.

    Only an ELF file counts (a shell shim is not the process).
    """
    if _is_elf(rootfs, "/usr/bin/python3"):
        return "/usr/bin/python3"
    versions = sorted((tuple(int(p) for p in m.group(1).split(".")), name)
                      for name in rootfs.list_dir("/usr/bin")
                      if (m := re.fullmatch(r"python(3\.\d+)", name)))
    for _, name in reversed(versions):
        if _is_elf(rootfs, f"/usr/bin/{name}"):
            return f"/usr/bin/{name}"
    return None


def _pth_dirs(rootfs: RootFS, site: str) -> list[str]:
    """The directories `.pth` files in `site` add, in file-name order (Lib/site.py)."""
    found: list[str] = []
    for name in sorted(rootfs.list_dir(site)):
        if not name.endswith(".pth") or name.startswith("."):
            continue
        text = rootfs.read_text(posixpath.join(site, name), 1 << 20) or ""
        for raw in text.splitlines()[:_MAX_PTH_LINES]:
            line = raw.rstrip()
            if not line or line.startswith(("#", "import ", "import\t")) or "\0" in line:
                continue  # CPython skips a line it cannot make a path of
            path = posixpath.normpath(posixpath.join(site, line))
            if rootfs.resolve(path).ok and path not in found:
                found.append(path)
    return found


def with_pth_dirs(rootfs: RootFS, dirs: tuple[str, ...]) -> tuple[str, ...]:
    """`dirs` with what the .pth files of each add after it, as site.py would have added them.

    `dirs` is sys.path as an interpreter run without site (-S) printed it.
    """
    result: list[str] = []
    for directory in dirs:
        if directory not in result:
            result.append(directory)
        result += [d for d in _pth_dirs(rootfs, directory) if d not in result]
    return tuple(result)


def site_sys_path(rootfs: RootFS, site: str, version: str | None = None) -> tuple[str, ...]:
    """The site directories of sys.path for the interpreter that imports from `site`.

    `version` ("X.Y") is used when the site's path does not say it. `site` is always included
    (first when CPython would not list it: it is where the user says torch is); each directory
    is followed by what its `.pth` files add.
    """
    prefix, site_version = split_site(site)
    version = site_version or version
    dirs: list[str] = []
    cfg = _venv_config(rootfs, prefix)
    if cfg is not None and version is not None:
        # A venv: its own site-packages, then the base interpreter's when the venv includes
        # them (Lib/site.py venv(): include-system-site-packages).
        dirs.append(f"{prefix}/lib/python{version}/site-packages")
        home = cfg.get("home", "")
        if cfg.get("include-system-site-packages", "").lower() == "true" and home.startswith("/"):
            base = posixpath.dirname(home.rstrip("/")) or "/"
            dirs += [d for d in site_sys_path(rootfs, f"{base}/lib/python{version}/site-packages",
                                              version) if d not in dirs]
    elif version is not None:
        prefixes = [prefix]
        if prefix in ("/usr", "/usr/local"):
            prefixes = ["/usr/local", "/usr"]
        for top in prefixes:
            dirs += [f"{top}/lib64/python{version}/site-packages",
                     f"{top}/lib/python{version}/site-packages"]
        if prefix in ("/usr", "/usr/local"):
            dirs += [f"/usr/local/lib/python{version}/dist-packages",
                     "/usr/lib/python3/dist-packages", f"/usr/lib/python{version}/dist-packages"]
    clean = site.rstrip("/") or "/"
    if clean not in dirs:
        dirs.insert(0, clean)
    seen: set[str] = set()
    result: list[str] = []
    for directory in dirs:
        real = rootfs.resolve(directory).real
        if real is None or real in seen or rootfs.kind_of(real) != "dir":
            continue
        seen.add(real)
        result.append(directory)
        result += [d for d in _pth_dirs(rootfs, directory) if d not in result]
    return tuple(result)
