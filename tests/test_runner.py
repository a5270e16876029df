"""The check runner with a fake guest: crashes, hangs, grader bugs and prerequisites map to the
right statuses, a crash costs only the check where it happened, and the lanes of two clocks run
side by side, a check waiting for a result of the other lane (fast, no QEMU)."""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from grader.checks import REGISTRY, Outcome, check
from grader.checks.context import CheckCall, LabProbes, RunContext
from grader.checks.runner import run_checks
from grader.checks.session import CommandHung
from grader.guest import CommandResult, GuestDied
from grader.model import Status
from grader.rubric import CheckSpec, Exercise, load_rubric


class FakeGuest:
    """Answers commands from a script; `crash_on` makes the guest die like a panic would."""

    boot_s = 1.0

    def __init__(self, clock: str = "warped", crash_on: str | None = None):
        self.clock = clock
        self.crash_on = crash_on
        self.console_lines: list[str] = ["[    0.1] booting"]
        self.alive = False
        self.fatal = None
        self.commands: list[str] = []
        self.boot_failures: list[str] = []
        self.release = "fake"

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


class FakeLab(LabProbes):
    pass


# Test-only check kinds (prefixed so they can never clash with a lab's).
@check("test_runs")
def _runs(c: CheckCall) -> Outcome:
    c.guest.sh(c.params["cmd"])
    return Outcome.ok("ran")


@check("test_bug")
def _bug(c: CheckCall) -> Outcome:
    raise ValueError("oops in the grader")


@check("test_hang")
def _hang(c: CheckCall) -> Outcome:
    c.guest.sh("sleep-forever")
    raise AssertionError("not reached")


SEEN: list[tuple[str, float]] = []


@check("test_slow")
def _slow(c: CheckCall) -> Outcome:
    SEEN.append((c.spec.id, time.monotonic()))
    time.sleep(c.params.get("sleep", 0))
    SEEN.append((c.spec.id + ":end", time.monotonic()))
    return Outcome.ok(threading.current_thread().name)


def _rubric(*specs: CheckSpec):
    base = load_rubric("tp07")
    return dataclasses.replace(base, exercises=(Exercise(1, "t", tuple(specs)),))


def _spec(id_: str, kind: str, needs: tuple[str, ...] = (), clock: str = "warped",
          phase: str = "loaded", **params) -> CheckSpec:
    return CheckSpec(id=id_, exercise=1, title=id_, kind=kind, points=2, phase=phase,
                     needs=needs, params=params, clock=clock)


def _run(rubric, guests: dict[str, list[FakeGuest]]) -> RunContext:
    its = {k: iter(v) for k, v in guests.items()}
    run = RunContext(rubric=rubric, module="taskmonitor", ko=None, info=None, hints=None,
                     build=None, boot_guest=lambda _kernel, clock: next(its[clock]))
    run.lab = FakeLab(run)
    return run


def _results(run: RunContext) -> dict:
    return {c.id: c for e in run_checks(run) for c in e.checks}


def test_crash_costs_only_its_check_and_the_next_gets_a_fresh_guest():
    rubric = _rubric(_spec("a", "test_runs", cmd="echo a"),
                     _spec("b", "test_runs", cmd="write-crash"),
                     _spec("c", "test_runs", cmd="echo c"),
                     _spec("d", "clean_log", phase="final"))
    guests = [FakeGuest(crash_on="write-crash"), FakeGuest()]
    run = _run(rubric, {"warped": guests})
    res = _results(run)
    assert [res[k].status for k in "abc"] == [Status.PASSED, Status.CRASHED, Status.PASSED]
    assert res["b"].points == 0 and res["a"].points == 2
    assert "NULL pointer" in res["b"].reason and res["b"].evidence[-1].log
    assert run.boots == 2 and "echo c" in guests[1].commands
    # The crash is counted once: the global log check does not count it again.
    assert res["d"].status is Status.PASSED, res["d"].reason
    assert not any(g.alive for g in guests)
    assert res["a"].clock == "warped" and res["d"].clock == ""


def test_hang_is_timed_out_and_grader_bug_is_error_not_failure():
    rubric = _rubric(_spec("h", "test_hang"), _spec("x", "test_bug"),
                     _spec("after", "test_runs", cmd="echo"))
    run = _run(rubric, {"warped": [FakeGuest(), FakeGuest()]})
    res = _results(run)
    assert res["h"].status is Status.TIMED_OUT and "hung" in res["h"].reason
    assert res["x"].status is Status.ERROR and "grader bug" in res["x"].reason
    assert res["after"].status is Status.PASSED
    assert run.boots == 2  # the hung guest was not reused


def test_failed_prerequisite_skips_with_the_reason():
    rubric = _rubric(_spec("p", "test_hang"), _spec("q", "test_runs", needs=("p",), cmd="x"))
    res = _results(_run(rubric, {"warped": [FakeGuest(), FakeGuest()]}))
    assert res["q"].status is Status.SKIPPED
    assert "needs p" in res["q"].reason and "timed out" in res["q"].reason


def test_lanes_run_side_by_side_and_wait_for_the_results_they_need():
    """The realtime lane's first check needs a warped check: it starts when that one has
    passed; its own slow check overlaps the warped lane's next one."""
    SEEN.clear()
    rubric = _rubric(_spec("w1", "test_slow", sleep=0.3),
                     _spec("r1", "test_slow", needs=("w1",), clock="realtime", sleep=0.6),
                     _spec("w2", "test_slow", sleep=0.6))
    run = _run(rubric, {"warped": [FakeGuest()], "realtime": [FakeGuest("realtime")]})
    res = _results(run)
    at = dict(SEEN)
    assert all(res[k].status is Status.PASSED for k in ("w1", "r1", "w2"))
    assert at["r1"] >= at["w1:end"]  # waited for its need
    assert at["r1"] < at["w2:end"] and at["w2"] < at["r1:end"]  # overlapped
    assert res["r1"].clock == "realtime" and res["w2"].clock == "warped"
    assert res["r1"].reason != res["w2"].reason  # two threads


def test_a_check_of_a_kernel_not_combined_is_not_graded_without_waiting_for_its_needs():
    """Decided before the lanes start: waiting there for a guest check's result would wait
    forever (a grading on the stock kernel only, the debug kernel's checks needing ex1's)."""
    rubric = _rubric(_spec("a", "test_runs", cmd="echo a"),
                     dataclasses.replace(_spec("d", "test_runs", needs=("a",), cmd="x"),
                                         kernel="debug"))
    run = _run(rubric, {"warped": [FakeGuest()]})
    done: list = []
    t = threading.Thread(target=lambda: done.append(_results(run)), daemon=True)
    t.start()
    t.join(30)
    assert done, "the grading waited forever"
    res = done[0]
    assert res["a"].status is Status.PASSED
    assert res["d"].status is Status.NOT_GRADED and res["d"].max_points == 2
    assert "debug" in res["d"].reason


def test_command_hung_is_raised_on_a_killed_command():
    run = _run(_rubric(), {"warped": [FakeGuest()]})
    s = run.session(run.profile, "warped")
    with pytest.raises(CommandHung):
        s.sh("sleep-forever")
    assert s.sh("sleep-forever", allow_timeout=True).timed_out


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError):
        check("test_runs")(lambda c: Outcome.ok(""))
    assert "loads" in REGISTRY
