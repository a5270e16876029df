"""Source hints: what the C text says that the .ko cannot (the kernel generation it targets,
user copies). Comments and strings are stripped first; the code is never compiled here."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from grader.profiles import available_profiles


@dataclass(frozen=True)
class SourceHints:
    """What the C text says that the .ko cannot: which kernel generation it was written for."""

    one_arg_register_shrinker: bool  # register_shrinker(s): 5.x
    named_register_shrinker: bool  # register_shrinker(s, "fmt", ...): 6.0-6.6
    uses_shrinker_alloc: bool  # shrinker_alloc(): 6.7+
    uses_cputime_t: bool  # removed in 4.11
    copy_from_user: bool  # the write fop reads user memory with a proper helper


# Comments go (newlines kept, so lines still match); strings and chars shrink to empty literals,
# so that commas and parentheses inside them do not count.
_C_NOISE = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.S)
_DIRECTIVE = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)$")
_VERSION_TEST = re.compile(r"\b(?:LINUX_VERSION_CODE|KERNEL_VERSION|LINUX_VERSION_MAJOR)\b")
_COPY_FROM_USER = re.compile(
    r"\b(?:copy_from_user|kstrto\w*_from_user|simple_write_to_buffer|strncpy_from_user"
    r"|memdup_user|memdup_user_nul)\b")


def strip_c(text: str) -> str:
    """C text without comments, with string and character literals emptied."""
    def blank(m: re.Match[str]) -> str:
        s = m.group(0)
        if s[0] == "/":
            return "\n" * s.count("\n") if s[1] == "*" else ""
        return '""' if s[0] == '"' else "' '"
    return _C_NOISE.sub(blank, text)


def _drop_conditionals(text: str, versioned: bool) -> str:
    """Blank out #if 0 blocks and, if `versioned`, blocks whose #if/#elif tests the kernel version.

    Code that switches on LINUX_VERSION_CODE already fits several generations: the branch for
    another kernel must not be reported as the code's generation.
    """
    lines = text.split("\n")
    stack: list[tuple[int, bool]] = []
    for i, line in enumerate(lines):
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        kw, cond = m.group(1), m.group(2).strip()
        drop = cond == "0" or (versioned and bool(_VERSION_TEST.search(cond)))
        if kw in ("if", "ifdef", "ifndef"):
            stack.append((i, drop))
        elif kw == "elif" and stack:
            stack[-1] = (stack[-1][0], stack[-1][1] or drop)
        elif kw == "endif" and stack:
            start, dropped = stack.pop()
            if dropped:
                lines[start:i + 1] = [""] * (i + 1 - start)
    return "\n".join(lines)


def _call_args(text: str, pos: int) -> list[str] | None:
    """Top-level arguments of a call whose '(' ends just before `pos`; None if unbalanced."""
    depth, cur = 0, pos
    args: list[str] = []
    for i in range(pos, len(text)):
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                args = [a.strip() for a in [*args, text[cur:i]]]
                return [] if args == [""] else args
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[cur:i])
            cur = i + 1
    return None


def _register_shrinker_arities(code: str) -> set[int]:
    arities = set()
    for m in re.finditer(r"\bregister_shrinker\s*\(", code):
        if re.search(r"#\s*define\s+$", code[code.rfind("\n", 0, m.start()) + 1:m.start()]):
            continue  # a macro named register_shrinker is not a call
        args = _call_args(code, m.end())
        if args is not None:
            arities.add(len(args))
    return arities


def source_hints(sources: Iterable[Path]) -> SourceHints:
    """Read the module's .c/.h files for what targets a given kernel generation."""
    texts = [strip_c(Path(p).read_text(errors="replace")) for p in sources]
    code = "\n".join(_drop_conditionals(t, versioned=True) for t in texts)
    live = "\n".join(_drop_conditionals(t, versioned=False) for t in texts)
    arities = _register_shrinker_arities(code)
    return SourceHints(
        one_arg_register_shrinker=1 in arities,
        named_register_shrinker=any(n >= 2 for n in arities),
        uses_shrinker_alloc=re.search(r"\bshrinker_alloc\s*\(", code) is not None,
        uses_cputime_t=re.search(r"\bcputime_t\b", code) is not None,
        copy_from_user=_COPY_FROM_USER.search(live) is not None,
    )


def _version(profile_name: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", profile_name)
    return (int(m[1]), int(m[2])) if m else None


def generation_note(h: SourceHints, profile_name: str,
                    profiles: Iterable[str] | None = None) -> str | None:
    """A sentence for the student when the code targets another kernel generation than the profile."""
    ver = _version(profile_name)
    if ver is None:
        return None
    known = sorted((v, n) for n in (available_profiles() if profiles is None else profiles)
                   if (v := _version(n)))

    def newest(lo: tuple[int, int], hi: tuple[int, int]) -> str | None:
        fits = [n for v, n in known if lo <= v < hi]
        return fits[-1] if fits else None

    compat = " --compat" if h.uses_cputime_t else ""  # cputime_t needs --compat everywhere

    def fits(*names: str | None) -> str:
        options = [f"the {n} profile (`--profile {n}{compat}`)" for n in names if n]
        return "it fits " + ", or ".join(options) if options else "no kernel profile here fits it"

    sentences: list[str] = []
    if h.one_arg_register_shrinker and ver >= (6, 0):
        if ver < (6, 7):  # --compat's shim covers 6.0-6.6, where register_shrinker() took a name
            where = [fits(newest((0, 0), (6, 0))), f"build it on {profile_name} with `--compat`"]
            why = "removed in 6.0"
        else:
            shim = newest((6, 0), (6, 7))
            where = [fits(newest((0, 0), (6, 0)))]
            if shim:
                where.append(f"the {shim} profile with `--compat` (`--profile {shim} --compat`)")
            why = "removed in 6.0; since 6.7 shrinkers come from shrinker_alloc()"
        if where[0].startswith("no ") and len(where) > 1:
            where.pop(0)
        sentences.append(f"uses the one-argument register_shrinker() of 5.x kernels ({why}); "
                         + ", or ".join(where) + ".")
    if h.named_register_shrinker and not (6, 0) <= ver < (6, 7):
        when = "added in 6.0" if ver < (6, 0) else "removed in 6.7"
        sentences.append(f"uses the register_shrinker(shrinker, name) of 6.0 to 6.6 kernels ({when}); "
                         f"{fits(newest((6, 0), (6, 7)))}.")
    if h.uses_shrinker_alloc and ver < (6, 7):
        sentences.append(f"uses shrinker_alloc() of 6.7+ kernels; {fits(newest((6, 7), (99, 0)))}.")
    if h.uses_cputime_t and ver >= (4, 11):
        sentences.append("uses cputime_t (removed in 4.11: CPU times have been u64 nanoseconds "
                         "since); build it with `--compat`, which maps it to u64.")
    if not sentences:
        return None
    return " ".join(("This code " if i == 0 else "It also ") + s for i, s in enumerate(sentences))


# Moved out of <linux/sched.h> in 4.11: code of that time calls them with no other include.
SPLIT_SCHED = ("task_lock", "task_unlock", "get_task_struct", "put_task_struct", "task_cputime",
               "task_cputime_adjusted", "thread_group_cputime_adjusted", "signal_pending",
               "fatal_signal_pending", "get_task_mm", "mmput", "for_each_process")
_IMPLICIT = re.compile(r"implicit declaration of function '(\w+)'")


def compat_note(messages: Iterable[str], compat: bool) -> str | None:
    """A sentence for a build that failed on what the split of <linux/sched.h> (4.11) or the
    removal of cputime_t moved away: `--compat` includes the split headers."""
    if compat:
        return None
    names = sorted({m.group(1) for msg in messages for m in [_IMPLICIT.search(msg)] if m
                    and m.group(1) in SPLIT_SCHED})
    cputime = any("cputime_t" in msg for msg in messages)
    if not names and not cputime:
        return None
    what = []
    if names:
        what.append(f"{', '.join(names)} (moved out of <linux/sched.h> in 4.11)")
    if cputime:
        what.append("cputime_t (removed in 4.11)")
    return ("This code was written for kernels before 4.11: it uses " + " and ".join(what)
            + ". Grade it with `--compat`, which includes the split <linux/sched/*.h> headers "
            "and maps cputime_t to u64.")
