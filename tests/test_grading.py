"""End to end: the reference, its stages and the buggy variants of tests/variants/, graded in QEMU.

Each submission is graded once per run, with the whole corpus, by one `grader batch` (the `corpus`
fixture, tests/conftest.py); the tests read its results. Expectations:
  - the reference scores full marks, and the grade is complete;
  - each variant gives exactly the statuses its [expect] table says (every other check passes)
    and the score is the maximum minus the points of those checks; the variants stage_N are
    the reference at the end of exercise N (N = 1..6), which passes every global check and
    every check of exercises <= N, and no check of a later exercise.
Known grader problems (a variant's [grader_problem] table) are tested as xfail(strict=True):
they turn into failures as soon as the grader is fixed.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from realistic_lib import load_realistic
from variants_lib import (
    Replacement,
    Variant,
    VariantError,
    apply_replacements,
    load_variants,
    materialise,
    variant_sources,
)

from grader.model import CheckResult, GradeResult, Status
from grader.rubric import load_rubric

RUBRIC = load_rubric("tp07")
VARIANTS = load_variants()
REALISTIC = load_realistic()
STAGES = range(1, 7)


# ---- grading: once per run, for the whole corpus (the `corpus` fixture, conftest.py) -------
def _grade_variant(corpus, v: Variant) -> GradeResult:  # type: ignore[no-untyped-def]
    name = f"variant-{v.name}"
    assert name in corpus, f"{name}: no grade ({corpus.facts['statuses'].get(name)})"
    return corpus[name]  # type: ignore[no-any-return]


def _checks(result: GradeResult) -> dict[str, CheckResult]:
    return {c.id: c for e in result.exercises for c in e.checks}


def _errors(r: GradeResult) -> list[str]:
    return ([f"stage {s.name}: {s.detail}" for s in r.stages if s.status is Status.ERROR]
            + [_describe(c) for c in _checks(r).values() if c.status is Status.ERROR])


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
@pytest.mark.parametrize("name", ["reference-combined", "reference-debug"])
def test_reference_full_marks_with_the_debug_kernel(corpus, name) -> None:  # type: ignore[no-untyped-def]
    """Combined with the debug kernel, or all on it: every check passes, on the kernel it needs."""
    r = corpus[name]
    assert r.complete, _errors(r)
    _assert_statuses(r, {c.id: Status.PASSED for c in RUBRIC.checks()}, name)
    assert r.score == r.max_score == RUBRIC.max_points()
    kernels = {c.id: c.kernel for e in r.exercises for c in e.checks}
    assert {kernels[c.id] for c in RUBRIC.checks() if c.kernel} == {"debug"}
    if name == "reference-debug":
        assert r.stamp.profile == "debug"


@pytest.mark.guest
def test_reference_full_marks(corpus) -> None:  # type: ignore[no-untyped-def]
    """On its own kernel only: the debug kernel's checks are not graded, never passed."""
    r = corpus["reference"]
    assert r.complete, [s for s in r.stages if s.status is Status.ERROR]
    want = {c.id: Status.NOT_GRADED if c.kernel else Status.PASSED for c in RUBRIC.checks()}
    _assert_statuses(r, want, "the reference")
    assert r.score == r.max_score == sum(c.points for c in RUBRIC.checks() if not c.kernel)


# ---- (b) the reference at the end of each exercise: variants stage_N.toml ------------------
def test_stage_variants_say_what_a_stage_is() -> None:
    """stage_N: every check of exercises 0..N passes; every later one is failed (not done) or
    skipped (its prerequisite not done), never crashed or hung (a bug of the reference)."""
    stages = {v.stage: v for v in VARIANTS if v.name.startswith("stage_")}
    assert sorted(stages) == list(STAGES)
    for n, v in stages.items():
        for c in RUBRIC.checks():
            want = v.expected(c.id, RUBRIC)
            if want is Status.NOT_GRADED:
                continue
            if c.exercise <= n:
                assert want is Status.PASSED, f"stage {n}: {c.id} expected {want.value}"
            else:
                assert want in (Status.FAILED, Status.SKIPPED), f"stage {n}: {c.id} would pass"


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
def test_variant(corpus, variant: Variant) -> None:  # type: ignore[no-untyped-def]
    """Every check has exactly the expected status; the score is what those statuses give."""
    r = _grade_variant(corpus, variant)
    assert r.complete, f"{variant.name}: incomplete grade: {_errors(r)}"
    want = {c.id: variant.expected(c.id, RUBRIC) for c in RUBRIC.checks()}
    _assert_statuses(r, want, f"variant {variant.name} ({variant.bug})")
    graded = sum(c.points for c in RUBRIC.checks() if want[c.id] is not Status.NOT_GRADED)
    lost = sum(c.points for c in RUBRIC.checks() if want[c.id] not in (Status.PASSED,
                                                                        Status.NOT_GRADED))
    assert (r.score, r.max_score) == (graded - lost, graded)


@pytest.mark.guest
@pytest.mark.parametrize("variant", _variant_params(only_with_problems=True))
def test_variant_apart_from_grader_problems(corpus, variant: Variant) -> None:  # type: ignore[no-untyped-def]
    """A variant with a known grader problem: the checks the problem cannot touch are right."""
    r = _grade_variant(corpus, variant)
    assert r.complete, f"{variant.name}: incomplete grade: {_errors(r)}"
    affected = variant.affected_by_problems(RUBRIC) or set()
    want = {c.id: variant.expected(c.id, RUBRIC) for c in RUBRIC.checks() if c.id not in affected}
    _assert_statuses(r, want, f"variant {variant.name} ({variant.bug}), apart from {affected}")


# ---- (d) the realistic submissions, written from scratch in students' styles ------------------
def _realistic_params() -> list:  # type: ignore[type-arg]
    out = []
    for r in REALISTIC:
        marks = []
        if r.grader_problem:
            why = "; ".join(f"{k}: {v}" for k, v in r.grader_problem.items())
            marks.append(pytest.mark.xfail(strict=True, reason=f"grader problem: {why}"))
        out.append(pytest.param(r, id=r.name, marks=marks))
    return out


@pytest.mark.guest
@pytest.mark.parametrize("sub", _realistic_params())
def test_realistic(corpus, sub) -> None:  # type: ignore[no-untyped-def]
    """Correct exercises get full marks but for their strict format/naming checks; a bug is
    charged to the exercise whose code has it; not attempted is failed or skipped."""
    name = f"realistic-{sub.name}"
    assert name in corpus, f"{name}: no grade ({corpus.facts['statuses'].get(name)})"
    r = corpus[name]
    assert r.complete, f"{sub.name}: incomplete grade: {_errors(r)}"
    want = {c.id: sub.expected(c.id, RUBRIC) for c in RUBRIC.checks()}
    _assert_statuses(r, want, f"realistic {sub.name} ({sub.description})")


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


def test_every_check_fails_on_some_submission_of_the_corpus() -> None:
    """A check counts only when a submission with its bug makes it fail (failed, crashed or
    timed out, not merely skipped): the corpus must hold one for every check of the rubric."""
    failing = {"failed", "crashed", "timed_out"}
    shown: set[str] = set()
    for v in [*VARIANTS, *REALISTIC]:
        shown |= {c for c, st in v.expect.items() if st.value in failing and c not in v.grader_problem}
    missing = [c.id for c in RUBRIC.checks() if c.id not in shown]
    assert not missing, f"no submission of the corpus makes these checks fail: {missing}"


def test_variants_cover_the_layouts_and_profiles() -> None:
    assert {v.layout for v in VARIANTS} == {"flat", "nested", "split"}
    assert {"5.10", "6.1"} <= {v.profile for v in VARIANTS}
    assert any(v.compat for v in VARIANTS)
