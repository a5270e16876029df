"""The class page and the per-submission page, read with a real HTML parser (lxml): what they
show agrees with the results, they need no network, and student text never becomes markup."""
from __future__ import annotations

import base64
import hashlib

import lxml.html
from batchlib import make_result

from grader.batch.rows import ClassRow
from grader.model import Diagnostic
from grader.report.class_report import SORT_SCRIPT, ClassInfo, render_class_html
from grader.report.html_report import check_anchor, render_html

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _row(student, result=None, status="graded", name="", reason=""):
    return ClassRow(student=student, name=name, key=f"k{abs(hash(student)) % 10**8}",
                    status=status, result=result, reason=reason,
                    report=f"results/k{abs(hash(student)) % 10**8}/report.html" if result else "")


def _evil_result():
    r = make_result(EVIL, {"ex1.list": "failed", "global.load": "crashed"}, reason=EVIL,
                    log=(f"[   1.0] taskmonitor: {EVIL}",), build_log=f"taskmonitor.c:3: {EVIL}",
                    source_note=EVIL)
    r.diagnostics = [Diagnostic("warning", f"{EVIL}.c", 3, 1, EVIL)]
    r.artifacts = {"console_1": f"/tmp/{EVIL}/console.log"}
    return r


def _rows():
    return [
        _row("alice", make_result("alice"), name="Alice"),
        _row("bob", make_result("bob", {"ex1.list": "failed", "ex2.frees": "timed_out"})),
        _row(EVIL, _evil_result(), name=EVIL),
        _row("carol", None, "failed", reason=f"grader run ended with exit status 1: {EVIL}"),
        _row("erin", make_result("erin", {"ex2.frees": "error"}, complete=False), "incomplete"),
    ]


def _no_injection(doc, allowed_scripts: list[str]) -> None:
    scripts = doc.xpath("//script")
    assert [s.text for s in scripts] == allowed_scripts
    assert not doc.xpath("//img | //iframe | //object | //embed | //link | //base")
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        for attr in el.attrib:
            assert not attr.lower().startswith("on"), (el.tag, attr)
        for attr in ("href", "src", "action"):
            v = el.get(attr, "")
            assert not v.lower().startswith(("javascript:", "http:", "https:", "//")), v


def test_class_page_agrees_with_results_and_needs_no_network() -> None:
    rows = _rows()
    html = render_class_html(rows, ClassInfo(title="TP 07", grader_version="0.1.0",
                                             rubric="fake", rubric_digest="ab" * 32,
                                             kernels=(("6.1", "6.1.0-99"),)))
    doc = lxml.html.document_fromstring(html)
    _no_injection(doc, [SORT_SCRIPT])
    csp = doc.xpath("//meta[@http-equiv='Content-Security-Policy']/@content")[0]
    digest = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    body = doc.xpath("//table[@id='grades']/tbody/tr")
    assert [tr.get("data-student") for tr in body] == sorted(r.student for r in rows)
    by = {tr.get("data-student"): tr for tr in body}
    for r in rows:
        tr = by[r.student]
        cells = tr.xpath("./td")
        if r.result is None:
            assert cells[-2].text_content().strip() == ""
            assert not tr.xpath(".//a")
            continue
        scores = [e.score for e in r.result.exercises]
        assert [float(c.get("data-v")) for c in cells[2:-2]] == scores
        assert float(cells[-2].get("data-v")) == r.result.score
        assert tr.xpath(".//a[@class='report']/@href") == [r.report]
    assert by[EVIL].xpath("./td")[0].text_content() == EVIL  # shown as text, intact
    # charts: one per exercise and the total, bars counting every graded student
    figs = doc.xpath("//figure")
    assert [f.get("id") for f in figs] == ["chart-total", "chart-ex0", "chart-ex1", "chart-ex2"]
    graded = sum(1 for r in rows if r.result is not None)
    for f in figs:
        assert sum(int(x) for x in f.xpath(".//rect/@data-count")) == graded
    total_bars = {float(b.xpath("string(title)").split(":")[0]): int(b.get("data-count"))
                  for b in doc.xpath("//figure[@id='chart-total']//rect")}
    assert total_bars[9.0] == 1 and total_bars[4.0] == 1  # alice 9, bob 4, erin 6, the evil one 5
    failed = doc.xpath("//table[@id='failed-checks']/tbody/tr")
    first = failed[0].xpath("./td")
    assert "ex1.list" in first[0].text_content() and first[1].text_content() == "2/4"
    link = failed[0].xpath(".//a/@href")[0]
    assert link.endswith("#" + check_anchor("ex1.list"))
    assert [a.text_content() for a in doc.xpath("//h3[@id='crashed']/following-sibling::ul[1]"
                                                 "/li/a[1]")] == [EVIL]
    assert doc.xpath("string(//h3[@id='hung']/following-sibling::ul[1]/li/a[1])") == "bob"
    ungraded = doc.xpath("//h3[@id='ungraded']/following-sibling::ul[1]/li")
    assert [li.text_content().split()[0] for li in ungraded] == ["carol", "erin"]


def test_class_page_student_audience_and_empty_class() -> None:
    html = render_class_html([], ClassInfo(audience="student"))
    doc = lxml.html.document_fromstring(html)
    assert "0 students" in doc.xpath("string(//p[@id='summary'])")
    assert "hidden checks left out" in html


def test_submission_page_links_back_shows_score_first_and_escapes_everything() -> None:
    r = _evil_result()
    doc = lxml.html.document_fromstring(render_html(r, class_link="../../class.html"))
    _no_injection(doc, [])
    assert doc.xpath("//a[@id='class-link']/@href") == ["../../class.html"]
    heads = [h.get("id") for h in doc.xpath("//h2")]
    assert heads.index("scores") < heads.index("stamp")
    assert doc.xpath("string(//h1/span[@id='total'])") == "5/9"
    assert doc.xpath(f"//*[@id='{check_anchor('ex1.list')}']")
    text = doc.text_content()
    assert text.count(EVIL) >= 5  # reason, log line, build log, diagnostic, note: all as text
    hidden = doc.xpath(f"//*[@id='{check_anchor('ex1.hidden')}']")
    assert hidden and "hidden from students" in hidden[0].text_content()
    student = lxml.html.document_fromstring(render_html(r, audience="student"))
    assert not student.xpath(f"//*[@id='{check_anchor('ex1.hidden')}']")
    assert "ex1.hidden" not in lxml.html.tostring(student).decode()
    assert not student.xpath("//a[@id='class-link']")
