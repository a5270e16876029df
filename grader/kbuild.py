"""Reads Kbuild/Makefile text for module and object names; it is never executed."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class KbuildInfo:
    """What a Kbuild/Makefile says about modules: `obj-m` names and their composite objects."""

    modules: list[str] = field(default_factory=list)
    composites: dict[str, list[str]] = field(default_factory=dict)


_UNRESOLVED = "\x00"
_ASSIGN = re.compile(
    r"^(?:(?:export|override)\s+)*([A-Za-z0-9_.\-$(){}]+?)\s*(\+=|::=|:=|\?=|=)\s*(.*)$"
)


def parse_kbuild(text: str) -> KbuildInfo:
    """Read `obj-m` and `NAME-y` / `NAME-objs` lines; unresolvable `$(...)` words are dropped."""
    text = re.sub(r"\\[ \t]*\r?\n", " ", text)  # continuation lines
    variables: dict[str, str] = {}
    objm: list[str] = []
    composite: list[tuple[str, str, str]] = []  # (raw name, operator, raw value)
    for line in text.splitlines():
        if line.startswith("\t"):  # a recipe: shell, not make assignments
            continue
        line = line.split("#", 1)[0].strip()
        m = _ASSIGN.match(line)
        if not m:
            continue
        name, op, value = m.groups()
        if name == "obj-m":
            if op not in ("+=", "?="):
                objm.clear()
            objm.append(value)
        elif name.endswith(("-y", "-objs")):
            composite.append((name, op, value))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            if op == "+=":
                variables[name] = f"{variables.get(name, '')} {value}"
            elif op != "?=" or name not in variables:
                variables[name] = value

    def words(raw: str) -> list[str]:
        return [w for w in _expand(raw, variables).split() if _UNRESOLVED not in w]

    info = KbuildInfo()
    for raw in objm:
        for w in words(raw):
            if w.endswith(".o") and w[:-2] not in info.modules:
                info.modules.append(w[:-2])
    for raw_name, op, value in composite:
        name = _expand(raw_name, variables).rsplit("-", 1)[0]
        if name in info.modules:
            objs = info.composites.get(name, []) if op == "+=" else []
            info.composites[name] = objs + [w for w in words(value) if w.endswith(".o")]
    return info


def _expand(text: str, variables: dict[str, str], depth: int = 0) -> str:
    """Expand `$(VAR)`, `${VAR}` and `$(VAR:a=b)`; anything else becomes a marker."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        opener = text[i + 1]
        if opener == "$":
            out.append("$")
            i += 2
            continue
        if opener not in "({":
            out.append(_UNRESOLVED)  # automatic variables such as $@
            i += 2
            continue
        closer = ")" if opener == "(" else "}"
        j, level = i + 2, 1
        while j < len(text) and level:
            level += (text[j] == opener) - (text[j] == closer)
            j += 1
        out.append(_lookup(text[i + 2 : j - 1], variables, depth))
        i = j
    return "".join(out)


def _lookup(ref: str, variables: dict[str, str], depth: int) -> str:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?::([^=]*)=(.*))?", ref)
    if not m or m.group(1) not in variables or depth > 10:
        return _UNRESOLVED
    value = _expand(variables[m.group(1)], variables, depth + 1)
    if m.group(2) is not None:
        old, new = m.group(2), m.group(3)
        value = " ".join(
            w[: -len(old)] + new if old and w.endswith(old) else w for w in value.split()
        )
    return value


# --- locating the module ------------------------------------------------------------------


