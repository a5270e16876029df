"""Exercise 4: samples allocated through a mempool whose reserve is there from load time.
(The teardown order of the pool, its cache and its users is the generic static check
`teardown_order`, with this lab's rules in the rubric.)"""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.labs.tp07.ex1_history import lab
from grader.labs.tp07.probes import kernel_reports
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall


@check("pool_preallocated")
def pool_preallocated(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    at = p.at_load(s)
    want = int(c.rubric.settings.get("min_reserve", 2))
    if at.after.own:
        reserve = at.after.own - at.samples
        seen = (", ".join(f"{k}: {v}" for k, v in at.after.module.items())
                + f" objects for {at.samples} sample(s), right after insmod")
        ev = Evidence("the module's caches right after insmod",
                      f"at least {want} objects more than samples (the pool's reserve)", seen)
        if reserve >= want:
            return Outcome(Status.PASSED, f"a reserve of {reserve} objects from load time", [ev])
        return Outcome(Status.FAILED, f"no preallocated reserve: {seen}", [ev])
    # No cache of its own: a kmalloc pool (mempool_create_kmalloc_pool). SLUB's allocation
    # traces count the module's own objects in the (shared) kmalloc caches.
    if at.kmalloc_tagged is None:
        return Outcome.fail("no slab object of the module right after insmod: no pool reserve",
                            f"at least {want} objects more than samples", "none",
                            "the module's caches right after insmod")
    extra = at.kmalloc_tagged - at.samples
    ev = Evidence("the module's objects in the kmalloc caches right after insmod (SLUB "
                  "allocation traces)", "a reserve: more objects than samples",
                  f"{at.kmalloc_tagged} objects, {at.samples} sample(s)")
    # A few objects are the module's own bookkeeping (its monitor): a reserve is more.
    if extra >= want + 4:
        return Outcome(Status.PASSED, f"about {extra} objects preallocated at load (kmalloc "
                       "caches)", [ev])
    return Outcome(Status.FAILED, "no preallocated reserve: the module holds no more objects "
                   "than samples right after insmod", [ev])


FAILSLAB = "/sys/kernel/debug/failslab"


@check("reserve_under_failure")
def reserve_under_failure(c: CheckCall) -> Outcome:
    """The debug kernel's failslab, on the module's own threads only: every slab allocation
    they make fails for a while. A pool with a reserve goes on sampling from it; one without
    stops (or crashes, on an unchecked NULL). Sampling must come back once allocations work."""
    p, s = lab(c), c.guest
    load = s.ensure_loaded()
    threads = list(load.interface.kthreads)
    if not threads:
        return Outcome.skip("no kernel thread of the module to make fail")
    best = p.views(s).best()
    if best is None:
        return Outcome.skip("no file shows the history: the samples taken cannot be counted")
    period = p.period_s(s)
    # Shorter than the reserve lasts: a sampler that finds the pool empty waits in
    # mempool_alloc() (maybe holding a lock readers need) until it retries, 5 s later.
    reserve = p.pool_reserve(s)
    window = max(2.5, reserve - 3.0) * period + 0.05
    s.wait_for(lambda: bool(p.read(s, best.path).samples), max(5.0, 3 * period + 1))
    q = best.path
    fail = " ".join(f"echo 1 > /proc/{t}/make-it-fail;" for t in threads)
    unfail = " ".join(f"echo 0 > /proc/{t}/make-it-fail;" for t in threads)
    setup = (f"echo Y > {FAILSLAB}/task-filter; echo N > {FAILSLAB}/ignore-gfp-wait; "
             f"echo 100 > {FAILSLAB}/probability; echo 1 > {FAILSLAB}/interval; "
             f"echo -1 > {FAILSLAB}/times; echo 0 > {FAILSLAB}/space; echo 0 > {FAILSLAB}/verbose")
    mark = s.console_mark()
    # One command: empty the history (sysfs shows its newest page only, and the samples freed
    # refill the pool's reserve), count, fail for `window` seconds, stop failing, count. The
    # history is not read while allocations fail: a thread waiting in mempool_alloc() may hold
    # the lock a reader needs (it is woken at the latest 5 s after allocations work again).
    r = s.sh(f"{setup}; echo 2 > /proc/sys/vm/drop_caches; wc -l < {q}; {fail} "
             f"sleep {window:.2f}; {unfail} wc -l < {q}",
             timeout=window + 2 * s.timeout(), quiet=True)
    nums = [int(x) for x in r.stdout.split() if x.lstrip("-").isdigit()]
    if len(nums) < 2:
        return Outcome(Status.FAILED, f"the history could not be read after failslab: "
                       f"{r.stderr.strip()}")
    # The sampler that waited in mempool_alloc() takes one more sample once it may.
    during = max(0, nums[1] - nums[0] - 1)
    # Back to normal: sampling resumes (a mempool_alloc that waited retries every 5 s).
    resumed = s.wait_for(lambda: len(p.read(s, q).samples) > 0 and
                         int(s.sh(f"wc -l < {q}", quiet=True).stdout.strip() or 0) > nums[1],
                         max(6.0, 3 * period + 1))
    reports = kernel_reports(s.console_since(mark), s)
    want = int(c.rubric.settings.get("min_reserve", 2))
    seen = (f"{during} sample(s) taken during {window:.1f} s of failing allocations (at one per "
            f"{period:.2f} s); sampling {'resumed' if resumed else 'did not resume'} after")
    ev = [Evidence("failslab on the module's threads (every slab allocation fails)",
                   f"at least {want} samples from the pool's reserve; sampling resumes after", seen)]
    if reports:
        s.claim(mark, s.console_mark(), c.spec.id)
        return Outcome(Status.FAILED, "a failing allocation produced a kernel report: "
                       + reports[0].line.strip(), ev)
    if not resumed:
        return Outcome(Status.FAILED, "sampling never came back once allocations worked again",
                       ev)
    if during < min(want, int(window / period)):
        return Outcome(Status.FAILED, f"only {during} sample(s) while allocations failed: the "
                       "samples do not come from a reserve preallocated by the mempool", ev)
    return Outcome(Status.PASSED, f"{during} sample(s) taken from the pool's reserve while "
                   "allocations failed, and sampling resumed after", ev)
