"""Checks: small registered units, each a function of a CheckCall returning an Outcome.

Generic check kinds (any module lab: builds, license, APIs, setup/teardown, loads, unloads, clean
kernel log) live in this package; a lab's own kinds and probes live in grader/labs/<lab>/ and
are registered when a rubric naming that lab is loaded (`resolve`).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from grader.errors import ConfigError
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall
    from grader.rubric import Rubric


@dataclass
class Outcome:
    status: Status
    reason: str
    evidence: list[Evidence] = field(default_factory=list)

    @classmethod
    def ok(cls, reason: str, *evidence: Evidence) -> Outcome:
        return cls(Status.PASSED, reason, list(evidence))

    @classmethod
    def fail(cls, reason: str, expected: str = "", seen: str = "", what: str = "") -> Outcome:
        ev = [Evidence(what=what or "observation", expected=expected, seen=seen)] if (expected or seen) else []
        return cls(Status.FAILED, reason, ev)

    @classmethod
    def skip(cls, reason: str) -> Outcome:
        return cls(Status.SKIPPED, reason)


CheckFn = Callable[["CheckCall"], Outcome]
REGISTRY: dict[str, CheckFn] = {}


def check(kind: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under the name rubrics use in `kind`."""

    def deco(fn: CheckFn) -> CheckFn:
        if kind in REGISTRY:
            raise ValueError(f"check kind {kind!r} registered twice")
        REGISTRY[kind] = fn
        return fn

    return deco


def load_lab(name: str) -> ModuleType:
    """The lab's package (grader.labs.<name>): importing it registers its check kinds. It must
    define `make_probes(run) -> grader.checks.context.LabProbes`."""
    try:
        mod = importlib.import_module(f"grader.labs.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("grader.labs"):
            raise ConfigError(f"unknown lab {name!r}: no package grader/labs/{name}/") from e
        raise
    if not hasattr(mod, "make_probes"):
        raise ConfigError(f"lab {name!r} defines no make_probes()")
    return mod


def resolve(rubric: Rubric) -> ModuleType:
    """Load the rubric's lab and check that every `kind` it names is registered."""
    lab = load_lab(rubric.lab)
    for spec in rubric.checks():
        if spec.kind not in REGISTRY:
            raise ConfigError(f"rubric {rubric.name}: check {spec.id} names unknown kind "
                              f"{spec.kind!r} (known: {', '.join(sorted(REGISTRY))})")
    return lab


# The generic kinds, available to every lab.
from grader.checks import lifecycle, static  # noqa: E402,F401
