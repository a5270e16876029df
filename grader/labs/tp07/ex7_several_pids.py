"""Exercise 7: several processes monitored; `echo PID` / `echo -PID` to a debugfs file adds or
removes one."""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.labs.tp07.ex1_history import lab
from grader.labs.tp07.probes import Tp07Probes, kernel_reports
from grader.labs.tp07.samples import parse
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall
    from grader.checks.session import GuestSession


def _controls(c: CheckCall) -> list[str]:
    """Writable debugfs files of the module, the lab's path first, then those showing samples."""
    s = c.guest
    entries = s.ensure_loaded().interface.entries
    writable = [e.path for e in entries if e.kind == "file" and e.writable
                and e.path.startswith("/sys/kernel/debug/")]
    views = {v.path for v in lab(c).views(s).views}
    lab_path = c.rubric.settings["debugfs"]
    return sorted(writable, key=lambda p: (p != lab_path, p not in views, p))


def _write(s: GuestSession, path: str, text: str) -> tuple[bool, str]:
    r = s.sh(f"echo {shlex.quote(text)} > {shlex.quote(path)}")
    return r.ok, r.stderr.strip()


def _count(p: Tp07Probes, s: GuestSession, pid: int) -> int:
    """Samples naming `pid`, in the file that shows the most of them."""
    reads = p._read_all(s, [v.path for v in p.views(s).views])
    return max((len(parse(t, p.pids(s)).named(pid)) for t in reads.values()), default=0)


def _period(p: Tp07Probes, s: GuestSession) -> float:
    return p.period_s(s)


def _add(c: CheckCall, pid: int) -> tuple[str | None, str]:
    """Write `pid` to the control files in turn until its samples appear: (file, why not)."""
    p, s = lab(c), c.guest
    p.state(s).extra.setdefault("added", []).append(pid)
    errors = []
    for path in _controls(c):
        ok, err = _write(s, path, str(pid))
        if not ok:
            errors.append(f"{path}: {err or 'write failed'}")
            continue
        if s.wait_for(lambda: _count(p, s, pid) > 0, max(5.0, 12 * _period(p, s))):
            p.state(s).extra["control"] = path
            return path, ""
        errors.append(f"{path}: accepted, but no sample of PID {pid} appears")
    return None, "; ".join(errors) or "the module has no writable debugfs file"


@check("add_pid")
def add_pid(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    pid = s.ensure_guest().spawn("burn 2")
    path, why = _add(c, pid)
    if path is None:
        return Outcome.fail(f"echo {pid} > debugfs does not start monitoring it: {why}")
    p.state(s).extra["second"] = pid
    return Outcome.ok(f"after echo {pid} > {path}, samples of PID {pid} appear next to the "
                      f"target's")


@check("remove_pid")
def remove_pid(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    st = p.state(s)
    pid, path = st.extra.get("second"), st.extra.get("control")
    if not pid or not path:
        return Outcome.skip("no second PID was added in this guest")
    ok, err = _write(s, path, f"-{pid}")
    if not ok:
        return Outcome.fail(f"writing -{pid} to {path} fails: {err}")
    s.sleep(2 * _period(p, s) + 0.2)
    n1 = _count(p, s, pid)
    s.sleep(6 * _period(p, s) + 0.2)
    n2 = _count(p, s, pid)
    target = _count(p, s, p.target(s)) or len(p.history(s).of(p.target(s)))
    ev = Evidence(f"samples of PID {pid} after -{pid}", "no new sample", f"{n1}, then {n2} "
                  f"{6 * _period(p, s):.0f} s later")
    if n2 > n1:
        return Outcome(Status.FAILED, f"PID {pid} is still sampled after -{pid} ({n1} -> {n2} "
                       "samples)", [ev])
    if not target:
        return Outcome(Status.FAILED, "removing the second PID also stopped the target's samples",
                       [ev])
    return Outcome(Status.PASSED, f"no new sample of PID {pid} after -{pid}", [ev])


@check("bad_writes")
def bad_writes(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    path = p.state(s).extra.get("control") or (_controls(c) or [None])[0]
    if path is None:
        return Outcome.fail("the module has no writable debugfs file")
    accepted = [w for w in c.params.get("writes", []) if _write(s, path, w)[0]]
    if not p.history(s).samples:
        return Outcome.fail("the module stopped showing samples after bad writes")
    if accepted:
        return Outcome.fail("accepted without error: " + ", ".join(repr(a) for a in accepted),
                            "write() fails with -EINVAL/-ESRCH/-ENOENT", "success", f"echo ... > {path}")
    return Outcome.ok("every bad write failed with an error: "
                      + ", ".join(repr(w) for w in c.params.get("writes", [])))


@check("target_exits")
def target_exits(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    mark = s.console_mark()
    pid = s.ensure_guest().spawn("burn 2")
    path, why = _add(c, pid)
    if path is None:
        return Outcome.skip(f"could not add PID {pid}: {why}")
    s.sh(f"kill -9 {pid}", expected="exit 0")
    s.sleep(4 * _period(p, s) + 0.5)
    reads = p._read_all(s, [v.path for v in p.views(s).views])
    reports = kernel_reports(s.console_since(mark), s)
    if reports:
        s.claim(mark, s.console_mark(), c.spec.id)
        return Outcome.fail("kernel report after a monitored process exited: "
                            + reports[0].line.strip())
    empty = [x for x, t in reads.items() if not t.strip()]
    if len(empty) == len(reads):
        return Outcome.fail("the history cannot be read after a monitored process exited")
    return Outcome.ok(f"PID {pid} was killed while monitored; the module goes on")
