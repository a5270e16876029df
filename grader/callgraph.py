"""The order in which a module's init or exit function calls the kernel, read from the .ko: its
code is disassembled (capstone) to find every call and jump; a call site whose operand carries a
relocation names its callee there (a kernel function, or a function of the module in another
section), one without names a function of the same section. Calls into the module's own
functions are expanded in place. Branches are not followed apart (an error path inside the exit
function counts as if it ran), which is what setup/teardown ordering needs: the straight path of
an exit function."""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

import capstone
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

# x86-64 call/jump relocations (R_X86_64_PC32, R_X86_64_PLT32): the only ones that name callees.
_CALL_TYPES = {2, 4}
_MAX_DEPTH = 8


@dataclass(frozen=True)
class _Func:
    name: str
    section: int
    start: int
    end: int


class CallGraph:
    def __init__(self, elf: ELFFile):
        symtab = elf.get_section_by_name(".symtab")
        self.syms: list[tuple[str, str, int | str, int]] = []  # name, type, shndx, value
        self.funcs: dict[int, list[_Func]] = {}  # section index -> functions sorted by start
        self.by_name: dict[str, _Func] = {}
        if isinstance(symtab, SymbolTableSection):
            for sym in symtab.iter_symbols():
                self.syms.append((sym.name, sym["st_info"]["type"], sym["st_shndx"], sym["st_value"]))
                if sym["st_info"]["type"] == "STT_FUNC" and isinstance(sym["st_shndx"], int):
                    f = _Func(sym.name, sym["st_shndx"], sym["st_value"],
                              sym["st_value"] + max(1, sym["st_size"]))
                    self.funcs.setdefault(f.section, []).append(f)
                    self.by_name.setdefault(sym.name, f)
        for fs in self.funcs.values():
            fs.sort(key=lambda f: f.start)
        self.elf = elf
        self.code: dict[int, bytes] = {}
        self.relocs: dict[int, list[tuple[int, int, int, int]]] = {}  # section -> (off, type, sym, addend)
        end = "<" if elf.little_endian else ">"
        for sec in elf.iter_sections():
            if sec["sh_type"] != "SHT_RELA" or elf.elfclass != 64:
                continue
            items = [(o, info & 0xFFFFFFFF, info >> 32, a)
                     for o, info, a in struct.iter_unpack(end + "QQq", sec.data())]
            self.relocs.setdefault(sec["sh_info"], []).extend(sorted(items))

    def _func_at(self, section: int, offset: int) -> _Func | None:
        fs = self.funcs.get(section, [])
        i = bisect.bisect_right([f.start for f in fs], offset) - 1
        if i >= 0 and fs[i].start <= offset < fs[i].end:
            return fs[i]
        return None

    def calls(self, entry: str) -> list[str] | None:
        """Kernel functions reached from `entry` in program order; None if there is no such
        function in the module."""
        f = self.by_name.get(entry)
        if f is None:
            return None
        out: list[str] = []
        self._walk(f, out, set(), 0)
        return out

    def _section_code(self, index: int) -> bytes:
        if index not in self.code:
            self.code[index] = self.elf.get_section(index).data()
        return self.code[index]

    def _target(self, sym: int, addend: int, site: int) -> tuple[str | None, _Func | None]:
        """What a relocation at a call operand points to: (kernel function, module function)."""
        if sym >= len(self.syms):
            return None, None
        name, stype, shndx, value = self.syms[sym]
        if shndx == "SHN_UNDEF":
            return (name, None) if name else (None, None)
        if not isinstance(shndx, int):
            return None, None
        return None, self._func_at(shndx, value + addend + 4 if stype == "STT_SECTION" else value)

    def _walk(self, f: _Func, out: list[str], seen: set[tuple[int, int]], depth: int) -> None:
        if (f.section, f.start) in seen or depth > _MAX_DEPTH:
            return
        seen.add((f.section, f.start))
        relocs = {o: (t, s, a) for o, t, s, a in self.relocs.get(f.section, [])
                  if f.start <= o < f.end and t in _CALL_TYPES}
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        code = self._section_code(f.section)[f.start:f.end]
        for insn in md.disasm(code, f.start):
            if insn.mnemonic not in ("call", "jmp") or len(insn.bytes) != 5:
                continue  # rel32 calls and jumps only (e8/e9): not short jumps, not indirect
            site = insn.address + 1
            if site in relocs:
                _, sym, addend = relocs[site]
                name, target = self._target(sym, addend, site)
            else:
                name, target = None, self._func_at(f.section, int(insn.op_str, 16))
                if target is not None and target.start != int(insn.op_str, 16):
                    target = None  # a jump inside a function, not a call of another
            if name is not None:
                if not name.startswith("__"):  # __fentry__, __x86_return_thunk, ...
                    out.append(name.removesuffix("_noprof"))
            elif target is not None and target is not f:
                self._walk(target, out, seen, depth + 1)


def module_calls(elf: ELFFile) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(calls of the init function, calls of the exit function) — module_init/module_exit
    define the aliases init_module and cleanup_module."""
    g = CallGraph(elf)
    init, exit_ = g.calls("init_module"), g.calls("cleanup_module")
    return (tuple(init) if init is not None else None, tuple(exit_) if exit_ is not None else None)
