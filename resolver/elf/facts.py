"""What one ELF file tells the loader and us: an immutable `ElfFacts`, and its JSON form.

The facts are about bytes, not places: the path a file was found at is the caller's to hold.
This module does not read files (that is `resolver.elf.reader`); it defines the value the reader
returns, the cache stores and the fixture synthesiser writes back out.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import sys
from array import array
from dataclasses import dataclass
from typing import Any

from resolver.errors import InvalidFixture

__all__ = [
    "FACTS_SCHEMA",
    "PLAIN",
    "PUBLIC",
    "DynamicSymbols",
    "ElfClass",
    "ElfFacts",
    "ElfType",
    "Endian",
    "GpuCode",
    "GpuCodeKind",
    "Machine",
    "VersionNeed",
    "facts_to_json",
    "key_digest",
    "machine_name",
    "parse_facts_json",
    "parse_gpu_code",
    "reference_binds",
    "reference_keys",
]

# Bump when ElfFacts or its JSON form changes: cached facts of another schema are re-read.
FACTS_SCHEMA = 2


class ElfClass(enum.IntEnum):
    """EI_CLASS."""

    ELF32 = 1
    ELF64 = 2


class Endian(enum.Enum):
    """EI_DATA."""

    LITTLE = "little"
    BIG = "big"


class ElfType(enum.IntEnum):
    """e_type values that matter to the loader."""

    REL = 1
    EXEC = 2
    DYN = 3
    CORE = 4


class Machine(enum.IntEnum):
    """e_machine values we name; facts keep the raw number, so others still compare."""

    I386 = 3
    ARM = 40
    PPC64 = 21
    S390 = 22
    X86_64 = 62
    AARCH64 = 183
    RISCV = 243


def machine_name(machine: int) -> str:
    """Return a readable name (`x86_64`, `aarch64`) for an e_machine number."""
    try:
        return Machine(machine).name.lower()
    except ValueError:
        return f"EM_{machine}"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class VersionNeed:
    """One `.gnu.version_r` entry: this object needs version `name` from the object `file`."""

    file: str
    name: str
    weak: bool = False


class GpuCodeKind(enum.Enum):
    """What a `.nv_fatbin` entry carries: machine code for one GPU, or PTX to JIT."""

    SASS = "sass"
    PTX = "ptx"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuCode:
    """One GPU architecture embedded in `.nv_fatbin` (`sm_110`, `sm_90a`, `compute_90`)."""

    kind: GpuCodeKind
    arch: int  # major * 10 + minor, as the fatbin entry header stores it
    arch_specific: bool = False  # `sm_XXa`: runs only on exactly that GPU

    @property
    def sort_key(self) -> tuple[bool, int, bool]:
        """Order: SASS before PTX, then by architecture."""
        return (self.kind.value != "sass", self.arch, self.arch_specific)

    def __str__(self) -> str:
        prefix = "sm" if self.kind is GpuCodeKind.SASS else "compute"
        return f"{prefix}_{self.arch}{'a' if self.arch_specific else ''}"


PLAIN = b"\x01"  # prefix of the key text of a definition without a version (or the base one)
PUBLIC = b"\x02"  # prefix of the key text of a non-hidden versioned definition


def key_digest(text: bytes) -> bytes:
    """The 8-byte BLAKE2b digest a key is made of (little-endian, as `DynamicSymbols` packs)."""
    return hashlib.blake2b(text, digest_size=8).digest()


def symbol_key(text: bytes) -> int:
    """The 64-bit key a symbol is stored and looked up under (BLAKE2b of its key text)."""
    return int.from_bytes(key_digest(text), "little")


def plain_key(name: bytes) -> int:
    """Key of a definition an unversioned and any non-hidden versioned reference binds to."""
    return symbol_key(PLAIN + name)


def public_key(name: bytes) -> int:
    """Key of a non-hidden versioned definition: what an unversioned reference may bind to."""
    return symbol_key(PUBLIC + name)


def versioned_key(name: bytes, version: bytes) -> int:
    """Key of a definition of `name` at version node `version` (hidden or not)."""
    return symbol_key(name + b"@" + version)


class DynamicSymbols:
    """An object's dynamic symbols as the loader binds them, stored compactly.

    `undefined` lists the references that must bind (STB_GLOBAL, SHN_UNDEF): `name`, or
    `name@VERSION` when `.gnu.version` ties it to a `.gnu.version_r` entry; weak references may
    stay unbound and are left out. The definitions the loader may bind to (glibc
    elf/dl-lookup.c `do_lookup_x` and `check_match`: STB_GLOBAL/WEAK/GNU_UNIQUE, not hidden or
    internal, a value or TLS, of an allowed type) are kept as sorted 64-bit digests, not names: a
    `libtorch_cpu.so` defines about 49,000, whose names alone take 4 MB. Each definition gives
    `plain_key(name)` when it has no version or the base one, `public_key(name)` when its
    version is not hidden, and `versioned_key(name, version)` when it has one. A reference
    `name` binds to a plain or public key; `name@V` to its versioned key or a plain one
    (`check_match`: an unversioned definition satisfies a versioned reference).
    """

    __slots__ = ("_keys", "_wanted", "defined", "reference_digests", "undefined")

    def __init__(self, *, undefined: tuple[str, ...], defined: bytes,
                 reference_digests: bytes = b"") -> None:
        self.undefined = undefined
        self.defined = defined  # 8-byte key digests (`key_digest`), sorted, joined
        # Two digests per reference, in order (`reference_keys`): kept so that binding after
        # a cache hit hashes nothing. Empty: computed when first needed.
        self.reference_digests = reference_digests
        self._keys: frozenset[int] | None = None
        self._wanted: tuple[tuple[str, int, int], ...] | None = None

    def packed_references(self) -> bytes:
        """`reference_digests`, computed (hashing each reference) when not kept."""
        if len(self.reference_digests) != 16 * len(self.undefined):
            self.reference_digests = b"".join(
                key.to_bytes(8, "little") for ref in self.undefined
                for key in reference_keys(ref))
        return self.reference_digests

    @property
    def wanted(self) -> tuple[tuple[str, int, int], ...]:
        """Each reference with the two keys a definition satisfying it is stored under."""
        if self._wanted is None:
            keys = array("Q")
            keys.frombytes(self.packed_references())
            if sys.byteorder == "big":  # pragma: no cover - the digests are read little-endian
                keys.byteswap()
            self._wanted = tuple(zip(self.undefined, keys[0::2], keys[1::2], strict=True))
        return self._wanted

    @classmethod
    def from_digests(cls, undefined: tuple[str, ...], digests: list[bytes]) -> DynamicSymbols:
        """Build from the 8-byte digests (`key_digest`) of the definition keys."""
        return cls(undefined=undefined, defined=b"".join(sorted(set(digests))))

    @property
    def keys(self) -> frozenset[int]:
        """The definition keys, unpacked once (each digest read as a little-endian integer)."""
        if self._keys is None:
            unpacked = array("Q")
            if unpacked.itemsize != 8:  # pragma: no cover - CPython's Q is 64-bit everywhere
                raise RuntimeError("array('Q') is not 64-bit here")
            unpacked.frombytes(self.defined)
            if sys.byteorder == "big":  # pragma: no cover - the digests are read little-endian
                unpacked.byteswap()
            self._keys = frozenset(unpacked)
        return self._keys

    def __len__(self) -> int:
        """Number of definition keys."""
        return len(self.defined) // 8

    def __eq__(self, other: object) -> bool:
        """Equal when the references and definition keys are."""
        if not isinstance(other, DynamicSymbols):
            return NotImplemented
        return self.undefined == other.undefined and self.defined == other.defined

    def __hash__(self) -> int:
        """Hash of the references and keys."""
        return hash((self.undefined, self.defined))

    def __repr__(self) -> str:
        """Counts only: the keys are not readable."""
        return f"DynamicSymbols(undefined={len(self.undefined)}, defined={len(self)})"


def reference_keys(reference: str) -> tuple[int, int]:
    """The two keys a definition `reference` binds to may be stored under.

    `name@V`: its versioned key or the plain one; `name`: the plain or the public one
    (`DynamicSymbols`).
    """
    name, _, version = reference.encode("utf-8", "surrogateescape").partition(b"@")
    if version:
        return versioned_key(name, version), plain_key(name)
    return plain_key(name), public_key(name)


def reference_binds(reference: str, keys: frozenset[int] | set[int]) -> bool:
    """True when `reference` (`name` or `name@VERSION`) binds to a definition among `keys`."""
    first, second = reference_keys(reference)
    return first in keys or second in keys


@dataclass(frozen=True, slots=True, kw_only=True)
class ElfFacts:
    """Everything the loader emulation and the findings need from one ELF file.

    `rpath` and `runpath` keep the raw DT_RPATH / DT_RUNPATH strings (None when the tag is
    absent): splitting them, and what an empty element means, is the loader's business.
    """

    elf_class: ElfClass
    endian: Endian
    machine: int
    osabi: int
    elf_type: int
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: str | None = None
    runpath: str | None = None
    nodeflib: bool = False
    version_defs: tuple[str, ...] = ()  # verdef names, the base (soname) entry excluded
    version_needs: tuple[VersionNeed, ...] = ()
    gpu_code: tuple[GpuCode, ...] = ()  # sorted, unique
    has_dynamic: bool = True  # False for static executables and objects without PT_DYNAMIC
    # None when unknown: no symbol table to read (a fixture's synthesised library), or facts
    # recorded without one. Binding is judged only where every object in scope has them.
    symbols: DynamicSymbols | None = None
    tls: tuple[int, int] | None = None  # PT_TLS (p_memsz, p_align) in bytes; None: no TLS
    static_tls: bool = False  # DF_STATIC_TLS: initial-exec TLS, which needs static TLS space

    @property
    def machine_name(self) -> str:
        """Readable e_machine."""
        return machine_name(self.machine)


def facts_to_json(facts: ElfFacts, *, symbols: bool = True) -> dict[str, Any]:
    """Turn facts into plain JSON-able data (the cache and fixture form).

    `symbols=False` leaves out what fixtures do not record: the dynamic symbols and TLS.
    """
    data: dict[str, Any] = {
        "class": int(facts.elf_class),
        "endian": facts.endian.value,
        "machine": facts.machine,
        "osabi": facts.osabi,
        "type": facts.elf_type,
        "soname": facts.soname,
        "needed": list(facts.needed),
        "rpath": facts.rpath,
        "runpath": facts.runpath,
        "nodeflib": facts.nodeflib,
        "version_defs": list(facts.version_defs),
        "version_needs": [[n.file, n.name, n.weak] for n in facts.version_needs],
        "gpu_code": [str(code) for code in facts.gpu_code],
        "dynamic": facts.has_dynamic,
    }
    if symbols and facts.symbols is not None:
        data["symbols"] = {
            "undefined": list(facts.symbols.undefined),
            "defined": base64.b64encode(facts.symbols.defined).decode("ascii"),
            "references": base64.b64encode(facts.symbols.packed_references()).decode("ascii")}
    if symbols and facts.tls is not None:
        data["tls"] = [*facts.tls, facts.static_tls]
    return data


def parse_gpu_code(text: str) -> GpuCode:
    """Parse `sm_110`, `sm_90a` or `compute_90`.

    Raises:
        ValueError: the text names no GPU architecture.

    """
    kind_text, _, arch_text = text.partition("_")
    kind = {"sm": GpuCodeKind.SASS, "compute": GpuCodeKind.PTX}.get(kind_text)
    specific = arch_text.endswith("a")
    digits = arch_text.removesuffix("a")
    if kind is None or not digits.isdigit():
        raise ValueError(f"not a GPU architecture: {text!r}")
    return GpuCode(kind=kind, arch=int(digits), arch_specific=specific)


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:  # noqa: ANN401
    if key not in data:
        raise InvalidFixture(f"{where}.{key}: missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = getattr(kind, "__name__", kind)
        raise InvalidFixture(f"{where}.{key}: expected {expected}, got {value!r}")
    return value


def _gpu_code_field(text: object, where: str) -> GpuCode:
    try:
        return parse_gpu_code(text if isinstance(text, str) else repr(text))
    except ValueError as err:
        raise InvalidFixture(f"{where}: {err}") from err


def _tls_field(data: object, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not (isinstance(data, list) and len(data) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in data[:2])
            and isinstance(data[2], bool)):
        raise InvalidFixture(f"{where}: expected [memsz, align, static_tls]")
    return {"tls": (data[0], data[1]), "static_tls": data[2]}


def _symbols_field(data: object, where: str) -> DynamicSymbols | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InvalidFixture(f"{where}: expected an object")
    undefined = _field(data, "undefined", list, where)
    if not all(isinstance(v, str) for v in undefined):
        raise InvalidFixture(f"{where}.undefined: expected a list of strings")
    try:
        defined = base64.b64decode(_field(data, "defined", str, where), validate=True)
        references = base64.b64decode(str(data.get("references", "")), validate=True)
    except ValueError as err:
        raise InvalidFixture(f"{where}: not base64 ({err})") from err
    if len(defined) % 8:
        raise InvalidFixture(f"{where}.defined: {len(defined)} bytes, not whole 64-bit keys")
    if references and len(references) != 16 * len(undefined):
        raise InvalidFixture(f"{where}.references: {len(references)} bytes for "
                             f"{len(undefined)} references")
    return DynamicSymbols(undefined=tuple(undefined), defined=defined,
                          reference_digests=references)


def parse_facts_json(data: object, where: str = "facts") -> ElfFacts:
    """Turn the JSON form back into facts.

    Raises:
        InvalidFixture: a field is missing or of the wrong type; the message names it.

    """
    if not isinstance(data, dict):
        raise InvalidFixture(f"{where}: expected an object, got {type(data).__name__}")
    try:
        elf_class = ElfClass(_field(data, "class", int, where))
        endian = Endian(_field(data, "endian", str, where))
    except ValueError as err:
        raise InvalidFixture(f"{where}: {err}") from err
    needs = []
    for i, item in enumerate(_field(data, "version_needs", list, where)):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], str) and isinstance(item[2], bool)):
            raise InvalidFixture(f"{where}.version_needs[{i}]: expected [file, name, weak]")
        needs.append(VersionNeed(file=item[0], name=item[1], weak=item[2]))
    codes = [_gpu_code_field(text, f"{where}.gpu_code[{i}]")
             for i, text in enumerate(_field(data, "gpu_code", list, where))]
    strings = {key: _field(data, key, list, where) for key in ("needed", "version_defs")}
    for key, values in strings.items():
        if not all(isinstance(v, str) for v in values):
            raise InvalidFixture(f"{where}.{key}: expected a list of strings")
    optional = {key: _field(data, key, (str, type(None)), where)
                for key in ("soname", "rpath", "runpath")}
    return ElfFacts(
        elf_class=elf_class,
        endian=endian,
        symbols=_symbols_field(data.get("symbols"), f"{where}.symbols"),
        **_tls_field(data.get("tls"), f"{where}.tls"),
        machine=_field(data, "machine", int, where),
        osabi=_field(data, "osabi", int, where),
        elf_type=_field(data, "type", int, where),
        soname=optional["soname"],
        needed=tuple(strings["needed"]),
        rpath=optional["rpath"],
        runpath=optional["runpath"],
        nodeflib=_field(data, "nodeflib", bool, where),
        version_defs=tuple(strings["version_defs"]),
        version_needs=tuple(needs),
        gpu_code=tuple(sorted(set(codes), key=lambda code: code.sort_key)),
        has_dynamic=_field(data, "dynamic", bool, where),
    )
