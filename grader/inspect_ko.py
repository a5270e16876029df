"""Inspect stage: what a built .ko imports, defines, inlines and declares, plus hints from its C text."""
from __future__ import annotations

import bisect
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from grader.callgraph import module_calls
from grader.errors import EnvironmentProblem


@dataclass(frozen=True)
class KoInfo:
    """What one .ko shows without loading it."""

    path: Path
    imports: frozenset[str]  # undefined symbols: what the module needs from the kernel
    defined: frozenset[str]  # defined functions and objects, GCC clone suffixes removed
    modinfo: dict[str, list[str]]  # .modinfo key -> values, in order
    params: dict[str, dict[str, str | None]]  # name -> {"type": ..., "description": ...}
    license: str | None
    vermagic: str | None  # without the trailing blank the kernel's macro leaves
    inlined: frozenset[str]  # functions whose bodies the compiler copied in (from DWARF)
    has_dwarf: bool
    sections: frozenset[str]
    notes: tuple[str, ...] = ()  # anomalies met while reading; never raised
    duration_s: float = 0.0
    # Kernel functions called by the init and exit functions, in program order (None: no such
    # function); see grader/callgraph.py.
    init_calls: tuple[str, ...] | None = None
    exit_calls: tuple[str, ...] | None = None


def inspect_ko(path: Path) -> KoInfo:
    """Read symbols, .modinfo and DWARF inline records of a kernel module."""
    t0 = time.monotonic()
    notes: list[str] = []
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_type"] != "ET_REL":
                raise EnvironmentProblem(f"{path} is not a kernel module (not an ELF relocatable object)")
            sections = frozenset(s.name for s in elf.iter_sections())
            imports, defined, sym_values = _symbols(elf)
            modinfo = _modinfo(elf)
            try:
                init_calls, exit_calls = module_calls(elf)
            except Exception as e:  # any shape we do not know: the checks fall back, noted
                init_calls = exit_calls = None
                notes.append(f"calls of init/exit not read ({type(e).__name__}: {e})")
            has_dwarf = elf.get_section_by_name(".debug_info") is not None
            inlined: frozenset[str] = frozenset()
            if has_dwarf:
                try:
                    inlined = _DwarfScan(elf, sym_values).inlined_names()
                except (IndexError, KeyError, ValueError, struct.error) as e:
                    # A DWARF shape we do not know must not cost the whole inspection.
                    notes.append(f"DWARF not fully read ({type(e).__name__}: {e}); inlined helpers may be missing")
            else:
                notes.append("no DWARF (.debug_info): inline helpers such as kref_get cannot be seen")
    except OSError as e:
        raise EnvironmentProblem(f"cannot read {path}: {e}") from e
    except ELFError as e:
        raise EnvironmentProblem(f"{path} is not a readable ELF file: {e}") from e
    vermagic = modinfo.get("vermagic", [None])[0]
    return KoInfo(
        path=path, imports=imports, defined=defined, modinfo=modinfo, params=_params(modinfo),
        license=modinfo.get("license", [None])[0], vermagic=vermagic.rstrip() if vermagic else None,
        inlined=inlined, has_dwarf=has_dwarf, sections=sections, notes=tuple(notes),
        duration_s=time.monotonic() - t0, init_calls=init_calls, exit_calls=exit_calls,
    )


# ---- symbols and .modinfo ------------------------------------------------------------------
def _symbols(elf: ELFFile) -> tuple[frozenset[str], frozenset[str], list[int]]:
    """(undefined names, defined function/object names, st_value of every symbol by index)."""
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        return frozenset(), frozenset(), []
    imports, defined, values = set(), set(), []
    for sym in symtab.iter_symbols():
        values.append(sym["st_value"])
        name = sym.name
        if not name:
            continue
        if sym["st_shndx"] == "SHN_UNDEF":
            imports.add(name)
        elif sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT") and not name.startswith("__pfx_"):
            # GCC names its clones kref_put.constprop.0, tm_scan.cold, ...: C names have no dot.
            # __pfx_* mark the padding before each function on 6.2+ (CONFIG_FUNCTION_PADDING).
            defined.add(name.split(".", 1)[0])
    return frozenset(imports), frozenset(defined), values


def _modinfo(elf: ELFFile) -> dict[str, list[str]]:
    sec = elf.get_section_by_name(".modinfo")
    out: dict[str, list[str]] = {}
    if sec is None:
        return out
    # NUL-separated key=value strings; alignment padding shows up as empty strings.
    for raw in sec.data().split(b"\0"):
        key, sep, value = raw.decode("utf-8", errors="replace").partition("=")
        if sep and key:
            out.setdefault(key, []).append(value)
    return out


def _params(modinfo: dict[str, list[str]]) -> dict[str, dict[str, str | None]]:
    params: dict[str, dict[str, str | None]] = {}
    for key, field_name in (("parmtype", "type"), ("parm", "description")):
        for entry in modinfo.get(key, []):
            name, sep, value = entry.partition(":")
            if sep:
                params.setdefault(name, {"type": None, "description": None})[field_name] = value
    return params


# ---- DWARF: names of inlined functions -----------------------------------------------------
# A hand-rolled reader, because walking every DIE with pyelftools costs about 1 s per 100 kB of
# .debug_info (most of it relocating), and a module that includes kernel headers carries MBs.
# It reads only what it needs: DIE tags, DW_AT_abstract_origin / specification / name, and
# DW_AT_sibling to jump over type definitions, which are most of the bytes.
_TAG_INLINED, _TAG_SUBPROGRAM = 0x1D, 0x2E
_TYPE_TAGS = frozenset({0x01, 0x02, 0x04, 0x13, 0x15, 0x17})  # array, class, enum, struct, subroutine, union
_AT_SIBLING, _AT_NAME, _AT_ORIGIN, _AT_SPEC = 0x01, 0x03, 0x31, 0x47
_OFFSET, _ADDR = -1, -2  # placeholders in the size table: offset size, address size
_FIXED: dict[int, int] = {
    0x01: _ADDR, 0x05: 2, 0x06: 4, 0x07: 8, 0x0B: 1, 0x0C: 1, 0x0E: _OFFSET, 0x10: _OFFSET,
    0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8, 0x17: _OFFSET, 0x19: 0, 0x1C: 4, 0x1D: _OFFSET, 0x1E: 16,
    0x1F: _OFFSET, 0x20: 8, 0x21: 0, 0x24: 8, 0x25: 1, 0x26: 2, 0x27: 3, 0x28: 4, 0x29: 1,
    0x2A: 2, 0x2B: 3, 0x2C: 4, 0x1F20: _OFFSET, 0x1F21: _OFFSET,
}
_ULEB_FORMS = frozenset({0x0D, 0x0F, 0x15, 0x1A, 0x1B, 0x22, 0x23, 0x1F01, 0x1F02})
_CU_REFS = {0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8}  # ref1..ref8: offsets from the unit start
_BLOCKS = {0x0A: 1, 0x03: 2, 0x04: 4}  # block1, block2, block4: size of the length field


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


@dataclass
class _Abbrev:
    tag: int
    children: bool
    specs: list[tuple[int, int]]  # (attribute, form)
    size: int | None  # byte size of all attributes when every form has a fixed size
    wanted: bool  # carries something the scan records or follows


@dataclass
class _Unit:
    start: int  # offset of the unit header in .debug_info
    end: int
    version: int
    offset_size: int
    addr_size: int
    abbrevs: dict[int, _Abbrev] = field(default_factory=dict)


class _DwarfScan:
    def __init__(self, elf: ELFFile, sym_values: list[int]) -> None:
        self.info = self._section(elf, ".debug_info")
        self.abbrev = self._section(elf, ".debug_abbrev")
        self.strs = self._section(elf, ".debug_str")
        self.line_strs = self._section(elf, ".debug_line_str")
        self.little = elf.little_endian
        self.relocs, self.addend_in_place = _relocations(
            elf, elf.get_section_index(".debug_info") or 0, sym_values)
        self.units: list[_Unit] = []
        self._abbrev_cache: dict[tuple[int, int, int, int], dict[int, _Abbrev]] = {}

    @staticmethod
    def _section(elf: ELFFile, name: str) -> bytes:
        sec = elf.get_section_by_name(name)
        return sec.data() if sec is not None else b""

    def _uint(self, pos: int, size: int) -> int:
        raw = int.from_bytes(self.info[pos:pos + size], "little" if self.little else "big")
        # In a .ko (ET_REL) every cross-section offset is a relocation; with RELA the bytes hold 0.
        if pos in self.relocs:
            return (self.relocs[pos] + (raw if self.addend_in_place else 0)) & ((1 << (8 * size)) - 1)
        return raw

    def _read_unit(self, start: int) -> tuple[_Unit, int]:
        """The unit whose header is at `start`, and the offset of its first DIE."""
        length, pos, osz = self._uint(start, 4), start + 4, 4
        if length == 0xFFFFFFFF:
            length, pos, osz = self._uint(pos, 8), pos + 8, 8
        end = pos + length
        version = self._uint(pos, 2)
        pos += 2
        if version >= 5:
            unit_type, asz = self.info[pos], self.info[pos + 1]
            abbrev_off = self._uint(pos + 2, osz)
            pos += 2 + osz
            # type units carry a signature and a type offset, skeleton and split units a dwo id
            pos += {2: 8 + osz, 6: 8 + osz, 4: 8, 5: 8}.get(unit_type, 0)
        else:
            abbrev_off, asz = self._uint(pos, osz), self.info[pos + osz]
            pos += osz + 1
        unit = _Unit(start, end, version, osz, asz)
        unit.abbrevs = self._abbrevs(abbrev_off, unit)
        return unit, pos

    def _abbrevs(self, offset: int, unit: _Unit) -> dict[int, _Abbrev]:
        key = (offset, unit.offset_size, unit.addr_size, unit.version)
        if key in self._abbrev_cache:
            return self._abbrev_cache[key]
        data, table, pos = self.abbrev, {}, offset
        while True:
            code, pos = _uleb(data, pos)
            if code == 0:
                break
            tag, pos = _uleb(data, pos)
            children = data[pos] != 0
            pos += 1
            specs: list[tuple[int, int]] = []
            size: int | None = 0
            while True:
                attr, pos = _uleb(data, pos)
                form, pos = _uleb(data, pos)
                if attr == 0 and form == 0:
                    break
                if form == 0x21:  # implicit_const: the value lives here, not in the DIE
                    _, pos = _uleb(data, pos)
                specs.append((attr, form))
                n = self._fixed_size(unit, form)
                size = None if n is None or size is None else size + n
            attrs = {a for a, _ in specs}
            wanted = (tag in (_TAG_INLINED, _TAG_SUBPROGRAM) and _AT_ORIGIN in attrs) or (
                tag in _TYPE_TAGS and children and _AT_SIBLING in attrs)
            table[code] = _Abbrev(tag, children, specs, size, wanted)
        self._abbrev_cache[key] = table
        return table

    @staticmethod
    def _fixed_size(unit: _Unit, form: int) -> int | None:
        n = _FIXED.get(form)
        if n == _ADDR or (form == 0x10 and unit.version < 3):  # DWARF 2's ref_addr: address-sized
            return unit.addr_size
        return unit.offset_size if n == _OFFSET else n

    def _form(self, unit: _Unit, form: int, pos: int) -> tuple[int | bytes | None, int]:
        """Value (a reference is an absolute .debug_info offset) and position after it."""
        data = self.info
        if form in _CU_REFS:
            n = _CU_REFS[form]
            return unit.start + self._uint(pos, n), pos + n
        if form == 0x15:  # ref_udata
            v, pos = _uleb(data, pos)
            return unit.start + v, pos
        if form == 0x08:  # inline string
            end = data.index(b"\0", pos)
            return data[pos:end], end + 1
        size = self._fixed_size(unit, form)
        if size is not None:
            # strp, line_strp and ref_addr are offsets into .debug_str, .debug_line_str, .debug_info
            return (self._uint(pos, size) if form in (0x0E, 0x1F, 0x10) else None), pos + size
        if form in _ULEB_FORMS:  # sdata's sign comes out wrong, but its value is never used
            return _uleb(data, pos)
        if form in (0x09, 0x18):  # block, exprloc
            n, pos = _uleb(data, pos)
            return None, pos + n
        if form in _BLOCKS:  # block1, block2, block4
            n = _BLOCKS[form]
            return None, pos + n + self._uint(pos, n)
        if form == 0x16:  # indirect: the form is in the DIE
            real, pos = _uleb(data, pos)
            return self._form(unit, real, pos)
        raise ValueError(f"unknown DWARF form {form:#x}")

    def _attrs(self, unit: _Unit, ab: _Abbrev, pos: int) -> tuple[dict[int, tuple[int, object]], int]:
        values: dict[int, tuple[int, object]] = {}
        for attr, form in ab.specs:
            value, pos = self._form(unit, form, pos)
            values[attr] = (form, value)
        return values, pos

    def inlined_names(self) -> frozenset[str]:
        origins: set[int] = set()
        data, start = self.info, 0
        while start < len(data):
            unit, pos = self._read_unit(start)
            self.units.append(unit)
            abbrevs, end = unit.abbrevs, unit.end
            while pos < end:
                code = data[pos]
                if code < 0x80:
                    pos += 1
                else:
                    code, pos = _uleb(data, pos)
                if code == 0:  # end of a list of children
                    continue
                ab = abbrevs[code]
                if not ab.wanted:
                    pos = pos + ab.size if ab.size is not None else self._attrs(unit, ab, pos)[1]
                    continue
                values, pos = self._attrs(unit, ab, pos)
                if ab.tag in _TYPE_TAGS:
                    # Nothing inside a type definition is code: jump over its members.
                    sibling = values[_AT_SIBLING][1]
                    if isinstance(sibling, int) and pos < sibling <= end:
                        pos = sibling
                else:
                    # An inlined call site, or an out-of-line copy of an inline function
                    # (GCC may emit kref_put.constprop.0 rather than inline kref_put).
                    origin = values[_AT_ORIGIN][1]
                    if isinstance(origin, int):
                        origins.add(origin)
            start = end
        starts = [u.start for u in self.units]
        names = (self._name_of(off, starts) for off in origins)
        return frozenset(n for n in names if n)

    def _name_of(self, offset: int, starts: list[int]) -> str | None:
        seen: set[int] = set()
        # An abstract origin may itself point on (to a declaration, through DW_AT_specification).
        while offset not in seen and len(seen) < 16:
            seen.add(offset)
            i = bisect.bisect_right(starts, offset) - 1
            if i < 0 or offset >= self.units[i].end:
                return None
            unit = self.units[i]
            code, pos = _uleb(self.info, offset)
            ab = unit.abbrevs.get(code)
            if ab is None:
                return None
            values, _ = self._attrs(unit, ab, pos)
            if _AT_NAME in values:
                return self._string(*values[_AT_NAME])
            nxt = values.get(_AT_SPEC) or values.get(_AT_ORIGIN)
            if nxt is None or not isinstance(nxt[1], int):
                return None
            offset = nxt[1]
        return None

    def _string(self, form: int, value: object) -> str | None:
        if isinstance(value, bytes):
            raw = value
        elif isinstance(value, int) and form in (0x0E, 0x1F):
            table = self.strs if form == 0x0E else self.line_strs
            raw = table[value:table.index(b"\0", value)]
        else:
            return None  # strx forms need .debug_str_offsets; GCC does not emit them here
        return raw.decode("utf-8", errors="replace")


def _relocations(elf: ELFFile, target: int, sym_values: list[int]) -> tuple[dict[int, int], bool]:
    """(offset in the target section -> S + A, whether addends sit in the bytes (REL))."""
    out: dict[int, int] = {}
    in_place = False
    is64 = elf.elfclass == 64
    end = "<" if elf.little_endian else ">"
    for sec in elf.iter_sections():
        if sec["sh_type"] not in ("SHT_RELA", "SHT_REL") or sec["sh_info"] != target:
            continue
        rela = sec["sh_type"] == "SHT_RELA"
        in_place = not rela
        fmt = end + ("QQq" if is64 else "IIi") if rela else end + ("QQ" if is64 else "II")
        shift = 32 if is64 else 8
        for entry in struct.iter_unpack(fmt, sec.data()):
            offset, info = entry[0], entry[1]
            sym = info >> shift
            s = sym_values[sym] if sym < len(sym_values) else 0
            out[offset] = s + (entry[2] if rela else 0)
    return out, in_place


# ---- requirement matching ------------------------------------------------------------------
def _has(names: frozenset[str], name: str) -> bool:
    # Since 6.10 (memory allocation profiling) allocators are macros over *_noprof functions:
    # kmem_cache_alloc() imports kmem_cache_alloc_noprof, kzalloc() inlines kzalloc_noprof.
    return name in names or f"{name}_noprof" in names


def find_api(info: KoInfo, name: str) -> str | None:
    """How the module uses `name`: "imported", "inlined", "defined" (its own helper) or None."""
    if _has(info.imports, name):
        return "imported"
    if _has(info.inlined, name):
        return "inlined"
    if name in info.defined:
        return "defined"
    return None


def match_any(info: KoInfo, alternatives: Iterable[str]) -> tuple[str, str] | None:
    """(name, how) of the first alternative the module uses, e.g. ["kref_put", "refcount_warn_saturate"]."""
    for name in alternatives:
        how = find_api(info, name)
        if how:
            return name, how
    return None


def _uses_kernel_api(info: KoInfo, name: str) -> bool:
    # "defined" does not count: a module defining its own kmem_cache_destroy frees nothing.
    return _has(info.imports, name) or _has(info.inlined, name)


def unpaired(info: KoInfo, pairs: Iterable[tuple[list[str], list[str]]]) -> list[tuple[str, list[str]]]:
    """(setup found, teardown alternatives) for every setup the module uses whose teardown is
    not on its exit path (the exit function and what it calls; anywhere in the module when the
    exit function could not be read). A teardown only in the init function's error path does
    not count: it never runs at rmmod."""
    exit_path = set(info.exit_calls) if info.exit_calls is not None else None
    missing = []
    for setups, teardowns in pairs:
        found = next((s for s in setups if _uses_kernel_api(info, s)), None)
        if not found:
            continue
        if exit_path is not None:
            ok = any(t in exit_path for t in teardowns)
        else:
            ok = any(_uses_kernel_api(info, t) for t in teardowns)
        if not ok:
            missing.append((found, list(teardowns)))
    return missing


def order_violations(info: KoInfo, rules: Iterable[tuple[list[str], list[str]]]
                     ) -> list[tuple[str, str]]:
    """(a call of `first`, a call of `then`) for each rule whose `then` comes before a `first`
    on the exit path. A rule with either side absent from the exit path is not broken."""
    calls = list(info.exit_calls or ())
    out = []
    for first, then in rules:
        fi = [i for i, c in enumerate(calls) if c in first]
        ti = [i for i, c in enumerate(calls) if c in then]
        if fi and ti and min(ti) < max(fi):
            out.append((calls[max(fi)], calls[min(ti)]))
    return out
