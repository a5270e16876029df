"""Kernel-log interpretation: one named table of the reports that mean something went wrong."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# kind, severity, pattern. Order matters only for reading: every line is tested against all.
# "fatal" anomalies end the guest (with oops=panic, an oops is followed by a panic).
PATTERNS: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (kind, sev, re.compile(rx))
    for kind, sev, rx in (
        ("panic", "fatal", r"Kernel panic - not syncing"),
        ("oops", "fatal", r"\bOops(?::|\s+-)|\boops\b.*SMP|Oops: \d+"),
        ("gpf", "fatal", r"general protection fault"),
        ("null_deref", "fatal", r"BUG: kernel NULL pointer dereference|KASAN: null-ptr-deref"),
        ("paging", "fatal", r"BUG: unable to handle (?:page fault|kernel paging request)"),
        ("kasan", "error", r"BUG: KASAN:"),
        ("sleeping_in_atomic", "error", r"BUG: sleeping function called from invalid context"),
        ("scheduling_while_atomic", "error", r"BUG: scheduling while atomic"),
        ("soft_lockup", "error", r"BUG: soft lockup"),
        ("hung_task", "error", r"INFO: task .* blocked for more than"),
        ("rcu_stall", "error", r"rcu: INFO: rcu_\w+ (?:self-)?detected stalls?"),
        ("list_corruption", "error", r"list_(?:add|del) corruption"),
        # lockdep (the debug kernel): a locking rule broken, before any deadlock happens.
        ("lockdep", "error", r"WARNING: (?:possible circular locking dependency|possible "
                             r"recursive locking|inconsistent lock state|bad unlock balance|held "
                             r"lock freed|lock held when returning to user space|suspicious RCU "
                             r"usage|possible irq lock inversion|\S+-safe -> \S+-unsafe lock "
                             r"order|lock held at task exit time|Nested lock was not taken)"
                             r"|BUG: Invalid wait context"),
        # SLUB's own reports: "BUG task_sample (Tainted: G O): Poison overwritten", ...
        ("slab_poison", "error", r"^BUG [\w:.\-]+ \([^)]*\): "),
        ("slab_leak", "error", r"Objects remaining (?:in \S+ )?on __kmem_cache_shutdown|"
                               r"kmem_cache_destroy \S+: Slab cache still has objects"),
        ("bug", "error", r"\bBUG:"),
        ("kernel_bug", "fatal", r"kernel BUG at"),
        ("warning", "warning", r"WARNING: (?:CPU: \d+ PID: \d+ at|at )"),
        ("refcount", "warning", r"refcount_t: (?:underflow|saturated|addition on 0)"),
        ("call_trace", "info", r"Call Trace:"),
    )
)


@dataclass
class Anomaly:
    kind: str
    severity: str
    line_no: int  # index in the log's lines
    line: str


@dataclass
class LogScan:
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        return any(a.severity == "fatal" for a in self.anomalies)

    @property
    def clean(self) -> bool:
        return not [a for a in self.anomalies if a.severity != "info"]

    def kinds(self) -> set[str]:
        return {a.kind for a in self.anomalies}

    def first(self, severity: str | None = None) -> Anomaly | None:
        for a in self.anomalies:
            if severity is None or a.severity == severity:
                return a
        return None


_TS = re.compile(r"^\s*\[\s*\d+\.\d+\]\s?")


def strip_timestamp(line: str) -> str:
    return _TS.sub("", line)


def classify(line: str) -> tuple[str, str] | None:
    """The most specific (kind, severity) a single log line matches, or None."""
    text = strip_timestamp(line)
    for kind, sev, rx in PATTERNS:
        if rx.search(text):
            return kind, sev
    return None


def scan(text: str | list[str]) -> LogScan:
    """Find every anomaly in a kernel log (console capture or dmesg output)."""
    lines = text.splitlines() if isinstance(text, str) else text
    result = LogScan()
    for i, line in enumerate(lines):
        c = classify(line)
        if c:
            result.anomalies.append(Anomaly(c[0], c[1], i, line.rstrip()))
    return result


def excerpt(lines: list[str], center: int, before: int = 5, after: int = 25) -> list[str]:
    """The lines around an anomaly (a report's body follows its first line)."""
    return [ln.rstrip() for ln in lines[max(0, center - before) : center + after]]


REPORT_BODY_LINES = 120  # a slab report, with its hex dumps and stacks, fits in this many lines


def reports(anomalies: list[Anomaly]) -> list[tuple[Anomaly, Anomaly]]:
    """(anomaly, the report it is part of): an anomaly within a slab report's body (a WARNING
    SLUB triggers while printing a corrupted object) belongs to that report; any other is its
    own report."""
    out = []
    header: Anomaly | None = None
    for a in anomalies:
        if a.kind in ("slab_poison", "slab_leak"):
            header = a
            out.append((a, a))
        elif header is not None and a.line_no - header.line_no <= REPORT_BODY_LINES \
                and a.severity in ("warning", "info"):
            out.append((a, header))
        else:
            out.append((a, a))
    return out
