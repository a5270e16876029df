"""Generic behavioural checks of any module: it loads, unloads, leaves nothing behind, loads
again, stops its threads, and the kernel log stays clean."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grader import inventory, klog
from grader.checks import Outcome, check
from grader.guest import CommandResult, GuestDied
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall
    from grader.checks.session import GuestSession


@dataclass
class Unload:
    """What rmmod did, the first time it was run in a clock's guests."""

    result: CommandResult
    console: tuple[int, int]  # console lines printed during rmmod and right after: [start, end)
    listing: str = ""  # the inventory listing right after ("" if the kernel died first)
    threads: dict[int, str] = field(default_factory=dict)  # kernel threads right after
    lab: str = ""  # output of the lab's own snippet right after
    # The kernel died right after rmmod in a thread the module left running: (reason, log).
    thread_crash: tuple[str, list[str]] | None = None


_COMM = re.compile(r"\bComm: (\S+)")


def crashed_thread(lines: list[str]) -> str | None:
    """The task named in the first oops header of a crash log ("CPU: 0 PID: 91 Comm: x")."""
    for line in lines:
        m = _COMM.search(line)
        if m:
            return m.group(1)
    return None


def unload(session: GuestSession) -> Unload:
    """rmmod, once per clock (the record survives the guest); then, in one command, after a
    pause long enough for a thread left running to wake up: the threads, the listing and the
    lab's snippet. A crash there in one of the module's own threads is recorded, not raised:
    it belongs to the kthread check, rmmod itself succeeded."""
    if session.first_unload is not None:
        return session.first_unload  # type: ignore[no-any-return]
    load = session.ensure_loaded()
    session.run.lab.before_unload(session)
    g = session.ensure_guest()
    mark = session.console_mark()
    names = set(load.interface.kthreads.values())

    def thread_crashed(e: GuestDied) -> Unload | None:
        """A crash in one of the module's own threads, during or right after rmmod: the
        thread was left running (charged to the kthread check), not the exit function's."""
        if crashed_thread(e.log) not in names:
            return None
        rec = Unload(CommandResult(f"rmmod {session.run.module}", 0, "", "", 0.0),
                     (mark, len(g.console_lines)), thread_crash=(e.reason, e.log))
        session.first_unload = rec
        session.discard(crashed=True)
        return rec

    try:
        r = g.rmmod(session.run.module, timeout=session.timeout("insmod"))
    except GuestDied as e:
        crashed = thread_crashed(e)
        if crashed is None:
            raise
        return crashed
    session.record(f"rmmod {session.run.module}", r, "exit 0")
    rec = Unload(r, (mark, session.console_mark()))
    session.first_unload = rec
    if not r.ok:
        return rec
    session.loaded = False
    settle, post = session.run.lab.unload_scripts(session)
    script = (f"sleep {settle:.2f}; echo T $(cat /proc/2/task/2/children 2>/dev/null); "
              f"{inventory.LIST_SCRIPT}; echo @@LAB; {post or 'true'}")
    try:
        out = session.sh(script, quiet=True, timeout=settle + session.timeout() * 2).stdout
    except GuestDied as e:
        crashed = thread_crashed(e)
        if crashed is None:
            raise
        return crashed
    head, _, rec.lab = out.partition("@@LAB\n")
    first, _, rec.listing = head.partition("\n")
    alive = {int(x) for x in first.split()[1:] if x.isdigit()}
    rec.threads = {p: n for p, n in load.interface.kthreads.items() if p in alive}
    rec.console = (mark, session.console_mark())
    session.run.lab.after_unload(session, rec)
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
    if u.thread_crash:
        return Outcome.ok("rmmod succeeded (right after, a thread the module left running "
                          "crashed the kernel: charged to the kthread check)")
    return Outcome.ok("rmmod succeeded")


def _crashed_after(u: Unload) -> Outcome | None:
    if u.thread_crash is None:
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
    left = [p for p in inventory.remaining(inv, u.listing) if not p.startswith("slab cache ")]
    created = ", ".join(e.path for e in inv.entries) or "none"
    ev = Evidence("files and folders the module created, then listed after rmmod",
                  "all gone", f"created: {created}; left: {', '.join(left) or 'none'}")
    if left:
        return Outcome(Status.FAILED, "left behind after rmmod: " + ", ".join(left), [ev])
    return Outcome.ok(f"the {len(inv.entries)} file(s) and folder(s) the module created are gone", ev)


@check("reloads")
def reloads(c: CheckCall) -> Outcome:
    s = c.guest
    unload(s)
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
    r2 = g.rmmod(c.run.module, timeout=s.timeout("insmod"))
    s.record(f"rmmod {c.run.module} (again)", r2, "exit 0")
    # What the second rmmod reports again (a leak, ...) is charged where the first one was.
    c.run.lab.after_second_unload(s, (mark2, s.console_mark()))
    if problem:
        return Outcome.fail(f"loaded again, but {problem}")
    if not r2.ok:
        return Outcome.fail(f"the second rmmod fails: {r2.stderr.strip()}")
    return Outcome.ok("loads, works and unloads a second time")


@check("clean_log")
def clean_log(c: CheckCall) -> Outcome:
    found: list[tuple[klog.Anomaly, list[str]]] = []
    charged: dict[str, int] = {}
    logs = c.run.all_logs()
    for log in logs:
        lines = log.lines if log.crash_line is None else log.lines[: log.crash_line]
        for a in klog.scan(lines).anomalies:
            if a.severity == "info":
                continue
            owner = log.claimed.get(a.line_no)
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
