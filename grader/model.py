"""Result model shared by every pipeline stage: statuses, checks, exercises, the whole grade."""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    """Outcome of one check or one stage.

    PASSED / FAILED are the student's module doing or not doing what the check looks for.
    CRASHED / TIMED_OUT are the student's module bringing the guest down or hanging it.
    SKIPPED means a prerequisite failed (the reason says which); it costs the points.
    ERROR means the grader or its environment failed: not the student's fault, never
    silently scored, and it makes the whole grade incomplete.
    NOT_GRADED means the check needs a kernel this grading did not use (the debug kernel):
    its points are neither given nor counted in the maximum, and the report says so.
    """

    PASSED = "passed"
    FAILED = "failed"
    CRASHED = "crashed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    ERROR = "error"
    NOT_GRADED = "not_graded"

    @property
    def is_student_fault(self) -> bool:
        return self in (Status.FAILED, Status.CRASHED, Status.TIMED_OUT)


@dataclass
class Evidence:
    """What a check did and saw: one command (or inspection) with the expectation."""

    what: str  # the command run in the guest, or the inspection made ("symbols of taskmonitor.ko")
    expected: str = ""
    seen: str = ""
    log: list[str] = field(default_factory=list)  # kernel-log lines around a failure


@dataclass
class CheckResult:
    id: str
    exercise: int  # 0 for the global checks
    title: str
    status: Status
    points: float  # awarded
    max_points: float
    visible: bool = True  # shown to students
    reason: str = ""  # one line
    evidence: list[Evidence] = field(default_factory=list)
    duration_s: float = 0.0
    # Which guest the check ran in: "warped" (one vCPU, idle time at no wall cost), "realtime"
    # (two vCPUs on the wall clock), "" for checks that read the .ko or the logs.
    clock: str = ""
    strict: bool = False  # a check of the lab's exact names or formats
    kernel: str = ""  # the kernel profile it ran on ("" for checks that read the .ko)


@dataclass
class ExerciseResult:
    number: int
    title: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.checks if c.status is not Status.NOT_GRADED)


@dataclass
class StageResult:
    """One pipeline stage (intake, build, inspect, run, score, report)."""

    name: str
    status: Status
    duration_s: float
    detail: str = ""


@dataclass
class Diagnostic:
    """A compiler error or warning, with where it was found."""

    severity: str  # "error" | "warning" | "note"
    file: str
    line: int
    column: int
    message: str


@dataclass
class Stamp:
    """Everything needed to reproduce a grade."""

    grader_version: str
    profile: str
    kernel_release: str  # uname -r of the guest kernel
    kernel_package: str  # Debian package version
    qemu_version: str
    accel: str  # "tcg" or "kvm"
    rubric: str
    rubric_digest: str
    submission_digest: str
    backend: str = "host"
    image: str = ""  # id of the `grader image build` image graded in; "" outside one
    # Other kernels some checks ran on (profile -> exact release), e.g. the debug kernel.
    kernels: dict[str, str] = field(default_factory=dict)


@dataclass
class GradeResult:
    submission: str
    stamp: Stamp
    stages: list[StageResult] = field(default_factory=list)
    exercises: list[ExerciseResult] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # plain-words remarks (compat header used, ...)
    build_log: str = ""
    build_command: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path (console log, .ko)
    # What the module was seen to create at insmod (files, slab caches, threads, parameters)
    # and what the lab's probes made of it (which files show the history, ...).
    interface: dict[str, Any] = field(default_factory=dict)
    complete: bool = True  # False when any check or stage ended in ERROR

    @property
    def score(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.exercises)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["score"] = self.score
        d["max_score"] = self.max_score
        for e, ed in zip(self.exercises, d["exercises"], strict=True):
            ed["score"] = e.score
            ed["max_score"] = e.max_score
        return _plain(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GradeResult:
        """Rebuild a result from its JSON form (to re-render a report later)."""
        ex = []
        for e in d.get("exercises", []):
            checks = [
                CheckResult(
                    **{
                        **{k: v for k, v in c.items() if k != "evidence"},
                        "status": Status(c["status"]),
                        "evidence": [Evidence(**ev) for ev in c.get("evidence", [])],
                    }
                )
                for c in e.get("checks", [])
            ]
            ex.append(ExerciseResult(number=e["number"], title=e["title"], checks=checks))
        return cls(
            submission=d["submission"],
            stamp=Stamp(**d["stamp"]),
            stages=[StageResult(**{**s, "status": Status(s["status"])}) for s in d.get("stages", [])],
            exercises=ex,
            diagnostics=[Diagnostic(**x) for x in d.get("diagnostics", [])],
            notes=list(d.get("notes", [])),
            build_log=d.get("build_log", ""),
            build_command=list(d.get("build_command", [])),
            artifacts=dict(d.get("artifacts", {})),
            interface=dict(d.get("interface", {})),
            complete=d.get("complete", True),
        )


def _plain(x: Any) -> Any:
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
