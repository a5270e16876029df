"""Who reads a report: staff see every check, students only the checks the rubric shows them.

A check whose rubric entry says `visible = false` is graded like any other and counts in the
staff's grade; a student-facing output (`--audience student`) leaves it out entirely: no id, no
title, no reason, no evidence, no kernel-log lines, and no points in the totals it shows (a total
that counted them would let a student work out what the hidden checks are). A note says how many
checks the view leaves out, never which. Every renderer and export calls `for_audience` first.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from grader.model import CheckResult, ExerciseResult, GradeResult

AUDIENCES = ("staff", "student")
DEFAULT_AUDIENCE = "staff"


def check_audience(audience: str) -> str:
    """The audience name, or ValueError naming the valid ones."""
    if audience not in AUDIENCES:
        raise ValueError(f"unknown audience {audience!r}; valid: {', '.join(AUDIENCES)}")
    return audience


def hidden_checks(result: GradeResult) -> list[CheckResult]:
    return [c for e in result.exercises for c in e.checks if not c.visible]


def for_audience(result: GradeResult, audience: str = DEFAULT_AUDIENCE) -> GradeResult:
    """The result as `audience` may see it: unchanged for staff; for students a copy without
    the hidden checks (and without exercises left with no check). Pure: `result` is not changed.
    """
    if check_audience(audience) == "staff":
        return result
    hidden = hidden_checks(result)
    if not hidden:
        return result
    exercises = []
    for ex in result.exercises:
        shown = [c for c in ex.checks if c.visible]
        if shown:
            exercises.append(ExerciseResult(number=ex.number, title=ex.title, checks=shown))
    n = len(hidden)
    note = (f"{n} check{'s are' if n > 1 else ' is'} graded by the staff and not shown here; "
            "the scores on this page count only the checks shown")
    return dataclasses.replace(result, exercises=exercises, notes=[*result.notes, note])


def visible_ids(results: Iterable[GradeResult]) -> set[str]:
    """Ids of the checks visible in every one of `results` (for class-level outputs)."""
    out: set[str] | None = None
    for r in results:
        ids = {c.id for e in r.exercises for c in e.checks if c.visible}
        out = ids if out is None else out & ids
    return out or set()
