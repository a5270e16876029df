"""Runs a rubric's checks: static ones first, then each clock's guest checks in its own lane (the
lanes run side by side: a check that needs another lane's result waits for it), then the final
ones. Crashes and hangs become statuses, never a grader failure; a crash costs the check where it
happened and the next check of that lane gets a fresh guest."""
from __future__ import annotations

import contextlib
import threading
import time
import traceback

from grader import klog
from grader.checks import REGISTRY, Outcome
from grader.checks.context import CheckCall, RunContext
from grader.checks.session import CommandHung, GuestSession, NotLoaded
from grader.errors import EnvironmentProblem
from grader.guest import GuestDied, GuestHung
from grader.model import CheckResult, Evidence, ExerciseResult, Status
from grader.rubric import PHASES, CheckSpec


def _skip_reason(run: RunContext, spec: CheckSpec) -> str | None:
    for need in spec.needs:
        r = run.result(need)
        if r is None or r.status is not Status.PASSED:
            st = r.status.value.replace("_", " ") if r else "did not run"
            return f"needs {need} ({r.title if r else need}), which {st}"
    return None


def _execute(call: CheckCall) -> Outcome:
    """The check function, with the guest's death or hang turned into the check's status."""
    spec, s = call.spec, call.session
    try:
        out = REGISTRY[spec.kind](call)
        if s is None:
            return out
        g = s.guest
        if out.status is Status.FAILED and g is not None and g.alive and g.fatal is None:
            # A failure may be the first sign of a dying kernel (commands fail while the oops
            # is still being printed): give a panic half a second to show itself.
            g.run("sleep 0.5", 10)
        if g is not None and (g.fatal is not None or not g.alive):
            # The kernel died during the check, whatever the check concluded from the
            # commands that failed meanwhile: the check is CRASHED, counted once.
            raise GuestDied(g._death_reason(), g.recent_console(80))
        if out.status is Status.FAILED and g is not None and g is s.check_guest:
            during = s.console_since(s.check_mark)[-40:]
            if during and not any(ev.log for ev in out.evidence):
                out.evidence.append(Evidence("kernel log during the check", log=during))
        if s.wedged:
            s.discard()
        return out
    except GuestDied as e:
        lines = e.log
        idx = next((i for i, ln in enumerate(lines)
                    if (c := klog.classify(ln)) and c[1] == "fatal"), max(0, len(lines) - 30))
        if s is not None:
            s.discard(crashed=True)
        return Outcome(Status.CRASHED, f"the module crashed the kernel: {e.reason}",
                       [Evidence("kernel log", "no crash", e.reason, klog.excerpt(lines, idx, 5, 40))])
    except GuestHung as e:
        if s is not None:
            s.discard(crashed=True)
        return Outcome(Status.TIMED_OUT, f"the guest stopped answering: {e.reason}",
                       [Evidence("kernel log", "an answer", e.reason, e.log[-30:])])
    except CommandHung as e:
        if s is not None:
            s.discard()
        return Outcome(Status.TIMED_OUT, f"the module hung a command: {e}")
    except NotLoaded as e:
        return Outcome(Status.FAILED, f"the module did not load: {e}")
    except EnvironmentProblem as e:
        if s is not None:
            s.discard()
        return Outcome(Status.ERROR, f"grader environment: {e}")
    except Exception as e:  # a bug of ours must not cost the student: say so, go on
        if s is not None:
            s.discard()
        return Outcome(Status.ERROR, f"grader bug in {spec.kind}: {e!r}",
                       [Evidence("traceback", seen=traceback.format_exc()[-3000:])])


def run_one(run: RunContext, spec: CheckSpec, session: GuestSession | None) -> CheckResult:
    t0 = time.monotonic()
    if session is not None:
        session.evidence = []
    kernel = run.kernel_of(spec)
    # Not graded on this kernel: decided at once, without waiting for its needs (run before
    # the lanes start, it would wait for them forever).
    reason = _skip_reason(run, spec) if kernel is not None else None
    if kernel is None:
        why = run.unavailable.get(spec.kernel) or (
            f"grade with `--profile {spec.kernel}`, or with a rubric that combines it")
        out = Outcome(Status.NOT_GRADED, f"needs the {spec.kernel} kernel: {why}")
    elif reason:
        out = Outcome.skip(reason)
    else:
        run.progress(f"{spec.id}: {spec.title}" + (f" [{session.clock}]" if session else ""))
        if session is not None:
            session.check_guest, session.check_mark = session.guest, session.console_mark()
        out = _execute(CheckCall(spec, run, session))
    evidence = [*(session.evidence if session else []), *out.evidence]
    result = CheckResult(
        id=spec.id, exercise=spec.exercise, title=spec.title, status=out.status,
        points=spec.points if out.status is Status.PASSED else 0.0, max_points=spec.points,
        visible=spec.visible, reason=out.reason, evidence=evidence,
        duration_s=round(time.monotonic() - t0, 3), clock=session.clock if session else "",
        strict=spec.strict, kernel=(kernel or "") if (session or spec.kernel) else "",
    )
    run.set_result(result)
    return result


def _lane(run: RunContext, lane: tuple[str, str], specs: list[CheckSpec]) -> None:
    session = run.session(*lane)
    try:
        if specs and not all(_skip_reason_now(run, s) for s in specs):
            # Restore the lane's guest at once, while its first check may still wait for a
            # result of another lane: nothing of the student's runs yet (the module is loaded
            # by the first check that needs it), so a failure here is left to that check.
            with contextlib.suppress(Exception):
                session.ensure_guest()
        for spec in specs:
            run_one(run, spec, session)
    finally:
        session.close()


def _skip_reason_now(run: RunContext, spec: CheckSpec) -> bool:
    """Whether a check is already known to be skipped (a need failed), without waiting."""
    for need in spec.needs:
        r = run.results.get(need)
        if r is not None and r.status is not Status.PASSED:
            return True
    return False


def run_checks(run: RunContext) -> list[ExerciseResult]:
    """Every check of the rubric; results grouped by exercise in rubric order."""
    rubric = run.rubric
    order = sorted(rubric.checks(), key=lambda c: PHASES.index(c.phase))  # stable: rubric order
    try:
        for spec in order:
            if spec.phase == "static":
                run_one(run, spec, None)
        lanes: dict[tuple[str, str], list[CheckSpec]] = {}
        for c in order:
            kernel = run.kernel_of(c)
            if c.in_guest and kernel is not None:
                lanes.setdefault((kernel, c.clock), []).append(c)
            elif c.in_guest:
                run_one(run, c, None)  # not graded on this kernel
        threads = [threading.Thread(target=_lane, args=(run, lane, specs),
                                    name=f"lane-{lane[0]}-{lane[1]}")
                   for lane, specs in lanes.items()]
        for t in threads[1:]:
            t.start()
        if threads:
            threads[0].run()  # the first lane in this thread
        for t in threads[1:]:
            t.join()
        for spec in order:
            if spec.phase == "final":
                run_one(run, spec, None)
    finally:
        for s in list(run.sessions.values()):
            s.close()
    return [
        ExerciseResult(e.number, e.title, [run.results[c.id] for c in e.checks if c.id in run.results])
        for e in rubric.exercises
    ]
