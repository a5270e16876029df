"""Exercise 3: samples allocated from a dedicated slab cache, destroyed at exit."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.checks.lifecycle import unload
from grader.labs.tp07.ex1_history import lab
from grader.labs.tp07.probes import shrink_first
from grader.labs.tp07.samples import parse
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall


@check("slab_cache_used")
def slab_cache_used(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    load = s.ensure_loaded()
    caches = load.interface.caches
    if not caches:
        return Outcome.fail("no slab cache appeared with the module (KMEM_CACHE or "
                            "kmem_cache_create at init)", "a new line in /proc/slabinfo", "none")
    best = p.views(s).best()  # samples are being taken by now
    if best is not None:  # drop_caches may just have emptied a slow sampler's history
        s.wait_for(lambda: bool(p.read(s, best.path).samples), max(5.0, 3 * p.period_s(s) + 1))
    # Objects and samples in one command: guest time may fly between two.
    files = " ".join(f"/sys/kernel/slab/{c_}/objects" for c_ in caches)
    hist = f"echo @@; head -c 262144 {best.path} 2>/dev/null" if best else "true"
    r = s.sh(f"{shrink_first(list(caches))}for f in {files}; do echo \"M $f $(cut -d' ' -f1 $f)\"; "
             f"done; {hist}", quiet=True)
    head, _, text = r.stdout.partition("@@\n")
    count = p._parse_count(head)
    shown = len(parse(text, p.pids(s)).samples) if best else 0
    if not count.module:
        return Outcome.fail("the module's caches cannot be read", "their objects", r.stderr.strip())
    holder, n = max(count.module.items(), key=lambda kv: kv[1])
    ev = Evidence("objects in use in the module's caches", "the samples",
                  ", ".join(f"{k}: {v}" for k, v in count.module.items())
                  + f"; samples shown: {shown}")
    if n == 0:
        return Outcome(Status.FAILED, f"the cache {holder} holds no object while samples are "
                       "taken: they are allocated elsewhere", [ev])
    if shown >= 20 and n < 0.5 * shown:
        return Outcome(Status.FAILED, f"{holder} holds {n} objects for {shown} samples shown: "
                       "most samples come from elsewhere", [ev])
    return Outcome(Status.PASSED, f"{holder} is in /proc/slabinfo and holds {n} objects", [ev])


@check("slab_cache_name")
def slab_cache_name(c: CheckCall) -> Outcome:
    want = c.rubric.settings["slab_cache"]
    caches = c.guest.ensure_loaded().interface.caches
    if want in caches:
        return Outcome.ok(f"the cache is named {want}")
    named = ", ".join(caches) or "no cache at all"
    return Outcome.fail(f"no cache named {want} (the module's: {named}); KMEM_CACHE(task_sample, "
                        "...) names it after the struct", want, named, "/proc/slabinfo")


@check("slab_cache_destroyed")
def slab_cache_destroyed(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    rec = unload(s)
    if rec.thread_crash is not None and not rec.observed:
        return Outcome.skip("the kernel crashed right after rmmod, in a thread the module left "
                            "running (charged to the kthread check): nothing could be observed")
    u = p.unload_obs(s)
    if u is None:
        return Outcome.skip("rmmod did not succeed: nothing to observe")
    if not u.caches_left:
        return Outcome.ok("the module's cache is gone from /proc/slabinfo")
    called = [c_ for c_ in u.caches_left if any(c_ in ln for ln in u.still_has_objects)]
    ev = Evidence("kernel log during rmmod", "no 'still has objects'",
                  "\n".join(u.still_has_objects[:3]) or "nothing")
    if len(called) == len(u.caches_left):
        owners = ", ".join(u.blame) or "ex1.freed"
        return Outcome(Status.PASSED, "kmem_cache_destroy() is called; it found objects left "
                       f"in {', '.join(called)}, charged to {owners}", [ev])
    never = [c_ for c_ in u.caches_left if c_ not in called]
    return Outcome(Status.FAILED, f"{', '.join(never)} is still in /proc/slabinfo after rmmod: "
                   "kmem_cache_destroy() is never called", [ev])
