"""Exercise 4: samples allocated through a mempool whose reserve is there from load time.
(The teardown order of the pool, its cache and its users is the generic static check
`teardown_order`, with this lab's rules in the rubric.)"""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.labs.tp07.ex1_history import lab
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
