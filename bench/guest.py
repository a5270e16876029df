"""Prints the medians of: module build time, guest boot-to-first-command, one load/sample/unload.

    python bench/guest.py [--profile 6.1] [--runs 5]

Build: the reference (stage 7) built with the grader's Kbuild in the bubblewrap sandbox.
Boot: from starting QEMU to the agent's answer to `true` (TCG unless the setup probe found KVM).
Cycle: insmod with a CPU-burner target, 1 s of sampling at 5 ms, read sysfs and debugfs, rmmod.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from grader import session


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="6.1")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    env = session.prepare(a.profile)
    builds, boots, cycles = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        ko = None
        for i in range(a.runs):
            b = session.build_reference(env, Path(tmp) / f"b{i}")
            assert b.ko, b.log
            builds.append(b.duration_s)
            ko = b.ko
        for i in range(a.runs):
            t0 = time.monotonic()
            with session.boot(env, {"taskmonitor": ko}, Path(tmp) / f"g{i}") as g:
                g.run("true")
                boots.append(time.monotonic() - t0)
                target = g.spawn("burn")
                t1 = time.monotonic()
                assert g.insmod("taskmonitor", {"target": target, "period_ms": 5}).ok
                time.sleep(1)
                assert g.read("/sys/kernel/taskmonitor").ok
                assert g.read("/sys/kernel/debug/taskmonitor").ok
                assert g.rmmod("taskmonitor").ok
                cycles.append(time.monotonic() - t1)
    print(f"profile {a.profile} ({env.kernel.release}), accel {env.accel}, {a.runs} runs each")
    for name, xs in (("module build", builds), ("boot to first command", boots),
                     ("load/sample 1 s/unload", cycles)):
        print(f"{name:24s} median {statistics.median(xs):6.2f} s   "
              f"(min {min(xs):.2f}, max {max(xs):.2f})")


if __name__ == "__main__":
    main()
