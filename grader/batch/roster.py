"""A course's roster, and which submission belongs to which student.

Roster CSV (a header row; only `id` is required):
    id, email, name, canvas_id, sis_user_id, sis_login_id, section
A submission belongs to the student whose `id` or `email` (any case) equals its student id.
Before a gradebook file is written, the check names every submission with no student and every
student with no submission.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import ConfigError

COLUMNS = ("id", "email", "name", "canvas_id", "sis_user_id", "sis_login_id", "section")


@dataclass(frozen=True)
class Student:
    id: str
    email: str = ""
    name: str = ""
    canvas_id: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""


@dataclass
class RosterCheck:
    matched: dict[str, Student] = field(default_factory=dict)  # submission's student id -> student
    unknown: list[str] = field(default_factory=list)  # submissions with no student
    absent: list[Student] = field(default_factory=list)  # students with no submission
    ambiguous: list[str] = field(default_factory=list)  # ids matching several students

    @property
    def clean(self) -> bool:
        return not (self.unknown or self.absent or self.ambiguous)

    def describe(self) -> str:
        out = []
        if self.unknown:
            out.append(f"{len(self.unknown)} submission(s) with no student in the roster: "
                       + ", ".join(self.unknown))
        if self.ambiguous:
            out.append(f"{len(self.ambiguous)} submission(s) matching several students: "
                       + ", ".join(self.ambiguous))
        if self.absent:
            out.append(f"{len(self.absent)} student(s) with no submission: "
                       + ", ".join(s.id + (f" <{s.email}>" if s.email else "")
                                   for s in self.absent))
        return "\n".join(out) if out else "roster check: every submission has its student"


def load_roster(path: Path) -> list[Student]:
    with Path(path).open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        if "id" not in cols:
            raise ConfigError(f"{path}: a roster needs a header with an `id` column "
                              f"(and optionally {', '.join(COLUMNS[1:])})")
        students = []
        for row in reader:
            values = {k: (row.get(cols[k]) or "").strip() for k in COLUMNS if k in cols}
            if values.get("id"):
                students.append(Student(**values))
    ids = [s.id for s in students]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ConfigError(f"{path}: student id(s) listed twice: {', '.join(dups)}")
    return students


def check_roster(submissions: list[str], students: list[Student]) -> RosterCheck:
    """Match each submission's student id to a roster student by id or e-mail."""
    by_key: dict[str, list[Student]] = {}
    for s in students:
        by_key.setdefault(s.id, []).append(s)
        if s.email and s.email.lower() != s.id:
            by_key.setdefault(s.email.lower(), []).append(s)
    out = RosterCheck()
    for sub in sorted(submissions):
        hits = by_key.get(sub) or by_key.get(sub.lower()) or []
        hits = list({h.id: h for h in hits}.values())
        if len(hits) == 1:
            out.matched[sub] = hits[0]
        elif hits:
            out.ambiguous.append(sub)
        else:
            out.unknown.append(sub)
    taken = {s.id for s in out.matched.values()}
    out.absent = [s for s in students if s.id not in taken]
    return out
