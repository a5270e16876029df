"""Reading the samples a module prints, leniently: a sample is any line that carries two counters
and, when it says which process, a PID - whatever its labels, their order and extra fields
(`pid 94 usr 26 sys 16 vm_total 245`, `pid 85 : 12 usr 3 sys`, `[1234] utime=5 stime=2`,
`task 267: user 0 ms, system 0 ms`). The lab's exact format is checked apart, by one strict check
per file (`strict_lines`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"[A-Za-z_]+|\d+")
PID_LABELS = {"pid", "tgid", "task", "process", "proc", "tid"}
USR_LABELS = {"usr", "user", "utime", "u", "us", "user_time", "usertime", "utime_ns", "user_ns"}
SYS_LABELS = {"sys", "system", "stime", "s", "sy", "sys_time", "systime", "kernel", "stime_ns",
              "sys_ns", "system_ns", "kern"}


@dataclass(frozen=True)
class Sample:
    pid: int | None  # None: the line names no process (a single-target module may not)
    usr: int
    sys: int
    line: str


def parse_line(line: str, pids: set[int]) -> Sample | None:
    """The sample a line shows, or None. `pids` are the processes known to be monitored: a
    number equal to one of them is taken as the PID even without a label."""
    toks: list[tuple[str, int | None]] = []  # (word in lower case, or "" for a number; value)
    for m in _TOKEN.finditer(line):
        t = m.group()
        toks.append(("", int(t)) if t.isdigit() else (t.lower(), None))
    nums = [i for i, (w, _) in enumerate(toks) if not w]
    if len(nums) < 2:
        return None
    pid_at = next((i + 1 for i, (w, _) in enumerate(toks)  # "pid 94", "task 267"
                   if w in PID_LABELS and i + 1 < len(toks) and not toks[i + 1][0]), None)
    free = [i for i in nums if i != pid_at]
    usr_at = sys_at = None
    labels = {"usr": [i for i, (w, _) in enumerate(toks) if w in USR_LABELS],
              "sys": [i for i, (w, _) in enumerate(toks) if w in SYS_LABELS]}
    if labels["usr"] and labels["sys"]:
        # "usr 3" or "3 usr": the orientation that gives both labels a number of their own.
        for step in (1, -1):
            u, s_ = labels["usr"][0] + step, labels["sys"][0] + step
            if u in free and s_ in free and u != s_:
                usr_at, sys_at = u, s_
                break
    if pid_at is None:  # an unlabelled PID: a number equal to a monitored process
        pid_at = next((i for i in free if toks[i][1] in pids and i not in (usr_at, sys_at)), None)
        free = [i for i in free if i != pid_at]
    if usr_at is None or sys_at is None:
        if len(free) < 2:
            return None
        usr_at, sys_at = free[0], free[1]
    pid = toks[pid_at][1] if pid_at is not None else None
    usr, sys_ = toks[usr_at][1], toks[sys_at][1]
    assert usr is not None and sys_ is not None
    return Sample(pid, usr, sys_, line)


@dataclass
class Samples:
    """A read of a history file."""

    text: str
    samples: list[Sample] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # non-blank lines that are not samples

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def of(self, pid: int) -> list[Sample]:
        """Samples of `pid`; lines that name no process count for it too (a single-target
        module's lines)."""
        return [s for s in self.samples if s.pid == pid or s.pid is None]

    def named(self, pid: int) -> list[Sample]:
        """Samples whose line names `pid` itself."""
        return [s for s in self.samples if s.pid == pid]

    def keys(self) -> list[tuple[int | None, int, int]]:
        return [(s.pid, s.usr, s.sys) for s in self.samples]


def parse(text: str, pids: set[int]) -> Samples:
    out = Samples(text)
    for line in text.splitlines():
        s = parse_line(line, pids)
        if s is not None:
            out.samples.append(s)
        elif line.strip():
            out.other.append(line)
    return out


def strict_lines(text: str, line_format: str) -> tuple[list[tuple[int, int, int]], list[str]]:
    """(records (pid, usr, sys) of lines in the lab's exact format, lines that are not)."""
    rx = re.compile(line_format)
    good, bad = [], []
    for line in text.splitlines():
        m = rx.match(line)
        if m:
            good.append((int(m["pid"]), int(m["usr"]), int(m["sys"])))
        elif line.strip():
            bad.append(line)
    return good, bad


def new_since(before: Samples, after: Samples) -> int:
    """How many samples `after` holds that `before` did not: the newest sample of `before` is
    found again in `after` (cumulative times make samples of a running process distinct), the
    samples after it are new. Every sample of `after` when it is not found."""
    if not before.samples:
        return len(after.samples)
    last = before.keys()[-1]
    keys = after.keys()
    idx = max((i for i, k in enumerate(keys) if k == last), default=-1)
    return len(keys) - 1 - idx if idx >= 0 else len(keys)
