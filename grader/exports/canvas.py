"""Canvas's gradebook import CSV (Grades > Import).

Columns as Canvas exports them: Student, ID, SIS User ID, SIS Login ID, Section, then the
assignment as "Name (assignment id)" (a name alone makes Canvas create a new assignment), and a
"Points Possible" row. Canvas matches a row by ID, SIS User ID or SIS Login ID. A submission
with no student is refused (Canvas would drop it silently after its preview); students with no
submission get no row.
"""
from __future__ import annotations

import csv
import io

from grader.batch.roster import RosterCheck
from grader.batch.rows import ClassRow, class_max
from grader.report.common import points

HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def render_canvas(rows: list[ClassRow], check: RosterCheck, assignment: str = "TP07") -> str:
    from grader.exports import RosterRefused

    if check.unknown or check.ambiguous:
        raise RosterRefused("submissions that would match no Canvas student; not written:\n"
                            + check.describe())
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*HEADER, assignment])
    w.writerow(["Points Possible", "", "", "", "", points(class_max(rows))])
    for r in sorted(rows, key=lambda r: check.matched[r.student].id):
        s = check.matched[r.student]
        grade = points(r.total) if r.final and r.total is not None else ""
        w.writerow([s.name or s.id, s.canvas_id, s.sis_user_id or s.id,
                    s.sis_login_id or s.email, s.section, grade])
    return out.getvalue()
