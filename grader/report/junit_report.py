"""JUnit XML for CI dashboards: one test suite per exercise, one test case per check."""
from __future__ import annotations

from junit_xml import TestCase, TestSuite, to_xml_report_string

from grader.model import CheckResult, ExerciseResult, GradeResult, Status
from grader.report.audience import DEFAULT_AUDIENCE, for_audience
from grader.report.common import clean, evidence_lines, outcome, points

CLASS_PREFIX = "tp07"

# JUnit has failure, error and skipped: a crash and a hang are errors with their own type,
# so that a dashboard tells them from plain failures and from the grader's own errors.
_ERROR_TYPES = {
    Status.CRASHED: "crashed",
    Status.TIMED_OUT: "timed_out",
    Status.ERROR: "grader_error",
}


def render_junit(result: GradeResult, audience: str = DEFAULT_AUDIENCE) -> str:
    """The grade as a JUnit XML document (a <testsuites> root), as `audience` may see it."""
    view = for_audience(result, audience)
    return to_xml_report_string([_suite(view, ex) for ex in view.exercises])


def _suite(result: GradeResult, ex: ExerciseResult) -> TestSuite:
    s = result.stamp
    properties = {
        "title": clean(ex.title),
        "score": points(ex.score),
        "max_score": points(ex.max_score),
        "complete": str(result.complete).lower(),
        "submission": clean(result.submission),
        "grader_version": clean(s.grader_version),
        "profile": clean(s.profile),
        "kernel_release": clean(s.kernel_release),
        "accel": clean(s.accel),
        "rubric_digest": clean(s.rubric_digest),
    }
    classname = f"{CLASS_PREFIX}.ex{ex.number}"
    return TestSuite(
        classname, [_case(classname, c) for c in ex.checks], properties=properties
    )


def _case(classname: str, c: CheckResult) -> TestCase:
    evidence = "\n".join(ln for ev in c.evidence for ln in evidence_lines(ev)) or None
    message = f"{clean(c.title)} ({points(c.points)}/{points(c.max_points)}): {outcome(c)}"
    passed = c.status is Status.PASSED
    case = TestCase(
        clean(c.id), classname=classname, elapsed_sec=c.duration_s,
        stdout=evidence if passed else None,
    )
    if c.status is Status.FAILED:
        case.add_failure_info(message=message, output=evidence)
    elif c.status in _ERROR_TYPES:
        case.add_error_info(message=message, output=evidence, error_type=_ERROR_TYPES[c.status])
    elif c.status in (Status.SKIPPED, Status.NOT_GRADED):
        case.add_skipped_info(message=message, output=evidence)
    return case
