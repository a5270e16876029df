"""Generic behavioural checks of any module: it loads, unloads, leaves nothing behind, loads
again, stops its threads, and the kernel log stays clean."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grader import inventory, klog
from grader.checks import Outcome, check
from grader.guest import CommandResult, GuestDied
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall, RunContext
    from grader.checks.session import GuestSession


@dataclass
class Unload:
    """What rmmod did, the first time it was run in a clock's guests."""

    result: CommandResult
    console: tuple[int, int]  # console lines printed during rmmod and right after: [start, end)
    observed: bool = False  # what rmmod left was looked at (the fields below)
    left: list[str] = field(default_factory=list)  # the module's files and folders still there
    caches_left: list[str] = field(default_factory=list)  # its slab caches still there
    lab: str = ""  # the lab's one-line observation right after rmmod
    lab_observed: bool = False  # that observation was made (it comes after `left`/`caches_left`)
    threads: dict[int, str] = field(default_factory=dict)  # its kernel threads still running
    # The kernel died right after rmmod in a thread the module left running: (reason, log).
    thread_crash: tuple[str, list[str]] | None = None


_COMM = re.compile(r"\bComm: (\S+)")
_MARK = "grader-unload:"
_MARKED = re.compile(re.escape(_MARK) + r" rc=(-?\d+) left=\[([^\]]*)\] caches=\[([^\]]*)\]")
_LAB_MARK = "grader-unload-lab:"
_LAB_MARKED = re.compile(re.escape(_LAB_MARK) + r" lab=\[(.*)\]")


def crashed_thread(lines: list[str]) -> str | None:
    """The task named in the first oops header of a crash log ("CPU: 0 PID: 91 Comm: x")."""
    for line in lines:
        m = _COMM.search(line)
        if m:
            return m.group(1)
    return None


def _observe(rec: Unload, text: str) -> int | None:
    """What the unload script printed (stdout, or the kernel log when the guest died): rmmod's
    exit status, or None when the script's mark is not there."""
    m = _MARKED.search(text)
    if m is None:
        return None
    rec.observed = True
    rec.left = m.group(2).split()
    rec.caches_left = m.group(3).split()
    lab = _LAB_MARKED.search(text, m.end())
    if lab is not None:
        rec.lab_observed = True
        rec.lab = lab.group(1)
    return int(m.group(1))


def unload(session: GuestSession) -> Unload:
    """rmmod, once per clock (the record survives the guest). In rmmod's own command, the
    guest looks at once at what the module left (its files, its caches, the lab's one-line
    measure) and writes it to the kernel log too: in the warped guest a thread left running
    wakes up as soon as the guest idles, and may crash the kernel before another command
    comes; the console, read live, keeps what was seen. A crash in one of the module's own
    threads is recorded, not raised: it is the kthread check's, and rmmod itself succeeded."""
    if session.first_unload is not None:
        return session.first_unload  # type: ignore[no-any-return]
    load = session.ensure_loaded()
    session.run.lab.before_unload(session)
    g = session.ensure_guest()
    mark = session.console_mark()
    names = set(load.interface.kthreads.values())
    paths = " ".join(shlex.quote(e.path) for e in load.interface.entries)
    caches = " ".join(shlex.quote(c) for c in load.interface.caches)
    settle, lab = session.run.lab.unload_scripts(session)
    mod = shlex.quote(session.run.module)
    # Two marks, each to the kernel log at once: what is left (shell builtins only, a few
    # microseconds after rmmod), then the lab's measure (which takes longer). The script runs
    # under rtrun (grader/guest_image/rtrun.c): in SCHED_FIFO, with a SCHED_IDLE spinner that
    # keeps the warped clock from jumping to the next timer while rmmod sleeps, so that on the
    # warped guest's one CPU a thread the module left running cannot wake up (and crash in
    # freed code) before the script ends. Measured on tests/realistic/bug_kthread_not_stopped
    # (a 1 Hz thread): the kernel crashed before the measure in 3 runs of 4 without either,
    # in 1 of 8 with SCHED_FIFO alone. On the realtime guest's second CPU it still may.
    script = (
        f"rmmod {mod} 2>/tmp/.rmmod.err; rc=$?; left=; caches=; lab=; "
        f"for p in {paths}; do [ $rc = 0 ] && [ -e \"$p\" ] && left=\"$left $p\"; done; "
        f"for c in {caches}; do [ $rc = 0 ] && [ -e /sys/kernel/slab/$c ] && caches=\"$caches $c\"; done; "
        f"m=\"{_MARK} rc=$rc left=[$left] caches=[$caches]\"; echo \"$m\" > /dev/kmsg; "
        f"if [ $rc = 0 ]; then lab=$({lab or 'true'}); "
        f"echo \"{_LAB_MARK} lab=[$lab]\" > /dev/kmsg; fi; "
        f"echo \"$m\"; echo \"{_LAB_MARK} lab=[$lab]\"; "
        "cat /tmp/.rmmod.err >&2; exit $rc")
    rec = Unload(CommandResult(f"rmmod {session.run.module}", 0, "", "", 0.0), (mark, mark))
    session.first_unload = rec
    try:
        raw = g.run(f"rtrun sh -c {shlex.quote(script)}",
                    session.timeout("insmod") + session.timeout())
        r = CommandResult(f"rmmod {session.run.module}", raw.status, "", raw.stderr,
                          raw.elapsed_s, raw.timed_out, raw.unkillable, raw.truncated)
        rec.result = r
        session.record(r.command, r, "exit 0")
        if not r.ok:
            return rec
        session.loaded = False
        _observe(rec, raw.stdout)
        rec.console = (mark, session.console_mark())
        session.run.lab.after_unload(session, rec)
        out = session.sh(f"sleep {settle:.2f}; {inventory.KTHREADS}", quiet=True,
                         timeout=settle + session.timeout()).stdout
    except GuestDied as e:
        if crashed_thread(e.log) not in names:
            raise
        # What the guest saw before it died, from its kernel log.
        rc = None if rec.observed else _observe(rec, "\n".join(g.console_lines[mark:]))
        if rc is not None:
            rec.result = CommandResult(rec.result.command, rc, "", "", 0.0)
            rec.console = (mark, len(g.console_lines))
            session.run.lab.after_unload(session, rec)
        rec.thread_crash = (e.reason, e.log)
        session.loaded = False
        session.discard(crashed=True)
        return rec
    alive = {int(x) for x in out.split() if x.isdigit()}
    rec.threads = {p: n for p, n in load.interface.kthreads.items() if p in alive}
    return rec


@check("loads")
def loads(c: CheckCall) -> Outcome:
    load = c.guest.ensure_loaded()
    params = " ".join(f"{k}={v}" for k, v in load.params.items())
    notes = c.run.lab.load_notes(c.guest)
    return Outcome.ok(f"insmod {c.run.module}.ko {params} succeeded" + (f" ({notes})" if notes else ""))


@check("unloads")
def unloads(c: CheckCall) -> Outcome:
    u = unload(c.guest)
    if u.result.timed_out:
        return Outcome(Status.TIMED_OUT, "rmmod hung (the exit function never returned)")
    if not u.result.ok:
        return Outcome.fail(f"rmmod failed: {u.result.stderr.strip()}")
    if u.thread_crash and not u.observed:
        return Outcome.ok("a thread the module left running crashed the kernel while rmmod ran "
                          "(charged to the kthread check)")
    if u.thread_crash:
        return Outcome.ok("rmmod succeeded (right after, a thread the module left running "
                          "crashed the kernel: charged to the kthread check)")
    return Outcome.ok("rmmod succeeded")


def _crashed_after(u: Unload) -> Outcome | None:
    if u.thread_crash is None or u.observed:
        return None
    return Outcome.skip("the kernel crashed right after rmmod, in a thread the module left "
                        "running (charged to the kthread check): nothing could be observed")


@check("no_kthread_left")
def no_kthread_left(c: CheckCall) -> Outcome:
    s = c.guest
    u = unload(s)
    load = s.last_load or s.first_load
    threads = dict(load.interface.kthreads) if load else {}
    if u.thread_crash is not None:
        reason, lines = u.thread_crash
        idx = next((i for i, ln in enumerate(lines)
                    if (k := klog.classify(ln)) and k[1] == "fatal"), max(0, len(lines) - 30))
        return Outcome(Status.CRASHED, "a thread the module left running after rmmod ran the "
                       f"unloaded module's code and crashed the kernel ({reason}): the exit "
                       "function must stop it with kthread_stop()",
                       [Evidence("kernel log", "no crash", reason, klog.excerpt(lines, idx, 5, 40))])
    if not threads:
        return Outcome.skip("no kernel thread was seen starting with the module")
    if u.threads:
        names = ", ".join(f"{n} ({p})" for p, n in u.threads.items())
        return Outcome.fail(f"kernel thread(s) still running after rmmod: {names}",
                            "the kthread stopped by kthread_stop() in the exit function", names)
    return Outcome.ok("the module's thread(s) " + ", ".join(threads.values()) + " are gone")


@check("files_removed")
def files_removed(c: CheckCall) -> Outcome:
    s = c.guest
    u = unload(s)
    skipped = _crashed_after(u)
    if skipped:
        return skipped
    load = s.first_load
    inv = load.interface if load else None
    if inv is None:
        return Outcome.skip("the module's files were not listed at load")
    created = ", ".join(e.path for e in inv.entries) or "none"
    ev = Evidence("files and folders the module created, then looked for right after rmmod",
                  "all gone", f"created: {created}; left: {', '.join(u.left) or 'none'}")
    if u.left:
        return Outcome(Status.FAILED, "left behind after rmmod: " + ", ".join(u.left), [ev])
    return Outcome.ok(f"the {len(inv.entries)} file(s) and folder(s) the module created are gone", ev)


@check("reloads")
def reloads(c: CheckCall) -> Outcome:
    s = c.guest
    first = unload(s)
    g = s.ensure_guest()
    mark = s.console_mark()
    params = c.run.lab.insmod_params(s)
    r = g.insmod(c.run.module, params, timeout=s.timeout("insmod"))
    s.record(f"insmod {c.run.module}.ko (again)", r, "exit 0")
    if r.timed_out:
        return Outcome(Status.TIMED_OUT, "the second insmod hung")
    if not r.ok:
        s.claim(mark, s.console_mark(), c.spec.id)
        return Outcome.fail(f"the module does not load a second time: {r.stderr.strip()}")
    problem = c.run.lab.after_reload(s)
    mark2 = s.console_mark()
    names = set(s.first_load.interface.kthreads.values()) if s.first_load else set()
    try:
        # Under rtrun, like the first rmmod: a thread left running waits for the end of rmmod.
        r2 = g.run(f"rtrun rmmod {shlex.quote(c.run.module)}", s.timeout("insmod"))
    except GuestDied as e:
        if first.thread_crash is None or crashed_thread(e.log) not in names:
            raise
        # The thread left running crashed the kernel again: charged to the kthread check.
        s.loaded = False
        s.discard(crashed=True)
        if problem:
            return Outcome.fail(f"loaded again, but {problem}")
        return Outcome.ok("loads and works a second time (after the second rmmod the thread it "
                          "leaves running crashed the kernel again: charged to the kthread check)")
    s.record(f"rmmod {c.run.module} (again)", r2, "exit 0")
    # What the second rmmod reports again (a leak, ...) is charged where the first one was.
    c.run.lab.after_second_unload(s, (mark2, s.console_mark()))
    if first.thread_crash is not None:
        # The thread left running races the exit function (a sample allocated after the
        # history was freed: "still has objects"): the kthread check's, like its crash.
        for spec in c.run.rubric.checks():
            if spec.kind == "no_kthread_left":
                s.claim(mark2, s.console_mark(), spec.id)
        if r2.ok:
            # Its thread still runs and will crash this guest: a fresh one for what follows.
            s.loaded = False
            s.discard()
    if problem:
        return Outcome.fail(f"loaded again, but {problem}")
    if not r2.ok:
        return Outcome.fail(f"the second rmmod fails: {r2.stderr.strip()}")
    return Outcome.ok("loads, works and unloads a second time")


@check("clean_log")
def clean_log(c: CheckCall) -> Outcome:
    found: list[tuple[klog.Anomaly, list[str]]] = []
    charged: dict[str, int] = {}
    # The grading's own kernel: another kernel's reports are its own checks' business, and so
    # are the kinds of report a `no_reports` check of this kernel judges.
    kernel = c.spec.kernel or c.run.profile
    logs = c.run.all_logs(kernel)
    covered = covered_kinds(c.run, kernel)
    for log in logs:
        lines = log.lines if log.crash_line is None else log.lines[: log.crash_line]
        for a, header in klog.reports(klog.scan(lines).anomalies):
            if a.severity == "info" or a.kind in covered:
                continue
            # A warning printed inside a slab report (SLUB printing a corrupted object's
            # tracking) belongs to that report: charged where the report is.
            owner = (log.claimed.get(header.line_no) or log.claimed.get(a.line_no)
                     or c.run.lab.owner_of_report(header.line))
            owner_result = c.run.results.get(owner) if owner else None
            if owner and (owner_result is None or owner_result.status is not Status.PASSED):
                charged[owner] = charged.get(owner, 0) + 1
                continue
            found.append((a, klog.excerpt(lines, a.line_no)))
    already = "; ".join(f"{n} report(s) charged to {cid}" for cid, n in charged.items())
    if not found:
        return Outcome.ok(f"no report in the kernel log of {len(logs)} guest(s) (crashes, and "
                          "reports charged to the check that caused them, are counted there)"
                          + (f"; {already}" if already else ""))
    kinds = sorted({a.kind for a, _ in found})
    ev = [Evidence(what="kernel log", expected="no oops, BUG, WARNING or slab report",
                   seen=klog.strip_timestamp(a.line), log=ex) for a, ex in found[:3]]
    return Outcome(Status.FAILED, f"kernel log reports: {', '.join(kinds)}: "
                   f"{klog.strip_timestamp(found[0][0].line).strip()}", ev)


def covered_kinds(run: RunContext, kernel: str) -> set[str]:
    """The kinds of kernel report a `no_reports` check judges on `kernel`: the other checks
    leave those to it."""
    return {k for spec in run.rubric.checks() if spec.kind == "no_reports"
            and (spec.kernel or run.profile) == kernel for k in spec.params.get("kinds", [])}


@check("no_reports")
def no_reports(c: CheckCall) -> Outcome:
    """No report of the given kinds (lockdep, sleeping in atomic context, list corruption...)
    in the logs of the guests of the check's kernel, but those a failed check already took."""
    kinds = set(c.params.get("kinds", []))
    kernel = c.spec.kernel or c.run.profile
    found: list[tuple[klog.Anomaly, list[str]]] = []
    for log in c.run.all_logs(kernel):
        lines = log.lines if log.crash_line is None else log.lines[: log.crash_line]
        for a in klog.scan(lines).anomalies:
            owner = log.claimed.get(a.line_no)
            owner_result = c.run.results.get(owner) if owner else None
            if a.kind in kinds and not (owner and owner_result is not None
                                        and owner_result.status is not Status.PASSED):
                found.append((a, klog.excerpt(lines, a.line_no, 2, 30)))
    if not found:
        return Outcome.ok(f"no {', '.join(sorted(kinds))} report on the {kernel} kernel")
    a = found[0][0]
    why = {"sleeping_in_atomic": "a function that may sleep (mutex_lock, kmalloc(GFP_KERNEL)...) "
                                 "is called while a spinlock is held or interrupts are off",
           "lockdep": "lockdep found a locking rule broken",
           "list_corruption": "a list was corrupted (an entry added twice, or used after list_del)",
           "scheduling_while_atomic": "the module sleeps while a spinlock is held"}.get(a.kind, a.kind)
    ev = [Evidence("kernel log", "no report", klog.strip_timestamp(x.line), log=ex)
          for x, ex in found[:3]]
    return Outcome(Status.FAILED, f"{why}: {klog.strip_timestamp(a.line).strip()}", ev)
