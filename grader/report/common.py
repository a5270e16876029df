"""What every reporter shares: the wording of each status, number formats, safe one-line text."""
from __future__ import annotations

import re
from dataclasses import dataclass

from grader.model import CheckResult, Evidence, ExerciseResult, GradeResult, Status


@dataclass(frozen=True)
class StatusStyle:
    mark: str  # short tag in the terminal and the badges
    wording: str  # always said before the reason ("the module crashed the kernel: ...")
    default: str  # said when the check gave no reason
    ansi: str  # SGR parameters for the terminal
    css: str  # class of the HTML badge


# One table, so that a crash or a hang is never worded like a plain failure, and a grader
# error never like anything the student did.
STYLES: dict[Status, StatusStyle] = {
    Status.PASSED: StatusStyle("PASS", "", "", "32", "pass"),
    Status.FAILED: StatusStyle("FAIL", "", "failed", "31", "fail"),
    Status.CRASHED: StatusStyle("CRASH", "the module crashed the kernel", "", "1;35", "crash"),
    Status.TIMED_OUT: StatusStyle("HANG", "the module hung", "", "1;33", "hang"),
    Status.SKIPPED: StatusStyle("SKIP", "", "not run: a prerequisite failed", "2", "skip"),
    Status.NOT_GRADED: StatusStyle("N/G", "not graded on this kernel", "", "2;36", "skip"),
    Status.ERROR: StatusStyle(
        "ERROR", "grader error, not the student's fault", "", "1;37;41", "error"
    ),
}

INCOMPLETE_HEADLINE = "INCOMPLETE GRADE: the grader or its environment failed"
INCOMPLETE_DETAIL = (
    "This is not the student's fault. The checks below marked ERROR were not graded; "
    "the total is not final. Fix the environment and grade again."
)

# C0/C1 controls (but tab and newline), lone surrogates and XML non-characters. Student
# printk output can hold terminal escapes (ESC, and CSI as U+009B) and raw bytes decoded
# with surrogateescape; neither may reach a terminal, an XML file or a JSON-less page as is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:  # a byte kept by errors="surrogateescape"
        return f"\\x{c - 0xDC00:02x}"
    if c > 0xFF:
        return "\ufffd"
    return f"\\x{c:02x}"


def clean(text: str) -> str:
    """Make untrusted text printable: controls and undecodable bytes become visible escapes."""
    return _UNSAFE.sub(_escape_char, text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """The first non-blank line of a text, cleaned, with "..." if more lines were dropped."""
    lines = [ln.strip() for ln in clean(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[0] + (" ..." if len(lines) > 1 else "")


def points(x: float) -> str:
    """2.0 -> "2", 1.5 -> "1.5", 0.1 + 0.2 -> "0.3"."""
    return f"{round(x, 2):g}"


def score_text(score: float, max_score: float) -> str:
    return f"{points(score)}/{points(max_score)}"


def outcome(check: CheckResult) -> str:
    """The one-line reason, led by the status wording for crashes, hangs and grader errors."""
    style = STYLES[check.status]
    reason = one_line(check.reason)
    if style.wording and not reason.lower().startswith(style.wording.lower()):
        return f"{style.wording}: {reason}" if reason else style.wording
    return reason or style.default


def exercise_heading(ex: ExerciseResult) -> str:
    label = "Global checks" if ex.number == 0 else f"Exercise {ex.number}"
    return f"{label} - {clean(ex.title)}" if ex.title else label


def error_checks(result: GradeResult) -> list[CheckResult]:
    return [c for e in result.exercises for c in e.checks if c.status is Status.ERROR]


def evidence_lines(ev: Evidence, limit: int | None = None) -> list[str]:
    """Plain-text lines of one piece of evidence, indented under its command or inspection."""

    def block(label: str, text: str) -> list[str]:
        body = clean(text).splitlines() or [""]
        shown, more = _cut(body, limit)
        pad = " " * (len(label) + 4)
        out = [f"  {label}: {shown[0]}"] + [pad + ln for ln in shown[1:]]
        if more:
            out.append(f"{pad}... ({more} more lines)")
        return out

    out = [f"* {one_line(ev.what) or '(no command)'}"]
    if ev.expected:
        out += block("expected", ev.expected)
    if ev.seen:
        out += block("seen", ev.seen)
    if ev.log:
        shown, more = _cut([clean(ln).rstrip("\n") for ln in ev.log], limit)
        out.append("  kernel log:")
        out += [f"    | {ln}" for ln in shown]
        if more:
            out.append(f"    ... ({more} more lines)")
    return out


def _cut(lines: list[str], limit: int | None) -> tuple[list[str], int]:
    if limit is None or len(lines) <= limit:
        return lines, 0
    return lines[:limit], len(lines) - limit


def stages_line(result: GradeResult) -> str:
    """All stage timings on one line; a stage that did not pass says its status."""
    parts = []
    for s in result.stages:
        flag = "" if s.status is Status.PASSED else f" ({s.status.value})"
        parts.append(f"{clean(s.name)} {s.duration_s:.2f}s{flag}")
    total = sum(s.duration_s for s in result.stages)
    return f"Stages: {', '.join(parts)} (total {total:.2f}s)" if parts else "Stages: none recorded"


def interface_lines(interface: dict) -> list[str]:  # type: ignore[type-arg]
    """The module's observed interface (files, caches, threads, parameters, history files),
    one cleaned line each."""
    out = []
    for f in interface.get("files", []):
        out.append(f"{f.get('kind', '?'):4s} {f.get('mode', ''):>4s} {f.get('path', '')}")
    for key, label in (("slab_caches", "slab cache"), ("kthreads", "kernel thread")):
        out += [f"{label}: {x}" for x in interface.get(key, [])]
    for name, value in interface.get("parameters", {}).items():
        out.append(f"parameter: {name} = {value}")
    for h in interface.get("history_files", []):
        out.append(f"history in {h.get('path')} ({h.get('area')}"
                   + (", writable" if h.get("writable") else "") + f"): {h.get('example', '')}")
    if interface.get("sampling_period_parameter"):
        out.append(f"sampling period set through: {interface['sampling_period_parameter']}")
    return [clean(x) for x in out]
