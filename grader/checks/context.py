"""What checks share: the built module, the guest it runs in (rebooted after a crash), evidence."""
from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.guest import CommandResult, Guest, GuestDied
from grader.model import CheckResult, Evidence
from grader.rubric import Rubric

PROGRESS = Callable[[str], None]


class CommandHung(Exception):
    """A guest command had to be killed at its timeout: the module blocked it."""

    def __init__(self, command: str, seconds: float):
        super().__init__(f"{command!r} did not finish within {seconds:.0f} s")
        self.command = command


class NotLoaded(Exception):
    """The module could not be (re)loaded for a check that needs it loaded."""


@dataclass
class Samples:
    """A read of a history file, parsed with the rubric's line format."""

    text: str
    records: list[tuple[int, int, int]]  # (pid, usr, sys)
    bad: list[str]  # lines that do not match the format

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def of(self, pid: int) -> list[tuple[int, int, int]]:
        return [r for r in self.records if r[0] == pid]


@dataclass
class GuestLog:
    """The console of one guest, and whether (and where) it ended in a crash."""

    lines: list[str]
    crash_line: int | None = None


@dataclass
class Context:
    rubric: Rubric
    module: str
    ko: Path | None
    info: Any  # grader.inspect_ko.KoInfo | None
    hints: Any  # grader.hints.SourceHints | None
    build: Any  # grader.build.BuildResult | None
    boot_guest: Callable[[], Guest]  # makes a new (not started) guest with the module in /mod
    prebuilt: bool = False
    scale: float = 1.0
    progress: PROGRESS = lambda _msg: None
    results: dict[str, CheckResult] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    logs: list[GuestLog] = field(default_factory=list)
    guest: Guest | None = None
    loaded: bool = False
    target_pid: int = 0
    boots: int = 0
    boot_times: list[float] = field(default_factory=list)
    boot_failures: list[str] = field(default_factory=list)  # retried: the environment's
    evidence: list[Evidence] = field(default_factory=list)
    check_guest: Guest | None = None  # the guest and console position when the check began
    check_mark: int = 0
    last_then: str = ""
    _line: re.Pattern[str] | None = None

    # ---- parameters ------------------------------------------------------------------
    @property
    def period_param(self) -> str | None:
        params = self.info.params if self.info else {}
        return next((p for p in self.rubric.period_params if p in params), None)

    def timeout(self, kind: str = "command") -> float:
        return self.rubric.timeouts.get(kind, 15.0) * self.scale

    @property
    def sample_period_s(self) -> float:
        """How often the module samples: the rubric's value when we can set it, else 1 s."""
        return self.rubric.period_value / 1000 if self.period_param else 1.0

    # ---- guest lifecycle ---------------------------------------------------------------
    def ensure_guest(self) -> Guest:
        if self.guest is not None and self.guest.alive:
            return self.guest
        if self.guest is not None:
            # It died under the current check: that check crashed (the runner then discards
            # it); silently booting a fresh guest here would hide the crash.
            raise GuestDied(self.guest._death_reason(), self.guest.recent_console(80))
        self.progress("booting guest")
        g = self.boot_guest()
        g.start()
        self.boot_failures += g.boot_failures
        self.guest, self.loaded = g, False
        self.boots += 1
        self.boot_times.append(g.boot_s)
        if self.boots == 1:
            # Calibration: the rubric's timeouts hold on a machine that boots the guest in
            # reference_boot_s; a slower one (no KVM, loaded CI runner) gets them scaled.
            ref = self.rubric.timeouts.get("reference_boot_s", 3.5)
            self.scale = max(1.0, g.boot_s / ref)
        self.logs.append(GuestLog(g.console_lines))
        self.target_pid = g.spawn("burn")
        return g

    def discard_guest(self, crashed: bool = False) -> None:
        g = self.guest
        if g is None:
            return
        if crashed and self.logs and self.logs[-1].lines is g.console_lines:
            # Everything the kernel printed from the start of the check that crashed (or hung)
            # belongs to that crash: the check is CRASHED/TIMED_OUT, the log check does not
            # count it a second time.
            fatal = g.fatal.line_no if g.fatal else len(g.console_lines)
            start = self.check_mark if self.check_guest is g else fatal
            self.logs[-1].crash_line = min(start, fatal)
        g.close()
        self.guest, self.loaded = None, False

    def close(self) -> None:
        self.discard_guest()

    def insmod_params(self) -> dict[str, object]:
        params: dict[str, object] = {self.rubric.target_param: self.target_pid}
        if self.period_param:
            params[self.period_param] = self.rubric.period_value
        return params

    def ensure_loaded(self) -> CommandResult | None:
        """Boot if needed and load the module with the target; returns insmod's result
        when this call loaded it."""
        g = self.ensure_guest()
        if self.loaded:
            return None
        before = self.kthreads()
        params = self.insmod_params()
        r = g.insmod(self.module, params, timeout=self.timeout("insmod"))
        self.record(f"insmod {self.module}.ko " + " ".join(f"{k}={v}" for k, v in params.items()), r)
        if r.timed_out:
            raise CommandHung("insmod", self.timeout("insmod"))
        if not r.ok:
            self.facts.setdefault("load_error", r.stderr.strip() or f"exit status {r.status}")
            raise NotLoaded(f"insmod failed: {r.stderr.strip() or r.status}")
        self.loaded = True
        self.facts["loaded_at"] = time.monotonic()
        if "prealloc" not in self.facts:
            # Objects and samples counted in one guest command: sampling goes on meanwhile.
            hist = " || ".join(f"cat {shlex.quote(p)} 2>/dev/null"
                               for p in (self.rubric.debugfs, self.rubric.sysfs))
            t = self.slab_traces([self.rubric.slab_cache], then=hist)
            objects = t[self.rubric.slab_cache][0] if self.rubric.slab_cache in t else None
            self.facts["prealloc"] = (objects, len(self.parse(self.last_then).records))
        # Kernel workers come and go on their own: only other new threads are the module's.
        new = sorted(set(self.kthreads()) - set(before))
        if new:
            r = self.sh(" ".join(f"echo {p} $(cat /proc/{p}/comm 2>/dev/null);" for p in new),
                        quiet=True)
            new = [int(ln.split()[0]) for ln in r.stdout.splitlines()
                   if len(ln.split()) > 1 and not ln.split()[1].startswith("kworker/")]
        self.facts["module_kthreads"] = new
        return r

    # ---- commands with evidence ------------------------------------------------------
    def record(self, what: str, r: CommandResult, expected: str = "") -> None:
        seen = f"exit {r.status}" + (" (timed out)" if r.timed_out else "")
        out = (r.stdout + r.stderr).strip()
        if out:
            lines = out.splitlines()
            shown = lines if len(lines) <= 12 else [*lines[:6], f"... ({len(lines) - 10} more lines)", *lines[-4:]]
            seen += "\n" + "\n".join(shown)
        self.evidence.append(Evidence(what=what, expected=expected, seen=seen))

    def sh(self, command: str, timeout: float | None = None, *, expected: str = "",
           quiet: bool = False, allow_timeout: bool = False) -> CommandResult:
        g = self.ensure_guest()
        t = timeout if timeout is not None else self.timeout()
        r = g.run(command, t)
        if not quiet:
            self.record(command, r, expected)
        if r.timed_out and not allow_timeout:
            raise CommandHung(command, t)
        return r

    # ---- observations ----------------------------------------------------------------
    def parse(self, text: str) -> Samples:
        if self._line is None:
            self._line = re.compile(self.rubric.line_format)
        records, bad = [], []
        for line in text.splitlines():
            m = self._line.match(line)
            if m:
                records.append((int(m["pid"]), int(m["usr"]), int(m["sys"])))
            elif line.strip():
                bad.append(line)
        return Samples(text, records, bad)

    def read_samples(self, path: str, *, quiet: bool = False) -> tuple[CommandResult, Samples]:
        r = self.sh(f"cat {shlex.quote(path)}", quiet=quiet)
        return r, self.parse(r.stdout if r.ok else "")

    def has_file(self, path: str) -> bool:
        return self.sh(f"test -e {shlex.quote(path)}", quiet=True).ok

    def history(self) -> Samples:
        """The longest view of the history: debugfs when the module has it, else sysfs."""
        for path in (self.rubric.debugfs, self.rubric.sysfs):
            r = self.sh(f"cat {shlex.quote(path)} 2>/dev/null", quiet=True)
            if r.ok and r.stdout.strip():
                return self.parse(r.stdout)
        return self.parse("")

    def wait_for(self, pred: Callable[[], bool], seconds: float, interval: float = 0.25) -> bool:
        end = time.monotonic() + seconds
        while True:
            if pred():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(interval)

    def history_wait(self, samples: int) -> float:
        """Seconds to wait for `samples` new samples, capped by the rubric."""
        return min(self.rubric.history_wait_s, samples * self.sample_period_s * 1.5 + 1)

    def kthreads(self) -> list[int]:
        """PIDs of kernel threads (children of kthreadd)."""
        r = self.sh("grep -l '^PPid:[[:space:]]*2$' /proc/[0-9]*/status 2>/dev/null", quiet=True)
        return [int(x.split("/")[2]) for x in r.stdout.split()]

    def slab_traces(self, caches: list[str] | None = None,
                    then: str = "") -> dict[str, tuple[int, int]]:
        """Per slab cache: (objects allocated in all, objects allocated by the module),
        from SLUB's exact allocation tracking (slub_debug=U)."""
        pattern = " ".join(
            f"/sys/kernel/debug/slab/{c}/alloc_traces /sys/kernel/slab/{c}/alloc_calls"
            for c in (caches or ["*"])
        )
        # Summed in the guest: the traces carry whole stacks (hundreds of KB through the
        # serial port); only "<count> <caller> [module] ..." header lines count objects.
        tag = f"[{self.module}]"
        script = (f"for f in {pattern}; do [ -r \"$f\" ] || continue; "
                  f"awk -v f=\"$f\" -v tag={shlex.quote(tag)} "
                  "'/^ *[0-9]+ /{t+=$1; if (index($0, tag)) m+=$1} END{print f, t+0, m+0}' "
                  "\"$f\"; done" + (f"; echo @@; {then}" if then else ""))
        r = self.sh(script, timeout=self.timeout() * 2, quiet=True)
        self.last_then = r.stdout.split("@@\n", 1)[1] if then and "@@\n" in r.stdout else ""
        out: dict[str, tuple[int, int]] = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out[parts[0].split("/")[-2]] = (int(parts[1]), int(parts[2]))
        return out

    def cache_objects(self) -> int | None:
        """Objects currently allocated from the rubric's slab cache, None if it does not exist."""
        t = self.slab_traces([self.rubric.slab_cache])
        return t[self.rubric.slab_cache][0] if self.rubric.slab_cache in t else None

    def console_mark(self) -> int:
        return len(self.guest.console_lines) if self.guest else 0

    def console_since(self, mark: int) -> list[str]:
        return self.guest.console_lines[mark:] if self.guest else []
