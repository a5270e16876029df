"""A generic guest session: one guest of one clock, the module loaded in it or not, commands with
evidence, waits in the guest's own time. It knows nothing of any lab: what to pass to insmod and
what to start before it come from the lab's probes (grader.checks.context.LabProbes)."""
from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grader import inventory
from grader.guest import CommandResult, Guest, GuestDied
from grader.model import Evidence

if TYPE_CHECKING:
    from grader.checks.context import RunContext


class CommandHung(Exception):
    """A guest command had to be killed at its timeout: the module blocked it."""

    def __init__(self, command: str, seconds: float):
        super().__init__(f"{command!r} did not finish within {seconds:.0f} s (guest time)")
        self.command = command


class NotLoaded(Exception):
    """The module could not be (re)loaded for a check that needs it loaded."""


@dataclass
class GuestLog:
    """The console of one guest, whether (and where) it ended in a crash, and the lines that a
    failed check already charged (so the clean-log check does not count them again)."""

    clock: str  # the lane: "<kernel>/<clock>"
    lines: list[str]
    crash_line: int | None = None
    claimed: dict[int, str] = field(default_factory=dict)  # line index -> check id


@dataclass
class Load:
    """What one insmod did: its parameters, what the module created, when (guest seconds)."""

    params: dict[str, object]
    result: CommandResult
    at: float  # guest uptime right after insmod
    interface: inventory.Inventory


class GuestSession:
    """One clock's guest, restored (or booted) when first needed and again after a crash."""

    def __init__(self, run: RunContext, clock: str, kernel: str = ""):
        self.run = run
        self.clock = clock
        self.kernel = kernel or run.profile
        self.lane = f"{self.kernel}/{clock}"
        self.guest: Guest | None = None
        self.loaded = False
        self.last_load: Load | None = None  # the current guest's last insmod (kept after rmmod)
        self.first_load: Load | None = None  # the first insmod of this clock (any guest)
        self.first_unload: Any = None  # the first rmmod of this clock (checks.lifecycle.Unload)
        self.logs: list[GuestLog] = []
        self.boots = 0
        self.boot_times: list[float] = []
        self.boot_failures: list[str] = []
        self.evidence: list[Evidence] = []  # the current check's
        self.check_guest: Guest | None = None  # the guest and console position when the check began
        self.check_mark = 0
        # A probe saw the module wedge this guest (a read that never returns): the runner
        # replaces it after the current check, so the next one starts on a working module.
        self.wedged = False

    @property
    def limits(self):  # type: ignore[no-untyped-def]
        return self.run.rubric.limits

    def timeout(self, kind: str = "command") -> float:
        return float(getattr(self.limits, f"{kind}_s"))

    # ---- guest lifecycle ---------------------------------------------------------------
    def ensure_guest(self) -> Guest:
        if self.guest is not None and self.guest.alive:
            return self.guest
        if self.guest is not None:
            # It died under the current check: that check crashed (the runner then discards
            # it); silently starting a fresh guest here would hide the crash.
            raise GuestDied(self.guest._death_reason(), self.guest.recent_console(80))
        self.run.progress(f"{'restoring' if self.boots == 0 else 'restoring a fresh'} "
                          f"{self.clock} guest ({self.kernel})")
        g = self.run.boot_guest(self.kernel, self.clock)
        try:
            g.start()
        finally:
            self.boot_failures += g.boot_failures
        self.guest, self.loaded, self.last_load = g, False, None
        self.boots += 1
        self.boot_times.append(g.boot_s)
        self.logs.append(GuestLog(self.lane, g.console_lines))
        self.run.lab.on_guest(self)
        return g

    def discard(self, crashed: bool = False) -> None:
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
        self.guest, self.loaded, self.last_load = None, False, None
        self.wedged = False

    def close(self) -> None:
        self.discard()

    def ensure_loaded(self) -> Load:
        """Restore a guest if needed and load the module with the lab's parameters; records
        what the module created (files, caches, threads) on the way."""
        g = self.ensure_guest()
        if self.loaded and self.last_load is not None:
            return self.last_load
        params = self.run.lab.insmod_params(self)
        pre, post = self.run.lab.load_scripts(self)
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in params.items())
        mod = shlex.quote(self.run.module)
        # One command: the listing before, insmod, the lab's measurements right after (no round
        # trip, no sampling in between), the listing after and what is new in it, described.
        # Once the module's interface is known (another guest loaded it), it is not listed again.
        known = self.run.interfaces.get(self.kernel)  # the same module on the same kernel
        elsewhere = self.run.interface if known is None else None  # on another kernel
        listing = "" if known else inventory.LIGHT_SCRIPT if elsewhere else inventory.LIST_SCRIPT
        cmd = (f"{{ {listing}; }} > /tmp/.inv0; " if listing else "") + \
            (f"{pre}; " if pre else "") + "echo @@PRE; " + \
            f"insmod /mod/{mod}.ko {args} 2>/tmp/.insmod.err; rc=$?; echo @@rc=$rc; " + \
            "if [ $rc = 0 ]; then " + (f"{post}; " if post else "") + "echo @@POST; " + \
            "cut -d' ' -f1 /proc/uptime; echo @@LIST; " + \
            (f"{{ {listing}; }} > /tmp/.inv1; cat /tmp/.inv1; echo @@NEW; "
             f"{inventory.describe_script(self.run.module)}; " if listing else "") + \
            "fi; cat /tmp/.insmod.err >&2; exit $rc"
        r = g.run(cmd, self.timeout("insmod") + self.timeout() * 2)
        pre_out, _, rest = r.stdout.partition("@@PRE\n")
        head, _, rest = rest.partition("@@rc=")
        post_out, _, rest = rest.partition("\n")[2].partition("@@POST\n")
        uptime, _, rest = rest.partition("@@LIST\n")
        after, _, described = rest.partition("@@NEW\n")
        r = CommandResult(f"insmod {mod}.ko {args}", r.status, head, r.stderr, r.elapsed_s,
                          r.timed_out, r.unkillable, r.truncated)
        self.record(r.command, r)
        if r.timed_out:
            raise CommandHung("insmod", self.timeout("insmod"))
        if not r.ok:
            raise NotLoaded(f"insmod failed: {r.stderr.strip() or f'exit status {r.status}'}")
        self.loaded = True
        inv = inventory.parse_described(described, after) if listing else known
        if elsewhere is not None and inv is not None:
            inv = inventory.merged(elsewhere, inv)
        assert inv is not None
        self.last_load = Load(params, r, float(uptime.strip() or 0), inv)
        self.first_load = self.first_load or self.last_load
        self.run.note_interface(self.kernel, inv)
        self.run.lab.after_load(self, self.last_load, pre_out, post_out)
        return self.last_load

    # ---- commands with evidence ------------------------------------------------------
    def record(self, what: str, r: CommandResult, expected: str = "") -> None:
        seen = f"exit {r.status}" + (" (timed out)" if r.timed_out else "")
        out = (r.stdout + r.stderr).strip()
        if out:
            lines = out.splitlines()
            n = self.limits.evidence_lines
            shown = lines if len(lines) <= n else [*lines[: n // 2], f"... ({len(lines) - n + 2} more lines)",
                                                   *lines[-(n // 2 - 2):]]
            seen += "\n" + "\n".join(shown)
        self.evidence.append(Evidence(what=what, expected=expected, seen=seen))

    def sh(self, command: str, timeout: float | None = None, *, expected: str = "",
           quiet: bool = False, allow_timeout: bool = False) -> CommandResult:
        """Run a shell command in the guest; `timeout` in guest seconds."""
        g = self.ensure_guest()
        t = timeout if timeout is not None else self.timeout()
        r = g.run(command, t)
        if not quiet:
            self.record(command, r, expected)
        if r.timed_out and not allow_timeout:
            raise CommandHung(command, t)
        return r

    def read(self, path: str, *, quiet: bool = True) -> CommandResult:
        return self.sh(f"cat {shlex.quote(path)}", quiet=quiet)

    def exists(self, path: str) -> bool:
        return self.sh(f"test -e {shlex.quote(path)}", quiet=True).ok

    # ---- the guest's own time --------------------------------------------------------
    def uptime(self) -> float:
        r = self.sh("cut -d' ' -f1 /proc/uptime", quiet=True)
        return float(r.stdout.strip() or 0)

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of guest time pass (cheap in the warped guest when it is idle)."""
        if seconds > 0:
            self.sh(f"sleep {seconds:.3f}", timeout=seconds + self.timeout(), quiet=True)

    def wait_for(self, pred: Callable[[], bool], seconds: float, step: float = 0.5) -> bool:
        """Evaluate `pred` (which reads the guest) until it holds or `seconds` of guest time
        have passed; the guest sleeps between tries, with steps growing to a tenth of the wait."""
        start = self.uptime()
        while True:
            if pred():
                return True
            now = self.uptime()
            if now - start >= seconds:
                return False
            self.sleep(min(step, seconds - (now - start)))
            step = min(step * 2, max(0.5, seconds / 10))

    def kthreads(self) -> dict[int, str]:
        """Kernel threads (children of kthreadd) by PID, with their names."""
        r = self.sh(f"for p in $({inventory.KTHREADS}); do echo $p $(cat /proc/$p/comm "
                    "2>/dev/null); done", quiet=True)
        out = {}
        for line in r.stdout.splitlines():
            pid, _, name = line.partition(" ")
            if pid.isdigit():
                out[int(pid)] = name.strip()
        return out

    # ---- the kernel log --------------------------------------------------------------
    def console_mark(self) -> int:
        return len(self.guest.console_lines) if self.guest else 0

    def console_since(self, mark: int) -> list[str]:
        return self.guest.console_lines[mark:] if self.guest else []

    def claim(self, start: int, end: int, check_id: str) -> None:
        """Lines [start, end) of the current guest's console are charged to `check_id`."""
        if self.logs and self.guest is not None and self.logs[-1].lines is self.guest.console_lines:
            for i in range(start, end):
                self.logs[-1].claimed.setdefault(i, check_id)

    def elapsed_since_load(self) -> float:
        """Guest seconds since the module was loaded in this guest."""
        return self.uptime() - (self.last_load.at if self.last_load else 0.0)

    # for the runner's progress lines
    def describe(self) -> str:
        g = self.guest
        return f"{self.clock} guest" + (f" {g.release}" if g else "")


def wall() -> float:
    return time.monotonic()
