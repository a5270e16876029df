"""Times `grader run` end to end (median of N) on:
  - the reference (it has a sampling-period parameter: the grader sets 20 ms);
  - the reference without its period parameter (it samples once a second, as most real
    modules do), and the same sampling every 10 s;
  - a crashing variant: the debugfs write handler dereferences NULL on input that is not a
    number, so the guest panics during ex7.bad_writes and a fresh guest is restored.

    python bench/run.py [--profile 6.1] [--runs 3] [--only reference,1hz,0.1hz,crash]

Also prints where the time goes: the stages and the slowest checks of the last run, with the
clock each ran in (guest checks of the warped clock run beside those of the realtime clock).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.model import GradeResult
from grader.pipeline import RunOptions, grade
from grader.profiles import project_root

CRASH = "*(volatile int *)NULL = 0;"


def crashing_variant(dst: Path) -> Path:
    src = (project_root() / "reference/taskmonitor/taskmonitor.c").read_text()
    # The error return after parsing in the debugfs write handler: reached by a malformed
    # write ("abc"), which then dereferences NULL instead.
    m = re.search(r"static ssize_t \w+_write\(", src)
    k = src.find("kstrto", m.end()) if m else -1
    j = src.find("return -EINVAL;", k) if k >= 0 else -1
    if j < 0:
        sys.exit("cannot find the write handler to make the crashing variant")
    dst.mkdir(parents=True, exist_ok=True)
    end = j + len("return -EINVAL;")
    (dst / "taskmonitor.c").write_text(src[:j] + "{ " + CRASH + " return -EINVAL; }" + src[end:])
    return dst


PERIOD = "module_param(period_ms, uint, 0444);"
PERIOD_DESC = 'MODULE_PARM_DESC(period_ms, "Sampling period in milliseconds (default 1000)");'


def without_period(dst: Path, period_ms: int = 1000) -> Path:
    src = (project_root() / "reference/taskmonitor/taskmonitor.c").read_text()
    if PERIOD not in src:
        sys.exit("cannot find the period parameter to remove")
    src = src.replace(PERIOD, "").replace(PERIOD_DESC, "")
    if "static unsigned int period_ms = 1000;" not in src:
        sys.exit("cannot find the period's default to change")
    src = src.replace("static unsigned int period_ms = 1000;",
                      f"static unsigned int period_ms = {period_ms};")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "taskmonitor.c").write_text(src)
    return dst


def time_runs(sub: Path, runs: int, profile: str,
              combine: tuple[str, ...] = ()) -> tuple[list[float], GradeResult]:
    times, result = [], None
    for _i in range(runs):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.monotonic()
            result = grade(RunOptions(submission=sub, outdir=Path(out), profile=profile,
                                      combine=combine))
            times.append(time.monotonic() - t0)
    assert result is not None
    return times, result


def show(name: str, times: list[float], r: GradeResult) -> None:
    print(f"{name:18s} median {statistics.median(times):6.1f} s  (runs: "
          f"{', '.join(f'{t:.1f}' for t in times)})  score {r.score:g}/{r.max_score:g}")
    stages = ", ".join(f"{s.name} {s.duration_s:.1f}s" for s in r.stages)
    print(f"{'':18s} stages: {stages}")
    slow = sorted((c for e in r.exercises for c in e.checks), key=lambda c: -c.duration_s)[:6]
    print(f"{'':18s} slowest checks: " + ", ".join(f"{c.id} [{c.clock}] {c.duration_s:.1f}s"
                                                     for c in slow))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="6.1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="reference,1hz,0.1hz,crash,combined,debug")
    a = ap.parse_args()
    only = set(a.only.split(","))
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    print(f"profile {a.profile}; {qemu.stdout.splitlines()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        subs = {"reference": project_root() / "reference/taskmonitor",
                "1hz": without_period(t / "1hz"), "0.1hz": without_period(t / "slow", 10000),
                "crash": crashing_variant(t / "crash")}
        names = {"reference": "reference", "1hz": "no period, 1 Hz", "0.1hz": "no period, 0.1 Hz",
                 "crash": "crashing variant"}
        for key, sub in subs.items():
            if key in only:
                show(names[key], *time_runs(sub, a.runs, a.profile))
        ref = subs["reference"]
        if "combined" in only:
            show("ref + debug", *time_runs(ref, a.runs, a.profile, ("debug",)))
        if "debug" in only:
            show("ref on debug", *time_runs(ref, a.runs, "debug"))


if __name__ == "__main__":
    main()
