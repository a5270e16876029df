"""Exercise 6: the whole history in debugfs through seq_file."""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.labs.tp07.ex1_history import lab, strict_file
from grader.labs.tp07.probes import SHORT_READ_CAP, deadline, kernel_reports
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall


@check("debugfs_shows_history")
def debugfs_shows_history(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    views = p.views(s)
    found = views.area("debugfs")
    target = p.target(s)
    hung = [x for x in views.hung if x.startswith("/sys/kernel/debug/")]
    if not found and hung:
        return Outcome.fail(f"reading {hung[0]} does not return: the module waits for a lock "
                            "that is never released (a seq_file stop() that does not release "
                            "what start() took?)")
    if not found:
        made = [e.path for e in s.ensure_loaded().interface.entries
                if e.path.startswith("/sys/kernel/debug/")]
        return Outcome.fail("no debugfs file shows samples of the target (debugfs entries of "
                            f"the module: {', '.join(made) or 'none'})")
    return Outcome.ok("; ".join(f"{v.path}: '{v.read.of(target)[-1].line.strip()}'" for v in found))


@check("debugfs_format")
def debugfs_format(c: CheckCall) -> Outcome:
    return strict_file(c, c.rubric.settings["debugfs"])


def _debugfs_view(c: CheckCall):  # type: ignore[no-untyped-def]
    found = lab(c).views(c.guest).area("debugfs")
    return max(found, key=lambda v: len(v.read.samples)) if found else None


@check("debugfs_long")
def debugfs_long(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    v = _debugfs_view(c)
    assert v is not None  # needs ex6.debugfs
    long = p.long_history(s)
    page = int(c.rubric.settings["page_size"])
    text = long.reads.get(v.path, "")
    size = len(text.encode())
    ev = Evidence(f"cat {v.path} with a long history", f"> {page} bytes",
                  f"{size} bytes, {len(text.splitlines())} lines; the history had "
                  f"~{long.samples_seen} samples")
    if size > page:
        return Outcome(Status.PASSED, f"{v.path} shows {size} bytes", [ev])
    return Outcome(Status.FAILED, f"{v.path} stays at {size} bytes with ~{long.samples_seen} "
                   "samples in the history: the whole history is not shown", [ev])


@check("debugfs_short_reads")
def debugfs_short_reads(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    v = _debugfs_view(c)
    assert v is not None  # needs ex6.debugfs
    long = p.long_history(s)
    short = long.short_reads.get(v.path, "")
    if len(short.encode()) >= SHORT_READ_CAP and not short.endswith("\n"):
        short = short.rsplit("\n", 1)[0]  # the probe stops reading there: a line cut in two
    a = short.splitlines()
    b = long.after_short.get(v.path, "").splitlines()
    if not a:
        return Outcome.fail("reading 7 bytes at a time gives nothing", "the history", "empty",
                            f"dd if={v.path} bs=7")
    # The full read came right after: the module may have appended lines, and dropped its
    # oldest ones (a bounded history), in between. The short read must be a run of it.
    start = b.index(a[0]) if a[0] in b else -1
    if start >= 0 and b[start:start + len(a)] == a:
        return Outcome.ok(f"{len(a)} lines read 7 bytes at a time, identical to one read")
    if start >= 0 and len(b) - start < len(a) and a[:len(b) - start] == b[start:]:
        return Outcome.ok(f"{len(a)} lines read 7 bytes at a time, identical to one read")
    dup = len(a) - len(set(a))
    first = next((i for i, (x, y) in enumerate(zip(a, b[max(start, 0):], strict=False)) if x != y),
                 min(len(a), len(b)))
    return Outcome(Status.FAILED, f"short reads differ from one read from line {first + 1} "
                   f"({dup} repeated line(s), {len(a)} vs {len(b)} lines): seq_file's start/next "
                   "lose or repeat records", [Evidence(f"dd bs=7 vs cat {v.path}",
                                                       "\n".join(b[first:first + 3]),
                                                       "\n".join(a[first:first + 3]))])


@check("seq_file_locks")
def seq_file_locks(c: CheckCall) -> Outcome:
    """With lockdep (the debug kernel): a read() that stops in the middle of the history must
    not return to user space with a lock its seq_file start() took: stop() releases it."""
    p, s = lab(c), c.guest
    # A read by an earlier check of this lane may have shown it already.
    for log in s.logs:
        held = [a for a in kernel_reports(log.lines) if a.kind == "lockdep"
                and "returning to user space" in a.line]
        if held:
            i = held[0].line_no
            log.claimed.update({j: c.spec.id for j in range(i, min(len(log.lines), i + 30))})
            return Outcome(Status.FAILED, "a lock taken in the seq_file's start() was still held "
                           "when read() returned to user space: stop() must release what start() "
                           "took", [Evidence("kernel log (lockdep)", "no report", held[0].line,
                                             log.lines[i:i + 30])])
    views = p.views(s)
    v = _debugfs_view(c)
    # A file whose reads hang is the first suspect: it is read here all the same, once.
    path = v.path if v is not None else next(
        (x for x in views.hung if x.startswith("/sys/kernel/debug/")), None)
    if path is None:
        return Outcome.skip("no debugfs file shows the history: no seq_file to read")
    if v is not None:
        s.wait_for(lambda: len(p.read(s, path).samples) >= 3, max(5.0, 4 * p.period_s(s)))
    q = shlex.quote(path)
    # Short reads: one record's worth, then a read resuming in the middle; each in the
    # background (a module that kept its lock hangs the next reader), looking at the log
    # after each.
    steps = [f"dd if={q} of=/dev/null bs=64 count=1", f"dd if={q} of=/dev/null bs=64 skip=1 count=1"]
    for i, cmd in enumerate(steps):
        mark = s.console_mark()
        r = s.sh(deadline(cmd, f"/tmp/.grader-seq{i}", c.rubric.limits.read_s, "echo HUNG")
                 + "; sleep 0.2", quiet=True)
        lines = s.console_since(mark)
        reports = [a for a in kernel_reports(lines) if a.kind == "lockdep"]
        if reports:
            s.claim(mark, s.console_mark(), c.spec.id)
            first = reports[0]
            return Outcome(Status.FAILED, "a lock taken in the seq_file's start() is still held "
                           "when read() returns to user space: stop() must release what start() "
                           "took", [Evidence(f"{cmd} (lockdep)", "no report", first.line,
                                             lines[max(0, first.line_no - 2):first.line_no + 30])])
        if "HUNG" in r.stdout:
            s.wedged = True
            return Outcome.fail(f"`{cmd}` does not return, and lockdep names no lock: the "
                                "module waits for something its seq_file never releases")
    return Outcome.ok(f"short reads of {path} leave no lock held (lockdep)")
