"""End to end: the reference, its stages and the buggy variants of tests/variants/, graded in QEMU.

Each submission is graded once (grade() builds it and boots as many guests as it needs) and the
result is shared by the tests that look at it. Expectations:
  - the reference scores full marks, and the grade is complete;
  - the reference at the end of exercise N (N = 1..6) passes every global check and every check
    of exercises <= N, and no check of a later exercise;
  - each variant gives exactly the statuses its [expect] table says (every other check passes)
    and the score is the maximum minus the points of those checks.
Known grader problems (a variant's [grader_problem] table, KNOWN_STAGE_PROBLEMS below) are
tested as xfail(strict=True): they turn into failures as soon as the grader is fixed.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from variants_lib import (
    Replacement,
    Variant,
    VariantError,
    apply_replacements,
    load_variants,
    materialise,
    materialise_stage,
    variant_sources,
)

from grader import session
from grader.model import CheckResult, GradeResult, Status
from grader.pipeline import RunOptions, grade
from grader.profiles import DEFAULT_PROFILE, project_root
from grader.rubric import load_rubric

RUBRIC = load_rubric("tp07")
VARIANTS = load_variants()
STAGES = range(1, 7)
# Later-exercise checks that a stage-N reference passes although that exercise is not done:
# (stage, check id) -> why (a known grader problem, reported to the lead).
KNOWN_STAGE_PROBLEMS: dict[tuple[int, str], str] = {}


# ---- grading, once per submission --------------------------------------------------------
Grader = Callable[..., GradeResult]


@pytest.fixture(scope="module")
def graded(envs, tmp_path_factory) -> Grader:  # type: ignore[no-untyped-def]
    """graded(key, make, profile, compat): the grade of the submission make(dir) writes, made
    once per key. Every grade reuses the session's prepared environment of its profile."""
    cache: dict[str, GradeResult] = {}
    real_prepare = session.prepare

    def run(key: str, make: Callable[[Path], Path], profile: str | None = None,
            compat: bool | None = None) -> GradeResult:
        if key not in cache:
            env = envs[profile or DEFAULT_PROFILE]  # skips (fails in CI) when not provisioned
            base = tmp_path_factory.mktemp(re.sub(r"[^\w.-]", "_", key))
            sub = make(base / "submission")

            def prepare(name: str | None = None, **kw):  # type: ignore[no-untyped-def]
                return env if (name or DEFAULT_PROFILE) == env.profile.name else real_prepare(name, **kw)

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(session, "prepare", prepare)
                cache[key] = grade(RunOptions(submission=sub, outdir=base / "out",
                                              profile=profile, compat=compat))
        return cache[key]

    return run


def _grade_variant(graded: Grader, v: Variant) -> GradeResult:
    return graded(f"variant-{v.name}", lambda d: materialise(v, d), v.profile, v.compat)


def _grade_stage(graded: Grader, n: int) -> GradeResult:
    return graded(f"stage{n}", lambda d: materialise_stage(n, d))


def _checks(result: GradeResult) -> dict[str, CheckResult]:
    return {c.id: c for e in result.exercises for c in e.checks}


def _describe(c: CheckResult) -> str:
    ev = "; ".join(f"{e.what}: {e.seen.splitlines()[0] if e.seen else ''}"
                   for e in c.evidence[:2])
    return f"{c.id}: {c.status.value} - {c.reason}" + (f" [{ev}]" if ev else "")


def _mismatches(result: GradeResult, want: dict[str, Status]) -> list[str]:
    got = _checks(result)
    assert set(got) == {c.id for c in RUBRIC.checks()}, "the grade does not hold every check"
    return [f"expected {st.value}, got {_describe(got[cid])}"
            for cid, st in want.items() if got[cid].status is not st]


def _assert_statuses(result: GradeResult, want: dict[str, Status], what: str) -> None:
    bad = _mismatches(result, want)
    assert not bad, f"{what}:\n  " + "\n  ".join(bad)


# ---- (a) the reference -------------------------------------------------------------------
@pytest.mark.guest
def test_reference_full_marks(graded: Grader) -> None:
    src = project_root() / "reference" / "taskmonitor"
    r = graded("reference", lambda _d: src)
    assert r.complete, [s for s in r.stages if s.status is Status.ERROR]
    _assert_statuses(r, {c.id: Status.PASSED for c in RUBRIC.checks()}, "the reference")
    assert r.score == r.max_score == RUBRIC.max_points()


# ---- (b) the reference at the end of each exercise ---------------------------------------
@pytest.mark.guest
@pytest.mark.parametrize("stage", STAGES)
def test_stage_passes_done_exercises(graded: Grader, stage: int) -> None:
    r = _grade_stage(graded, stage)
    assert r.complete
    done = {c.id: Status.PASSED for c in RUBRIC.checks() if c.exercise <= stage}
    _assert_statuses(r, done, f"reference stage {stage}, exercises 0..{stage}")
    assert sum(c.points for c in _checks(r).values() if c.id in done) == RUBRIC.max_points(stage)


def _later_checks() -> list:  # type: ignore[type-arg]
    out = []
    for n in STAGES:
        for c in RUBRIC.checks():
            if c.exercise > n:
                why = KNOWN_STAGE_PROBLEMS.get((n, c.id))
                marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
                out.append(pytest.param(n, c.id, marks=marks, id=f"stage{n}-{c.id}"))
    return out


@pytest.mark.guest
@pytest.mark.parametrize(("stage", "check_id"), _later_checks())
def test_stage_does_not_pass_later_exercises(graded: Grader, stage: int, check_id: str) -> None:
    c = _checks(_grade_stage(graded, stage))[check_id]
    assert c.status is not Status.PASSED, f"stage {stage} passes {_describe(c)}"
    assert c.status is not Status.ERROR, _describe(c)


# ---- (c) the variants --------------------------------------------------------------------
def _variant_params(only_with_problems: bool = False) -> list:  # type: ignore[type-arg]
    out = []
    for v in VARIANTS:
        if only_with_problems:
            if not v.grader_problem or "*" in v.grader_problem:
                continue
            out.append(pytest.param(v, id=v.name))
            continue
        marks = []
        if v.grader_problem:
            why = "; ".join(f"{k}: {r}" for k, r in v.grader_problem.items())
            marks.append(pytest.mark.xfail(strict=True, reason=f"grader problem: {why}"))
        out.append(pytest.param(v, id=v.name, marks=marks))
    return out


@pytest.mark.guest
@pytest.mark.parametrize("variant", _variant_params())
def test_variant(graded: Grader, variant: Variant) -> None:
    """Every check has exactly the expected status; the score is what those statuses give."""
    r = _grade_variant(graded, variant)
    assert r.complete, f"{variant.name}: incomplete grade"
    want = {c.id: variant.expected(c.id) for c in RUBRIC.checks()}
    _assert_statuses(r, want, f"variant {variant.name} ({variant.bug})")
    assert r.score == RUBRIC.max_points() - variant.points_lost(RUBRIC)


@pytest.mark.guest
@pytest.mark.parametrize("variant", _variant_params(only_with_problems=True))
def test_variant_apart_from_grader_problems(graded: Grader, variant: Variant) -> None:
    """A variant with a known grader problem: the checks the problem cannot touch are right."""
    r = _grade_variant(graded, variant)
    assert r.complete, f"{variant.name}: incomplete grade"
    affected = variant.affected_by_problems(RUBRIC) or set()
    want = {c.id: variant.expected(c.id) for c in RUBRIC.checks() if c.id not in affected}
    _assert_statuses(r, want, f"variant {variant.name} ({variant.bug}), apart from {affected}")


# ---- the variants themselves (no guest) --------------------------------------------------
@pytest.mark.parametrize("variant", [pytest.param(v, id=v.name) for v in VARIANTS])
def test_variant_applies_to_reference(variant: Variant, tmp_path: Path) -> None:
    files = variant_sources(variant)
    main = files[variant.main]
    assert main.startswith(f"#define TM_STAGE {variant.stage}\n")
    assert sum(1 for n in files if n.endswith(".c")) == (2 if variant.layout == "split" else 1)
    assert materialise(variant, tmp_path).exists()


def test_replacement_must_match_once() -> None:
    with pytest.raises(VariantError, match="found 0 times"):
        apply_replacements("a b", [Replacement("c", "d")], "x")
    with pytest.raises(VariantError, match="found 2 times"):
        apply_replacements("a a", [Replacement("a", "d")], "x")
    assert apply_replacements("a b", [Replacement("a", "c"), Replacement("c b", "e")], "x") == "e"


def test_variants_cover_the_layouts_and_profiles() -> None:
    assert {v.layout for v in VARIANTS} == {"flat", "nested", "split"}
    assert {"5.10", "6.1"} <= {v.profile for v in VARIANTS}
    assert any(v.compat for v in VARIANTS)
