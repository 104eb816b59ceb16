"""ELF facts cached on disk, so that re-diagnosing after a fix re-reads only what changed.

One file maps a key built from the file's identity (path, size, mtime_ns, inode; for a
wheel member the archive's identity plus the member's name and CRC) and the facts schema to the
facts, or to the one-line reason the file is not a readable ELF. A cache file that is unreadable,
of another schema, or damaged (its sha256 no longer matches) is ignored and rewritten, never
trusted and never fatal. Writes go to a temporary file that is renamed over the old one.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from resolver.elf.facts import FACTS_SCHEMA, ElfFacts, facts_to_json, parse_facts_json
from resolver.errors import InvalidElf, InvalidFixture, UnusableFile

if TYPE_CHECKING:
    from pathlib import Path

    from resolver.target.rootfs import RootFS

__all__ = ["FactsCache", "default_cache_path", "read_facts"]

_FORMAT = f"jetson-resolve facts cache {FACTS_SCHEMA}"
# About 3 MB per torch install with its nvidia wheels; a file past this is not ours to trust.
_MAX_BYTES = 512 << 20


def default_cache_path() -> Path:
    """`facts.json` under `resolver.host_files.cache_home()`."""
    from resolver.host_files import cache_home  # noqa: PLC0415

    return cache_home() / "facts.json"


class FactsCache:
    """A key -> facts map loaded from and saved to one JSON file (or kept in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, object] = {}
        self._parsed: dict[str, ElfFacts | InvalidElf] = {}
        self._dirty = False
        self.hits = 0
        self.misses = 0
        if path is not None:
            self._entries = self._load(path)

    @staticmethod
    def _load(path: Path) -> dict[str, object]:
        # Line 1: format and the sha256 of line 2; line 2: the entries as JSON. A damaged file
        # (even one that is still valid JSON) fails the digest and is ignored whole.
        from resolver.host_files import read_regular  # noqa: PLC0415

        try:
            header, _, payload = read_regular(path, _MAX_BYTES, "a facts cache").partition(b"\n")
        except (OSError, UnusableFile):
            return {}
        expected = f"{_FORMAT} sha256={hashlib.sha256(payload).hexdigest()}".encode()
        if header != expected:
            return {}
        try:
            entries = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return {}
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def key(identity: tuple[object, ...]) -> str:
        """The cache key of a file identity."""
        return json.dumps(identity, separators=(",", ":"), default=str)

    def get(self, key: str) -> ElfFacts | InvalidElf | None:
        """Cached facts (or the cached reason the file is no ELF), None when not cached."""
        if key in self._parsed:
            self.hits += 1
            return self._parsed[key]
        raw = self._entries.get(key)
        if raw is None:
            return None
        try:
            if isinstance(raw, dict) and set(raw) == {"error"} and isinstance(raw["error"], str):
                value: ElfFacts | InvalidElf = InvalidElf(raw["error"])
            else:
                value = parse_facts_json(raw)
        except InvalidFixture:
            del self._entries[key]  # damaged entry: read the file again
            return None
        self._parsed[key] = value
        self.hits += 1
        return value

    def put(self, key: str, value: ElfFacts | InvalidElf) -> None:
        """Remember facts (or the reason a file is no ELF) under `key`."""
        self.misses += 1
        self._parsed[key] = value
        self._entries[key] = (
            {"error": str(value)} if isinstance(value, InvalidElf) else facts_to_json(value)
        )
        self._dirty = True

    def save(self) -> None:
        """Write the cache back if anything changed; failures to write are not errors."""
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            from resolver.host_files import write_atomic  # noqa: PLC0415

            payload = json.dumps(self._entries, separators=(",", ":")).encode()
            header = f"{_FORMAT} sha256={hashlib.sha256(payload).hexdigest()}\n".encode()
            if len(header) + len(payload) > _MAX_BYTES:
                return  # a cache that would not be read back is not written
            write_atomic(self.path, header + payload)
            self._dirty = False
        except (OSError, UnusableFile):
            return


def read_facts(rootfs: RootFS, real: str, cache: FactsCache) -> ElfFacts:
    """Facts of a resolved regular file of the root, through the cache.

    Raises:
        InvalidElf: the file is not a readable ELF (also when that verdict was cached).
        RootFsError: the file cannot be opened.

    """
    try:
        key = cache.key(rootfs.identity(real))
    except OSError as err:
        raise InvalidElf(f"{rootfs.host_label(real)}: cannot stat: {err.strerror}") from err
    cached = cache.get(key)
    if cached is None:
        from resolver.elf.reader import read_elf_facts  # noqa: PLC0415 - only on a miss

        stream, size = rootfs.open(real)
        with stream:
            try:
                cached = read_elf_facts(stream, origin=rootfs.host_label(real), size=size)
            except InvalidElf as err:
                # Keep the message, not the exception: its traceback holds the file's mapping.
                cached = InvalidElf(str(err))
        cache.put(key, cached)
    if isinstance(cached, InvalidElf):
        raise InvalidElf(str(cached))  # a fresh one each time: no traceback piling up
    return cached
