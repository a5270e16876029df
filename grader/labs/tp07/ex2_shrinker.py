"""Exercise 2: a shrinker that frees samples under memory pressure (drop_caches runs it)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.labs.tp07.ex1_history import lab
from grader.labs.tp07.probes import kernel_reports
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall


@check("drop_caches_frees")
def drop_caches_frees(c: CheckCall) -> Outcome:
    """Judged on the slab objects the module holds, not on what its files print."""
    p, s = lab(c), c.guest
    mark = s.console_mark()
    d = p.drop(s)
    reserve = p.pool_reserve(s)
    in_kmalloc = d.before.own < 8
    held = d.history_before if d.history_before is not None else max(0, d.before.own - reserve)
    where = ("kmalloc caches (all users)" if in_kmalloc else
             ", ".join(f"{k} {v} -> {d.after.module.get(k, 0)}" for k, v in d.before.module.items()))
    seen = (f"objects freed: {d.freed} ({where}"
            + (f": {d.before.kmalloc} -> {d.after.kmalloc}" if in_kmalloc else "") + ")"
            + (f"; samples shown: {d.history_before} -> {d.history_after}"
               if d.history_before is not None else "; no file shows the history"))
    ev = [Evidence("echo 2 > /proc/sys/vm/drop_caches", "the module's samples freed", seen)]
    reports = kernel_reports(d.log)
    if reports:
        s.claim(mark, s.console_mark(), c.spec.id)
        return Outcome(Status.FAILED, "the shrinker produced a kernel report: "
                       + reports[0].line.strip(), ev)
    if held < 10:
        return Outcome(Status.FAILED, f"the module held too few samples to judge ({held}): "
                       "the history does not grow", ev)
    if d.freed >= max(8, 0.5 * held):
        return Outcome(Status.PASSED, f"drop_caches freed {d.freed} of ~{held} samples", ev)
    if d.unlinked is not None and d.unlinked >= 0.5 * held and p.uses_kref():
        return Outcome(Status.PASSED, f"the shrinker dropped {d.unlinked} samples from the "
                       "history; they stay allocated because a reference is never dropped "
                       "(charged to ex5.balanced)", ev)
    return Outcome(Status.FAILED, f"drop_caches freed {d.freed} of ~{held} samples: the "
                   "shrinker's count_objects or scan_objects does not report or free them", ev)
