"""The class page of a batch: one self-contained HTML file (inline CSS and SVG, no network).

Every student by exercise with a link to each report (sortable by any column with a few lines
of inline script; without script the table reads in student order), the distribution of the
scores of each exercise and of the total as SVG bar charts, the checks most often failed with
one example each, and apart the submissions that crashed, hung or could not be graded.
Rows come already filtered for the page's audience. Pure: rows in, text out.
"""
from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from grader.batch.rows import ClassRow, class_max, exercise_columns
from grader.model import Status
from grader.report.common import STYLES, clean, outcome, points
from grader.report.html_report import _environment, check_anchor

TOP_FAILED = 12
CHART_W, CHART_H, CHART_PAD = 320, 130, 22
# Statuses that count as "failed" in the most-failed table (a skip is a consequence, not a cause).
FAILING = (Status.FAILED, Status.CRASHED, Status.TIMED_OUT)

# Sorting by a column: each cell carries its sort value in data-v; the script only reorders rows.
SORT_SCRIPT = """\
document.querySelectorAll("table.sortable").forEach(function (t) {
  var heads = t.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, i) {
    var b = document.createElement("button");
    b.type = "button"; b.textContent = th.textContent; b.className = "sort";
    th.textContent = ""; th.appendChild(b);
    b.addEventListener("click", function () {
      var up = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var rows = Array.prototype.slice.call(t.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return up ? c : -c;
      });
      rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
    });
  });
});
"""


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script and no other."""
    digest = hashlib.sha256(script.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


@dataclass(frozen=True)
class ClassInfo:
    """What the page says about how the class was graded (no timestamps: same class, same page)."""

    title: str = "TP 07"
    grader_version: str = ""
    rubric: str = ""
    rubric_digest: str = ""
    kernels: tuple[tuple[str, str], ...] = ()  # (profile, release)
    audience: str = "staff"
    shards: str = ""  # "3 shards merged" or ""


def render_class_html(rows: list[ClassRow], info: ClassInfo) -> str:
    return _environment().get_template("class.html.j2").render(
        page=class_page(rows, info), script=SORT_SCRIPT, script_csp=script_hash(SORT_SCRIPT))


def class_page(rows: list[ClassRow], info: ClassInfo) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: r.student)
    cols = exercise_columns(rows)
    graded = [r for r in rows if r.result is not None]
    total_max = class_max(rows)
    return {
        "info": {"title": clean(info.title), "grader_version": clean(info.grader_version),
                 "rubric": clean(info.rubric), "rubric_digest": clean(info.rubric_digest[:16]),
                 "kernels": [(clean(p), clean(k)) for p, k in info.kernels],
                 "audience": info.audience, "shards": clean(info.shards)},
        "counts": {"students": len(rows), "graded": sum(1 for r in rows if not r.ungraded),
                   "crashed": sum(1 for r in rows if r.crashed),
                   "hung": sum(1 for r in rows if r.hung),
                   "ungraded": sum(1 for r in rows if r.ungraded)},
        "columns": [{"n": n, "label": "Global" if n == 0 else f"Ex {n}", "title": clean(t),
                     "max": points(m)} for n, t, m in cols],
        "total_max": points(total_max),
        "rows": [_row(r, cols) for r in rows],
        "charts": [_chart(f"Total (out of {points(total_max)})", "total",
                          [r.result.score for r in graded if r.result], total_max)]
                  + [_chart(f"{'Global checks' if n == 0 else f'Exercise {n}'}: {clean(t)}",
                            f"ex{n}", [r.exercise_scores()[n][0] for r in graded
                                       if n in r.exercise_scores()], m)
                     for n, t, m in cols],
        "failed": _most_failed(graded),
        "crashed": [_trouble(r, Status.CRASHED) for r in rows if r.crashed],
        "hung": [_trouble(r, Status.TIMED_OUT) for r in rows if r.hung],
        "ungraded": [{"student": clean(r.student), "status": r.status,
                      "reason": clean(r.reason) or "incomplete grade", "report": r.report}
                     for r in rows if r.ungraded],
    }


def _row(r: ClassRow, cols: list[tuple[int, str, float]]) -> dict[str, Any]:
    scores = r.exercise_scores()
    cells = []
    for n, _t, _m in cols:
        if n in scores:
            s, m = scores[n]
            cells.append({"n": n, "text": points(s), "v": f"{s:g}", "full": s >= m})
        else:
            cells.append({"n": n, "text": "", "v": "-1", "full": False})
    total = r.total
    flags = [w for w, on in (("crashed", r.crashed), ("hung", r.hung)) if on]
    return {
        "student": clean(r.student), "name": clean(r.name), "report": r.report,
        "status": r.status, "complete": r.result is not None and r.result.complete,
        "cells": cells, "total": points(total) if total is not None else "",
        "total_v": f"{total:g}" if total is not None else "-1", "flags": flags,
    }


def _bins(max_score: float) -> list[tuple[float, float]]:
    """Score ranges of a histogram: one bar per point up to 12 points, else about ten ranges
    of a whole number of points ([lo, hi), the last one holding the maximum)."""
    if max_score <= 0:
        return [(0.0, 0.0)]
    if max_score <= 12 and float(max_score).is_integer():
        return [(float(i), float(i)) for i in range(int(max_score) + 1)]
    step = math.ceil(max_score / 10)
    n = math.floor(max_score / step) + 1
    return [(float(i * step), float((i + 1) * step)) for i in range(n)]


def _chart(title: str, ident: str, values: list[float], max_score: float) -> dict[str, Any]:
    bins = _bins(max_score)
    counts = [0] * len(bins)
    for v in values:
        for i, (lo, hi) in enumerate(bins):
            last = i == len(bins) - 1
            if (lo == hi and math.isclose(v, lo)) or (lo <= v < hi) or (last and v >= lo):
                counts[i] += 1
                break
    top = max(counts) or 1
    inner_w = CHART_W - 2 * CHART_PAD
    bar_w = inner_w / len(bins)
    base = CHART_H - CHART_PAD
    bars = []
    for i, ((lo, hi), n) in enumerate(zip(bins, counts, strict=True)):
        h = (base - CHART_PAD) * n / top
        last = i == len(bins) - 1
        label = (points(lo) if lo == hi else f"from {points(lo)} to {points(max_score)}" if last
                 else f"from {points(lo)}, under {points(hi)}")
        bars.append({"x": round(CHART_PAD + i * bar_w + 1, 1), "w": round(bar_w - 2, 1),
                     "y": round(base - h, 1), "h": round(h, 1), "n": n, "label": label,
                     "tick": points(lo),
                     "lx": round(CHART_PAD + (i + 0.5) * bar_w, 1)})
    return {"id": f"chart-{ident}", "title": title, "bars": bars, "w": CHART_W, "h": CHART_H,
            "base": base, "count": len(values),
            "mean": points(sum(values) / len(values)) if values else "-",
            "label_every": max(1, math.ceil(len(bins) / 10))}


def _most_failed(rows: list[ClassRow]) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    statuses: dict[str, Counter[str]] = {}
    example: dict[str, tuple[ClassRow, Any]] = {}
    titles: dict[str, str] = {}
    for r in rows:
        assert r.result is not None
        for e in r.result.exercises:
            for c in e.checks:
                if c.status not in FAILING:
                    continue
                counts[c.id] += 1
                statuses.setdefault(c.id, Counter())[STYLES[c.status].mark] += 1
                titles.setdefault(c.id, c.title)
                example.setdefault(c.id, (r, c))
    out = []
    for cid, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_FAILED]:
        r, c = example[cid]
        out.append({"id": clean(cid), "title": clean(titles[cid]), "n": n,
                    "of": len(rows), "statuses": sorted(statuses[cid].items()),
                    "student": clean(r.student), "reason": outcome(c),
                    "link": f"{r.report}#{check_anchor(cid)}" if r.report else ""})
    return out


def _trouble(r: ClassRow, st: Status) -> dict[str, Any]:
    assert r.result is not None
    checks = [c for e in r.result.exercises for c in e.checks if c.status is st]
    return {"student": clean(r.student), "report": r.report,
            "checks": [{"id": clean(c.id), "reason": outcome(c),
                        "link": f"{r.report}#{check_anchor(c.id)}" if r.report else ""}
                       for c in checks]}
