"""Records real kernel console logs from guests, as fixtures for the kernel-log parser tests.

    python tests/capture_klogs.py [--profile 6.1 ...]

For each profile: a clean boot with a module loaded and unloaded, an oops (NULL dereference at
load; oops=panic turns it into a panic), a slab poison report (write after free), a WARN_ON,
and a slab cache destroyed while it still has objects. The logs go to
tests/data/klog/<profile>/<case>.log, exactly as the guest's ttyS0 printed them.

For the `debug` profile (the kernel built with KASAN, lockdep, failslab: vm-images/debug.config)
it also records what the kernel's detectors print for the lab's own bugs, on the reference module
with one bug each (made by replacing exact strings of reference/taskmonitor/taskmonitor.c, as the
variants under tests/variants/ do; no copy is kept): see DEBUG_CASES.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from grader import session
from grader.guest import Guest, GuestDied, GuestHung
from grader.profiles import project_root

HERE = Path(__file__).resolve().parent / "data" / "klog"
CASES = {
    # case: (module, commands after boot)
    "clean": ("warn", []),  # the module is not loaded: a clean boot, then poweroff
    "oops": ("oops", ["insmod /mod/oops.ko"]),
    "poison": ("poison", ["insmod /mod/poison.ko", "rmmod poison"]),
    "warning": ("warn", ["insmod /mod/warn.ko"]),
    "cache_leak": ("leak", ["insmod /mod/leak.ko", "rmmod leak"]),
}


def capture(profile: str) -> None:
    env = session.prepare(profile)
    out = HERE / profile
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kos = {}
        for mod in sorted({m for m, _ in CASES.values()}):
            b = session.build(env, HERE / "src", mod, [f"{mod}.o"], Path(tmp) / mod)
            if not b.ko:
                raise SystemExit(f"{mod} does not build:\n{b.log}")
            kos[mod] = b.ko
        for case, (mod, commands) in CASES.items():
            with session.boot(env, {mod: kos[mod]}, Path(tmp) / f"g-{case}") as g:
                try:
                    for c in commands:
                        g.run(c, 20)
                    g.run("sleep 0.5", 5)
                except GuestDied:
                    pass
                lines = list(g.console_lines)
            (out / f"{case}.log").write_text("\n".join(lines) + "\n")
            print(f"{profile}/{case}: {len(lines)} lines")


# ---- the debug profile: the lab's bugs as the kernel's detectors report them ---------------------
DEBUG_SRC = HERE.parents[2] / "grader" / "guest_image" / "modules"  # the grader's helper modules
REFERENCE = "reference/taskmonitor/taskmonitor.c"
# bug -> exact replacements in the reference (at stage 7, unless STAGES says otherwise)
BUGS: dict[str, list[tuple[str, str]]] = {
    "reference": [],
    # show formats the samples it found under the lock after unlocking, without references
    "show_noref": [
        ("\t\tneed += l;\n\t\tkref_get(&ts->refcount);\n\t\tshow[n++] = ts;\n",
         "\t\tneed += l;\n\t\tshow[n++] = ts;\n"),
        ("\t\t\t\t     ts->stime);\n\t\tsample_put(ts);\n", "\t\t\t\t     ts->stime);\n"),
    ],
    # the seq_file's stop does not release the monitor's lock taken by start/next
    "seq_stop_keeps_lock": [
        ("\tif (IS_ERR(v))\n\t\treturn;\n\tif (tm)\n\t\tmutex_unlock(&tm->lock);\n",
         "\tif (IS_ERR(v))\n\t\treturn;\n"),
    ],
    # the sampler takes the monitor's mutex under a spinlock
    "mutex_under_spinlock": [
        ("static void monitor_append(struct task_monitor *tm, struct task_sample *ts)\n{\n"
         "\tmutex_lock(&tm->lock);\n",
         "static DEFINE_SPINLOCK(tm_append_lock);\n\n"
         "static void monitor_append(struct task_monitor *tm, struct task_sample *ts)\n{\n"
         "\tspin_lock(&tm_append_lock);\n\tmutex_lock(&tm->lock);\n"),
        ("#endif\n\tmutex_unlock(&tm->lock);\n}\n\n/* Unlink the oldest",
         "#endif\n\tmutex_unlock(&tm->lock);\n\tspin_unlock(&tm_append_lock);\n}\n\n"
         "/* Unlink the oldest"),
    ],
    # the mempool keeps no reserve
    "pool_no_reserve": [
        ("mempool_create_slab_pool(TM_POOL_MIN, sample_cache)",
         "mempool_create_slab_pool(0, sample_cache)"),
    ],
}
# At stage 7 the sysfs show holds the global tasks_lock while it formats, and the shrinker only
# trylocks it: the show-without-reference race exists from stage 5 (one monitor) to stage 6.
STAGES = {"show_noref": 5}
LOAD = "burn >/dev/null 2>&1 </dev/null & insmod /mod/taskmonitor.ko target=$! period_ms=10"
READERS = ("for i in 1 2; do readloop /sys/kernel/taskmonitor 30 >/dev/null 2>&1 </dev/null & done; "
           "(while :; do echo 2 > /proc/sys/vm/drop_caches; done) >/dev/null 2>&1 </dev/null &")
# One short read: seq_read() stops after the first record, while start/next hold the lock.
SHORT_READ = "dd if=/sys/kernel/debug/taskmonitor of=/dev/null bs=64 count=1"
DELAY = ("set -- $(grep '^taskmonitor ' /proc/modules) && "
         "insmod /mod/grader_delay.ko delay_us=1000 comm=readloop base=$6 size=$2")
# Every slab allocation of the module's sampling thread fails (6.1's per-cache switch
# /sys/kernel/slab/<cache>/failslab is read-only: the task filter is what can be set at run time).
# ignore-gfp-wait=N: GFP_KERNEL allocations fail too, so mempool_alloc() lives on its reserve.
FAILSLAB = ("cd /sys/kernel/debug/failslab && echo Y > task-filter && echo N > ignore-gfp-wait "
            "&& echo 100 > probability && echo 100000 > times && echo 1 > verbose && "
            "for p in $(grep -l ^taskmonitor$ /proc/[0-9]*/comm | cut -d/ -f3); do "
            "echo 1 > /proc/$p/make-it-fail; done")
# case -> (bug, helper modules, commands, what to wait for in the console (or ""), wait seconds)
DEBUG_CASES: dict[str, tuple[str, tuple[str, ...], list[str], str, float]] = {
    "reference": ("reference", (), [LOAD, "sleep 1", "cat /sys/kernel/taskmonitor >/dev/null",
                                    "cat /sys/kernel/debug/taskmonitor >/dev/null",
                                    "echo 2 > /proc/sys/vm/drop_caches", "rmmod taskmonitor"],
                  "", 0),
    # a 1 ms delay after the module's own mutex_unlock in the readers (a kretprobe: the module
    # is not modified)
    "kasan_use_after_free": ("show_noref", ("grader_delay",),
                             [LOAD, DELAY, "sleep 1", READERS],
                             r"BUG: KASAN", 60),
    "lock_held_returning_to_user": ("seq_stop_keeps_lock", (),
                                    [LOAD, "sleep 1", SHORT_READ],
                                    r"lock held when returning to user space", 10),
    "sleeping_in_atomic": ("mutex_under_spinlock", (), [LOAD], r"sleeping function called", 10),
    # nothing reaches the console: mempool_alloc(GFP_KERNEL) waits for an element, it never
    # returns NULL; the sampler just stops (at once here, after its reserve with the reference)
    "failslab_no_reserve": ("pool_no_reserve", (), [LOAD, "sleep 1", FAILSLAB, "sleep 3",
                                                    "rmmod taskmonitor"],
                            "", 0),
}


def _materialise(bug: str, dest: Path) -> Path:
    text = (project_root() / REFERENCE).read_text()
    for old, new in BUGS[bug]:
        if text.count(old) != 1:
            raise SystemExit(f"bug {bug}: the reference no longer has exactly one {old!r}")
        text = text.replace(old, new)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "taskmonitor.c").write_text(text)
    return dest


def _wait_for(g: Guest, pattern: str, seconds: float) -> bool:
    rx = re.compile(pattern)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(rx.search(ln) for ln in g.console_lines):
            g.run("sleep 2", 10)  # the rest of the report
            return True
        g.run("sleep 0.5", 10)
    return False


def capture_debug(profile: str = "debug", env: session.Environment | None = None,
                  out: Path | None = None) -> None:
    env = env or session.prepare(profile)
    out = out or HERE / profile
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kos = {}
        for bug in sorted({c[0] for c in DEBUG_CASES.values()}):
            b = session.build(env, _materialise(bug, Path(tmp) / "src" / bug), "taskmonitor",
                              ["taskmonitor.o"], Path(tmp) / bug,
                              [f"-DTM_STAGE={STAGES.get(bug, 7)}"])
            if not b.ko:
                raise SystemExit(f"{bug} does not build:\n{b.log}")
            kos[bug] = b.ko
        for helper in sorted({h for c in DEBUG_CASES.values() for h in c[1]}):
            b = session.build(env, DEBUG_SRC, helper, [f"{helper}.o"], Path(tmp) / helper)
            if not b.ko:
                raise SystemExit(f"{helper} does not build:\n{b.log}")
            kos[helper] = b.ko
        for case, (bug, helpers, commands, pattern, wait) in DEBUG_CASES.items():
            mods = {"taskmonitor": kos[bug], **{h: kos[h] for h in helpers}}
            t0 = time.monotonic()
            seen = None
            with session.boot(env, mods, Path(tmp) / f"g-{case}") as g:
                try:
                    for c in commands:
                        g.run(c, 20)
                    seen = _wait_for(g, pattern, wait) if pattern else True
                    g.run("sleep 0.5", 5)
                except (GuestDied, GuestHung):
                    pass
                lines = list(g.console_lines)
            (out / f"{case}.log").write_text("\n".join(lines) + "\n")
            print(f"{profile}/{case}: {len(lines)} lines, {pattern or 'clean'}: "
                  f"{'seen' if seen else 'NOT seen'} in {time.monotonic() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="append")
    args = ap.parse_args()
    for p in args.profile or ["6.1"]:
        capture(p)
        if p == "debug":
            capture_debug(p)


if __name__ == "__main__":
    main()
