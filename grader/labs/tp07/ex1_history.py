"""Exercise 1: a history of samples in a list under a mutex, shown in sysfs, freed at exit."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.checks.lifecycle import unload
from grader.labs.tp07.probes import Tp07Probes, kernel_reports
from grader.labs.tp07.samples import new_since, parse, strict_lines
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall


def lab(c: CheckCall) -> Tp07Probes:
    return c.run.lab  # type: ignore[no-any-return]


def strict_file(c: CheckCall, path: str) -> Outcome:
    """The lab's exact path shows samples of the target, every line in the lab's format."""
    p, s = lab(c), c.guest
    p.views(s)  # waits for the module's first samples, wherever they are shown
    if path in p.hung:
        return Outcome.fail(f"reading {path} does not return (the module waits for a lock it "
                            "never released): no line to check", path, "no answer", f"cat {path}")
    target = p.target(s)
    line_format = c.rubric.settings["line_format"]
    page = int(c.rubric.settings["page_size"])
    # After drop_caches a slow sampler's history is empty for a while: wait for a sample.
    got: list = []

    def shows() -> bool:
        r = s.read(path)
        got[:] = [r]
        return r.ok and any(pid == target for pid, _, _ in strict_lines(r.stdout, line_format)[0])

    s.wait_for(shows, max(5.0, 3 * (p.period_s(s)) + 1))
    r = got[0]
    s.record(f"cat {path}", r)
    if not r.ok:
        found = ", ".join(v.path for v in p.views(s).views) or "no file"
        return Outcome.fail(f"{path} cannot be read ({r.stderr.strip() or 'missing'}); the "
                            f"samples are shown in: {found}", path, r.stderr.strip(), f"cat {path}")
    text = r.stdout
    if len(text.encode()) >= page - 64 and not text.endswith("\n"):
        text = text.rsplit("\n", 1)[0]  # a line cut at PAGE_SIZE is the page-bound check's
    good, bad = strict_lines(text, line_format)
    if bad:
        return Outcome.fail(f"{len(bad)} line(s) not in the lab's format 'pid N usr N sys N'",
                            "pid N usr N sys N", "\n".join(bad[:5]), f"cat {path}")
    if not any(pid == target for pid, _, _ in good):
        return Outcome.fail(f"no line of {path} is a sample of the target PID {target}",
                            f"pid {target} usr N sys N", r.stdout[:300] or "empty", f"cat {path}")
    return Outcome.ok(f"{len(good)} line(s) like '{text.splitlines()[-1].strip()}'")


@check("shows_samples")
def shows_samples(c: CheckCall) -> Outcome:
    p = lab(c)
    v = p.views(c.guest)
    target = p.target(c.guest)
    if not v.views:
        tried = ", ".join(v.candidates) or "none (the module created no readable file)"
        return Outcome.fail(f"no file of the module shows samples of the target PID {target} "
                            f"within {v.waited_s:.0f} s of guest time (files read: {tried})")
    shown = [f"{x.path}: '{x.read.of(target)[-1].line.strip()}'" for x in v.views]
    return Outcome.ok(f"samples of PID {target} in " + "; ".join(shown))


@check("sysfs_format")
def sysfs_format(c: CheckCall) -> Outcome:
    return strict_file(c, c.rubric.settings["sysfs"])


@check("usr_grows")
def usr_grows(c: CheckCall) -> Outcome:
    """The user time shown is the target's: it grows while the target spins and hardly when it
    idles (the same guest time each), whatever its unit (ns, ms, jiffies, seconds). A failed
    comparison is measured once more: a module that shows something else fails both, while a
    correct one was seen once (in 1 CI run) to jump by 0.9 s of usr during the idle window."""
    p, s = lab(c), c.guest
    views = p.views(s).views
    if not views:
        return Outcome.fail("no file shows samples")
    first = _usr_grows_once(c)
    if first.status is Status.PASSED:
        return first
    again = _usr_grows_once(c)
    if again.status is Status.PASSED:
        return Outcome(Status.PASSED, again.reason + " (measured twice: the first time, "
                       + first.reason + ")", again.evidence)
    return again


def _usr_grows_once(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    views = p.views(s).views
    target = p.target(s)
    window = max(2.0, 4 * p.period_s(s))
    paths = [v.path for v in views]
    pids = p.pids(s)
    a, _ = p._read_timed(s, paths)
    s.sleep(window)  # the target idles (it burns 2 % of each 100 ms, see on_guest)
    b, _ = p._read_timed(s, paths)
    s.sh(f"kill -USR1 {target}", quiet=True)  # now it spins flat out
    s.sleep(window)
    cc, _ = p._read_timed(s, paths)
    s.sh(f"kill -USR2 {target}", quiet=True)
    # The file that shows the newest samples (a bounded history may stop at its first ones).
    reads = [(x, parse(a.get(x, ""), pids), parse(b.get(x, ""), pids), parse(cc.get(x, ""), pids))
             for x in paths]
    path, ra, rb, rc = max(reads, key=lambda t: new_since(t[1], t[3]))
    usr = [r.of(target)[-1].usr if r.of(target) else None for r in (ra, rb, rc)]
    seen = (f"{path}: newest usr {usr[0]}, then {usr[1]} after {window:.0f} s idle, then "
            f"{usr[2]} after {window:.0f} s spinning (guest time)")
    ev = Evidence("the target's user time, idle then CPU-bound, the same guest time each",
                  "it grows while the target spins, far more than while it idles", seen)
    if None in usr:
        return Outcome(Status.FAILED, "no sample of the target to compare", [ev])
    if new_since(rb, rc) == 0 or new_since(ra, rb) == 0:
        return Outcome(Status.FAILED, f"no new sample in {window:.0f} s of guest time", [ev])
    idle, busy = usr[1] - usr[0], usr[2] - usr[1]  # type: ignore[operator]
    if busy > 0 and busy >= 3 * max(idle, 0):
        return Outcome(Status.PASSED, f"usr grew by {busy} while the target spun, {idle} while "
                       "it idled", [ev])
    return Outcome(Status.FAILED, f"usr grew by {busy} while the target spun and {idle} while it "
                   "idled: the usr shown is not the target's user time (is the target's task "
                   "sampled, and its utime shown as usr?)", [ev])


@check("sysfs_page_bound")
def sysfs_page_bound(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    views = p.views(s)
    sysfs = views.area("sysfs")
    if not sysfs:
        elsewhere = ", ".join(v.path for v in views.views)
        return Outcome.fail(f"no sysfs file shows samples: the lab's sysfs output is missing "
                            f"(the history is shown in {elsewhere} only)")
    long = p.long_history(s)
    page = int(c.rubric.settings["page_size"])
    complete = views.best()
    complete = complete if complete is not None and complete.area != "sysfs" else None
    ev = [Evidence("history grown before reading", f">= {long.samples_wanted} samples",
                   f"~{long.samples_seen} samples after {long.waited_s:.0f} s of guest time "
                   f"({long.rate:.1f} samples/s)")]
    if long.samples_seen < long.samples_wanted:
        return Outcome(Status.SKIPPED, f"the history did not reach {long.samples_wanted} samples "
                       f"within {c.rubric.limits.history_wait_s:.0f} s of guest time", ev)
    reports = kernel_reports(long.log, s)
    for v in sysfs:
        text = long.reads.get(v.path, "")
        size = len(text.encode())
        read = parse(text, p.pids(s))
        ev.append(Evidence(f"cat {v.path}", f"<= {page} bytes, the newest samples",
                           f"{size} bytes, {len(read.lines)} lines"))
        if long.bad_count:
            return Outcome(Status.FAILED, "the show function returned more than PAGE_SIZE bytes "
                           "(the kernel logged 'returned bad count')", ev)
        if reports:
            return Outcome(Status.FAILED, "reading sysfs produced a kernel report: "
                           + reports[0].line.strip(), ev)
        if size >= page - 1 and not text.endswith("\n"):
            return Outcome(Status.FAILED, f"{v.path} was cut at PAGE_SIZE in the middle of a line",
                           ev)
        if not read.samples:
            return Outcome(Status.FAILED, f"{v.path} is empty with a long history", ev)
        if complete is not None:
            whole = parse(long.reads.get(complete.path, ""), p.pids(s))
            keys = whole.keys()
            idx = max((i for i, k in enumerate(keys) if k == read.keys()[-1]), default=-1)
            lag = len(keys) - 1 - idx if idx >= 0 else None
            if lag is None or lag > max(20, len(read.samples) // 5):
                behind = "not in the history" if lag is None else f"{lag} samples behind the newest"
                return Outcome(Status.FAILED, f"{v.path} does not show the latest samples: its "
                               f"last line is {behind} of {complete.path}", ev)
    return Outcome(Status.PASSED, "sysfs stays within a page and shows the newest samples with "
                   f"a history of ~{long.samples_seen} samples", ev)


@check("memory_returned")
def memory_returned(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    rec = unload(s)
    if rec.thread_crash is not None and not rec.lab_observed:
        return Outcome.skip("the kernel crashed right after rmmod, in a thread the module left "
                            "running (charged to the kthread check): nothing could be observed")
    u = p.unload_obs(s)
    if u is None:
        return Outcome.skip("rmmod did not succeed: nothing to observe")
    where = (", ".join(f"{k}: {v}" for k, v in u.before.module.items()) or
             f"kmalloc caches: {u.before.kmalloc} objects in all")
    after = (", ".join(f"{k}: {v}" for k, v in u.after.module.items()) or
             f"kmalloc caches: {u.after.kmalloc} objects in all")
    ev = Evidence("slab objects before and after rmmod", "the samples freed",
                  f"{u.history if u.history is not None else '?'} samples shown before; "
                  f"before: {where}; after: {after}; caches left: {', '.join(u.caches_left) or 'none'}")
    if "ex1.freed" in u.blame:
        return Outcome(Status.FAILED, f"{u.blame['ex1.freed']}: the exit function does not free "
                       "the history", [ev])
    others = {k: v for k, v in u.blame.items() if k != "ex1.freed"}
    note = "; ".join(f"left over, charged to {k}: {v}" for k, v in others.items())
    return Outcome(Status.PASSED, "the samples are freed at rmmod" + (f" ({note})" if note else ""),
                   [ev])
