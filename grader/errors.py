"""Error hierarchy: whose fault it is decides the exit code and the wording."""
from __future__ import annotations


class GraderError(Exception):
    """Base class. `exit_code` is what the CLI returns; the message says what to do."""

    exit_code = 1


class SubmissionError(GraderError):
    """The submission cannot be taken in (bad archive, no module source): the student's problem."""

    exit_code = 3


class EnvironmentProblem(GraderError):
    """Something missing or broken on this machine (a package, the cache, QEMU): fixable by staff."""

    exit_code = 4


class ConfigError(GraderError):
    """A rubric or kernel profile is invalid or unknown."""

    exit_code = 2


class GuestError(EnvironmentProblem):
    """The guest could not be started or driven for reasons that are not the module's fault."""
