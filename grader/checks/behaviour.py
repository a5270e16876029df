"""Behavioural checks: what the module does in the guest, observed from user space."""
from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING

from grader import klog
from grader.checks import Outcome, check
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import Context, Samples
    from grader.rubric import CheckSpec

def _fmt_bad(s: Samples) -> str:
    return "\n".join(s.bad[:5])


# ---- global ------------------------------------------------------------------------------
@check("loads")
def loads(ctx: Context, spec: CheckSpec) -> Outcome:
    r = ctx.ensure_loaded()
    params = " ".join(f"{k}={v}" for k, v in ctx.insmod_params().items())
    note = "" if ctx.period_param else " (no sampling-period parameter: real time is used)"
    if r is None:
        return Outcome.ok(f"loaded with {params}{note}")
    return Outcome.ok(f"insmod {ctx.module}.ko {params} succeeded{note}")


@check("unloads")
def unloads(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    # Where samples can live: the general kmalloc caches (exercises 1-2) and the module's own
    # cache. Scanning every cache's allocation traces costs seconds under TCG; these suffice.
    traces = ctx.slab_traces(["kmalloc-[0-9]*", ctx.rubric.slab_cache])
    caches = [c for c, (_, mine) in traces.items() if mine or c == ctx.rubric.slab_cache]
    # Objects of the module's own cache are all the module's, whoever called the allocator
    # (mempool_alloc_slab shows up as the caller with a mempool).
    ctx.facts["slab_loaded"] = {c: (t, t if c == ctx.rubric.slab_cache else m)
                                for c, (t, m) in traces.items() if c in caches}
    r = ctx.guest.rmmod(ctx.module, timeout=ctx.timeout("insmod"))  # type: ignore[union-attr]
    ctx.record(f"rmmod {ctx.module}", r, "exit 0")
    if r.timed_out:
        return Outcome(Status.TIMED_OUT, "rmmod hung (the exit function never returned)")
    if not r.ok:
        return Outcome.fail(f"rmmod failed: {r.stderr.strip()}")
    ctx.loaded = False
    ctx.facts["unloaded_mark"] = ctx.console_mark()
    ctx.facts["slab_after"] = ctx.slab_traces(caches) if caches else {}
    left = [p for p in (ctx.rubric.sysfs, ctx.rubric.debugfs) if ctx.has_file(p)]
    if left:
        return Outcome.fail("files left behind after rmmod: " + ", ".join(left),
                            "no file of the module", ", ".join(left), "test -e")
    return Outcome.ok("rmmod succeeded and the sysfs/debugfs files are gone")


@check("reloads")
def reloads(ctx: Context, spec: CheckSpec) -> Outcome:
    g = ctx.ensure_guest()
    r = g.insmod(ctx.module, ctx.insmod_params(), timeout=ctx.timeout("insmod"))
    ctx.record(f"insmod {ctx.module}.ko (again)", r, "exit 0")
    if not r.ok:
        return Outcome.fail(f"the module does not load a second time: {r.stderr.strip()}")
    time.sleep(3 * ctx.sample_period_s)
    r2 = g.rmmod(ctx.module, timeout=ctx.timeout("insmod"))
    ctx.record(f"rmmod {ctx.module} (again)", r2, "exit 0")
    if not r2.ok:
        return Outcome.fail(f"the second rmmod fails: {r2.stderr.strip()}")
    return Outcome.ok("loads and unloads a second time")


@check("no_kthread_left")
def no_kthread_left(ctx: Context, spec: CheckSpec) -> Outcome:
    threads = ctx.facts.get("module_kthreads", [])
    if not threads:
        return Outcome.skip("no kernel thread was seen starting with the module")
    alive = sorted(set(threads) & set(ctx.kthreads()))
    if alive:
        names = ctx.sh(" ".join(f"cat /proc/{p}/comm;" for p in alive), quiet=True).stdout.split()
        return Outcome.fail(f"kernel thread(s) still running after rmmod: {', '.join(names)}",
                            "the kthread stopped by kthread_stop() in the exit function",
                            ", ".join(f"{p} {n}" for p, n in zip(alive, names, strict=False)))
    return Outcome.ok(f"the module's thread(s) {threads} are gone")


@check("clean_log")
def clean_log(ctx: Context, spec: CheckSpec) -> Outcome:
    found: list[tuple[klog.Anomaly, list[str]]] = []
    for log in ctx.logs:
        lines = log.lines if log.crash_line is None else log.lines[: log.crash_line]
        for a in klog.scan(lines).anomalies:
            if a.severity != "info":
                found.append((a, klog.excerpt(lines, a.line_no)))
    if not found:
        return Outcome.ok(f"no report in the kernel log of {len(ctx.logs)} guest(s) "
                          "(crashes are counted by the check where they happened)")
    kinds = sorted({a.kind for a, _ in found})
    ev = [Evidence(what="kernel log", expected="no oops, BUG, WARNING or slab report",
                   seen=klog.strip_timestamp(a.line), log=ex) for a, ex in found[:3]]
    return Outcome(Status.FAILED, f"kernel log reports: {', '.join(kinds)}: "
                   f"{klog.strip_timestamp(found[0][0].line).strip()}", ev)


# ---- exercise 1 --------------------------------------------------------------------------
def _wait_lines(ctx: Context, path: str, n: int) -> tuple[bool, Samples]:
    last: list[Samples] = []

    def enough() -> bool:
        _, s = ctx.read_samples(path, quiet=True)
        last[:] = [s]
        return len(s.records) >= n or bool(s.bad)

    ok = ctx.wait_for(enough, ctx.history_wait(n))
    return ok, last[0]


def _history_format(ctx: Context, path: str) -> Outcome:
    """The file exists and shows samples of the target, every line in the lab's format."""
    ctx.ensure_loaded()
    if not ctx.has_file(path):
        return Outcome.fail(f"{path} does not exist", path, "missing", f"test -e {path}")
    _wait_lines(ctx, path, 3)
    r, s = ctx.read_samples(path)
    if not r.ok:
        return Outcome.fail(f"reading {path} fails: {r.stderr.strip()}")
    if s.bad:
        return Outcome.fail(f"{len(s.bad)} line(s) not in the format 'pid N usr N sys N'",
                            "pid N usr N sys N", _fmt_bad(s), f"cat {path}")
    if not s.records:
        return Outcome.fail(f"{path} shows no sample", "samples", "empty", f"cat {path}")
    if not s.of(ctx.target_pid):
        return Outcome.fail(f"no sample of the target PID {ctx.target_pid} in {path}",
                            f"pid {ctx.target_pid} ...", s.lines[0], f"cat {path}")
    return Outcome.ok(f"{len(s.records)} line(s) like '{s.lines[-1].strip()}'")


@check("sysfs_format")
def sysfs_format(ctx: Context, spec: CheckSpec) -> Outcome:
    return _history_format(ctx, ctx.rubric.sysfs)


@check("usr_grows")
def usr_grows(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    _, a = ctx.read_samples(ctx.rubric.sysfs)
    time.sleep(max(0.5, 20 * ctx.sample_period_s) if ctx.period_param else 3.0)
    _, b = ctx.read_samples(ctx.rubric.sysfs)
    first, last = a.of(ctx.target_pid), b.of(ctx.target_pid)
    if not first or not last:
        return Outcome.fail("no samples of the target to compare")
    if max(u for _, u, _ in last) > min(u for _, u, _ in first):
        return Outcome.ok(f"usr went from {first[0][1]} to {last[-1][1]} for a CPU-bound target")
    return Outcome.fail("the user time of a CPU-bound process does not grow",
                        "usr increasing", f"{first[0][1]} ... {last[-1][1]}")


def _sampling_rate(ctx: Context, seconds: float = 0.6) -> float:
    """Samples per second, measured: the newest line of a first read is found again in a
    second one (cumulative times make lines unique), the lines after it are new."""
    _, a = ctx.read_samples(ctx.rubric.sysfs, quiet=True)
    t0 = time.monotonic()
    time.sleep(seconds)
    _, b = ctx.read_samples(ctx.rubric.sysfs, quiet=True)
    dt = time.monotonic() - t0
    if not a.records or not b.records:
        return 0.0
    last = a.records[-1]
    idx = max((i for i, r in enumerate(b.records) if r == last), default=-1)
    new = len(b.records) - 1 - idx if idx >= 0 else len(b.records)
    return new / dt


@check("sysfs_page_bound")
def sysfs_page_bound(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    page = ctx.rubric.page_size
    # Identical lines (a module whose values never change) defeat the measurement: then assume
    # a slow rate, at most half the nominal one (a period is rounded up to whole ticks).
    rate = _sampling_rate(ctx) or 0.5 / ctx.sample_period_s
    _, s = ctx.read_samples(ctx.rubric.sysfs, quiet=True)
    line = max(1.0, len(s.text) / max(1, len(s.lines)))
    # Twice what one page can hold: a module that does not bound its output must overflow.
    need = int(2 * page / line) + 10
    have = rate * (time.monotonic() - ctx.facts["loaded_at"])
    wait = (need - have) / rate if rate > 0 else float("inf")
    if wait > ctx.rubric.history_wait_s:
        return Outcome.skip(f"at {rate:.1f} samples/s the {need} samples needed would take "
                            f"{wait:.0f} s more (sampling-period parameter: "
                            f"{ctx.period_param or 'none'})")
    if wait > 0:
        time.sleep(wait)
    mark = ctx.console_mark()
    r = ctx.sh(f"cat {shlex.quote(ctx.rubric.sysfs)} | wc -c; dmesg | grep -c 'returned bad count'")
    size, bad = (int(x) for x in r.stdout.split()[:2])
    _, s = ctx.read_samples(ctx.rubric.sysfs, quiet=True)
    anomalies = klog.scan(ctx.console_since(mark))
    seen = f"{size} bytes, {len(s.records)} lines, after ~{max(need, int(have))} samples"
    ctx.evidence.append(Evidence("sysfs after a history of two pages", f"<= {page} bytes", seen))
    if bad:
        return Outcome.fail("the show function returned more than PAGE_SIZE bytes "
                            "(the kernel logged 'returned bad count')")
    if size >= page - 1 and (s.bad or not s.text.endswith("\n")):
        return Outcome.fail(f"the output was cut at PAGE_SIZE in the middle of a line ({seen})")
    if not anomalies.clean:
        return Outcome.fail("reading sysfs produced a kernel report: "
                            + klog.strip_timestamp(anomalies.anomalies[0].line))
    if size == 0 or not s.records:
        return Outcome.fail("sysfs is empty with a long history")
    # The LATEST samples: where the whole history is readable (debugfs), sysfs's last line
    # must be one of its newest (a few samples may be taken between the two reads).
    r_d = ctx.sh(f"cat {shlex.quote(ctx.rubric.debugfs)} 2>/dev/null", quiet=True)
    d = ctx.parse(r_d.stdout if r_d.ok else "")
    if d.records:
        idx = max((i for i, x in enumerate(d.records) if x == s.records[-1]), default=-1)
        lag = len(d.records) - 1 - idx if idx >= 0 else None
        if lag is None or lag > max(20, len(s.records) // 5):
            behind = "not in the history" if lag is None else f"{lag} samples behind the newest"
            return Outcome.fail(f"sysfs does not show the latest samples: its last line is {behind}",
                                "the newest samples", s.lines[-1], "sysfs vs debugfs")
    return Outcome.ok(f"{seen}; {rate:.0f} samples/s measured")


@check("memory_returned")
def memory_returned(ctx: Context, spec: CheckSpec) -> Outcome:
    loaded, after = ctx.facts.get("slab_loaded"), ctx.facts.get("slab_after")
    if not loaded:
        return Outcome.skip("no slab object allocated by the module was seen while it was loaded")
    mine = sum(m for _, m in loaded.values())
    freed = sum(t for t, _ in loaded.values()) - sum(t for t, _ in after.values())
    detail = ", ".join(f"{c}: {loaded[c][1]} of the module's, {loaded[c][0]} -> "
                       f"{after.get(c, (0, 0))[0]} in all" for c in loaded)
    ev = [Evidence(what="SLUB allocation traces before and after rmmod", expected=f"~{mine} objects freed",
                   seen=detail)]
    if freed >= 0.8 * mine - 16:
        return Outcome(Status.PASSED, f"{freed} objects returned at rmmod ({mine} were the module's)", ev)
    return Outcome(Status.FAILED, f"only {max(freed, 0)} of the module's {mine} objects were freed "
                   "at rmmod: the samples leak", ev)


# ---- exercise 2 --------------------------------------------------------------------------
@check("drop_caches_shrinks")
def drop_caches_shrinks(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    need = 60
    ctx.wait_for(lambda: len(ctx.history().records) >= need, ctx.history_wait(need))
    before = len(ctx.history().records)
    objs_before = ctx.cache_objects()
    if before < 20:
        return Outcome.skip(f"the history stayed short ({before} samples visible)")
    ctx.sh("echo 2 > /proc/sys/vm/drop_caches", expected="exit 0")
    after = len(ctx.history().records)
    objs_after = ctx.cache_objects()
    seen = f"{before} samples visible before, {after} after"
    if objs_before is not None and objs_after is not None:
        seen += f"; {ctx.rubric.slab_cache} objects {objs_before} -> {objs_after}"
    ctx.evidence.append(Evidence("echo 2 > /proc/sys/vm/drop_caches", "the history shrinks", seen))
    if after <= before // 2:
        return Outcome.ok(f"drop_caches shrank the history: {seen}")
    return Outcome.fail(f"drop_caches did not shrink the history ({seen}): the shrinker's "
                        "count_objects or scan_objects does not report or free samples")


# ---- exercise 3 and 4 --------------------------------------------------------------------
@check("slab_cache_visible")
def slab_cache_visible(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    name = ctx.rubric.slab_cache
    r = ctx.sh(f"grep '^{name} ' /proc/slabinfo", expected=f"a line for {name}")
    if not r.ok:
        return Outcome.fail(f"no '{name}' cache in /proc/slabinfo (KMEM_CACHE(task_sample, ...) "
                            "names it after the struct)")
    n = ctx.cache_objects()
    if not n:
        return Outcome.fail(f"the {name} cache holds no object while samples are taken")
    return Outcome.ok(f"{name} is in /proc/slabinfo and holds {n} objects")


@check("slab_cache_destroyed")
def slab_cache_destroyed(ctx: Context, spec: CheckSpec) -> Outcome:
    name = ctx.rubric.slab_cache
    mark = ctx.facts.get("unloaded_mark", 0)
    lines = ctx.console_since(0)[max(0, mark - 40):]
    leak = [ln for ln in lines if "still has objects" in ln or "Objects remaining" in ln]
    r = ctx.sh(f"grep '^{name} ' /proc/slabinfo", expected="no line")
    if leak:
        return Outcome.fail(f"kmem_cache_destroy found objects still allocated: {leak[0].strip()}",
                            "an empty cache at destroy", leak[0])
    if r.ok:
        return Outcome.fail(f"the {name} cache is still in /proc/slabinfo after rmmod "
                            "(kmem_cache_destroy missing)")
    return Outcome.ok(f"{name} is gone from /proc/slabinfo, destroyed empty")


@check("pool_preallocated")
def pool_preallocated(ctx: Context, spec: CheckSpec) -> Outcome:
    objects, samples = ctx.facts.get("prealloc", (None, 0))
    if objects is None:
        return Outcome.skip("the slab cache did not exist right after load")
    seen = f"{objects} objects in {ctx.rubric.slab_cache} for {samples} samples, right after insmod"
    ctx.evidence.append(Evidence("SLUB allocation traces right after insmod",
                                 "more objects than samples (the pool's reserve)", seen))
    if objects >= samples + 2:
        return Outcome.ok(seen)
    return Outcome.fail(f"no preallocated reserve: {seen}")


# ---- exercise 5 --------------------------------------------------------------------------
@check("concurrent_read_shrink")
def concurrent_read_shrink(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    secs = int(spec.params.get("seconds", 4))
    interval = float(spec.params.get("drop_interval_s", 0.05))
    mark = ctx.console_mark()
    # Readers of both files (no fork per read) while drop_caches runs every `interval`: the
    # history regrows between drops, so every drop frees samples that a reader may be showing.
    readers = " ".join(f"readloop {shlex.quote(p)} {secs} > /tmp/conc.{i} & "
                       for i, p in enumerate((ctx.rubric.sysfs, ctx.rubric.debugfs))
                       if ctx.has_file(p))
    script = (
        f"{readers} end=$(( $(date +%s) + {secs} )); "
        "while [ $(date +%s) -lt $end ]; do echo 2 > /proc/sys/vm/drop_caches; "
        f"usleep {int(interval * 1e6)}; done; wait; cat /tmp/conc.*; rm -f /tmp/conc.*"
    )
    r = ctx.sh(script, timeout=secs * 3 + ctx.timeout())
    anomalies = klog.scan(ctx.console_since(mark))
    reads = [ln for ln in r.stdout.splitlines() if ln.startswith("reads=")]
    poisoned = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("reads=")]
    if not anomalies.clean:
        a = next(x for x in anomalies.anomalies if x.severity != "info")
        lines = ctx.console_since(mark)
        return Outcome(Status.FAILED, f"kernel report while reading during shrinking: "
                       f"{klog.strip_timestamp(a.line).strip()}",
                       [Evidence("kernel log", "no report", a.line, klog.excerpt(lines, a.line_no))])
    if poisoned:
        return Outcome.fail("freed memory was displayed (slab poison values in the output)",
                            "valid samples", "\n".join(poisoned[:5]))
    return Outcome.ok(f"{' + '.join(x[6:] for x in reads)} reads during {secs} s of "
                      f"drop_caches every {interval * 1000:.0f} ms: no report")


# ---- exercise 6 --------------------------------------------------------------------------
@check("debugfs_format")
def debugfs_format(ctx: Context, spec: CheckSpec) -> Outcome:
    return _history_format(ctx, ctx.rubric.debugfs)


def _debugfs_size(ctx: Context) -> int:
    r = ctx.sh(f"cat {shlex.quote(ctx.rubric.debugfs)} | wc -c", quiet=True)
    return int(r.stdout.split()[0]) if r.ok and r.stdout.split() else 0


@check("debugfs_long")
def debugfs_long(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    page = ctx.rubric.page_size
    want = int(page * 1.5)
    ok = ctx.wait_for(lambda: _debugfs_size(ctx) > want, ctx.history_wait(want // 20))
    size = _debugfs_size(ctx)
    r = ctx.sh(f"cat {shlex.quote(ctx.rubric.sysfs)} | wc -c", quiet=True)
    sysfs = int(r.stdout.split()[0]) if r.ok and r.stdout.split() else 0
    ctx.evidence.append(Evidence("cat debugfs | wc -c", f"> {page} bytes", f"{size} bytes "
                                 f"(sysfs: {sysfs})"))
    if ok:
        return Outcome.ok(f"debugfs shows {size} bytes, sysfs {sysfs}")
    return Outcome.fail(f"debugfs stays at {size} bytes: the whole history is not shown")


@check("debugfs_short_reads")
def debugfs_short_reads(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    path = shlex.quote(ctx.rubric.debugfs)
    ctx.sh(f"dd if={path} bs=7 2>/dev/null > /tmp/a; cat {path} > /tmp/b; "
               "wc -c < /tmp/a; wc -c < /tmp/b")
    r_a = ctx.sh("cat /tmp/a", quiet=True)
    r_b = ctx.sh("cat /tmp/b; rm -f /tmp/a /tmp/b", quiet=True)
    a, b = r_a.stdout.splitlines(), r_b.stdout.splitlines()
    if not a:
        return Outcome.fail("reading 7 bytes at a time gives nothing", "the history", "empty")
    # Samples are appended while we read: the short reads must be a prefix of the long one.
    if b[: len(a)] == a:
        return Outcome.ok(f"{len(a)} records read 7 bytes at a time, identical to one read")
    first = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y) if any(
        x != y for x, y in zip(a, b, strict=False)) else min(len(a), len(b))
    dup = len(a) - len(set(a))
    return Outcome.fail(f"short reads differ from one read from line {first + 1} "
                        f"({dup} repeated line(s), {len(a)} vs {len(b)} lines)",
                        "\n".join(b[first:first + 3]), "\n".join(a[first:first + 3]),
                        "dd bs=7 vs cat")


# ---- exercise 7 --------------------------------------------------------------------------
def _write(ctx: Context, text: str) -> tuple[bool, str]:
    r = ctx.sh(f"echo {shlex.quote(text)} > {shlex.quote(ctx.rubric.debugfs)}")
    return r.ok, r.stderr.strip()


@check("add_pid")
def add_pid(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    pid = ctx.guest.spawn("burn")  # type: ignore[union-attr]
    ctx.facts["second_pid"] = pid
    ok, err = _write(ctx, str(pid))
    if not ok:
        return Outcome.fail(f"writing {pid} fails: {err}")
    seen = ctx.wait_for(lambda: bool(ctx.history().of(pid)), max(1.0, 20 * ctx.sample_period_s))
    if not seen:
        return Outcome.fail(f"no sample of PID {pid} after it was added")
    both = ctx.history()
    return Outcome.ok(f"samples of PID {pid} appear ({len(both.of(pid))}) next to the target's "
                      f"({len(both.of(ctx.target_pid))})")


@check("remove_pid")
def remove_pid(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    pid = ctx.facts.get("second_pid")
    if not pid:
        return Outcome.skip("no second PID was added")
    ok, err = _write(ctx, f"-{pid}")
    if not ok:
        return Outcome.fail(f"writing -{pid} fails: {err}")
    time.sleep(2 * ctx.sample_period_s)
    n1 = len(ctx.history().of(pid))
    time.sleep(max(0.5, 30 * ctx.sample_period_s))
    n2 = len(ctx.history().of(pid))
    target = len(ctx.history().of(ctx.target_pid))
    ctx.evidence.append(Evidence(f"samples of PID {pid} after -{pid}", "no new sample",
                                 f"{n1}, then {n2} later"))
    if n2 > n1:
        return Outcome.fail(f"PID {pid} is still sampled after -{pid} ({n1} -> {n2} samples)")
    if not target:
        return Outcome.fail("removing the second PID also stopped the target's samples")
    return Outcome.ok(f"no new sample of PID {pid} after -{pid}")


@check("bad_writes")
def bad_writes(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    accepted = []
    for text in spec.params.get("writes", []):
        ok, _ = _write(ctx, text)
        if ok:
            accepted.append(text)
    if not ctx.history().records:
        return Outcome.fail("the module stopped working after bad writes")
    if accepted:
        return Outcome.fail("accepted without error: " + ", ".join(repr(a) for a in accepted),
                            "write() fails with -EINVAL/-ESRCH/-ENOENT", "success")
    return Outcome.ok("every bad write failed with an error: "
                      + ", ".join(repr(w) for w in spec.params.get("writes", [])))


@check("target_exits")
def target_exits(ctx: Context, spec: CheckSpec) -> Outcome:
    ctx.ensure_loaded()
    mark = ctx.console_mark()
    pid = ctx.guest.spawn("burn")  # type: ignore[union-attr]
    ok, err = _write(ctx, str(pid))
    if not ok:
        return Outcome.skip(f"could not add PID {pid}: {err}")
    time.sleep(5 * ctx.sample_period_s + 0.2)
    ctx.sh(f"kill -9 {pid}", expected="exit 0")
    time.sleep(max(0.5, 20 * ctx.sample_period_s))
    r1, _ = ctx.read_samples(ctx.rubric.debugfs)
    r2, _ = ctx.read_samples(ctx.rubric.sysfs)
    anomalies = klog.scan(ctx.console_since(mark))
    if not anomalies.clean:
        return Outcome.fail("kernel report after a monitored process exited: "
                            + klog.strip_timestamp(anomalies.anomalies[0].line))
    if not (r1.ok and r2.ok):
        return Outcome.fail("reading the history fails after a monitored process exited")
    return Outcome.ok(f"PID {pid} was killed while monitored; the module goes on")
