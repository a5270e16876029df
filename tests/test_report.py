"""Reporters: terminal, JSON, JUnit and HTML renderings of a hand-built grade, and the writer."""
from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from grader.errors import ConfigError
from grader.model import (
    CheckResult,
    Diagnostic,
    Evidence,
    ExerciseResult,
    GradeResult,
    StageResult,
    Stamp,
    Status,
)
from grader.report import (
    load_json,
    render_html,
    render_json,
    render_junit,
    render_terminal,
    write_reports,
)

HOSTILE = '<script>alert("x")</script>'


def _check(cid: str, ex: int, status: Status, pts: float, max_pts: float, reason: str = "",
           **kw) -> CheckResult:
    return CheckResult(id=cid, exercise=ex, title=cid.replace("_", " "), status=status,
                       points=pts, max_points=max_pts, reason=reason, **kw)


@pytest.fixture
def result() -> GradeResult:
    """A grade with every Status, and hostile student text in logs, evidence and diagnostics."""
    stamp = Stamp(
        grader_version="0.1.0", profile="6.1", kernel_release="6.1.0-28-cloud-amd64",
        kernel_package="6.1.119-1", qemu_version="7.2.19", accel="tcg", rubric="tp07",
        rubric_digest="sha256:0123456789abcdef", submission_digest="sha256:fedcba",
    )
    ex0 = ExerciseResult(0, "Module hygiene", [
        _check("loads", 0, Status.PASSED, 1, 1, duration_s=0.5),
        _check("no_warnings", 0, Status.FAILED, 0, 1, "2 compiler warnings"),
    ])
    ex1 = ExerciseResult(1, "Sample history", [
        _check("sysfs_format", 1, Status.PASSED, 2, 2, "lines match", evidence=[
            Evidence("cat /sys/kernel/taskmonitor", "pid N usr N sys N", "pid 1 usr 0 sys 0"),
        ]),
        _check("values_grow", 1, Status.FAILED, 0, 1.5, "usr stayed at 0\nsecond line", evidence=[
            Evidence("cat /sys/kernel/taskmonitor", "growing usr",
                     f"pid 1 usr 0 sys 0\n{HOSTILE}", log=[f"taskmonitor: {HOSTILE}"]),
        ]),
        _check("bounded_output", 1, Status.SKIPPED, 0, 1, "module did not load"),
    ])
    ex2 = ExerciseResult(2, "Shrinker", [
        _check("drop_caches", 2, Status.CRASHED, 0, 2, "Oops in scan_objects", evidence=[
            Evidence("echo 2 > /proc/sys/vm/drop_caches", log=[
                "BUG: kernel NULL pointer dereference, address: 0000000000000008",
                f"RIP: 0010:scan_objects+0x1c/0x80 [taskmonitor] {HOSTILE}",
                "esc \x1b[31mred\x1b[0m and raw byte \udcff",
            ]),
        ], duration_s=2.25),
        _check("pressure", 2, Status.TIMED_OUT, 0, 1, "no answer after 30 s", visible=False),
    ])
    ex3 = ExerciseResult(3, "kmem_cache", [
        _check("slabinfo", 3, Status.ERROR, 0, 2, "guest did not boot: qemu exited 1"),
        _check("cache_gone", 3, Status.PASSED, 1, 1),
    ])
    return GradeResult(
        submission="alice-tp07",
        stamp=stamp,
        stages=[
            StageResult("intake", Status.PASSED, 0.01),
            StageResult("build", Status.PASSED, 1.52),
            StageResult("run", Status.ERROR, 3.1, "qemu exited 1"),
        ],
        exercises=[ex0, ex1, ex2, ex3],
        diagnostics=[
            Diagnostic("warning", "taskmonitor.c", 42, 7, f"unused variable 'x' {HOSTILE}"),
            Diagnostic("error", "taskmonitor.c", 50, 3, "implicit declaration"),
        ],
        notes=["compat header used for register_shrinker", HOSTILE],
        build_log=f"make -C ...\ntaskmonitor.c:42:7: warning: unused {HOSTILE}\n",
        build_command=["make", "-C", "/usr/src/linux-headers", "M=/mod", "modules"],
        artifacts={"console": "out/console.log"},
        complete=False,
    )


def _complete(result: GradeResult) -> GradeResult:
    """The same grade with the grader error turned into a pass and complete=True."""
    r = load_json(render_json(result))
    for ex in r.exercises:
        for c in ex.checks:
            if c.status is Status.ERROR:
                c.status, c.points, c.reason = Status.PASSED, c.max_points, ""
    r.stages = [dataclasses.replace(s, status=Status.PASSED) for s in r.stages]
    r.complete = True
    return r


# -- terminal --------------------------------------------------------------------------------

def test_terminal_exercises_and_total(result: GradeResult) -> None:
    text = render_terminal(result)
    assert "alice-tp07" in text and "6.1.0-28-cloud-amd64" in text and "tcg" in text
    assert "0.1.0" in text
    assert "Global checks - Module hygiene  1/2" in text
    assert "Exercise 1 - Sample history  2/4.5" in text
    assert "Exercise 2 - Shrinker  0/3" in text
    assert "Exercise 3 - kmem_cache  1/3" in text
    assert re.search(r"^Total: 4/12.5\b", text, re.MULTILINE)
    for mark in ("PASS", "FAIL", "CRASH", "HANG", "SKIP", "ERROR"):
        assert re.search(rf"^  {mark}\s", text, re.MULTILINE), mark
    assert "Stages: intake 0.01s, build 1.52s, run 3.10s (error)" in text
    assert "taskmonitor.c:42:7: warning: unused variable" in text
    assert "compat header used for register_shrinker" in text
    assert "[hidden]" in text


def test_terminal_crash_hang_fail_wording(result: GradeResult) -> None:
    lines = render_terminal(result).splitlines()
    crash = next(ln for ln in lines if "drop caches" in ln)
    hang = next(ln for ln in lines if "pressure" in ln)
    fail = next(ln for ln in lines if "values grow" in ln)
    assert "CRASH" in crash and "the module crashed the kernel: Oops in scan_objects" in crash
    assert "HANG" in hang and "the module hung: no answer after 30 s" in hang
    assert "FAIL" in fail and "crashed" not in fail and "hung" not in fail
    assert fail.endswith("usr stayed at 0 ...")  # one line only
    assert "second line" not in "\n".join(lines)


def test_terminal_incomplete_banner_only_when_incomplete(result: GradeResult) -> None:
    text = render_terminal(result)
    assert "INCOMPLETE GRADE" in text and "not the student's fault" in text
    banner = text[text.index("INCOMPLETE GRADE"):text.index("Global checks")]
    assert "slabinfo" in banner and "guest did not boot" in banner
    assert "stage run: qemu exited 1" in banner
    assert "values_grow" not in banner  # student failures are not grader errors

    ok = render_terminal(_complete(result))
    assert "INCOMPLETE" not in ok
    assert "Total: 6/12.5" in ok


def test_terminal_verbose_and_color(result: GradeResult) -> None:
    plain = render_terminal(result)
    assert "\x1b" not in plain
    assert "echo 2 > /proc/sys/vm/drop_caches" not in plain

    verbose = render_terminal(result, verbose=True)
    assert "\x1b" not in verbose  # the student's own escapes are neutralised
    assert "* echo 2 > /proc/sys/vm/drop_caches" in verbose
    assert "| BUG: kernel NULL pointer dereference" in verbose
    assert "esc \\x1b[31mred" in verbose and "raw byte \\xff" in verbose
    assert "expected: growing usr" in verbose

    colored = render_terminal(result, color=True)
    assert "\x1b[32mPASS" in colored and "\x1b[0m" in colored


# -- JSON ------------------------------------------------------------------------------------

def test_json_round_trip(result: GradeResult) -> None:
    text = render_json(result)
    data = json.loads(text)
    assert data["score"] == 4 and data["max_score"] == 12.5 and data["complete"] is False
    assert data["exercises"][2]["checks"][0]["status"] == "crashed"
    back = load_json(text)
    assert back.to_dict() == result.to_dict()
    assert back == result
    assert render_json(back) == text


# -- JUnit -----------------------------------------------------------------------------------

def test_junit_counts(result: GradeResult) -> None:
    root = ET.fromstring(render_junit(result))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["tp07.ex0", "tp07.ex1", "tp07.ex2", "tp07.ex3"]

    def counts(suite: ET.Element) -> tuple[int, int, int, int]:
        cases = suite.findall("testcase")
        return (len(cases), sum(len(c.findall("failure")) for c in cases),
                sum(len(c.findall("error")) for c in cases),
                sum(len(c.findall("skipped")) for c in cases))

    assert counts(suites["tp07.ex0"]) == (2, 1, 0, 0)
    assert counts(suites["tp07.ex1"]) == (3, 1, 0, 1)
    assert counts(suites["tp07.ex2"]) == (2, 0, 2, 0)
    assert counts(suites["tp07.ex3"]) == (2, 0, 1, 0)
    assert suites["tp07.ex1"].get("failures") == "1" and suites["tp07.ex1"].get("skipped") == "1"

    ex2 = suites["tp07.ex2"]
    types = {c.get("name"): c.find("error").get("type") for c in ex2.findall("testcase")}
    assert types == {"drop_caches": "crashed", "pressure": "timed_out"}
    assert suites["tp07.ex3"].find("testcase/error").get("type") == "grader_error"
    crash = ex2.find("testcase[@name='drop_caches']")
    assert crash.get("classname") == "tp07.ex2" and float(crash.get("time")) == 2.25
    err = crash.find("error")
    assert "the module crashed the kernel" in err.get("message")
    assert "BUG: kernel NULL pointer dereference" in err.text
    assert "<script>" in err.text  # escaped by XML, read back as text

    props = {p.get("name"): p.get("value") for p in suites["tp07.ex1"].iter("property")}
    assert props["score"] == "2" and props["max_score"] == "4.5" and props["complete"] == "false"


# -- HTML ------------------------------------------------------------------------------------

class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id" and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escapes_hostile_content(result: GradeResult) -> None:
    page = render_html(result)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    parsed = _Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags
    text = "".join(parsed.text)
    assert f"taskmonitor: {HOSTILE}" in text  # shown, as text, in the log line
    assert f"pid 1 usr 0 sys 0\n{HOSTILE}" in text  # and in the evidence
    assert "\x1b" not in page


def test_html_structure(result: GradeResult) -> None:
    page = render_html(result)
    parsed = _Collect()
    parsed.feed(page)
    assert "link" not in parsed.tags and "img" not in parsed.tags  # self-contained
    assert "style" in parsed.tags and "details" in parsed.tags
    assert len(parsed.ids) == len(set(parsed.ids))
    # every kernel-log line has an anchor: 1 in values_grow, 3 in drop_caches
    log_ids = [i for i in parsed.ids if re.fullmatch(r"check-.*-L\d+", i)]
    assert log_ids == ["check-values_grow-L1", "check-drop_caches-L1",
                       "check-drop_caches-L2", "check-drop_caches-L3"]
    assert 'href="#build-L2"' in page  # the warning links to its build-log line
    for want in ("INCOMPLETE GRADE", "the module crashed the kernel", "the module hung",
                 "6.1.0-28-cloud-amd64", "sha256:0123456789abcdef", "hidden from students",
                 "implicit declaration", "compat header used", "qemu exited 1", "4/12.5"):
        assert want in page, want
    assert "INCOMPLETE" not in render_html(_complete(result))


# -- writer ----------------------------------------------------------------------------------

def test_write_reports(result: GradeResult, tmp_path) -> None:
    out = tmp_path / "out"
    written = write_reports(result, out, {"json", "junit", "html", "text"})
    assert {k: p.name for k, p in written.items()} == {
        "json": "report.json", "junit": "report.xml", "html": "report.html", "text": "report.txt",
    }
    assert load_json(written["json"].read_text(encoding="utf-8")) == result
    ET.parse(written["junit"])
    assert written["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    txt = written["text"].read_text(encoding="utf-8")
    assert "Total: 4/12.5" in txt and "| BUG: kernel NULL" in txt  # verbose, no colour
    assert "\x1b" not in txt

    only = write_reports(result, tmp_path / "one", {"json"})
    assert list(only) == ["json"] and [p.name for p in (tmp_path / "one").iterdir()] == [
        "report.json"]


def test_write_reports_unknown_format(result: GradeResult, tmp_path) -> None:
    with pytest.raises(ConfigError, match="valid: html, json, junit, text"):
        write_reports(result, tmp_path / "x", {"json", "pdf"})
    assert not (tmp_path / "x").exists()


def test_interface_and_clocks_are_reported_and_escaped(result: GradeResult) -> None:
    """What the module created and the clock of each guest check reach every report; a file
    name the student chose cannot become markup."""
    import json

    from grader.report import render_html, render_json, render_terminal

    result.interface = {
        "files": [{"path": "/sys/kernel/debug/<script>alert(1)</script>", "kind": "file",
                   "mode": "644"}],
        "slab_caches": ["task_sample"], "kthreads": ["taskmonitor (91)"],
        "parameters": {"target": "90"}, "history_files": [],
    }
    check = result.exercises[1].checks[0]
    check.clock = "realtime"
    back = json.loads(render_json(result))
    assert back["interface"]["slab_caches"] == ["task_sample"]
    assert any(c["clock"] == "realtime" for e in back["exercises"] for c in e["checks"])
    html = render_html(result)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "What the module created" in html and "realtime guest" in html
    text = render_terminal(result, verbose=True)
    assert "slab cache: task_sample" in text and "(ran in the realtime guest)" in text


def test_report_command_for_students_leaves_hidden_checks_out(result: GradeResult, tmp_path,
                                                             capsys) -> None:
    from grader import cli

    hidden = [c.id for e in result.exercises for c in e.checks if not c.visible]
    assert hidden
    saved = write_reports(result, tmp_path / "in", {"json"})["json"]
    assert cli.main(["report", str(saved), "--out", str(tmp_path / "s"), "--format", "json",
                     "--audience", "student"]) == 0
    doc = load_json((tmp_path / "s" / "report.json").read_text(encoding="utf-8"))
    ids = {c.id for e in doc.exercises for c in e.checks}
    assert ids and not ids & set(hidden)
    assert cli.main(["report", str(saved), "-v"]) == 0
    assert all(h in capsys.readouterr().out for h in hidden)  # staff see everything
