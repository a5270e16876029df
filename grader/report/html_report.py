"""Self-contained HTML page of a grade (inline CSS, no script), from an autoescaping Jinja2."""
from __future__ import annotations

import dataclasses
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from grader.model import CheckResult, GradeResult, Status
from grader.report.audience import DEFAULT_AUDIENCE, for_audience
from grader.report.common import (
    INCOMPLETE_DETAIL,
    INCOMPLETE_HEADLINE,
    STYLES,
    clean,
    error_checks,
    exercise_heading,
    interface_lines,
    outcome,
    points,
    score_text,
)

TEMPLATES = Path(__file__).parent / "templates"


@cache
def _environment() -> jinja2.Environment:
    # autoescape=True for every template, whatever its name: all the text shown (compiler
    # output, kernel logs, check reasons) can come from the student.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(result: GradeResult, *, audience: str = DEFAULT_AUDIENCE,
                class_link: str | None = None) -> str:
    """One HTML page: score tables, stamp, checks with evidence, diagnostics, notes, timings.

    audience "student" leaves out the checks the rubric hides; class_link (a relative URL)
    adds a link back to the class page of a batch.
    """
    page = _page(for_audience(result, audience))
    page["class_link"] = class_link or ""
    page["audience"] = audience
    return _environment().get_template("report.html.j2").render(page=page)


def slug(base: str) -> str:
    """The attribute-safe form of a name used for anchors ("check-ex1.apis" -> "check-ex1-apis")."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-") or "x"


def check_anchor(check_id: str) -> str:
    """The anchor of a check's row in its report (check ids are unique in a rubric)."""
    return slug(f"check-{check_id}")


class _Anchors:
    """Unique, attribute-safe ids made from check ids (which the rubric names)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def make(self, base: str) -> str:
        base = slug(base)
        anchor, n = base, 1
        while anchor in self.used:
            n += 1
            anchor = f"{base}-{n}"
        self.used.add(anchor)
        return anchor


def _page(result: GradeResult) -> dict[str, Any]:
    anchors = _Anchors()
    build_lines = clean(result.build_log).splitlines()
    exercises = [
        {
            "anchor": anchors.make(f"ex{ex.number}"),
            "heading": exercise_heading(ex),
            "score": score_text(ex.score, ex.max_score),
            "counts": _counts(ex.checks),
            "checks": [_check(c, anchors) for c in ex.checks],
        }
        for ex in result.exercises
    ]
    return {
        "submission": clean(result.submission),
        "stamp": [(f.name, clean(str(getattr(result.stamp, f.name))))
                  for f in dataclasses.fields(result.stamp)],
        "complete": result.complete,
        "incomplete_headline": INCOMPLETE_HEADLINE,
        "incomplete_detail": INCOMPLETE_DETAIL,
        "error_stages": [
            {"name": clean(s.name), "detail": clean(s.detail)}
            for s in result.stages if s.status is Status.ERROR
        ],
        "error_checks": [
            {"id": clean(c.id), "title": clean(c.title), "reason": outcome(c)}
            for c in error_checks(result)
        ],
        "exercises": exercises,
        "total": score_text(result.score, result.max_score),
        "notes": [clean(n) for n in result.notes],
        "diagnostics": [
            {
                "where": f"{clean(d.file)}:{d.line}:{d.column}",
                "severity": clean(d.severity),
                "message": clean(d.message),
                "build_line": _find_line(build_lines, f"{d.file}:{d.line}:"),
            }
            for d in result.diagnostics
        ],
        "stages": [
            {
                "name": clean(s.name),
                "status": s.status.value,
                "css": STYLES[s.status].css,
                "duration": f"{s.duration_s:.2f}",
                "detail": clean(s.detail),
            }
            for s in result.stages
        ],
        "stages_total": f"{sum(s.duration_s for s in result.stages):.2f}",
        "build_command": clean(shlex.join(result.build_command)) if result.build_command else "",
        "build_log": build_lines,
        "artifacts": sorted((clean(k), clean(v)) for k, v in result.artifacts.items()),
        "interface": interface_lines(result.interface) if result.interface else [],
    }


def _check(c: CheckResult, anchors: _Anchors) -> dict[str, Any]:
    style = STYLES[c.status]
    anchor = anchors.make(f"check-{c.id}")
    evidence, n = [], 0
    for ev in c.evidence:
        log = []
        for line in ev.log:
            n += 1
            line_anchor = anchors.make(f"{anchor}-L{n}")
            log.append({"n": n, "anchor": line_anchor, "text": clean(line).rstrip("\n")})
        evidence.append({
            "what": clean(ev.what),
            "expected": clean(ev.expected),
            "seen": clean(ev.seen),
            "log": log,
        })
    return {
        "anchor": anchor,
        "id": clean(c.id),
        "title": clean(c.title),
        "mark": style.mark,
        "css": style.css,
        "status": c.status.value,
        "points": f"{points(c.points)}/{points(c.max_points)}",
        "reason": outcome(c),
        "visible": c.visible,
        "strict": c.strict,
        "clock": clean(c.clock),
        "duration": f"{c.duration_s:.2f}",
        "evidence": evidence,
    }


def _counts(checks: list[CheckResult]) -> list[tuple[str, str, int]]:
    """(mark, css class, how many) for each status present, in the enum's order."""
    return [
        (STYLES[st].mark, STYLES[st].css, n)
        for st in Status
        if (n := sum(1 for c in checks if c.status is st))
    ]


def _find_line(lines: list[str], needle: str) -> int | None:
    """1-based number of the first build-log line holding `needle` (file:line:), if any."""
    needle = clean(needle)
    return next((i for i, ln in enumerate(lines, 1) if needle in ln), None)
