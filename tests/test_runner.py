"""The check runner with a fake guest: crashes, hangs, grader bugs and prerequisites map to the
right statuses, and a crash costs only the check where it happened (fast, no QEMU)."""
from __future__ import annotations

import dataclasses

import pytest

from grader.checks import REGISTRY, Outcome, check
from grader.checks.context import CommandHung, Context
from grader.checks.runner import run_checks
from grader.guest import CommandResult, GuestDied
from grader.model import Status
from grader.rubric import CheckSpec, Exercise, load_rubric


class FakeGuest:
    """Answers commands from a script; `crash_on` makes the guest die like a panic would."""

    boot_s = 1.0
    boot_failures: list[str] = []

    def __init__(self, crash_on: str | None = None):
        self.crash_on = crash_on
        self.console_lines: list[str] = ["[    0.1] booting"]
        self.alive = False
        self.fatal = None
        self.commands: list[str] = []

    def start(self) -> FakeGuest:
        self.alive = True
        return self

    def close(self) -> None:
        self.alive = False

    def run(self, command: str, timeout: float = 10.0) -> CommandResult:
        self.commands.append(command)
        if self.crash_on and self.crash_on in command:
            self.console_lines += ["[    2.0] BUG: kernel NULL pointer dereference, address: 0",
                                   "[    2.0] Kernel panic - not syncing: Fatal exception"]
            self.alive = False
            raise GuestDied("kernel null_deref: BUG: kernel NULL pointer dereference",
                            self.console_lines[-5:])
        if command.startswith("sleep-forever"):
            return CommandResult(command, 137, "", "", timeout, timed_out=True)
        return CommandResult(command, 0, "ok\n", "", 0.01)

    def spawn(self, command: str) -> int:
        return 100

    def insmod(self, module, params=None, timeout=30.0) -> CommandResult:
        return self.run(f"insmod {module}")


# Test-only check kinds (prefixed so they can never clash with the rubric's).
@check("test_runs")
def _runs(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.sh(spec.params["cmd"])
    return Outcome.ok("ran")


@check("test_bug")
def _bug(ctx: Context, spec: CheckSpec) -> Outcome:
    raise ValueError("oops in the grader")


@check("test_hang")
def _hang(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.sh("sleep-forever")
    raise AssertionError("not reached")


def _rubric(*specs: CheckSpec):
    base = load_rubric("tp07")
    return dataclasses.replace(base, exercises=(Exercise(1, "t", tuple(specs)),))


def _spec(id_: str, kind: str, needs: tuple[str, ...] = (), **params) -> CheckSpec:
    return CheckSpec(id=id_, exercise=1, title=id_, kind=kind, points=2, phase="loaded",
                     needs=needs, params=params)


def _ctx(rubric, guests: list[FakeGuest]) -> Context:
    it = iter(guests)
    return Context(rubric=rubric, module="taskmonitor", ko=None, info=None, hints=None,
                   build=None, boot_guest=lambda: next(it))


def test_crash_costs_only_its_check_and_the_next_gets_a_fresh_guest():
    rubric = _rubric(_spec("a", "test_runs", cmd="echo a"),
                     _spec("b", "test_runs", cmd="write-crash"),
                     _spec("c", "test_runs", cmd="echo c"),
                     _spec("d", "clean_log"))
    guests = [FakeGuest(crash_on="write-crash"), FakeGuest()]
    ctx = _ctx(rubric, guests)
    res = {c.id: c for c in run_checks(ctx, rubric)[0].checks}
    assert [res[k].status for k in "abc"] == [Status.PASSED, Status.CRASHED, Status.PASSED]
    assert res["b"].points == 0 and res["a"].points == 2
    assert "NULL pointer" in res["b"].reason and res["b"].evidence[-1].log
    assert ctx.boots == 2 and "echo c" in guests[1].commands
    # The crash is counted once: the global log check does not count it again.
    assert res["d"].status is Status.PASSED, res["d"].reason
    assert not any(g.alive for g in guests)


def test_hang_is_timed_out_and_grader_bug_is_error_not_failure():
    rubric = _rubric(_spec("h", "test_hang"), _spec("x", "test_bug"),
                     _spec("after", "test_runs", cmd="echo"))
    ctx = _ctx(rubric, [FakeGuest(), FakeGuest()])
    res = {c.id: c for c in run_checks(ctx, rubric)[0].checks}
    assert res["h"].status is Status.TIMED_OUT and "hung" in res["h"].reason
    assert res["x"].status is Status.ERROR and "grader bug" in res["x"].reason
    assert res["after"].status is Status.PASSED
    assert ctx.boots == 2  # the hung guest was not reused


def test_failed_prerequisite_skips_with_the_reason():
    rubric = _rubric(_spec("p", "test_hang"), _spec("q", "test_runs", needs=("p",), cmd="x"))
    ctx = _ctx(rubric, [FakeGuest(), FakeGuest()])
    res = {c.id: c for c in run_checks(ctx, rubric)[0].checks}
    assert res["q"].status is Status.SKIPPED
    assert "needs p" in res["q"].reason and "timed out" in res["q"].reason


def test_command_hung_is_raised_on_a_killed_command():
    ctx = _ctx(_rubric(), [FakeGuest()])
    with pytest.raises(CommandHung):
        ctx.sh("sleep-forever")
    assert ctx.sh("sleep-forever", allow_timeout=True).timed_out


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError):
        check("test_runs")(lambda c, s: Outcome.ok(""))
    assert "loads" in REGISTRY
