"""Shared fixtures. Slow tests build modules and boot real guests; they need `grader setup --all`
(the README's test command runs it first). Outside CI a missing profile skips those tests with the
command to run; in CI (CI=true) it is a failure, so that no test silently stops testing."""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

from grader import session
from grader.errors import EnvironmentProblem

PROFILES = ("5.10", "6.1", "6.12")


def unavailable(msg: str) -> NoReturn:
    """Skip a test whose environment is missing; in CI, fail it instead."""
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def require_env(profile: str) -> session.Environment:
    try:
        return session.prepare(profile, auto_setup=False)
    except EnvironmentProblem as e:
        unavailable(f"profile {profile} not provisioned ({e}); run: ./grader.sh setup --all")


@pytest.fixture(scope="session")
def envs() -> dict[str, session.Environment]:
    """Lazily prepared environments, one per profile."""
    cache: dict[str, session.Environment] = {}

    class _Envs(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> session.Environment:
            cache[key] = require_env(key)
            return cache[key]

    return _Envs()
