"""The test suite's one grading of the corpus, done by `grader batch`, killed and resumed.

`grade_corpus(entries, outdir, jobs)` grades every (name, submission, profile, compat) with one
`grader batch` over a list file, SIGKILLs the batch's process group once about a third of the
results exist, starts it again, and returns {name: GradeResult} with `.facts`: what a test
asserts about the batch's mechanics (nothing regraded, nothing lost, nothing half-written, no
grader left running after the kill, class page and CSV equal to every report.json).
Meant to run once per session (tests/conftest.py), every grading test reading its results.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lxml.html

from grader.model import GradeResult
from grader.report.common import points

Entry = tuple[str, Path, str | None, bool | None]  # name, submission, profile, compat
POLL_S = 0.5


class CorpusResults(dict[str, GradeResult]):
    """The grades by name, plus the facts recorded about the batch that made them."""

    facts: dict[str, Any]
    batch_dir: Path


def write_list(entries: list[Entry], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "student", "profile", "compat"])
        for name, sub, profile, compat in entries:
            w.writerow([str(sub), name, profile or "",
                        "" if compat is None else str(bool(compat)).lower()])
    return path


def _batch_cmd(list_file: Path, out: Path, jobs: int, extra: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "grader.cli", "batch", str(list_file), "--out", str(out),
            "-j", str(jobs), *extra]


def _finished(out: Path) -> dict[str, tuple[int, int]]:
    """key -> (inode, mtime_ns) of every result moved into results/ so far."""
    got = {}
    results = out / "results"
    if results.is_dir():
        for d in results.iterdir():
            try:
                st = (d / "record.json").stat()
            except OSError:
                continue
            got[d.name] = (st.st_ino, st.st_mtime_ns)
    return got


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, OSError):
        return False
    return stat.rsplit(") ", 1)[1][0] != "Z"


def _events(out: Path) -> list[dict[str, Any]]:
    out_ = []
    for ln in (out / "batch.log").read_text().splitlines():
        try:
            out_.append(json.loads(ln))
        except ValueError:
            pass
    return out_


def grade_corpus(entries: list[Entry], outdir: Path, jobs: int, *,
                 extra_args: tuple[str, ...] = (), kill_fraction: float | None = 1 / 3,
                 timeout_s: float = 3600) -> CorpusResults:
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / "batch"
    list_file = write_list(entries, outdir / "list.csv")
    cmd = _batch_cmd(list_file, out, jobs, extra_args)
    facts: dict[str, Any] = {"entries": len(entries)}
    # kill_fraction None: no kill, one run.
    unique = len({str(e[1]) for e in entries})
    kill_at = unique + 1 if kill_fraction is None else max(1, math.ceil(unique * kill_fraction))
    t0 = time.monotonic()
    with open(outdir / "run1.log", "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        while p.poll() is None and len(_finished(out)) < kill_at:
            if time.monotonic() - t0 > timeout_s:
                break
            time.sleep(POLL_S)
        facts["killed"] = p.poll() is None
        before = _finished(out)
        if facts["killed"]:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    facts["first_run_s"] = round(time.monotonic() - t0, 1)
    final_before = {k for k in before if _status(out, k) in ("graded", "rejected")}
    facts["done_at_kill"] = len(before)
    started = [e["pid"] for e in _events(out) if e.get("event") == "started"]
    time.sleep(3)  # the graders get SIGKILL from their parent's death (setpriv --pdeathsig)
    facts["orphans"] = [pid for pid in started if _alive(pid)]
    # What the kill left: every result in results/ is whole, the half-made ones are in .staging.
    facts["half_written"] = _half_written(out)

    t1 = time.monotonic()
    with open(outdir / "run2.log", "wb") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout_s)
    facts["second_run_s"] = round(time.monotonic() - t1, 1)
    facts["exit_code"] = r.returncode
    # Exit 5: some grades are incomplete or the grader failed on them (on a loaded machine, a
    # guest that boots too slowly). The documented remedy is to run the same batch again, which
    # grades only those: done once here, and recorded.
    facts["retried"] = []
    if r.returncode == 5:
        manifest = json.loads((out / "batch.json").read_text())
        facts["retried"] = sorted(row["student"] for row in manifest["rows"]
                                  if _status(out, row["key"]) not in ("graded", "rejected"))
        with open(outdir / "run3.log", "wb") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=timeout_s)
        facts["exit_code"] = r.returncode
    after = _finished(out)
    facts["lost"] = sorted(k for k in before if k not in after)
    # A result done before the kill is never replaced (same inode and mtime of record.json)...
    facts["replaced"] = sorted(k for k in final_before if after.get(k) != before[k])
    # ...and no key is graded twice to a final result over both runs.
    graded = [e["key"] for e in _events(out) if e.get("event") == "graded"
              and e.get("status") in ("graded", "rejected")]
    facts["regraded"] = sorted({k for k in graded if graded.count(k) > 1})
    facts["half_written_after"] = _half_written(out)
    facts["staging_left"] = sorted(p.name for p in (out / ".st").iterdir()) \
        if (out / ".st").is_dir() else []

    manifest = json.loads((out / "batch.json").read_text())
    results = CorpusResults()
    statuses = {}
    for row in manifest["rows"]:
        d = out / "results" / row["key"]
        statuses[row["student"]] = _status(out, row["key"])
        if (d / "report.json").exists():
            results[row["student"]] = GradeResult.from_dict(json.loads(
                (d / "report.json").read_text()))
    facts["statuses"] = statuses
    facts["missing"] = sorted(n for n, *_ in entries if n not in statuses)
    facts["disagreements"] = agreement(out, manifest)
    results.facts = facts
    results.batch_dir = out
    return results


def _status(out: Path, key: str) -> str:
    try:
        return json.loads((out / "results" / key / "record.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return "missing"


def _half_written(out: Path) -> list[str]:
    bad = []
    results = out / "results"
    for d in (results.iterdir() if results.is_dir() else []):
        try:
            rec = json.loads((d / "record.json").read_text())
            if rec["status"] in ("graded", "incomplete"):
                GradeResult.from_dict(json.loads((d / "report.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            bad.append(d.name)
    return bad


def agreement(out: Path, manifest: dict[str, Any]) -> list[str]:
    """Every place where grades.csv or class.html says something else than a report.json."""
    problems = []
    csv_rows = {r["student"].removeprefix("'"): r for r in
                csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    doc = lxml.html.document_fromstring((out / "class.html").read_text())
    page = {tr.get("data-student"): tr for tr in doc.xpath("//table[@id='grades']/tbody/tr")}
    for row in manifest["rows"]:
        s, d = row["student"], out / "results" / row["key"]
        c, tr = csv_rows.get(s), page.get(s)
        if c is None or tr is None:
            problems.append(f"{s}: not in {'grades.csv' if c is None else 'class.html'}")
            continue
        if not (d / "report.json").exists():
            if c["total"] not in ("", "0"):
                problems.append(f"{s}: no report.json but the CSV total is {c['total']}")
            continue
        r = GradeResult.from_dict(json.loads((d / "report.json").read_text()))
        if c["total"] != points(r.score):
            problems.append(f"{s}: CSV total {c['total']}, report {points(r.score)}")
        if c["complete"] != ("yes" if r.complete else "no"):
            problems.append(f"{s}: CSV complete {c['complete']}, report {r.complete}")
        for e in r.exercises:
            if c.get(f"ex{e.number}") != points(e.score):
                problems.append(f"{s}: CSV ex{e.number} {c.get(f'ex{e.number}')}, report "
                                f"{points(e.score)}")
        cells = tr.xpath("./td")
        if float(cells[-2].get("data-v")) != r.score:
            problems.append(f"{s}: class page total {cells[-2].get('data-v')}, report {r.score}")
        shown = {int(x.get("data-ex")): float(x.get("data-v")) for x in tr.xpath("./td[@data-ex]")
                 if x.get("data-v") != "-1"}
        if shown != {e.number: e.score for e in r.exercises}:
            problems.append(f"{s}: class page exercises {shown}, report "
                            f"{[e.score for e in r.exercises]}")
        href = tr.xpath(".//a[@class='report']/@href")
        if href != [f"results/{row['key']}/report.html"] or not (out / href[0]).exists():
            problems.append(f"{s}: class page links to {href}")
    return problems
