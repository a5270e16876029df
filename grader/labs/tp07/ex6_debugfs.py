"""Exercise 6: the whole history in debugfs through seq_file."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.labs.tp07.ex1_history import lab, strict_file
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall


@check("debugfs_shows_history")
def debugfs_shows_history(c: CheckCall) -> Outcome:
    p, s = lab(c), c.guest
    views = p.views(s)
    found = views.area("debugfs")
    target = p.target(s)
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
    a = long.short_reads.get(v.path, "").splitlines()
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
