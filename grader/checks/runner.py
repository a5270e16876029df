"""Runs a rubric's checks phase by phase; turns crashes and hangs into statuses, never into
a grader failure, and reboots a fresh guest for the next check after one."""
from __future__ import annotations

import time
import traceback

from grader import klog
from grader.checks import REGISTRY, Outcome
from grader.checks.context import CommandHung, Context, NotLoaded
from grader.errors import EnvironmentProblem
from grader.guest import GuestDied, GuestHung
from grader.model import CheckResult, Evidence, ExerciseResult, Status
from grader.rubric import PHASES, CheckSpec, Rubric


def _skip_reason(ctx: Context, spec: CheckSpec) -> str | None:
    for need in spec.needs:
        r = ctx.results.get(need)
        if r is None or r.status is not Status.PASSED:
            st = r.status.value.replace("_", " ") if r else "did not run"
            return f"needs {need} ({r.title if r else need}), which {st}"
    return None


def run_one(ctx: Context, spec: CheckSpec) -> CheckResult:
    t0 = time.monotonic()
    ctx.evidence = []
    reason = _skip_reason(ctx, spec)
    if reason:
        out = Outcome.skip(reason)
    else:
        ctx.progress(f"{spec.id}: {spec.title}")
        guest, mark = ctx.guest, ctx.console_mark()
        ctx.check_guest, ctx.check_mark = guest, mark
        try:
            out = REGISTRY[spec.kind](ctx, spec)
            g = ctx.guest
            if out.status is Status.FAILED and g is not None and g.alive and g.fatal is None:
                # A failure may be the first sign of a dying kernel (commands fail while the
                # oops is still being printed): give a panic half a second to show itself.
                g.run("sleep 0.5", 10)
            if g is not None and (g.fatal is not None or not g.alive):
                # The kernel died during the check, whatever the check concluded from the
                # commands that failed meanwhile: the check is CRASHED, counted once.
                raise GuestDied(g._death_reason(), g.recent_console(80))
            if out.status is Status.FAILED and guest is not None and guest is ctx.guest:
                # What the kernel printed (warnings and worse) while the check ran.
                during = ctx.console_since(mark)[-40:]
                if during and not any(ev.log for ev in out.evidence):
                    out.evidence.append(Evidence("kernel log during the check", log=during))
        except GuestDied as e:
            lines = e.log
            idx = next((i for i, ln in enumerate(lines) if klog.classify(ln)
                        and klog.classify(ln)[1] == "fatal"), max(0, len(lines) - 30))  # type: ignore[index]
            out = Outcome(Status.CRASHED, f"the module crashed the kernel: {e.reason}",
                          [Evidence("kernel log", "no crash", e.reason, klog.excerpt(lines, idx, 5, 40))])
            ctx.discard_guest(crashed=True)
        except GuestHung as e:
            out = Outcome(Status.TIMED_OUT, f"the guest stopped answering: {e.reason}",
                          [Evidence("kernel log", "an answer", e.reason, e.log[-30:])])
            ctx.discard_guest(crashed=True)
        except CommandHung as e:
            out = Outcome(Status.TIMED_OUT, f"the module hung a command: {e}")
            ctx.discard_guest()
        except NotLoaded as e:
            out = Outcome(Status.FAILED, f"the module did not load: {e}")
        except EnvironmentProblem as e:
            out = Outcome(Status.ERROR, f"grader environment: {e}")
            ctx.discard_guest()
        except Exception as e:  # a bug of ours must not cost the student: say so, go on
            out = Outcome(Status.ERROR, f"grader bug in {spec.kind}: {e!r}",
                          [Evidence("traceback", seen=traceback.format_exc()[-3000:])])
            ctx.discard_guest()
    return CheckResult(
        id=spec.id, exercise=spec.exercise, title=spec.title, status=out.status,
        points=spec.points if out.status is Status.PASSED else 0.0, max_points=spec.points,
        visible=spec.visible, reason=out.reason, evidence=[*ctx.evidence, *out.evidence],
        duration_s=round(time.monotonic() - t0, 3),
    )


def run_checks(ctx: Context, rubric: Rubric, phases: tuple[str, ...] = PHASES) -> list[ExerciseResult]:
    """Every check of the rubric, in phase order; results grouped by exercise in rubric order."""
    try:
        for phase in phases:
            for spec in rubric.checks():
                if spec.phase == phase:
                    ctx.results[spec.id] = run_one(ctx, spec)
    finally:
        ctx.close()
    return [
        ExerciseResult(e.number, e.title, [ctx.results[c.id] for c in e.checks if c.id in ctx.results])
        for e in rubric.exercises
    ]
