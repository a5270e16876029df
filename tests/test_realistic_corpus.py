"""The realistic corpus (tests/realistic/) is well-formed, covers the styles real students use,
and owes nothing to the reference (fast, no guest, no build)."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from realistic_lib import (
    REALISTIC_DIR,
    STYLES,
    Realistic,
    RealisticError,
    check_ids,
    load_realistic,
    load_realistic_file,
    materialise,
    submission_files,
)
from variants_lib import REFERENCE_FILE

from grader.intake import intake
from grader.model import Status
from grader.profiles import project_root
from grader.rubric import load_rubric

WINDOW = 5  # lines: a shared window this long means copied code

# Styles the corpus must show, with how many submissions at least (issue 6, "What it must show").
REQUIRED_STYLES: dict[str, int] = {
    "extra fields": 1, "pid colon layout": 1, "bracket labels": 1,
    "values in jiffies": 1, "values in ms": 1,
    "cache named after another struct": 1, "kmem_cache_create name": 1, "debugfs directory": 2,
    "sysfs kobject directory": 1, "write-only sysfs attribute": 1, "no sysfs file": 1,
    "mempool_init_slab_pool": 1, "mempool_init": 1, "mempool_create_kmalloc_pool": 1,
    "single_open": 2, "seq_operations": 2, "kstrtoint_from_user": 2, "ssleep": 2, "msleep": 2,
    "schedule_timeout_interruptible": 2, "get_pid_task": 2, "pid_task": 2,
    "kobject_create_and_add": 1,
    "no period parameter, 1 Hz": 5, "no period parameter, 0.1 Hz": 1, "period parameter": 1,
    "extra parameter": 2,
    "several .c files": 2, "student Makefile": 10, "nested folder": 2,
    "5.x one-argument register_shrinker": 3, "static struct shrinker": 3,
    "pre-4.11 cputime_t": 2, "only linux/sched.h": 2, "task_cputime": 1,
    "task_cputime_adjusted": 5,
    "bug: cache destroyed before mempool": 1, "bug: shrinker counts 0": 1,
    "bug: sysfs not bounded": 1, "bug: seq_file off-by-one": 1,
    "bug: write accepts garbage": 1, "bug: -PID ignored": 1, "bug: samples leaked at exit": 1,
    "bug: kthread not stopped": 1, "bug: show without reference": 1,
    "bug: exited task crashes": 1,
}

# Tags that say something checkable about the code: tag -> a pattern the sources must match.
_CALL = r"\b{}\s*\("
TAG_EVIDENCE: dict[str, str] = {
    "pre-4.11 cputime_t": r"\bcputime_t\b",
    "task_cputime": _CALL.format("task_cputime"),
    "task_cputime_adjusted": _CALL.format("task_cputime_adjusted"),
    "task fields": r"->\s*utime\b(?!\s*=)",
    "5.x one-argument register_shrinker": r"\bregister_shrinker\s*\(\s*&\s*\w+\s*\)",
    "6.x register_shrinker": r"\bregister_shrinker\s*\(\s*&\s*\w+\s*,",
    "static struct shrinker": r"\bstruct\s+shrinker\s+\w+\s*=\s*\{",
    "cache named after another struct": r"\bKMEM_CACHE\s*\(\s*(?!task_sample\b)\w+",
    "kmem_cache_create name": r"\bkmem_cache_create\s*\(\s*\"(?!task_sample\")",
    "debugfs directory": _CALL.format("debugfs_create_dir"),
    "kobject_create_and_add": _CALL.format("kobject_create_and_add"),
    "sysfs kobject directory": _CALL.format("sysfs_create_group"),
    "write-only sysfs attribute": r"__ATTR_WO\s*\(|__ATTR\s*\([^)]*0[0-7]?200\b",
    "mempool_init_slab_pool": _CALL.format("mempool_init_slab_pool"),
    "mempool_init": _CALL.format("mempool_init"),
    "mempool_create": _CALL.format("mempool_create"),
    "mempool_create_slab_pool": _CALL.format("mempool_create_slab_pool"),
    "mempool_create_kmalloc_pool": _CALL.format("mempool_create_kmalloc_pool"),
    "seq_operations": r"\bstruct\s+seq_operations\b",
    "single_open": r"\bsingle_open\s*\(|\bDEFINE_SHOW_ATTRIBUTE\s*\(",
    "kstrtoint_from_user": _CALL.format("kstrtoint_from_user"),
    "copy_from_user": _CALL.format("copy_from_user"),
    "ssleep": _CALL.format("ssleep"),
    "msleep": r"\bmsleep(?:_interruptible)?\s*\(",
    "schedule_timeout_interruptible": _CALL.format("schedule_timeout_interruptible"),
    "schedule_timeout": _CALL.format("schedule_timeout"),
    "get_pid_task": _CALL.format("get_pid_task"),
    "pid_task": r"(?<!get_)\bpid_task\s*\(",
    "task_struct reference": _CALL.format("get_task_struct"),
    "sysfs_emit": r"\bsysfs_emit(?:_at)?\s*\(",
    "scnprintf": r"\bs?n?c?n?printf\s*\(\s*\w+\s*(?:\+\s*\w+\s*)?,\s*(?:PAGE_SIZE|sizeof|room|size)",
    "atomic counter": r"\batomic(?:_long)?_(?:read|inc|dec)\s*\(",
    "global sample list": r"\bpid_t\s+pid\s*;",
    "extra fields": r"vm_total",
    "bracket labels": r"\[%d\] utime=",
    "pid colon layout": r"pid %d : %\w+ usr %\w+ sys",
    "lab format": r"\"pid %d usr %ll[ud] sys %ll[ud]\\n\"|TM_FMT",
    "values in ms": r"NSEC_PER_MSEC",
    "values in jiffies": r"nsecs_to_jiffies",
}


@pytest.fixture(scope="module")
def corpus() -> list[Realistic]:
    return load_realistic()


@pytest.fixture(scope="module")
def rubric_lab() -> dict:
    """What the lab asks for by name (the rubric's settings: target and period parameters)."""
    return load_rubric("tp07").settings


def _sources(sub: Realistic) -> str:
    return "\n".join((sub.path / f).read_text() for f in submission_files(sub.path)
                     if f.suffix in (".c", ".h"))


def _code(text: str) -> str:
    """C source without comments (tags are about what the code does, not what it says)."""
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def test_every_toml_is_valid_and_named_after_its_folder(corpus: list[Realistic]) -> None:
    tomls = sorted(REALISTIC_DIR.glob("*.toml"))
    assert [s.name for s in corpus] == [p.stem for p in tomls]
    folders = sorted(p.name for p in REALISTIC_DIR.iterdir()
                     if p.is_dir() and not p.name.startswith((".", "__")))
    assert folders == [s.name for s in corpus], "every folder has its TOML and the reverse"


def test_at_least_15_submissions(corpus: list[Realistic]) -> None:
    assert len(corpus) >= 15


def test_the_styles_are_covered(corpus: list[Realistic]) -> None:
    seen = Counter(tag for s in corpus for tag in s.style)
    short = {tag: (seen[tag], n) for tag, n in REQUIRED_STYLES.items() if seen[tag] < n}
    assert not short, f"styles with too few submissions (seen, wanted): {short}"
    assert {s.profile for s in corpus} >= {"5.10", "6.1"}
    assert any(s.compat and s.profile == "6.1" and "pre-4.11 cputime_t" in s.style
               for s in corpus), "pre-4.11 code graded on 6.1 with --compat"
    assert any(s.profile == "5.10" and not s.compat for s in corpus), "5.x code on 5.10"
    assert {s.archive for s in corpus} == {"folder", "tar.gz"}
    assert {s.stage for s in corpus} >= {1, 2, 3, 4, 5, 6, 7}
    correct = [s for s in corpus if not s.bugs]
    assert len(correct) >= 8, "most styles must be shown on correct code too"


def test_style_tags_match_the_code(corpus: list[Realistic]) -> None:
    wrong = []
    for s in corpus:
        code = _code(_sources(s))
        for tag in s.style:
            pattern = TAG_EVIDENCE.get(tag)
            if pattern and not re.search(pattern, code):
                wrong.append(f"{s.name}: tagged {tag!r} but the code does not show it")
    assert not wrong, "\n".join(wrong)


def test_period_parameter_tags_match_module_params(corpus: list[Realistic],
                                                   rubric_lab: dict) -> None:
    periods = set(rubric_lab["period_params"])
    for s in corpus:
        params = set(re.findall(r"\bmodule_param\s*\(\s*(\w+)", _code(_sources(s))))
        assert rubric_lab["target_param"] in params, f"{s.name}: the lab fixes `target`"
        has_period = bool(params & periods)
        assert has_period == ("period parameter" in s.style), s.name
        if "extra parameter" in s.style:
            assert params - periods - {rubric_lab["target_param"]}, s.name


def test_compat_matches_the_kernel_generation(corpus: list[Realistic]) -> None:
    for s in corpus:
        if "pre-4.11 cputime_t" in s.style:
            assert s.compat, f"{s.name}: cputime_t needs --compat on any profile we have"
        if "5.x one-argument register_shrinker" in s.style and s.profile != "5.10":
            assert s.compat, f"{s.name}: the one-argument register_shrinker needs --compat"
        if "task_cputime" in s.style:
            # Debian's 6.1 is built with VIRT_CPU_ACCOUNTING_GEN: task_cputime() is a function
            # there, not exported to modules (modpost: undefined), even with --compat.
            assert s.profile == "5.10", f"{s.name}: task_cputime() links on 5.10 only"


def test_expectations_follow_the_rubric(corpus: list[Realistic]) -> None:
    """Exercises after the stage are not passed; a check is skipped exactly when one of its
    needs does not pass; strict checks cost nothing else."""
    rubric = load_rubric("tp07")
    problems = []
    for s in corpus:
        for spec in rubric.checks():
            got = s.expected(spec.id, rubric)
            if got == Status.NOT_GRADED:
                continue
            blocked = [n for n in spec.needs if s.expected(n, rubric) != Status.PASSED]
            if blocked and got != Status.SKIPPED:
                problems.append(f"{s.name}: {spec.id} needs {blocked} (not passing): "
                                f"expect it skipped, not {got.value}")
            if got == Status.SKIPPED and not blocked:
                problems.append(f"{s.name}: {spec.id} expected skipped, but its needs "
                                f"{spec.needs} all pass")
            exercise = int(spec.id[2]) if spec.id.startswith("ex") else 0
            if exercise > s.stage and got == Status.PASSED and spec.phase != "final":
                problems.append(f"{s.name}: {spec.id} of exercise {exercise} passes but the "
                                f"student stopped at exercise {s.stage}")
    assert not problems, "\n".join(problems)


def test_bugs_cost_their_own_exercise_only(corpus: list[Realistic]) -> None:
    """A submission with a bug loses, within the exercises it attempted, only checks
    its comments explain; a correct one loses only strict checks and missing sysfs views."""
    rubric = load_rubric("tp07")
    for s in corpus:
        attempted = {c: st for c, st in s.expect.items()
                     if not c.startswith("ex") or int(c[2]) <= s.stage}
        if s.bugs:
            assert attempted, f"{s.name}: a bug that costs nothing"
        else:
            allowed = {c.id for c in rubric.checks() if getattr(c, "strict", False)}
            if "write-only sysfs attribute" in s.style or "no sysfs file" in s.style:
                allowed.add("ex1.page_bound")
            if "kmalloc" in " ".join(s.style):  # skipped exercise 3 on purpose
                allowed |= {c for c in attempted if c.startswith("ex3.")}
            assert set(attempted) <= allowed, (s.name, sorted(set(attempted) - allowed))
        lines = s.path.with_suffix(".toml").read_text().splitlines()
        for cid in s.expect:
            at = next(i for i, line in enumerate(lines) if line.startswith(f'"{cid}"'))
            while at > 0 and lines[at - 1].startswith('"'):  # a group under one comment
                at -= 1
            assert at > 0 and lines[at - 1].lstrip().startswith("#"), \
                f"{s.name}: say why {cid} does not pass, in a comment above it (or its group)"


def test_materialised_submissions_are_taken_in(corpus: list[Realistic], tmp_path: Path) -> None:
    for s in corpus:
        out = materialise(s, tmp_path / "in")
        assert out.exists()
        assert out.name == (s.name if s.archive == "folder" else f"{s.name}.tar.gz")
        sub = intake(out, tmp_path / "work" / s.name)
        assert sub.kind == "source" and sub.module_name == "taskmonitor", s.name
        n_c = sum(1 for f in submission_files(s.path) if f.suffix == ".c")
        assert len(sub.objects) == n_c, (s.name, sub.objects)
        if "nested folder" in s.style:
            assert len(sub.root.relative_to(tmp_path / "work" / s.name / "src").parts) >= 2


def _normalised_lines(text: str) -> list[str]:
    lines = (re.sub(r"\s+", " ", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def _windows(lines: list[str]) -> set[tuple[str, ...]]:
    return {tuple(lines[i:i + WINDOW]) for i in range(len(lines) - WINDOW + 1)}


def test_no_code_copied_from_the_reference(corpus: list[Realistic]) -> None:
    ref = _windows(_normalised_lines((project_root() / REFERENCE_FILE).read_text()))
    shared = []
    for s in corpus:
        for f in submission_files(s.path):
            common = _windows(_normalised_lines((s.path / f).read_text())) & ref
            shared += [f"{s.name}/{f}:\n    " + "\n    ".join(w) for w in sorted(common)[:2]]
    assert not shared, "5-line windows shared with the reference:\n" + "\n".join(shared)


def test_the_copy_detector_sees_a_copy(tmp_path: Path) -> None:
    lines = _normalised_lines((project_root() / REFERENCE_FILE).read_text())
    chunk = "\n".join(f"\t{line}  " for line in lines[200:206])  # re-indented, 6 lines
    assert _windows(_normalised_lines(chunk)) & _windows(lines)


def _minimal(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "taskmonitor.c").write_text("int x;\n")
    p = tmp_path / "s.toml"
    p.write_text(toml)
    return p


@pytest.mark.parametrize(("toml", "error"), [
    ('description = "d"\nstyle = ["lab format"]\nstage = 1\nbug = "x"\n', "unknown keys"),
    ('description = "d"\nstyle = ["lab formt"]\nstage = 1\n', "unknown style tags"),
    ('description = "d"\nstyle = ["lab format"]\nstage = 8\n', "'stage'"),
    ('description = "d"\nstyle = ["lab format"]\nstage = 1\nprofile = "4.9"\n', "unknown profile"),
    ('description = "d"\nstyle = ["lab format"]\nstage = 1\narchive = "zip"\n', "archive"),
    ('description = "d"\nstyle = ["lab format"]\nstage = 1\n[expect]\n"ex9.x" = "failed"\n',
     "unknown check"),
    ('description = "d"\nstyle = ["lab format"]\nstage = 1\n[expect]\n"ex1.freed" = "passed"\n',
     "a passing check is simply not listed"),
    ('description = "d"\nstyle = ["lab format"]\nstage = 1\n[expect]\n"ex1.freed" = "error"\n',
     "expected one of"),
    ('description = "d"\nstyle = ["bug: -PID ignored", "bug: shrinker counts 0"]\nstage = 7\n',
     "one bug at most"),
])
def test_malformed_tomls_are_refused(tmp_path: Path, toml: str, error: str) -> None:
    with pytest.raises(RealisticError, match=error):
        load_realistic_file(_minimal(tmp_path, toml), check_ids())


def test_build_artefacts_are_refused(tmp_path: Path) -> None:
    p = _minimal(tmp_path, 'description = "d"\nstyle = ["lab format"]\nstage = 1\n')
    (tmp_path / "s" / "taskmonitor.ko").write_bytes(b"\x7fELF")
    with pytest.raises(RealisticError, match="build artefacts"):
        load_realistic_file(p, check_ids())


def test_every_style_tag_is_described() -> None:
    assert all(isinstance(v, str) and v for v in STYLES.values())
    assert set(REQUIRED_STYLES) <= set(STYLES)
    assert set(TAG_EVIDENCE) <= set(STYLES)
