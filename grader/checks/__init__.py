"""Checks: small registered units, each a function of (context, spec) returning an Outcome."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import Context
    from grader.rubric import CheckSpec


@dataclass
class Outcome:
    status: Status
    reason: str
    evidence: list[Evidence] = field(default_factory=list)

    @classmethod
    def ok(cls, reason: str) -> Outcome:
        return cls(Status.PASSED, reason)

    @classmethod
    def fail(cls, reason: str, expected: str = "", seen: str = "", what: str = "") -> Outcome:
        ev = [Evidence(what=what or "observation", expected=expected, seen=seen)] if (expected or seen) else []
        return cls(Status.FAILED, reason, ev)

    @classmethod
    def skip(cls, reason: str) -> Outcome:
        return cls(Status.SKIPPED, reason)


CheckFn = Callable[["Context", "CheckSpec"], Outcome]
REGISTRY: dict[str, CheckFn] = {}


def check(kind: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under the name rubrics use in `kind`."""

    def deco(fn: CheckFn) -> CheckFn:
        if kind in REGISTRY:
            raise ValueError(f"check kind {kind!r} registered twice")
        REGISTRY[kind] = fn
        return fn

    return deco


# Importing the modules registers their checks.
from grader.checks import behaviour, static  # noqa: E402,F401
