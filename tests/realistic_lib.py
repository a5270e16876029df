"""Realistic submissions (tests/realistic/): loading, validating, materialising.

Each submission is a folder `tests/realistic/<name>/`, exactly as a student handed it in, written
from scratch (not derived from the reference), and a `tests/realistic/<name>.toml` that says who
wrote it in what style, the last exercise attempted, the kernel profile, and the expected status
of every check that does not pass (see tests/realistic/README.md). Materialising writes the
submission where the caller says (a pytest tmp dir, never the repository): the folder as it is,
or a tar.gz of it as `tar czf <name>.tar.gz <name>/` makes it.
"""
from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from variants_lib import EXPECTABLE, write_targz

from grader.model import Status
from grader.profiles import available_profiles
from grader.rubric import Rubric, load_rubric

REALISTIC_DIR = Path(__file__).parent / "realistic"
ARCHIVES = ("folder", "tar.gz")
_KEYS = {"description", "style", "stage", "profile", "compat", "archive", "expect",
         "grader_problem"}
# Files a student hands in; anything else in a submission folder is a mistake of the corpus
# (a build artefact left behind by hand testing, an editor's backup).
SOURCE_SUFFIXES = {".c", ".h"}
OTHER_FILES = {"Makefile", "Kbuild", "README.txt", "README.md", "README", "AUTHORS"}

# The style tags a submission may carry: tag -> what it means. A closed list, so that the corpus
# test can say which styles are covered and a typo is an error, not a new style.
STYLES: dict[str, str] = {
    # how a sample line looks
    "lab format": "lines 'pid N usr N sys N' as in the lab's example",
    "extra fields": "lines with more fields: 'pid 94 usr 260000000 sys 16000000 vm_total 245 ...'",
    "pid colon layout": "another layout: 'pid 85 : 12 usr 3 sys'",
    "bracket labels": "'[1234] utime=5 stime=2'",
    "values in ns": "CPU times printed in nanoseconds",
    "values in ms": "CPU times printed in milliseconds",
    "values in jiffies": "CPU times printed in jiffies",
    # names and places
    "cache named after another struct": "KMEM_CACHE() of a struct not called task_sample",
    "kmem_cache_create name": "kmem_cache_create(\"some_name\", ...) instead of KMEM_CACHE()",
    "debugfs directory": "a debugfs directory taskmonitor/ holding the history file",
    "sysfs kobject directory": "/sys/kernel/taskmonitor/ a kobject directory holding attributes",
    "write-only sysfs attribute": "/sys/kernel/taskmonitor takes start/stop, history in debugfs",
    "no sysfs file": "no sysfs file at all: the history is in debugfs only",
    # other correct APIs
    "mempool_init_slab_pool": "a mempool_t embedded in a struct, mempool_init_slab_pool()",
    "mempool_init": "mempool_init() with explicit alloc/free functions, mempool_exit()",
    "mempool_create": "mempool_create() with mempool_alloc_slab/mempool_free_slab",
    "mempool_create_slab_pool": "mempool_create_slab_pool() on the module's cache",
    "mempool_create_kmalloc_pool": "a kmalloc-backed mempool (no slab cache of its own)",
    "seq_operations": "debugfs through seq_open() and start/next/stop/show",
    "single_open": "debugfs through single_open() (or DEFINE_SHOW_ATTRIBUTE)",
    "kstrtoint_from_user": "the write handler parses with kstrtoint_from_user()",
    "copy_from_user": "the write handler copies with copy_from_user()",
    "ssleep": "the kthread sleeps with ssleep()",
    "msleep": "the kthread sleeps with msleep()/msleep_interruptible()",
    "schedule_timeout_interruptible": "the kthread sleeps with schedule_timeout_interruptible()",
    "schedule_timeout": "the kthread sets its state and calls schedule_timeout() (4.x style)",
    "get_pid_task": "the task is found with get_pid_task()",
    "pid_task": "the task is found with pid_task() under rcu_read_lock()",
    "task_struct reference": "the module keeps a reference on the task_struct itself",
    "kobject_create_and_add": "kobject_create_and_add() + sysfs_create_group()",
    "sysfs_emit": "sysfs output written with sysfs_emit()/sysfs_emit_at()",
    "scnprintf": "sysfs output written with scnprintf()/snprintf()",
    "atomic counter": "the shrinker counts with an atomic, not under the mutex",
    "bug: spinlock instead of mutex": "the history is protected by a spinlock, not the mutex the lab asks for",
    "global sample list": "one list of samples for every monitored process, each with its PID",
    # sampling period and parameters
    "no period parameter, 1 Hz": "no period parameter, one sample per second",
    "no period parameter, 0.1 Hz": "no period parameter, one sample every 10 seconds",
    "period parameter": "a period parameter the grader can set (in milliseconds)",
    "extra parameter": "one more module parameter with another name than target",
    # layout
    "several .c files": "the module is made of several .c files and a .h",
    "student Makefile": "a Makefile with obj-m (and taskmonitor-objs) as students write it",
    "nested folder": "the sources one folder down (rendu/ ...)",
    "readme": "a README of the student's own",
    "french comments": "comments and messages in French",
    # kernel generations
    "5.x one-argument register_shrinker": "register_shrinker(&s) as before 6.0",
    "static struct shrinker": "a statically initialised struct shrinker",
    "6.x register_shrinker": "register_shrinker(&s, \"name\") as in 6.0-6.6",
    "pre-4.11 cputime_t": "CPU times declared as cputime_t (gone since 4.11)",
    "only linux/sched.h": "includes <linux/sched.h> only, as before the 4.11 split",
    "task_cputime_adjusted": "CPU times read with task_cputime_adjusted()",
    "task_cputime": "CPU times read with task_cputime()",
    "task fields": "CPU times read from task->utime / task->stime directly",
    # bugs, one at most per submission
    "bug: cache destroyed before mempool": "kmem_cache_destroy() before mempool_destroy()",
    "bug: shrinker counts 0": "count_objects always returns 0: the shrinker is never scanned",
    "bug: sysfs not bounded": "sprintf() in a loop: the sysfs output overflows PAGE_SIZE",
    "bug: seq_file off-by-one": "seq_file start() resumes one record too far",
    "bug: write accepts garbage": "the write handler accepts 'abc' and '0' without an error",
    "bug: -PID ignored": "writing -PID is accepted and does nothing",
    "bug: samples leaked at exit": "the exit function never frees the history",
    "bug: kthread not stopped": "the exit function never stops the kthread",
    "bug: show without reference": "sysfs prints samples after unlocking, without a reference",
    "bug: exited task crashes": "no NULL check after pid_task(): an exited target oopses",
}


class RealisticError(Exception):
    """A realistic submission's TOML is malformed, or its folder does not match it."""


@dataclass(frozen=True)
class Realistic:
    name: str
    description: str
    style: tuple[str, ...]
    stage: int  # the last exercise the student attempted
    path: Path  # the submission folder, as handed in
    profile: str = "6.1"
    compat: bool = False
    archive: str = "folder"
    expect: dict[str, Status] = field(default_factory=dict)  # check id -> non-passing status
    # check id (or "*") -> why the grader does not (yet) give the expected status
    grader_problem: dict[str, str] = field(default_factory=dict)

    def expected(self, check_id: str, rubric: Rubric | None = None) -> Status:
        """The expected status; the corpus is graded on its own kernel only (--no-combine),
        so a check of another kernel (the debug kernel's) is not graded."""
        if rubric is not None:
            spec = rubric.check(check_id)
            if spec.kernel and spec.kernel != self.profile:
                return Status.NOT_GRADED
        return self.expect.get(check_id, Status.PASSED)

    @property
    def bugs(self) -> list[str]:
        return [s for s in self.style if s.startswith("bug: ")]

    def points_lost(self, rubric: Rubric) -> float:
        return sum(rubric.check(c).points for c in self.expect)

    def affected_by_problems(self, rubric: Rubric) -> set[str] | None:
        """The checks a known grader problem may change: those listed and every check that
        needs one of them (transitively); None when the whole grade is affected ("*")."""
        if "*" in self.grader_problem:
            return None
        out = set(self.grader_problem)
        for spec in rubric.checks():  # in rubric order: a check's needs come before it
            if out & set(spec.needs):
                out.add(spec.id)
        return out


def _statuses(where: str, table: object, ids: set[str]) -> dict[str, Status]:
    if not isinstance(table, dict):
        raise RealisticError(f"{where}: [expect] must be a table of check id -> status")
    out: dict[str, Status] = {}
    for cid, st in table.items():
        if cid not in ids:
            raise RealisticError(f"{where}: [expect] names unknown check {cid!r}")
        try:
            status = Status(st)
        except ValueError:
            status = None
        if status not in EXPECTABLE:
            raise RealisticError(f"{where}: [expect] {cid} = {st!r}: expected one of "
                                 f"{sorted(s.value for s in EXPECTABLE)} (a passing check is "
                                 "simply not listed)")
        out[cid] = status
    return out


def submission_files(folder: Path) -> list[Path]:
    """Every file of a submission folder, relative to it, sorted."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def check_ids(rubric: Rubric | None = None) -> set[str]:
    return {c.id for c in (rubric or load_rubric("tp07")).checks()}


def load_realistic_file(path: Path, ids: set[str] | None = None) -> Realistic:
    """One submission; `ids` are the rubric's check ids (default: those of rubrics/tp07)."""
    ids = check_ids() if ids is None else ids
    where = path.name
    try:
        d = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RealisticError(f"{where}: {e}") from e
    unknown = set(d) - _KEYS
    if unknown:
        raise RealisticError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    if not isinstance(d.get("description"), str) or not d["description"].strip():
        raise RealisticError(f"{where}: 'description' (a non-empty string) is required")
    style = d.get("style")
    if not isinstance(style, list) or not style or not all(isinstance(s, str) for s in style):
        raise RealisticError(f"{where}: 'style' (a non-empty list of tags) is required")
    bad = [s for s in style if s not in STYLES]
    if bad:
        raise RealisticError(f"{where}: unknown style tags {bad}; add them to STYLES in "
                             "tests/realistic_lib.py with their meaning if they are new")
    if len([s for s in style if s.startswith("bug: ")]) > 1:
        raise RealisticError(f"{where}: a submission has one bug at most")
    stage = d.get("stage")
    if not isinstance(stage, int) or not 1 <= stage <= 7:
        raise RealisticError(f"{where}: 'stage' (the last exercise attempted, 1..7) is required")
    profile = str(d.get("profile", "6.1"))
    if profile not in available_profiles():
        raise RealisticError(f"{where}: unknown profile {profile!r} "
                             f"(known: {available_profiles()})")
    compat = d.get("compat", False)
    if not isinstance(compat, bool):
        raise RealisticError(f"{where}: 'compat' must be true or false")
    archive = d.get("archive", "folder")
    if archive not in ARCHIVES:
        raise RealisticError(f"{where}: archive must be one of {ARCHIVES}, not {archive!r}")
    expect = _statuses(where, d.get("expect", {}), ids)
    problems = d.get("grader_problem", {})
    if not isinstance(problems, dict) or not all(isinstance(v, str) and v.strip()
                                                 for v in problems.values()):
        raise RealisticError(f"{where}: [grader_problem] maps a check id to a reason")
    for cid in problems:
        if cid != "*" and cid not in ids:
            raise RealisticError(f"{where}: [grader_problem] names unknown check {cid!r}")
    folder = path.with_suffix("")
    if not folder.is_dir():
        raise RealisticError(f"{where}: the submission folder {folder.name}/ is missing")
    files = submission_files(folder)
    if not any(f.suffix == ".c" for f in files):
        raise RealisticError(f"{where}: {folder.name}/ holds no .c file")
    stray = [str(f) for f in files if f.suffix not in SOURCE_SUFFIXES and f.name not in OTHER_FILES]
    if stray:
        raise RealisticError(f"{where}: {folder.name}/ holds files a student would not hand in "
                             f"(build artefacts?): {stray}")
    return Realistic(name=path.stem, description=d["description"].strip(), style=tuple(style),
                     stage=stage, path=folder, profile=profile, compat=compat, archive=archive,
                     expect=expect, grader_problem=dict(problems))


def load_realistic(directory: Path = REALISTIC_DIR, ids: set[str] | None = None
                   ) -> list[Realistic]:
    """Every realistic submission, sorted by name."""
    ids = check_ids() if ids is None else ids
    return [load_realistic_file(p, ids) for p in sorted(directory.glob("*.toml"))]


def materialise(sub: Realistic, dest: Path) -> Path:
    """Write the submission under `dest` as the student handed it in; returns what to grade:
    a copy of the folder, or `<name>.tar.gz` holding `<name>/...`."""
    dest.mkdir(parents=True, exist_ok=True)
    if sub.archive == "folder":
        out = dest / sub.name
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(sub.path, out)
        return out
    files = {f"{sub.name}/{rel.as_posix()}": (sub.path / rel).read_text()
             for rel in submission_files(sub.path)}
    return write_targz(files, dest / f"{sub.name}.tar.gz")
