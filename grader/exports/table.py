"""The class as one CSV: a row per student (id, name, per-exercise scores, total, complete)."""
from __future__ import annotations

import csv
import io

from grader.batch.rows import ClassRow, class_max, exercise_columns
from grader.report.common import points

# Spreadsheets run a cell that starts with one of these as a formula; a student id comes from
# a file name the student chose, so such text cells get a leading apostrophe (OWASP's advice).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def render_csv(rows: list[ClassRow]) -> str:
    """RFC 4180 CSV (quoted by the csv module), rows in student-id order, no timestamp: the same
    class gives the same bytes, whether graded at once or in shards."""
    cols = exercise_columns(rows)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["student", "name", *[f"ex{n}" for n, _t, _m in cols], "total", "max",
                "complete", "status"])
    total_max = points(class_max(rows))
    for r in sorted(rows, key=lambda r: r.student):
        scores = r.exercise_scores()
        cells = [points(scores[n][0]) if n in scores else "" for n, _t, _m in cols]
        total = points(r.total) if r.total is not None else ""
        complete = "yes" if r.final else "no"
        w.writerow([safe_cell(r.student), safe_cell(r.name), *cells, total, total_max,
                    complete, r.status])
    return out.getvalue()
