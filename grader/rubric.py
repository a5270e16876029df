"""Rubrics: TOML files under rubrics/ loaded into frozen dataclasses, validated up front.

This module knows nothing of the check functions: grader.checks resolves a rubric's `kind`s
against the registry of its lab (grader.checks.load_lab), so there is no import cycle.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.errors import ConfigError
from grader.limits import DEFAULT as DEFAULT_LIMITS
from grader.limits import Limits
from grader.profiles import project_root

PHASES = ("static", "loaded", "unloaded", "final")
CLOCKS = ("warped", "realtime")
_CHECK_KEYS = {"id", "title", "kind", "points", "phase", "visible", "needs", "params", "strict",
               "clock", "kernel"}


@dataclass(frozen=True)
class CheckSpec:
    id: str
    exercise: int
    title: str
    kind: str  # name of a check function registered by the lab
    points: float
    phase: str
    visible: bool = True  # shown to students
    needs: tuple[str, ...] = ()  # physical prerequisites: checks that must have passed
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    strict: bool = False  # a check of the lab's exact names or formats: nothing may need it
    clock: str = "warped"  # for loaded/unloaded checks: which guest they run in
    kernel: str = ""  # a kernel profile the check needs ("debug"); "" for the grading's own

    @property
    def in_guest(self) -> bool:
        return self.phase in ("loaded", "unloaded")


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    checks: tuple[CheckSpec, ...]


@dataclass(frozen=True)
class Rubric:
    name: str
    title: str
    lab: str  # the package of probes and check kinds: grader.labs.<lab>
    module: str  # the module's expected name
    compat: bool
    settings: dict[str, Any] = field(hash=False, compare=False)  # the [lab] table, as written
    limits: Limits = DEFAULT_LIMITS
    pairs: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    # Kernel profiles whose checks a grading on another profile runs too, in guests of their
    # own ([kernels] combine): the debug kernel's checks in a grading on 6.1.
    combine: tuple[str, ...] = ()
    exercises: tuple[Exercise, ...] = ()
    digest: str = ""
    path: Path | None = None

    def checks(self) -> list[CheckSpec]:
        return [c for e in self.exercises for c in e.checks]

    def check(self, check_id: str) -> CheckSpec:
        for c in self.checks():
            if c.id == check_id:
                return c
        raise KeyError(check_id)

    def max_points(self, up_to: int | None = None) -> float:
        return sum(c.points for c in self.checks() if up_to is None or c.exercise <= up_to)

    def kernels(self) -> list[str]:
        """The kernel profiles its checks name (besides the grading's own)."""
        return sorted({c.kernel for c in self.checks() if c.kernel})


def rubric_dir() -> Path:
    return project_root() / "rubrics"


def load_rubric(name_or_path: str = "tp07") -> Rubric:
    path = Path(name_or_path)
    if not path.is_file():
        path = rubric_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in rubric_dir().glob("*.toml")))
        raise ConfigError(f"unknown rubric {name_or_path!r}; valid rubrics: {names} (or a path)")
    raw = path.read_bytes()
    try:
        d = tomllib.loads(raw.decode())
        rubric = _parse(d, path, hashlib.sha256(raw).hexdigest())
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"rubric {path} is invalid: {e}") from e
    from grader.checks import resolve  # the lab's check kinds, validated against the rubric

    resolve(rubric)
    return rubric


def _spec(c: dict[str, Any], exercise: int) -> CheckSpec:
    unknown = set(c) - _CHECK_KEYS
    if unknown:
        raise ValueError(f"check {c.get('id', '?')}: unknown keys {sorted(unknown)}")
    spec = CheckSpec(
        id=c["id"], exercise=exercise, title=c["title"], kind=c["kind"],
        points=float(c["points"]), phase=c["phase"], visible=bool(c.get("visible", True)),
        needs=tuple(c.get("needs", ())), params=dict(c.get("params", {})),
        strict=bool(c.get("strict", False)), clock=str(c.get("clock", "warped")),
        kernel=str(c.get("kernel", "")),
    )
    if spec.phase not in PHASES:
        raise ValueError(f"check {spec.id}: phase must be one of {PHASES}")
    if spec.clock not in CLOCKS:
        raise ValueError(f"check {spec.id}: clock must be one of {CLOCKS}")
    return spec


def _parse(d: dict[str, Any], path: Path, digest: str) -> Rubric:
    exercises = []
    seen: dict[str, CheckSpec] = {}
    for e in d["exercises"]:
        checks = []
        for c in e["checks"]:
            spec = _spec(c, int(e["number"]))
            if spec.id in seen:
                raise ValueError(f"check {spec.id} is defined twice")
            for n in spec.needs:
                need = seen.get(n)
                if need is None:
                    raise ValueError(f"check {spec.id} needs {n!r}, which is not defined before it")
                if PHASES.index(need.phase) > PHASES.index(spec.phase):
                    raise ValueError(f"check {spec.id} needs {n!r}, which runs in a later phase")
                if need.strict:
                    raise ValueError(f"check {spec.id} needs {n!r}, a strict format or naming "
                                     "check: such a check costs its own points and is never a "
                                     "prerequisite")
            seen[spec.id] = spec
            checks.append(spec)
        exercises.append(Exercise(int(e["number"]), e["title"], tuple(checks)))
    settings = dict(d.get("settings", {}))
    return Rubric(
        name=d["name"], title=d["title"], lab=str(d["lab"]), module=str(settings["module"]),
        compat=bool(d.get("compat", False)), settings=settings,
        limits=DEFAULT_LIMITS.with_overrides(d.get("limits", {})),
        pairs=tuple((tuple(p["setup"]), tuple(p["teardown"])) for p in d.get("pairs", [])),
        combine=tuple(d.get("kernels", {}).get("combine", ())),
        exercises=tuple(exercises), digest=digest, path=path,
    )
