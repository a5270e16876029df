"""Exercise 2: a shrinker that frees samples under memory pressure (drop_caches runs it)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.labs.tp07.ex1_history import lab
from grader.labs.tp07.probes import kernel_reports
from grader.labs.tp07.samples import parse
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
    reports = kernel_reports(d.log, s)
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


@check("shrinker_debugfs_counts")
def shrinker_debugfs_counts(c: CheckCall) -> Outcome:
    """The debug kernel's /sys/kernel/debug/shrinker/<name>-<id>/: `count` says what
    count_objects reports, writing to `scan` calls scan_objects; both are read with the history
    in one guest command, whatever the module's files print."""
    p, s = lab(c), c.guest
    load = s.ensure_loaded()
    dirs = [e.path for e in load.interface.entries
            if re.fullmatch(r"/sys/kernel/debug/shrinker/[^/]+-\d+", e.path)]
    if not dirs:
        return Outcome.fail("no shrinker appeared with the module in /sys/kernel/debug/shrinker/ "
                            "(register_shrinker or shrinker_register at init)")
    best = p.views(s).best()
    complete = best is not None and best.area != "sysfs"
    # A few samples to count (a slow sampler's, in real time here).
    if best is not None:
        s.wait_for(lambda: len(p.read(s, best.path).samples) >= 3, max(5.0, 4 * p.period_s(s)))
    d = dirs[0]
    hist = f"head -c 262144 {best.path} 2>/dev/null" if best else "true"
    own = load.interface.caches
    objs = " ".join(f"/sys/kernel/slab/{x}/objects" for x in own)
    count_objs = f"cat {objs} 2>/dev/null | cut -d' ' -f1 | awk '{{s+=$1}} END{{print s+0}}'" if own else "echo 0"
    # Half of what the history holds (about: samples keep coming while the command runs).
    first = p.read(s, best.path).samples if best else []
    k = max(10, len(first) // 2)
    # The two counts right before and after the scan, with nothing in between: a fast sampler
    # (5 ms here, on a slow kernel) adds samples while the histories are printed (seen: 155
    # during one command, which hid the 139 that the scan freed).
    r = s.sh(f"echo @@; {hist}; echo @@; {count_objs}; echo @@; cat {d}/count; "
             f"echo '0 0 {k}' > {d}/scan; echo @@; cat {d}/count; echo @@; {hist}", quiet=True)
    parts = r.stdout.split("@@\n")
    if len(parts) < 6:
        return Outcome(Status.FAILED, f"{d} could not be read: {r.stderr.strip()}")

    def total(text: str) -> int:
        return sum(int(x.split()[1]) for x in text.splitlines() if len(x.split()) == 2
                   and x.split()[1].isdigit())

    pids = p.pids(s)
    count0, count1 = total(parts[3]), total(parts[4])
    held0, held1 = len(parse(parts[1], pids).samples), len(parse(parts[5], pids).samples)
    objs0 = int(parts[2].strip() or 0)
    reserve = p.pool_reserve(s)
    if not complete and own:
        held0 = max(held0, objs0 - reserve)  # sysfs shows the newest page only
    seen = (f"{d}: count {count0} with {held0} samples held; after 'scan {k}': count {count1}, "
            f"samples shown {len(parse(parts[1], pids).samples)} -> {held1}")
    ev = [Evidence(f"cat {d}/count; echo '0 0 {k}' > {d}/scan; cat {d}/count",
                   f"count = the samples held; a scan of {k} frees about {k}", seen)]
    if held0 >= 3 and count0 == 0:
        return Outcome(Status.FAILED, f"count_objects reports 0 with {held0} samples held: the "
                       "kernel never calls scan_objects", ev)
    if held0 >= 3 and not (0.5 * held0 - 5 <= count0 <= 1.5 * held0 + 10):
        return Outcome(Status.FAILED, f"count_objects reports {count0} with {held0} samples held: "
                       "it must count the samples the shrinker can free", ev)
    shown_drop = len(parse(parts[1], pids).samples) - held1
    if held0 >= k and count0 - count1 < k // 2 and shown_drop < k // 2:
        return Outcome(Status.FAILED, f"a scan of {k} freed nothing the count or the history "
                       f"shows ({count0} -> {count1}): scan_objects must free up to nr_to_scan "
                       "samples and say how many", ev)
    return Outcome(Status.PASSED, f"count_objects reports the {count0} samples held and a scan "
                   f"of {k} frees them ({count0} -> {count1})", ev)
