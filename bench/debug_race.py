"""How often the show-without-reference use-after-free is caught, on the debug and stock kernels.

    python bench/debug_race.py [--profile debug] [--windows 20] [--seconds 3] [--delay-us 1000]

The bug: the sysfs show of the reference (stage 5) keeps pointers to samples past its
mutex_unlock() without taking references (no widened window in the module). Per window: two
`readloop` readers of /sys/kernel/taskmonitor for --seconds against a loop of
`echo 2 > /proc/sys/vm/drop_caches`; a window counts as caught when the kernel printed a KASAN
report during it (debug profile, booted with kasan_multi_shot so that every window can report)
or a reader saw slab poison values in the module's output (stock profiles, slub_debug=P).
With --delay-us, the grader's helper grader/guest_image/modules/grader_delay.c busy-waits that
long after every mutex_unlock() the module calls from a `readloop` task (a kretprobe filtered on
the caller's address: the module is not modified). --variant reference runs the same on the
correct module (nothing must be caught). Prints one line per window and a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from grader import session

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
import capture_klogs  # noqa: E402  (the bugs, as replacements of the reference)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="debug")
    ap.add_argument("--variant", default="show_noref", choices=["show_noref", "reference"])
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--period-ms", type=int, default=10)
    ap.add_argument("--delay-us", type=int, default=0)
    ap.add_argument("--clock", default="realtime", help="the profile's guest clock: realtime "
                    "(2 vCPUs) or warped (1 vCPU, -icount)")
    a = ap.parse_args()
    env = session.prepare(a.profile)
    debug = env.profile.from_source
    with tempfile.TemporaryDirectory(prefix="grader-race-") as t:
        tmp = Path(t)
        src = capture_klogs._materialise(a.variant, tmp / "src")
        b = session.build(env, src, "taskmonitor", ["taskmonitor.o"], tmp / "b", ["-DTM_STAGE=5"])
        assert b.ko, b.log
        mods = {"taskmonitor": b.ko}
        if a.delay_us:
            d = session.build(env, capture_klogs.DEBUG_SRC, "grader_delay", ["grader_delay.o"],
                              tmp / "d")
            assert d.ko, d.log
            mods["grader_delay"] = d.ko
        extra = ("kasan_multi_shot",) if debug else ()
        hits, done, reads_total, t0 = 0, 0, 0, time.monotonic()
        with session.boot(env, mods, tmp / "g", extra_cmdline=extra, snapshot=False,
                          clock=a.clock) as g:
            pid = g.spawn("burn")
            assert g.insmod("taskmonitor", {"target": pid, "period_ms": a.period_ms}).ok
            if a.delay_us:
                r = g.run("set -- $(grep '^taskmonitor ' /proc/modules) && insmod "
                          f"/mod/grader_delay.ko delay_us={a.delay_us} comm=readloop base=$6 size=$2")
                assert r.ok, r.stderr
            g.run("sleep 1", 5)
            g.spawn("sh -c 'while :; do echo 2 > /proc/sys/vm/drop_caches; done'")
            readers = " ".join(f"readloop /sys/kernel/taskmonitor {a.seconds} > /tmp/r{i} &"
                               for i in range(a.readers))
            outs = " ".join(f"/tmp/r{i}" for i in range(a.readers))
            for w in range(1, a.windows + 1):
                n0 = sum("BUG: KASAN" in ln for ln in g.console_lines)
                out = g.run(f"{readers} wait; cat {outs}", a.seconds + 30).stdout
                reports = sum("BUG: KASAN" in ln for ln in g.console_lines) - n0
                reads = sum(int(x) for x in re.findall(r"reads=(\d+)", out))
                poison = sum(1 for ln in out.splitlines() if ln and not ln.startswith("reads="))
                caught = reports > 0 or poison > 0
                hits += caught
                done += 1
                reads_total += reads
                print(f"window {w}: KASAN reports {reports}, poisoned lines {poison}, "
                      f"reads {reads}", flush=True)
    print(json.dumps({"profile": a.profile, "release": env.kernel.release,
                      "variant": a.variant, "delay_us": a.delay_us, "clock": a.clock,
                      "cpus": env.profile.clock(a.clock).cpus,
                      "seconds": a.seconds, "readers": a.readers, "period_ms": a.period_ms,
                      "windows": done, "caught": hits, "reads": reads_total,
                      "wall_s": round(time.monotonic() - t0, 1)}))


if __name__ == "__main__":
    main()
