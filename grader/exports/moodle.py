"""Moodle's grade import CSV (Grades > Import > CSV file).

Moodle maps one column to a user field (here "Email address" or "ID number") and each other
column to a grade item, and stops the whole import at the first row whose user it cannot find:
so the file is refused, with the list, while any submission has no student in the roster.
Students with no submission get no row (their grade is left as it is).
"""
from __future__ import annotations

import csv
import io

from grader.batch.roster import RosterCheck
from grader.batch.rows import ClassRow
from grader.report.common import points


def render_moodle(rows: list[ClassRow], check: RosterCheck, item: str = "TP07") -> str:
    from grader.exports import RosterRefused

    if check.unknown or check.ambiguous:
        raise RosterRefused("Moodle stops at the first unknown student; not written:\n"
                            + check.describe())
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["ID number", "Email address", "Full name", item])
    for r in sorted(rows, key=lambda r: check.matched[r.student].id):
        s = check.matched[r.student]
        grade = points(r.total) if r.final and r.total is not None else ""
        w.writerow([s.id, s.email, s.name, grade])
    return out.getvalue()
