"""Gradescope's autograder results.json, from one grade.

Format: https://gradescope-autograders.readthedocs.io/en/latest/specs/ ("Output format"). The
top level has score, execution_time (whole seconds), output, visibility, stdout_visibility,
extra_data and tests; each test has score, max_score, status ("passed" or "failed" only),
name, number, output, tags, visibility and extra_data (plus the *_format fields). The spec has
no per-test execution_time: each check's duration goes in its extra_data.

A check hidden from students (rubric `visible = false`) is written with "visibility": "hidden"
for the staff audience (Gradescope then hides it from students and counts its points), and left
out entirely for the student audience.
"""
from __future__ import annotations

import json
from typing import Any

from grader.model import CheckResult, GradeResult, Status
from grader.report.audience import DEFAULT_AUDIENCE, for_audience
from grader.report.common import (
    INCOMPLETE_DETAIL,
    INCOMPLETE_HEADLINE,
    clean,
    evidence_lines,
    exercise_heading,
    outcome,
    score_text,
)

EVIDENCE_LINES = 30  # per piece of evidence in a test's output; report.json keeps everything
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


def gradescope_results(result: GradeResult, audience: str = DEFAULT_AUDIENCE,
                       visibility: str = "visible") -> dict[str, Any]:
    """The results.json document (a dict) for one grade."""
    view = for_audience(result, audience)
    tests = []
    for ex in view.exercises:
        for i, c in enumerate(ex.checks, 1):
            tests.append(_test(ex.number, i, exercise_heading(ex), c))
    summary = [f"Total: {score_text(view.score, view.max_score)}"]
    if not view.complete:
        summary = [INCOMPLETE_HEADLINE, INCOMPLETE_DETAIL, *summary]
    summary += [f"{exercise_heading(e)}: {score_text(e.score, e.max_score)}"
                for e in view.exercises]
    summary += [f"Note: {clean(n)}" for n in view.notes]
    s = view.stamp
    return {
        "score": round(view.score, 4),
        "execution_time": int(round(sum(st.duration_s for st in view.stages))),
        "output": "\n".join(summary),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "extra_data": {"complete": view.complete, "max_score": view.max_score,
                       "grader_version": s.grader_version, "profile": s.profile,
                       "kernel_release": s.kernel_release, "rubric_digest": s.rubric_digest,
                       "submission_digest": s.submission_digest},
        "tests": tests,
    }


def _test(exercise: int, index: int, heading: str, c: CheckResult) -> dict[str, Any]:
    lines = [outcome(c) or c.status.value]
    for ev in c.evidence:
        lines += evidence_lines(ev, EVIDENCE_LINES)
    return {
        "score": round(c.points, 4),
        "max_score": 0 if c.status is Status.NOT_GRADED else round(c.max_points, 4),
        "status": "passed" if c.status in (Status.PASSED, Status.NOT_GRADED) else "failed",
        "name": f"{clean(c.title)} [{clean(c.id)}]",
        "name_format": "text",
        "number": f"{exercise}.{index}",
        "output": "\n".join(lines),
        "output_format": "text",
        "tags": [f"exercise {exercise}", c.status.value],
        "visibility": "visible" if c.visible else "hidden",
        "extra_data": {"check": c.id, "status": c.status.value, "exercise": heading,
                       "execution_time": round(c.duration_s, 3)},
    }


def render_gradescope(result: GradeResult, audience: str = DEFAULT_AUDIENCE) -> str:
    return json.dumps(gradescope_results(result, audience), indent=2, ensure_ascii=True) + "\n"
