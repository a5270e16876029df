"""Rubrics: TOML files under rubrics/ loaded into frozen dataclasses, validated up front."""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.errors import ConfigError
from grader.profiles import project_root

PHASES = ("static", "loaded", "unloaded", "final")


@dataclass(frozen=True)
class CheckSpec:
    id: str
    exercise: int
    title: str
    kind: str  # name of a registered check function
    points: float
    phase: str
    visible: bool = True
    needs: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    checks: tuple[CheckSpec, ...]


@dataclass(frozen=True)
class Rubric:
    name: str
    title: str
    module: str
    compat: bool
    target_param: str
    period_params: tuple[str, ...]
    period_value: int
    history_wait_s: float
    sysfs: str
    debugfs: str
    slab_cache: str
    line_format: str
    page_size: int
    timeouts: dict[str, float] = field(hash=False, compare=False)
    pairs: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
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
        return _parse(d, path, hashlib.sha256(raw).hexdigest())
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"rubric {path} is invalid: {e!r}") from e


def _parse(d: dict[str, Any], path: Path, digest: str) -> Rubric:
    from grader.checks import REGISTRY  # the check functions the rubric may name

    mp, paths, fmt = d["module_params"], d["paths"], d["format"]
    exercises = []
    phase_of: dict[str, str] = {}
    for e in d["exercises"]:
        checks = []
        for c in e["checks"]:
            spec = CheckSpec(
                id=c["id"], exercise=int(e["number"]), title=c["title"], kind=c["kind"],
                points=float(c["points"]), phase=c["phase"], visible=bool(c.get("visible", True)),
                needs=tuple(c.get("needs", ())), params=dict(c.get("params", {})),
            )
            if spec.kind not in REGISTRY:
                raise ValueError(f"check {spec.id}: unknown kind {spec.kind!r} "
                                 f"(known: {', '.join(sorted(REGISTRY))})")
            if spec.phase not in PHASES:
                raise ValueError(f"check {spec.id}: phase must be one of {PHASES}")
            for n in spec.needs:
                if n not in phase_of:
                    raise ValueError(f"check {spec.id} needs {n!r}, which is not defined before it")
                if PHASES.index(phase_of[n]) > PHASES.index(spec.phase):
                    raise ValueError(f"check {spec.id} needs {n!r}, which runs in a later phase")
            phase_of[spec.id] = spec.phase
            checks.append(spec)
        exercises.append(Exercise(int(e["number"]), e["title"], tuple(checks)))
    return Rubric(
        name=d["name"], title=d["title"], module=d["module"], compat=bool(d.get("compat", False)),
        target_param=mp["target"], period_params=tuple(mp.get("period", ())),
        period_value=int(mp.get("period_value", 10)),
        history_wait_s=float(mp.get("history_wait_s", 30)),
        sysfs=paths["sysfs"], debugfs=paths["debugfs"], slab_cache=paths["slab_cache"],
        line_format=fmt["line"], page_size=int(fmt.get("page_size", 4096)),
        timeouts={k: float(v) for k, v in d.get("timeouts", {}).items()},
        pairs=tuple((tuple(p["setup"]), tuple(p["teardown"])) for p in d.get("pairs", [])),
        exercises=tuple(exercises), digest=digest, path=path,
    )
