"""Prints the medians of what a grading's guest work is made of, for both clocks.

    python bench/guest.py [--profile 6.1] [--runs 5]

- build: the reference (stage 7) with the grader's Kbuild in the bubblewrap sandbox;
- cold boot: from starting QEMU to the agent's answer (what every guest cost before snapshots);
- restore: from starting QEMU on a saved guest to the first answer, /mod filled from fw_cfg;
- guest seconds per wall second, idle (a 1 Hz sampler and a target burning 2 %) and busy (a
  target burning 100 %): how cheap guest-time waits are in each clock;
- cycle: insmod, 1 guest second of sampling at 20 ms, read sysfs and debugfs, rmmod.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from grader import session


def median(xs: list[float]) -> str:
    return f"median {statistics.median(xs):7.2f}   (min {min(xs):.2f}, max {max(xs):.2f})"


def guest_rate(g, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Guest seconds per wall second while the guest sleeps `seconds`."""
    t0 = time.monotonic()
    r = g.run(f"a=$(cut -d' ' -f1 /proc/uptime); sleep {seconds}; b=$(cut -d' ' -f1 /proc/uptime); "
              "echo $a $b", seconds * 4 + 30)
    wall = time.monotonic() - t0
    a, b = (float(x) for x in r.stdout.split())
    return (b - a) / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="6.1")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    env = session.prepare(a.profile)
    builds = []
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        b = None
        for i in range(a.runs):
            b = session.build_reference(env, Path(tmp) / f"b{i}")
            assert b.ko and b.guest_ko, b.log
            builds.append(b.duration_s)
        assert b is not None and b.guest_ko is not None
        mods = {"taskmonitor": b.guest_ko}
        for clock in ("warped", "realtime"):
            session.boot(env, mods, Path(tmp) / "warm", clock=clock)  # the snapshot, made once
            for i in range(a.runs):
                t0 = time.monotonic()
                with session.boot(env, mods, Path(tmp) / f"c{clock}{i}", clock=clock,
                                  snapshot=False) as g:
                    g.run("true")
                    rows.setdefault(f"{clock}: cold boot", []).append(time.monotonic() - t0)
                t0 = time.monotonic()
                with session.boot(env, mods, Path(tmp) / f"r{clock}{i}", clock=clock) as g:
                    g.run("true")
                    rows.setdefault(f"{clock}: restore", []).append(time.monotonic() - t0)
                    target = g.spawn("burn 2")
                    t1 = time.monotonic()
                    assert g.insmod("taskmonitor", {"target": target}).ok
                    rows.setdefault(f"{clock}: guest s / wall s, idle", []).append(guest_rate(g, 30))
                    g.run(f"kill {target}")
                    target = g.spawn("burn")
                    rows.setdefault(f"{clock}: guest s / wall s, busy", []).append(guest_rate(g, 5))
                    assert g.rmmod("taskmonitor").ok
                    t1 = time.monotonic()
                    assert g.insmod("taskmonitor", {"target": target, "period_ms": 20}).ok
                    g.run("sleep 1")
                    assert g.read("/sys/kernel/taskmonitor").ok
                    assert g.read("/sys/kernel/debug/taskmonitor").ok
                    assert g.rmmod("taskmonitor").ok
                    rows.setdefault(f"{clock}: load/sample 1 s/unload", []).append(time.monotonic() - t1)
    print(f"profile {a.profile} ({env.kernel.release}), accel {env.accel}, {a.runs} runs each; "
          "wall seconds unless said")
    print(f"{'module build':34s} {median(builds)}")
    for name, xs in rows.items():
        print(f"{name:34s} {median(xs)}")


if __name__ == "__main__":
    main()
