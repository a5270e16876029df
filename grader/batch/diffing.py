"""`grader diff OLD NEW`: what changed between two batches of a class, and why.

For each student, every check whose status or points changed, and the reason read from the two
reports' stamps: the rubric, the kernel, the grader or the submission changed. A change with none
of these is said plainly: the grading itself gave another verdict (a flaky check).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grader.batch.outputs import read_manifest
from grader.batch.store import Store
from grader.model import GradeResult
from grader.report.common import points

# Stamp fields that explain a regrade, and how to say each.
CAUSES = (
    ("rubric_digest", "rubric changed"),
    ("kernel_release", "kernel changed"),
    ("grader_version", "grader changed"),
    ("submission_digest", "submission changed"),
    ("profile", "kernel profile changed"),
    ("image", "grading image changed"),  # a stamp field of newer graders; absent is ""
)


@dataclass
class CheckChange:
    id: str
    old: str  # "failed 0/2", or "absent"
    new: str


@dataclass
class StudentChange:
    student: str
    old_total: str
    new_total: str
    causes: list[str] = field(default_factory=list)
    checks: list[CheckChange] = field(default_factory=list)
    note: str = ""


@dataclass
class BatchDiff:
    added: list[str] = field(default_factory=list)  # students only in NEW
    removed: list[str] = field(default_factory=list)  # students only in OLD
    changed: list[StudentChange] = field(default_factory=list)
    unchanged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        out = [f"{len(self.changed)} student(s) changed, {self.unchanged} unchanged, "
               f"{len(self.added)} added, {len(self.removed)} removed"]
        for s in self.changed:
            why = ", ".join(s.causes) if s.causes else "nothing in the stamp changed"
            out.append(f"\n{s.student}: {s.old_total} -> {s.new_total} ({why})")
            if s.note:
                out.append(f"  {s.note}")
            for c in s.checks:
                out.append(f"  {c.id}: {c.old} -> {c.new}")
        if self.added:
            out.append("\nonly in NEW: " + ", ".join(self.added))
        if self.removed:
            out.append("\nonly in OLD: " + ", ".join(self.removed))
        return "\n".join(out) + "\n"


def _verdicts(r: GradeResult) -> dict[str, str]:
    return {c.id: f"{c.status.value} {points(c.points)}/{points(c.max_points)}"
            for e in r.exercises for c in e.checks}


def _total(r: GradeResult | None, status: str) -> str:
    return f"{points(r.score)}/{points(r.max_score)}" if r is not None else status


def _load(root: Path) -> tuple[dict[str, dict[str, Any]], Store]:
    m = read_manifest(root)
    return {r["student"]: r for r in m["rows"]}, Store(root)


def diff_batches(old_root: Path, new_root: Path) -> BatchDiff:
    old_rows, old_store = _load(old_root)
    new_rows, new_store = _load(new_root)
    d = BatchDiff(added=sorted(set(new_rows) - set(old_rows)),
                  removed=sorted(set(old_rows) - set(new_rows)))
    for student in sorted(set(old_rows) & set(new_rows)):
        ok, nk = old_rows[student]["key"], new_rows[student]["key"]
        old, new = old_store.result(ok), new_store.result(nk)
        ost = (old_store.record(ok).status if old_store.record(ok) else "missing")
        nst = (new_store.record(nk).status if new_store.record(nk) else "missing")
        change = StudentChange(student, _total(old, ost), _total(new, nst))
        if old is None or new is None:
            if (old is None) != (new is None) or ost != nst:
                change.note = f"result: {ost} -> {nst}"
                d.changed.append(change)
            else:
                d.unchanged += 1
            continue
        ov, nv = _verdicts(old), _verdicts(new)
        for cid in list(ov) + [c for c in nv if c not in ov]:
            a, b = ov.get(cid, "absent"), nv.get(cid, "absent")
            if a != b:
                change.checks.append(CheckChange(cid, a, b))
        if not change.checks and old.complete == new.complete:
            d.unchanged += 1
            continue
        change.causes = [label for name, label in CAUSES
                         if getattr(old.stamp, name, "") != getattr(new.stamp, name, "")]
        if old.complete != new.complete:
            change.note = f"complete: {old.complete} -> {new.complete}"
        d.changed.append(change)
    return d
