"""Plain-text report for a terminal (ANSI colours on request) or a report.txt file."""
from __future__ import annotations

import textwrap

from grader.model import CheckResult, GradeResult, Status
from grader.report.audience import DEFAULT_AUDIENCE, for_audience
from grader.report.common import (
    INCOMPLETE_DETAIL,
    INCOMPLETE_HEADLINE,
    STYLES,
    clean,
    error_checks,
    evidence_lines,
    exercise_heading,
    interface_lines,
    one_line,
    outcome,
    points,
    score_text,
    stages_line,
)

# In verbose mode a long "seen" block or log excerpt is cut; report.json keeps everything.
EVIDENCE_LINES = 40
EVIDENCE_INDENT = " " * 8

_DIAG_ANSI = {"error": "1;31", "warning": "33", "note": "36"}


class _Paint:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, sgr: str) -> str:
        return f"\x1b[{sgr}m{text}\x1b[0m" if self.on and sgr else text


def render_terminal(result: GradeResult, *, color: bool = False, verbose: bool = False,
                    audience: str = DEFAULT_AUDIENCE) -> str:
    """The whole grade as text: header, exercises and checks, diagnostics, timings, total."""
    result = for_audience(result, audience)
    paint = _Paint(color)
    out: list[str] = []
    out += _header(result, paint)
    if not result.complete:
        out += _incomplete(result, paint)
    for ex in result.exercises:
        out.append("")
        out.append(paint(f"{exercise_heading(ex)}  {score_text(ex.score, ex.max_score)}", "1"))
        width = max((len(_pts(c)) for c in ex.checks), default=0)
        for c in ex.checks:
            out.append(_check_line(c, width, paint))
            if verbose:
                if c.clock:
                    out.append(EVIDENCE_INDENT + f"(ran in the {c.clock} guest)")
                for ev in c.evidence:
                    out += [EVIDENCE_INDENT + ln for ln in evidence_lines(ev, EVIDENCE_LINES)]
    if verbose and result.interface:
        out += ["", paint("What the module created (seen at insmod):", "1")]
        out += [f"  {ln}" for ln in interface_lines(result.interface)]
    if result.notes:
        out += ["", paint("Notes:", "1")]
        out += [f"  - {clean(n)}" for n in result.notes]
    if result.diagnostics:
        out += ["", paint("Compiler diagnostics:", "1")]
        for d in result.diagnostics:
            sev = paint(clean(d.severity), _DIAG_ANSI.get(d.severity, ""))
            out.append(f"  {clean(d.file)}:{d.line}:{d.column}: {sev}: {clean(d.message)}")
    out += ["", stages_line(result)]
    total = paint(f"Total: {score_text(result.score, result.max_score)}", "1")
    if not result.complete:
        warning = "(INCOMPLETE: not a final grade, see above)"
        total += "  " + paint(warning, STYLES[Status.ERROR].ansi)
    out.append(total)
    return "\n".join(out) + "\n"


def _header(result: GradeResult, paint: _Paint) -> list[str]:
    s = result.stamp
    algo, _, hexdigest = s.rubric_digest.rpartition(":")
    digest = f"{algo}:{hexdigest[:12]}" if algo else hexdigest[:12]
    kernel = f"{s.kernel_release} (profile {s.profile}, package {s.kernel_package})"
    machine = f"QEMU {s.qemu_version}, accel {s.accel}, backend {s.backend}"
    grader = f"{s.grader_version}, rubric {s.rubric} ({digest})"
    return [
        paint(f"Grade of {clean(result.submission)}", "1"),
        f"  kernel : {clean(kernel)}",
        f"  machine: {clean(machine)}",
        f"  grader : {clean(grader)}",
    ]


def _incomplete(result: GradeResult, paint: _Paint) -> list[str]:
    style = STYLES[Status.ERROR].ansi
    bar = "!" * 78
    out = ["", paint(bar, style), paint(f"!! {INCOMPLETE_HEADLINE}", style)]
    out += [f"!! {ln}" for ln in textwrap.wrap(INCOMPLETE_DETAIL, len(bar) - 3)]
    for st in result.stages:
        if st.status is Status.ERROR:
            detail = f": {one_line(st.detail)}" if st.detail.strip() else ""
            out.append(f"!!   stage {clean(st.name)}{detail}")
    for c in error_checks(result):
        reason = one_line(c.reason) or "no reason given"
        out.append(f"!!   {clean(c.id)} ({clean(c.title)}): {reason}")
    out.append(paint(bar, style))
    return out


def _pts(c: CheckResult) -> str:
    return f"{points(c.points)}/{points(c.max_points)}"


def _check_line(c: CheckResult, width: int, paint: _Paint) -> str:
    style = STYLES[c.status]
    mark = paint(f"{style.mark:<5}", style.ansi)
    hidden = (" [hidden]" if not c.visible else "") + (" [strict]" if c.strict else "")
    reason = outcome(c)
    tail = f": {reason}" if reason else ""
    return f"  {mark} {_pts(c):>{width}}  {clean(c.title)}{hidden}{tail}"
