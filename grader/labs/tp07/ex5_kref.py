"""Exercise 5: samples reference-counted with kref, so that showing a sample and the shrinker
freeing it can run at once."""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from grader import klog
from grader.checks import Outcome, check
from grader.checks.lifecycle import unload
from grader.labs.tp07.ex1_history import lab
from grader.labs.tp07.probes import Drop, kernel_reports
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall


@check("concurrent_read_shrink")
def concurrent_read_shrink(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    s.ensure_loaded()
    views = p.views(s)  # the files found in the warped guest: the same module, the same paths
    paths = [v.path for v in views.views]
    period = p.period_s(s)
    secs = int(c.params.get("seconds", 3))
    # Drops about as fast as samples come (so that each one frees samples a reader may be
    # showing), at least once a second: a slow sampler gets a few drops, not a long wait.
    interval = min(1.0, max(float(c.params.get("drop_interval_s", 0.02)), 2 * period))
    # Real time here: wait for a first sample (a slow sampler's), a few periods at most.
    s.wait_for(lambda: any(p.read(s, x).samples for x in paths), min(2 * period + 1, 12.0))
    mark = s.console_mark()
    # Readers of every history file (no fork per read) while drop_caches runs every
    # `interval`: the history regrows between drops.
    readers = " ".join(f"readloop {shlex.quote(x)} {secs} > /tmp/conc.{i} & "
                       for i, x in enumerate(paths))
    script = (
        f"{readers} end=$(( $(cut -d. -f1 /proc/uptime) + {secs} )); "
        "while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do echo 2 > /proc/sys/vm/drop_caches; "
        f"usleep {int(interval * 1e6)}; done; wait; cat /tmp/conc.*; rm -f /tmp/conc.*"
    )
    delay = int(c.params.get("delay_us", 0))
    if delay:
        # Widen the window where a show function holds a sample without a reference: the
        # grader's kretprobe on mutex_unlock waits `delay` µs after every unlock the module
        # makes in the readers (grader/guest_image/modules/grader_delay.c). The student's code
        # is not changed; a module that takes its references first is not affected.
        script = (f"set -- $(grep '^{c.run.module} ' /proc/modules); "
                  f"insmod /mod/grader_delay.ko base=$6 size=$2 comm=readloop delay_us={delay} "
                  f"|| echo 'grader: no delay injection' >&2; {script}")
        # Not unloaded after: unregistering a kretprobe crashed the stock 6.1 kernel in
        # ftrace_shutdown (seen under TCG); it only acts on tasks named readloop anyway.
    r = s.sh(script, timeout=secs * 3 + s.timeout(), quiet=True)
    # A locking report (lockdep, sleeping in atomic context) is ex1's business, not this race's.
    reports = kernel_reports(s.console_since(mark), s)
    reads = [ln for ln in r.stdout.splitlines() if ln.startswith("reads=")]
    poisoned = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("reads=")]
    ev = [Evidence(f"{len(paths)} reader(s) during {secs} s of drop_caches every "
                   f"{interval * 1000:.0f} ms ({s.clock} guest, {s.guest.spec.cpus if s.guest else '?'} CPUs)",
                   "no report, no freed memory shown",
                   f"{' + '.join(x[6:] for x in reads) or 0} reads")]
    if reports:
        s.claim(mark, s.console_mark(), c.spec.id)
        lines = s.console_since(mark)
        first = reports[0]
        ev.append(Evidence("kernel log", "no report", first.line, lines[max(0, first.line_no - 5):first.line_no + 25]))
        why = ("a sample is read after the shrinker freed it: take a reference (kref_get) "
               "under the lock before printing it, and drop it (kref_put) after"
               if first.kind == "kasan" else "kernel report while reading during shrinking")
        return Outcome(Status.FAILED, f"{why}: {klog.strip_timestamp(first.line).strip()}", ev)
    if poisoned:
        return Outcome(Status.FAILED, "freed memory was displayed (slab poison values in the "
                       "output): a sample is shown without holding a reference", ev + [
                           Evidence("lines with poison values", "valid samples", "\n".join(poisoned[:5]))])
    return Outcome(Status.PASSED, f"{' + '.join(x[6:] for x in reads)} reads during {secs} s of "
                   f"drop_caches every {interval * 1000:.0f} ms: no report", ev)


@check("references_balanced")
def references_balanced(c: CheckCall) -> Outcome:
    """Where samples leave the history, they must be freed: under drop_caches (the shrinker
    drops its references), else at rmmod."""
    p, s = lab(c), c.guest
    d = p.clock(s).drop
    if isinstance(d, Drop) and d.unlinked is not None and d.unlinked >= 10:
        ev = Evidence("samples dropped from the history by the shrinker vs objects freed",
                      "as many freed as dropped", f"{d.unlinked} dropped, {d.freed} objects freed")
        if d.freed >= 0.5 * d.unlinked:
            return Outcome(Status.PASSED, f"the {d.unlinked} samples the shrinker dropped were "
                           "freed", [ev])
        return Outcome(Status.FAILED, f"{d.unlinked} samples left the history but only "
                       f"{d.freed} objects were freed: a reference is taken and never dropped "
                       "(kref_put missing after kref_get, or after save_sample's reference)", [ev])
    rec = unload(s)
    u = p.unload_obs(s)
    if (rec.thread_crash is not None and not rec.lab_observed) or u is None:
        return Outcome.skip("no sample was seen leaving the history (no working shrinker) and "
                            "rmmod could not be observed: the references could not be counted")
    if "ex1.freed" in u.blame:
        return Outcome.skip("no sample was seen leaving the history (no working shrinker), and "
                            "samples are left at rmmod (charged to ex1.freed): the references "
                            "could not be counted apart")
    return Outcome.ok("no working shrinker to watch; every sample is freed at rmmod",
                      Evidence("samples at rmmod", "all freed", "freed"))
