"""Every export read back: our CSV, Moodle's and Canvas's import CSVs (after a roster check),
Gradescope's results.json against its documented fields, JUnit XML with a JUnit parser, and the
student audience in each of them."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import junitparser
import pytest
from batchlib import make_result

from grader.batch.roster import check_roster, load_roster
from grader.batch.rows import ClassRow
from grader.exports import RosterRefused, render_canvas, render_csv, render_moodle
from grader.exports.gradescope import VISIBILITIES, gradescope_results
from grader.model import Status
from grader.report import render_json, render_junit, render_terminal
from grader.report.audience import for_audience, hidden_checks

# Gradescope's results.json, as documented (gradescope-autograders.readthedocs.io, "specs",
# "Output format"): field -> accepted types, at the top level and for each test.
GS_TOP = {"score": (int, float), "execution_time": (int,), "output": (str,),
          "output_format": (str,), "test_output_format": (str,), "test_name_format": (str,),
          "visibility": (str,), "stdout_visibility": (str,), "extra_data": (dict,),
          "tests": (list,), "leaderboard": (list,)}
GS_TEST = {"score": (int, float), "max_score": (int, float), "status": (str,), "name": (str,),
           "name_format": (str,), "number": (str,), "output": (str,), "output_format": (str,),
           "tags": (list,), "visibility": (str,), "extra_data": (dict,)}
GS_FORMATS = {"text", "simple_format", "html", "md", "ansi"}


def _row(student: str, result=None, status: str = "graded", name: str = "") -> ClassRow:
    return ClassRow(student=student, name=name, key=student, status=status, result=result,
                    report=f"results/{student}/report.html" if result else "")


def _rows() -> list[ClassRow]:
    return [
        _row("alice", make_result("alice"), name='Alice "Al" Smith, Jr.'),
        _row("bob", make_result("bob", {"ex1.list": "failed", "global.load": "crashed"})),
        _row("=HYPERLINK(\"http://x\")", make_result("evil"), name="line\nbreak"),
        _row("carol", None, "failed"),
        _row("dave", None, "rejected"),
        _row("erin", make_result("erin", {"ex2.frees": "error"}, complete=False), "incomplete"),
    ]


def test_csv_reads_back_with_proper_quoting() -> None:
    text = render_csv(_rows())
    got = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["student"] for r in got] == ["'=HYPERLINK(\"http://x\")", "alice", "bob", "carol",
                                           "dave", "erin"]
    by = {r["student"]: r for r in got}
    assert by["alice"]["name"] == 'Alice "Al" Smith, Jr.'
    assert by["'=HYPERLINK(\"http://x\")"]["name"] == "line\nbreak"
    assert (by["bob"]["ex0"], by["bob"]["ex1"], by["bob"]["total"]) == ("1", "1", "5")
    assert (by["carol"]["total"], by["carol"]["complete"]) == ("", "no")
    assert (by["dave"]["total"], by["dave"]["complete"]) == ("0", "yes")
    assert by["erin"]["complete"] == "no" and by["erin"]["max"] == "9"
    assert list(got[0]) == ["student", "name", "ex0", "ex1", "ex2", "total", "max", "complete",
                            "status"]


def _roster(tmp_path: Path, *extra: str) -> Path:
    p = tmp_path / "roster.csv"
    p.write_text("id,email,name,canvas_id,sis_login_id,section\n"
                 "s1,alice@uni.example,\"Smith, Alice\",101,asmith,A\n"
                 "s2,bob@uni.example,\"Doe, Bob\",102,bdoe,B\n"
                 "s3,zoe@uni.example,\"Roe, Zoe\",103,zroe,A\n" + "".join(extra))
    return p


def test_roster_check_names_both_sides(tmp_path: Path) -> None:
    students = load_roster(_roster(tmp_path))
    check = check_roster(["s1", "BOB@uni.example", "mallory"], students)
    assert set(check.matched) == {"s1", "BOB@uni.example"}
    assert check.unknown == ["mallory"]
    assert [s.id for s in check.absent] == ["s3"]
    text = check.describe()
    assert "mallory" in text and "s3 <zoe@uni.example>" in text


def test_moodle_refuses_unknown_students_and_reads_back(tmp_path: Path) -> None:
    students = load_roster(_roster(tmp_path))
    rows = [_row("s1", make_result("a")), _row("bob@uni.example", make_result(
        "b", {"ex1.list": "failed"})), _row("mallory", make_result("m"))]
    with pytest.raises(RosterRefused, match="mallory"):
        render_moodle(rows, check_roster([r.student for r in rows], students))
    rows = rows[:2]
    text = render_moodle(rows, check_roster([r.student for r in rows], students), "TP07")
    got = list(csv.DictReader(io.StringIO(text)))
    assert got == [{"ID number": "s1", "Email address": "alice@uni.example",
                    "Full name": "Smith, Alice", "TP07": "9"},
                   {"ID number": "s2", "Email address": "bob@uni.example",
                    "Full name": "Doe, Bob", "TP07": "7"}]


def test_canvas_reads_back(tmp_path: Path) -> None:
    students = load_roster(_roster(tmp_path))
    rows = [_row("s1", make_result("a")), _row("s2", None, "failed")]
    with pytest.raises(RosterRefused):
        render_canvas([*rows, _row("nobody", make_result("n"))],
                      check_roster(["s1", "s2", "nobody"], students))
    text = render_canvas(rows, check_roster(["s1", "s2"], students), "TP07 (4711)")
    got = list(csv.reader(io.StringIO(text)))
    assert got[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "TP07 (4711)"]
    assert got[1] == ["Points Possible", "", "", "", "", "9"]
    assert got[2] == ["Smith, Alice", "101", "s1", "asmith", "A", "9"]
    assert got[3] == ["Doe, Bob", "102", "s2", "bdoe", "B", ""]  # no final grade: left blank


def _check_gradescope_schema(doc: dict) -> None:
    assert set(doc) <= set(GS_TOP), set(doc) - set(GS_TOP)
    for k, v in doc.items():
        assert isinstance(v, GS_TOP[k]), (k, v)
    assert {doc.get("visibility", "visible"), doc.get("stdout_visibility", "hidden")} \
        <= set(VISIBILITIES)
    assert {doc.get(k, "text") for k in ("output_format", "test_output_format",
                                         "test_name_format")} <= GS_FORMATS
    numbers = [t["number"] for t in doc["tests"]]
    assert len(numbers) == len(set(numbers))
    for t in doc["tests"]:
        assert set(t) <= set(GS_TEST), set(t) - set(GS_TEST)
        for k, v in t.items():
            assert isinstance(v, GS_TEST[k]), (k, v)
        assert t["status"] in ("passed", "failed") and t["visibility"] in VISIBILITIES
        assert {t["output_format"], t["name_format"]} <= GS_FORMATS
        assert 0 <= t["score"] <= t["max_score"]
    json.dumps(doc)  # serialisable as is


def test_gradescope_results_follow_the_documented_format() -> None:
    r = make_result("a", {"ex1.list": "failed", "ex1.hidden": "failed", "global.load": "crashed"},
                    reason="<b>no</b>")
    doc = gradescope_results(r)
    _check_gradescope_schema(doc)
    assert doc["score"] == r.score == 4
    assert sum(t["max_score"] for t in doc["tests"]) == r.max_score
    by = {t["extra_data"]["check"]: t for t in doc["tests"]}
    assert by["ex1.hidden"]["visibility"] == "hidden"  # Gradescope hides it, counts its points
    assert by["global.load"]["status"] == "failed" and "crashed the kernel" in by[
        "global.load"]["output"]
    assert by["global.build"]["status"] == "passed" and by["global.build"]["number"] == "0.1"
    assert by["ex1.list"]["extra_data"]["execution_time"] == 0.25
    student = gradescope_results(r, "student")
    _check_gradescope_schema(student)
    assert "ex1.hidden" not in json.dumps(student) and student["score"] == 4
    incomplete = gradescope_results(make_result("e", {"ex2.frees": "error"}, complete=False))
    assert incomplete["output"].startswith("INCOMPLETE GRADE")


def test_junit_reads_back_with_a_junit_parser(tmp_path: Path) -> None:
    r = make_result("a", {"ex1.list": "failed", "global.load": "crashed",
                          "ex2.frees": "skipped"}, log=("<script>x</script>",))
    path = tmp_path / "report.xml"
    path.write_text(render_junit(r))
    xml = junitparser.JUnitXml.fromfile(str(path))
    cases = {c.name: c for suite in xml for c in suite}
    assert set(cases) == {c.id for e in r.exercises for c in e.checks}
    assert isinstance(cases["ex1.list"].result[0], junitparser.Failure)
    crash = cases["global.load"].result[0]
    assert isinstance(crash, junitparser.Error) and crash.type == "crashed"
    assert isinstance(cases["ex2.frees"].result[0], junitparser.Skipped)
    assert cases["global.build"].is_passed
    student = tmp_path / "student.xml"
    student.write_text(render_junit(r, "student"))
    names = {c.name for suite in junitparser.JUnitXml.fromfile(str(student)) for c in suite}
    assert "ex1.hidden" not in names and "ex1.list" in names


def test_audience_is_pure_and_hides_everything_about_hidden_checks() -> None:
    r = make_result("a", {"ex1.hidden": "failed"}, reason="SECRET-REASON")
    before = json.dumps(r.to_dict(), sort_keys=True)
    view = for_audience(r, "student")
    assert json.dumps(r.to_dict(), sort_keys=True) == before  # the staff's result is untouched
    assert for_audience(r, "staff") is r
    assert [c.id for c in hidden_checks(r)] == ["ex1.hidden"] and not hidden_checks(view)
    assert view.max_score == r.max_score - 1
    for text in (render_json(r, "student"), render_terminal(r, audience="student"),
                 render_junit(r, "student")):
        assert "ex1.hidden" not in text and "SECRET-REASON" not in text
    assert "SECRET-REASON" in render_terminal(r)  # staff see it
    assert any("not shown here" in n for n in view.notes)
    with pytest.raises(ValueError, match="staff, student"):
        for_audience(r, "teacher")
    assert Status.PASSED  # the statuses stay the model's own


def _autograder(tmp_path: Path, spec: dict) -> tuple[int, dict]:
    """Run ci/gradescope/run_autograder on a fake /autograder tree, grading with the fake."""
    import os
    import subprocess
    import sys

    from batchlib import FAKE, make_fake_env

    fake = make_fake_env(tmp_path)
    root = tmp_path / "autograder"
    sub = root / "submission"
    sub.mkdir(parents=True)
    (sub / "taskmonitor.c").write_text("int x;\n")
    (sub / "fake.json").write_text(json.dumps(spec))
    wrapper = tmp_path / "grader"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = run ]; then shift; exec {sys.executable} {FAKE} '
                       f'"$@"; fi\nexec {sys.executable} -m grader.cli "$@"\n')
    wrapper.chmod(0o755)
    script = Path(__file__).parents[1] / "ci" / "gradescope" / "run_autograder"
    env = {**fake.env, "AUTOGRADER_ROOT": str(root), "GRADER": str(wrapper),
           "GRADER_RUBRIC": str(fake.rubric), "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                       timeout=120, cwd=os.getcwd())
    return r.returncode, json.loads((root / "results" / "results.json").read_text())


def test_run_autograder_writes_results_json(tmp_path: Path) -> None:
    rc, doc = _autograder(tmp_path, {"checks": {"ex1.list": "failed", "ex1.hidden": "failed"}})
    assert rc == 0
    _check_gradescope_schema(doc)
    assert doc["score"] == 6 and len(doc["tests"]) == 5
    assert [t["visibility"] for t in doc["tests"]].count("hidden") == 1


def test_run_autograder_says_whose_fault_when_there_is_no_grade(tmp_path: Path) -> None:
    rc, doc = _autograder(tmp_path / "a", {"exit": 4})
    _check_gradescope_schema(doc)
    assert doc["score"] == 0 and "not your fault" in doc["output"]
    rc, doc = _autograder(tmp_path / "b", {"exit": 3})
    assert doc["score"] == 0 and doc["output"].startswith("Your upload could not be graded")
