"""TP 07 "memory management in the kernel": the taskmonitor module's probes and check kinds.

One file per exercise (ex1_history.py ... ex7_several_pids.py) holds that exercise's check
functions; probes.py holds what they observe, computed once per guest and shared; samples.py
reads the module's lines. Setup/teardown, builds, APIs and the kernel log are generic checks
(grader/checks/)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.labs.tp07 import (  # noqa: F401  (importing registers the check kinds)
    ex1_history,
    ex2_shrinker,
    ex3_slab_cache,
    ex4_mempool,
    ex5_kref,
    ex6_debugfs,
    ex7_several_pids,
)
from grader.labs.tp07.probes import Tp07Probes

if TYPE_CHECKING:
    from grader.checks.context import RunContext


def make_probes(run: RunContext) -> Tp07Probes:
    return Tp07Probes(run)
