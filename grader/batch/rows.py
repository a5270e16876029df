"""One row per student of a class: what every class output (page, CSV, gradebooks) is made of."""
from __future__ import annotations

from dataclasses import dataclass

from grader.model import GradeResult, Status

# A row's status: the store's record status, or MISSING when nothing was graded yet.
MISSING = "missing"
REJECTED = "rejected"  # the store's REJECTED: `grader run` said the input is not a submission


@dataclass
class ClassRow:
    student: str
    name: str
    key: str
    status: str  # graded, incomplete, rejected, failed, missing
    result: GradeResult | None  # already filtered for the output's audience
    reason: str = ""  # why there is no (final) grade
    report: str = ""  # link to the per-submission page, relative to the batch folder
    profile: str = ""

    @property
    def final(self) -> bool:
        """A grade that can go in a gradebook: complete, or 0 for an input that is no
        submission at all (the student's fault)."""
        return (self.result is not None and self.result.complete) or self.status == REJECTED

    @property
    def total(self) -> float | None:
        if self.result is not None:
            return self.result.score
        return 0.0 if self.status == REJECTED else None

    @property
    def crashed(self) -> bool:
        return self._any(Status.CRASHED)

    @property
    def hung(self) -> bool:
        return self._any(Status.TIMED_OUT)

    @property
    def ungraded(self) -> bool:
        """No final grade: the grader failed, the grade is incomplete, or the input was refused."""
        return self.result is None or not self.result.complete

    def _any(self, st: Status) -> bool:
        return self.result is not None and any(
            c.status is st for e in self.result.exercises for c in e.checks)

    def exercise_scores(self) -> dict[int, tuple[float, float]]:
        if self.result is None:
            return {}
        return {e.number: (e.score, e.max_score) for e in self.result.exercises}


def exercise_columns(rows: list[ClassRow]) -> list[tuple[int, str, float]]:
    """(number, title, max points) of every exercise seen in the class, in number order."""
    seen: dict[int, tuple[str, float]] = {}
    for r in rows:
        if r.result is None:
            continue
        for e in r.result.exercises:
            title, mx = seen.get(e.number, (e.title, 0.0))
            seen[e.number] = (title, max(mx, e.max_score))
    return [(n, t, m) for n, (t, m) in sorted(seen.items())]


def class_max(rows: list[ClassRow]) -> float:
    return sum(m for _n, _t, m in exercise_columns(rows))
