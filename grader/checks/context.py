"""What a check is given: the grading's shared context (the built module, its inspection, the
guests of each clock, the lab's probes) and its own call (its spec, its guest session)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.checks.session import GuestLog, GuestSession, Load

if TYPE_CHECKING:
    from grader.build import BuildResult
    from grader.guest import Guest
    from grader.hints import SourceHints
    from grader.inspect_ko import KoInfo
    from grader.inventory import Inventory
    from grader.model import CheckResult
    from grader.rubric import CheckSpec, Rubric

Progress = Callable[[str], None]


class LabProbes:
    """A lab's probes: what its checks observe, computed once per guest and shared (typed
    results, not a dict). The generic code calls only the hooks below."""

    def __init__(self, run: RunContext):
        self.run = run

    def on_guest(self, session: GuestSession) -> None:
        """A guest of `session` was just started (start the processes the lab needs)."""

    def insmod_params(self, session: GuestSession) -> dict[str, object]:
        """The module parameters to load it with in `session`'s guest."""
        return {}

    def load_scripts(self, session: GuestSession) -> tuple[str, str]:
        """Shell snippets run right before and right after insmod (in insmod's own command);
        their output goes to `after_load`."""
        return "", ""

    def after_load(self, session: GuestSession, load: Load, pre: str, post: str) -> None:
        """The module was just loaded in `session`'s guest."""

    def load_notes(self, session: GuestSession) -> str:
        """A remark on how the module was loaded, for the load check ("" for none)."""
        return ""

    def before_unload(self, session: GuestSession) -> None:
        """Right before rmmod (count what the module holds)."""

    def unload_scripts(self, session: GuestSession) -> tuple[float, str]:
        """(guest seconds to wait after rmmod before looking, a shell snippet whose output
        goes to `after_unload`)."""
        return 0.5, ""

    def after_unload(self, session: GuestSession, unload: Any) -> None:
        """Right after a successful rmmod (checks.lifecycle.Unload)."""

    def after_second_unload(self, session: GuestSession, console: tuple[int, int]) -> None:
        """The module loaded again was unloaded again: console lines [start, end) of it."""

    def after_reload(self, session: GuestSession) -> str | None:
        """The module was loaded a second time: what is wrong with it then, or None."""
        return None

    def owner_of_report(self, line: str) -> str | None:
        """The check a kernel report is charged to when the lab knows what causes it (a report
        that recurs at every read of a broken file, ...); clean_log then does not count it again
        if that check failed."""
        return None

    def summary(self) -> dict[str, Any]:
        """What the probes found, for the report (JSON-able)."""
        return {}


@dataclass
class RunContext:
    """Everything shared by the checks of one grading."""

    rubric: Rubric
    module: str
    ko: Path | None
    info: KoInfo | None
    hints: SourceHints | None
    build: BuildResult | None
    boot_guest: Callable[[str, str], Guest]  # (kernel profile, clock) -> a guest, not started
    prebuilt: bool = False
    profile: str = ""  # the grading's kernel profile
    # Other kernel profiles checks may run on ([kernels] combine), and why those that cannot
    # are not available (not set up, the module does not build there...).
    extra_kernels: tuple[str, ...] = ()
    unavailable: dict[str, str] = field(default_factory=dict)
    progress: Progress = lambda _msg: None
    results: dict[str, CheckResult] = field(default_factory=dict)
    sessions: dict[str, GuestSession] = field(default_factory=dict)
    interfaces: dict[str, Inventory] = field(default_factory=dict)  # kernel -> first insmod's
    lab: LabProbes = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _done: dict[str, threading.Event] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from grader.checks import load_lab

        self.lab = load_lab(self.rubric.lab).make_probes(self)
        for spec in self.rubric.checks():
            self._done[spec.id] = threading.Event()

    @property
    def settings(self) -> dict[str, Any]:
        return self.rubric.settings

    def kernel_of(self, spec: CheckSpec) -> str | None:
        """The kernel profile a check runs on, None when this grading cannot run it."""
        if not spec.kernel or spec.kernel == self.profile:
            return self.profile
        return spec.kernel if spec.kernel in self.extra_kernels else None

    def session(self, kernel: str, clock: str) -> GuestSession:
        key = f"{kernel}/{clock}"
        with self._lock:
            if key not in self.sessions:
                self.sessions[key] = GuestSession(self, clock, kernel)
            return self.sessions[key]

    def all_logs(self, kernel: str | None = None) -> list[GuestLog]:
        return [log for s in self.sessions.values() for log in s.logs
                if kernel is None or s.kernel == kernel]

    def note_interface(self, kernel: str, inv: Inventory) -> None:
        with self._lock:
            self.interfaces.setdefault(kernel, inv)

    @property
    def interface(self) -> Inventory | None:
        """What the module created on the grading's own kernel."""
        return self.interfaces.get(self.profile) or next(iter(self.interfaces.values()), None)

    # ---- results, shared between the lanes of guests -----------------------------------
    def set_result(self, result: CheckResult) -> None:
        with self._lock:
            self.results[result.id] = result
        self._done[result.id].set()

    def result(self, check_id: str) -> CheckResult | None:
        """The result of a check, waiting for it if another lane is running it."""
        ev = self._done.get(check_id)
        if ev is not None:
            ev.wait()
        return self.results.get(check_id)

    @property
    def boots(self) -> int:
        return sum(s.boots for s in self.sessions.values())


@dataclass
class CheckCall:
    """One check being run: its spec, the guest session of its clock, the shared context."""

    spec: CheckSpec
    run: RunContext
    session: GuestSession | None  # None for static and final checks

    @property
    def rubric(self) -> Rubric:
        return self.run.rubric

    @property
    def lab(self) -> Any:
        return self.run.lab

    @property
    def params(self) -> dict[str, Any]:
        return self.spec.params

    @property
    def guest(self) -> GuestSession:
        assert self.session is not None, f"{self.spec.id} is not a guest check"
        return self.session
