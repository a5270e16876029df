"""What the TP 07 checks observe, computed once per guest and shared as typed results:
the module's history files (found, not assumed), a long history captured once, what
drop_caches frees, the slab objects the module holds at load and unload, and who is to blame for
what is left after rmmod."""
from __future__ import annotations

import math
import re
import shlex
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grader import klog
from grader.checks.context import LabProbes, RunContext
from grader.inspect_ko import match_any, order_violations
from grader.labs.tp07.samples import Samples, new_since, parse

if TYPE_CHECKING:
    from grader.checks.lifecycle import Unload
    from grader.checks.session import GuestSession, Load

READ_CAP = 1 << 18  # bytes read of a file when discovering or capturing
SHORT_READ_CAP = 3 * 4096  # bytes read 7 at a time


class ProbeFailed(Exception):
    """A probe that another check started crashed or hung the guest: a later check that needs
    its result is skipped with this reason (the crash is charged once, where it happened)."""


@dataclass
class View:
    """A file of the module that shows samples."""

    path: str
    area: str  # "sysfs", "debugfs" or "proc"
    writable: bool
    read: Samples  # at discovery


@dataclass
class Views:
    views: list[View] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # every new readable file tried
    waited_s: float = 0.0  # guest seconds waited for a first samples
    hung: list[str] = field(default_factory=list)  # files whose read did not return

    def area(self, area: str) -> list[View]:
        return [v for v in self.views if v.area == area]

    def best(self) -> View | None:
        """The fullest view of the history: debugfs (the whole history) before sysfs."""
        for area in ("debugfs", "proc", "sysfs"):
            vs = self.area(area)
            if vs:
                return max(vs, key=lambda v: len(v.read.samples))
        return None


@dataclass
class LongHistory:
    """Every view read once the history is long enough that an unbounded sysfs output must
    overflow a page and a complete debugfs must exceed one."""

    samples_wanted: int
    samples_seen: int  # in the fullest view, or estimated from the rate for sysfs alone
    rate: float  # samples per guest second, measured
    waited_s: float  # guest seconds waited
    reads: dict[str, str]  # path -> text (one full read)
    short_reads: dict[str, str]  # debugfs path -> text read 7 bytes at a time
    after_short: dict[str, str]  # debugfs path -> text read in one go right after
    bad_count: bool  # the kernel logged "returned bad count" (a show over PAGE_SIZE)
    log: list[str]  # kernel log printed while reading


@dataclass
class SlabCount:
    module: dict[str, int]  # the module's own caches -> objects in use
    kmalloc: int  # objects in use in every kmalloc-* cache (the module's and everyone's)

    @property
    def own(self) -> int:
        return sum(self.module.values())


@dataclass
class Drop:
    """`echo 2 > /proc/sys/vm/drop_caches`, once, with what was held before and after."""

    history_before: int | None  # samples in the fullest view (None: no view)
    history_after: int | None
    before: SlabCount
    after: SlabCount
    log: list[str]

    @property
    def unlinked(self) -> int | None:
        if self.history_before is None or self.history_after is None:
            return None
        return self.history_before - self.history_after

    @property
    def freed(self) -> int:
        """Objects freed: the module's caches exactly, plus the kmalloc caches (noisy: other
        users allocate there too) when the module keeps its samples there."""
        own = self.before.own - self.after.own
        kmalloc = self.before.kmalloc - self.after.kmalloc
        return own + (kmalloc if self.before.own < 8 else 0)


@dataclass
class AtLoad:
    """Right after insmod: what the module holds."""

    before: SlabCount | None  # just before insmod
    after: SlabCount
    samples: int  # samples visible then (in any file)
    kmalloc_tagged: int | None = None  # the module's objects in kmalloc caches (traces)


@dataclass
class AtUnload:
    history: int | None  # samples visible just before rmmod
    before: SlabCount
    after: SlabCount
    caches_left: list[str]  # the module's caches still there after rmmod
    still_has_objects: list[str]  # "still has objects" / "Objects remaining" lines at rmmod
    report_lines: tuple[int, int]  # console range of rmmod
    leaked: int = 0  # samples still allocated after rmmod
    blame: dict[str, str] = field(default_factory=dict)  # check id -> why (what is left over)


@dataclass
class _GuestState:
    """What belongs to one guest: its target process, what the module held at its load."""

    target: int = 0
    at_load: AtLoad | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ClockState:
    """Observations made once per clock, kept when a guest is replaced after a crash."""

    long: LongHistory | ProbeFailed | None = None
    drop: Drop | ProbeFailed | None = None
    unload: AtUnload | None = None
    unload_before: tuple[int | None, SlabCount] | None = None
    emptied_at: float = 0.0  # guest uptime when drop_caches last emptied the history
    rate: float | None = None  # samples per guest second, measured once


class Tp07Probes(LabProbes):
    def __init__(self, run: RunContext):
        super().__init__(run)
        self._state: dict[int, _GuestState] = {}
        self._clock: dict[str, _ClockState] = {}
        self._views: Views | None = None
        self._period: float | None = None
        self.hung: set[str] = set()  # files whose read did not return
        self._lock = threading.Lock()

    # ---- settings -------------------------------------------------------------------
    @property
    def s(self) -> dict[str, Any]:
        return self.run.settings

    def period_param(self) -> str | None:
        # A parameter is what module_param() declares (a `parmtype` in .modinfo): a
        # MODULE_PARM_DESC() left behind describes nothing the module takes.
        params = self.run.info.params if self.run.info else {}
        return next((p for p in self.s.get("period_params", [])
                     if p in params and params[p].get("type")), None)

    def nominal_period_s(self, clock: str = "warped") -> float | None:
        """The sampling period the grader set, or None when the module has no such parameter."""
        if not self.period_param():
            return None
        key = "realtime_period_value_ms" if clock == "realtime" else "period_value_ms"
        return float(self.s.get(key, self.s["period_value_ms"])) / 1000

    def period_s(self, session: GuestSession) -> float:
        """Seconds between samples: the period the grader set, or, for a module without such
        a parameter, measured once (guest seconds until two new samples show, up to a minute;
        cheap in the warped guest)."""
        nominal = self.nominal_period_s(session.clock)
        if nominal:
            return nominal
        with self._lock:
            if self._period is not None:
                return self._period
        views = self.views(session).views
        period = 1.0
        if views:
            paths = [v.path for v in views]
            pids = self.pids(session)
            a, ta = self._read_timed(session, paths)
            step = 1.0
            while True:
                session.sleep(step)
                b, tb = self._read_timed(session, paths)
                new = max(new_since(parse(a.get(x, ""), pids), parse(b.get(x, ""), pids))
                          for x in paths)
                if new >= 2 or tb - ta >= 64:
                    period = (tb - ta) / new if new else 64.0
                    break
                step *= 2
        with self._lock:
            self._period = period
        return period

    def state(self, session: GuestSession) -> _GuestState:
        key = id(session.guest)
        with self._lock:
            return self._state.setdefault(key, _GuestState())

    def clock(self, session: GuestSession) -> _ClockState:
        with self._lock:
            return self._clock.setdefault(session.lane, _ClockState())

    # ---- hooks of the generic session -------------------------------------------------
    def on_guest(self, session: GuestSession) -> None:
        # The target burns a little of each second of the guest's clock: its user time grows,
        # yet the warped guest stays mostly idle, and idle guest time costs no wall time.
        st = self.state(session)
        st.target = session.ensure_guest().spawn("burn 2" if session.clock == "warped" else "burn 10")

    def insmod_params(self, session: GuestSession) -> dict[str, object]:
        st = self.state(session)
        params: dict[str, object] = {self.s["target_param"]: st.target}
        if self.period_param():
            # The realtime guest races readers against the shrinker: it wants many samples.
            key = "realtime_period_value_ms" if session.clock == "realtime" else "period_value_ms"
            params[self.period_param()] = self.s.get(key, self.s["period_value_ms"])  # type: ignore[index]
        return params

    _KMALLOC = ("echo K $(cat /sys/kernel/slab/kmalloc-*/objects | cut -d' ' -f1 | "
                "awk '{s+=$1} END{print s+0}')")

    def load_scripts(self, session: GuestSession) -> tuple[str, str]:
        # Right after insmod, in its own command: the caches that appeared and their objects
        # (a mempool's reserve is allocated by then, and at most a sample or two), and the
        # lines of the lab's files if they exist.
        # (Not debugfs: a seq_file whose stop() keeps start()'s lock would hang insmod's own
        # command. The sysfs show is a plain function.)
        paths = shlex.quote(self.s["sysfs"])
        pre = f"ls /sys/kernel/slab > /tmp/.slabs0; {self._KMALLOC}"
        new = "ls /sys/kernel/slab | awk 'NR == FNR { seen[$0] = 1; next } !seen[$0]' /tmp/.slabs0 -"
        # The objects counted between two counts of the lines, with nothing slow in between
        # (a sample more between them would hide a reserve: seen on the debug kernel, where
        # the kmalloc sum took three sampling periods); the later count is the one used.
        lines = f"for f in {paths}; do [ -f $f ] && echo L $(wc -l < $f); done"
        post = (f"n=$({new}); {lines}; for c in $n; "
                "do echo \"M /sys/kernel/slab/$c/objects $(cut -d' ' -f1 /sys/kernel/slab/$c/objects)\"; "
                f"done; {lines}; {self._KMALLOC}; true")
        return pre, post

    def after_load(self, session: GuestSession, load: Load, pre: str, post: str) -> None:
        st = self.state(session)
        lines = [int(x.split()[1]) for x in post.splitlines()
                 if x.startswith("L ") and x.split()[1:2] and x.split()[1].isdigit()]
        after = self._parse_count(post)
        tagged = None
        if not after.module and self.run.info and match_any(
                self.run.info, ["mempool_create", "mempool_create_node", "mempool_init",
                                "mempool_init_node"]):
            # A pool without a cache of its own (mempool_create_kmalloc_pool): its reserve is in
            # the kmalloc caches, shared with everyone. SLUB's allocation traces name the
            # module that allocated each object (slow: only here).
            tagged = self._module_kmalloc_objects(session)
        st.at_load = AtLoad(self._parse_count(pre), after, max(lines) if lines else 1, tagged)

    def _module_kmalloc_objects(self, session: GuestSession) -> int:
        tag = shlex.quote(f"[{self.run.module}]")
        # A trace is "<count> <caller>" then its stack, one frame a line: the objects are the
        # module's when a frame of the stack is (mempool_kmalloc allocates for the module).
        awk = ("'/^ *[0-9]+ / { c = $1; done = 0 } index($0, tag) && !done { m += c; done = 1 } "
               "END { print m + 0 }'")
        r = session.sh("cat /sys/kernel/debug/slab/kmalloc-*/alloc_traces /sys/kernel/slab/"
                       "kmalloc-*/alloc_calls 2>/dev/null | awk -v tag=" + tag + " " + awk,
                       quiet=True, timeout=session.timeout() * 4)
        return int(r.stdout.strip() or 0)

    def load_notes(self, session: GuestSession) -> str:
        if self.period_param():
            return ""
        return ("no sampling-period parameter: the module samples at its own pace, waits are "
                "made in the warped guest's time")

    def target(self, session: GuestSession) -> int:
        session.ensure_loaded()
        return self.state(session).target

    # ---- reading the module's files ----------------------------------------------------
    def _read_all(self, session: GuestSession, paths: list[str]) -> dict[str, str]:
        """Read several files in one guest command. Each read runs in the background with a
        deadline of a few guest seconds: a read that does not return (a module waiting on a
        lock it left held, in uninterruptible sleep that not even SIGKILL ends) is abandoned,
        the file reads empty, is remembered in `self.hung` and not read again, and the guest,
        wedged, is replaced after the current check. Debugfs files are read last: the bug that
        wedges a module is usually its seq_file's, and the other files are read before it."""
        if not paths:
            return {}
        out: dict[str, str] = {p: "" for p in paths if p in self.hung}
        todo = sorted((p for p in paths if p not in self.hung),
                      key=lambda p: p.startswith("/sys/kernel/debug/"))
        if not todo:
            return out
        parts = [f"echo @@@ {shlex.quote(p)}; "
                 + deadline(f"head -c {READ_CAP} {shlex.quote(p)}", f"/tmp/.grader-read{i}",
                            self.run.rubric.limits.read_s, f"echo; echo @@@HUNG {shlex.quote(p)}")
                 + "; echo" for i, p in enumerate(todo)]
        r = session.sh("; ".join(parts), quiet=True,
                       timeout=session.timeout() * 2 + self.run.rubric.limits.read_s * len(todo))
        cur = None
        for line in r.stdout.split("\n"):
            if line.startswith("@@@HUNG ") and line[8:] in todo:
                self.hung.add(line[8:])
                session.wedged = True
                out[line[8:]] = ""
                cur = None
            elif line.startswith("@@@ ") and line[4:] in todo:
                cur = line[4:]
                out[cur] = ""
            elif cur is not None:
                out[cur] += line + "\n"
        return {p: t[:-1] if t.endswith("\n\n") else t for p, t in out.items()}

    def _read_timed(self, session: GuestSession, paths: list[str]) -> tuple[dict[str, str], float]:
        """Files read in one command with the guest's uptime: in the warped guest, guest time
        flies while the host thinks (an idle guest skips ahead), so what is compared must be
        read together."""
        reads = self._read_all(session, [*paths, "/proc/uptime"])
        up = reads.pop("/proc/uptime", "0").split()
        return reads, float(up[0]) if up else 0.0

    def pids(self, session: GuestSession) -> set[int]:
        st = self.state(session)
        return {st.target, *st.extra.get("added", [])}

    def read(self, session: GuestSession, path: str) -> Samples:
        return parse(self._read_all(session, [path]).get(path, ""), self.pids(session))

    @staticmethod
    def _area(path: str) -> str:
        if path.startswith("/sys/kernel/debug/"):
            return "debugfs"
        return "proc" if path.startswith("/proc/") else "sysfs"

    def views(self, session: GuestSession) -> Views:
        """The module's files that show samples of the target (found once, in the first guest
        that asks; other guests read the same paths)."""
        with self._lock:
            known = self._views
        if known is not None:
            return known
        load = session.ensure_loaded()
        target = self.target(session)
        cands = [e.path for e in load.interface.entries if e.kind == "file" and e.readable]
        writable = {e.path for e in load.interface.entries if e.kind == "file" and e.writable}
        wait = session.limits.discover_wait_s
        waited = 0.0
        step = 0.5
        while True:
            reads = self._read_all(session, cands)
            views = []
            for p, text in reads.items():
                smp = parse(text, {target})
                if smp.of(target):
                    views.append(View(p, self._area(p), p in writable, smp))
            if any(len(v.read.of(target)) >= 2 for v in views) or waited >= wait or not cands:
                break
            session.sleep(step)
            waited += step
            step = min(step * 2, 8.0)
        views = [v for v in views if v.path not in self.hung]
        found = Views(views, cands, waited, sorted(self.hung))
        with self._lock:
            if self._views is None:
                self._views = found
        if session.wedged:
            # A read never returned: this guest's module is stuck for good. The pace is
            # measured on a fresh one, where the files that hang are not read again.
            session.discard()
        # The module's own pace, measured here once (in the lane that discovers the files,
        # the warped one), before any other check waits on it.
        self.period_s(session)
        return self._views

    def history(self, session: GuestSession) -> Samples:
        """The fullest view of the history, read now (empty when the module shows none)."""
        best = self.views(session).best()
        return self.read(session, best.path) if best else parse("", set())

    def rate(self, session: GuestSession) -> float:
        """Samples per guest second (measured once per clock, see measure_rate)."""
        cs = self.clock(session)
        if cs.rate is None:
            cs.rate = self.measure_rate(session)
        return cs.rate

    def measure_rate(self, session: GuestSession, window: float | None = None) -> float:
        """Samples per guest second, measured over a short guest window on every view: a
        complete view by its count, a capped one (sysfs, or a history that stopped growing) by
        the samples after the newest one of the first read. The highest wins; 0 if none grew."""
        views = self.views(session).views
        if not views:
            return 0.0
        window = window or max(0.3, 3 * self.period_s(session))
        paths = [v.path for v in views]
        a, ta = self._read_timed(session, paths)
        session.sleep(window)
        b, tb = self._read_timed(session, paths)
        dt = max(1e-3, tb - ta)
        pids = self.pids(session)
        best = 0.0
        for v in views:
            ra, rb = parse(a.get(v.path, ""), pids), parse(b.get(v.path, ""), pids)
            grown = len(rb.samples) - len(ra.samples) if v.area != "sysfs" else 0
            # Identical consecutive samples make new_since an underestimate, never more.
            best = max(best, grown / dt, new_since(ra, rb) / dt)
        return best

    # ---- slab objects --------------------------------------------------------------------
    def slab_count(self, session: GuestSession, own: list[str] | None = None) -> SlabCount:
        """Objects in use in the module's caches and in all kmalloc caches, from SLUB's
        per-cache counters (exact for debug caches: slub_debug=FZPU keeps no per-CPU objects)."""
        if own is None:
            load = session.last_load
            own = list(load.interface.caches) if load else []
        files = " ".join(f"/sys/kernel/slab/{shlex.quote(c)}/objects" for c in own)
        script = shrink_first(own) + (f"for f in {files}; do echo \"M $f $(cut -d' ' -f1 $f 2>/dev/null)\"; done; "
                   if own else "") + \
            "echo K $(cat /sys/kernel/slab/kmalloc-*/objects | cut -d' ' -f1 | awk '{s+=$1} END{print s+0}')"
        return self._parse_count(session.sh(script, quiet=True).stdout)

    @staticmethod
    def _parse_count(text: str) -> SlabCount:
        module, kmalloc = {}, 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "M" and parts[2].isdigit():
                module[parts[1].split("/")[-2]] = int(parts[2])
            elif len(parts) == 2 and parts[0] == "K" and parts[1].isdigit():
                kmalloc = int(parts[1])
        return SlabCount(module, kmalloc)

    def at_load(self, session: GuestSession) -> AtLoad:
        """Objects held right after insmod (measured in insmod's own command)."""
        session.ensure_loaded()
        st = self.state(session)
        assert st.at_load is not None
        return st.at_load

    # ---- a long history, once ------------------------------------------------------------
    def long_history(self, session: GuestSession) -> LongHistory:
        st = self.clock(session)
        if isinstance(st.long, ProbeFailed):
            raise st.long
        if st.long is not None:
            return st.long
        st.long = ProbeFailed("the long-history probe did not finish (it crashed or hung the "
                              "guest in an earlier check)")
        st.long = self._long_history(session)
        return st.long

    def _long_history(self, session: GuestSession) -> LongHistory:
        views = self.views(session)
        best = views.best()
        page = int(self.s["page_size"])
        first = self.read(session, best.path) if best else parse("", set())
        line = max(8.0, len(first.text) / max(1, len(first.lines))) if first.lines else 40.0
        wanted = math.ceil(1.25 * page / line) + 5
        complete = best is not None and best.area != "sysfs"  # a view that is not capped
        rate = self.rate(session)
        if rate <= 0:
            # Lines that never change defeat the measurement: then assume half the nominal rate.
            rate = 0.5 / self.period_s(session)
        # How many samples the module holds: what the complete view shows; or, when no view is
        # complete or the complete one stops growing (a history bounded by the module is not
        # its whole history), what the rate says since the history was last emptied.
        def estimate() -> float:
            since = session.uptime() - max(self.clock(session).emptied_at,
                                           session.last_load.at if session.last_load else 0.0)
            return rate * since

        count = len(first.samples)
        have = float(count) if complete else estimate()
        stuck = False
        waited = 0.0
        limit = session.limits.history_wait_s
        while have < wanted and waited < limit:
            step = min(limit - waited, (wanted - have) / rate * 1.1 + 0.2)
            session.sleep(step)
            waited += step
            if complete and not stuck:
                now = len(self.read(session, best.path).samples)  # type: ignore[union-attr]
                stuck = now <= count
                count = now
            have = max(float(count), estimate()) if (stuck or not complete) else float(count)
        mark = session.console_mark()
        # Every view in one command (sysfs is compared with the whole history), then each
        # complete view 7 bytes at a time and again in one go right after: the module only
        # appends in between.
        # sysfs first: its newest sample must then be in the complete views read after it.
        reads = self._read_all(session, [v.path for v in sorted(views.views, key=lambda v: v.area != "sysfs")])
        short, after = {}, {}
        for v in views.views:
            if v.area != "sysfs":
                q = shlex.quote(v.path)
                # Three pages are enough to cross seq_file's page boundaries a few times.
                r = session.sh(f"dd if={q} bs=7 2>/dev/null | head -c {SHORT_READ_CAP} > /tmp/.a; "
                               f"head -c {READ_CAP} {q} > /tmp/.b; cat /tmp/.a; echo @@@@; "
                               "cat /tmp/.b", quiet=True, timeout=session.timeout() * 2)
                short[v.path], _, after[v.path] = r.stdout.partition("@@@@\n")
        bad = session.sh("dmesg | grep -c 'returned bad count'", quiet=True).stdout.strip()
        return LongHistory(wanted, int(have), rate, waited, reads, short, after, bad not in ("", "0"),
                           session.console_since(mark))

    # ---- drop_caches, once -------------------------------------------------------------
    def drop(self, session: GuestSession) -> Drop:
        st = self.clock(session)
        if isinstance(st.drop, ProbeFailed):
            raise st.drop
        if st.drop is not None:
            return st.drop
        st.drop = ProbeFailed("the drop_caches probe crashed or hung the guest in an earlier check")
        st.drop = self._drop(session)
        return st.drop

    def _drop(self, session: GuestSession) -> Drop:
        best = self.views(session).best()
        # Enough samples that freeing them stands out from other kernel allocations.
        want = 60
        rate = self.rate(session)
        if best is not None and rate > 0:
            have = len(self.read(session, best.path).samples)
            if have < want and best.area != "sysfs":
                session.sleep(min(session.limits.history_wait_s, (want - have) / rate * 1.2))
        elif rate <= 0:
            session.sleep(min(session.limits.history_wait_s, want * self.period_s(session)))
        load = session.last_load
        own = list(load.interface.caches) if load else []
        files = " ".join(f"/sys/kernel/slab/{shlex.quote(c)}/objects" for c in own)
        count = shrink_first(own) + ((f"for f in {files}; do echo \"M $f $(cut -d' ' -f1 $f 2>/dev/null)\"; done; "
                  if own else "")
                 + "echo K $(cat /sys/kernel/slab/kmalloc-*/objects | cut -d' ' -f1 | "
                   "awk '{s+=$1} END{print s+0}')")
        hist = f"head -c {READ_CAP} {shlex.quote(best.path)} 2>/dev/null" if best else "true"
        mark = session.console_mark()
        # One command: the counts around the drop are taken without a round trip in between.
        r = session.sh(f"{count}; echo @@; {hist}; echo @@; echo 2 > /proc/sys/vm/drop_caches; "
                       f"{count}; echo @@; {hist}", expected="the module's samples freed",
                       timeout=session.timeout() * 3, quiet=True)
        parts = r.stdout.split("@@\n")
        pids = self.pids(session)
        before = self._parse_count(parts[0])
        after = self._parse_count(parts[2]) if len(parts) > 2 else before
        self.clock(session).emptied_at = session.uptime()
        hb = len(parse(parts[1], pids).samples) if best and len(parts) > 1 else None
        ha = len(parse(parts[3], pids).samples) if best and len(parts) > 3 else None
        return Drop(hb, ha, before, after, session.console_since(mark))

    def reference_leak(self, session: GuestSession) -> bool | None:
        """True when drop_caches visibly unlinked samples that stayed allocated and the module
        counts references (kref): a reference is never dropped. None when not observed."""
        d = self.clock(session).drop
        if not isinstance(d, Drop) or d.unlinked is None or d.unlinked < 10:
            return None
        if not self.uses_kref():
            return False
        return d.freed < 0.5 * d.unlinked

    def uses_kref(self) -> bool:
        info = self.run.info
        return bool(info and match_any(info, ["kref_put", "kref_put_mutex", "kref_put_lock"]))

    # ---- unload ------------------------------------------------------------------------
    def before_unload(self, session: GuestSession) -> None:
        best = self._views.best() if self._views else None
        n = len(self.read(session, best.path).samples) if best else None
        if n is not None and n < 30 and best is not None and best.area != "sysfs":
            # Enough samples that freeing them, or not, stands out at rmmod.
            session.sleep(min(session.limits.history_wait_s,
                              (30 - n) * self.period_s(session) * 1.3))
            n = len(self.read(session, best.path).samples)
        self.clock(session).unload_before = (n, self.slab_count(session))

    def unload_scripts(self, session: GuestSession) -> tuple[float, str]:
        # Long enough for a thread left running to wake up (and crash) before we look.
        settle = min(3.0, max(0.3, 2 * self.period_s(session)))
        load = session.last_load
        own = list(load.interface.caches) if load else []
        # One line: "<cache>=<objects> ... K=<objects in the kmalloc caches>", from one awk
        # (a thread left running may crash the kernel as soon as it wakes up: be quick).
        files = "".join(f"[ -r /sys/kernel/slab/{shlex.quote(c)}/objects ] && "
                        f"objs=\"$objs /sys/kernel/slab/{shlex.quote(c)}/objects\"; " for c in own)
        count = ("awk '{n=split(FILENAME,p,\"/\"); c=p[n-1]} c ~ /^kmalloc-/ {k+=$1; next} "
                 "{printf \"%s=%s \", c, $1} END{printf \"K=%d\", k}' "
                 "/sys/kernel/slab/kmalloc-*/objects $objs")
        return settle, "objs=; " + files + shrink_first(own) + count

    @staticmethod
    def _parse_line_count(line: str) -> SlabCount:
        module, kmalloc = {}, 0
        for word in line.split():
            name, _, value = word.partition("=")
            if value.isdigit():
                if name == "K":
                    kmalloc = int(value)
                else:
                    module[name] = int(value)
        return SlabCount(module, kmalloc)

    def after_unload(self, session: GuestSession, unload: Unload) -> None:
        cs = self.clock(session)
        n, before = cs.unload_before or (None, SlabCount({}, 0))
        after = self._parse_line_count(unload.lab)
        start, end = unload.console
        lines = session.console_since(0)[start:end]
        still = [ln for ln in lines if "still has objects" in ln or "Objects remaining" in ln]
        cs.unload = AtUnload(n, before, after, list(unload.caches_left), still, (start, end))
        if unload.lab_observed:
            self._blame(session, cs.unload)

    def unload_obs(self, session: GuestSession) -> AtUnload | None:
        return self.clock(session).unload

    def pool_reserve(self, session: GuestSession) -> int:
        """Objects the module held at load beyond its samples: a mempool's reserve."""
        at = self.state(session).at_load
        if at is None:
            return 0
        return max(0, at.after.own - at.samples) if at.after.own else 0

    def _blame(self, session: GuestSession, u: AtUnload) -> None:
        """Who is charged for what rmmod left: the pool destroyed after its cache (ex4), a
        reference never dropped (ex5), samples not freed at exit (ex1)."""
        info = self.run.info
        order_bad = bool(info and order_violations(
            info, [(["mempool_destroy", "mempool_exit"], ["kmem_cache_destroy"])]))
        left_objects = u.after.own
        reserve = self.pool_reserve(session)
        exit_calls = set(info.exit_calls or ()) if info else set()
        pool_kept = bool(info and match_any(info, ["mempool_create", "mempool_create_node",
                                                   "mempool_init", "mempool_init_node"])
                         and not exit_calls & {"mempool_destroy", "mempool_exit"})
        samples_held = u.history if u.history is not None else max(0, u.before.own - reserve)
        kmalloc_freed = u.before.kmalloc - u.after.kmalloc
        if u.before.own < 8:  # the samples live in the kmalloc caches (noisy: shared)
            leaked = max(0, samples_held - kmalloc_freed) if samples_held >= 20 else 0
            leaked = leaked if leaked > max(16, 0.2 * samples_held) else 0
        else:
            leaked = left_objects
        if pool_kept and leaked:
            # The pool is never destroyed: its reserve stays (charged to the teardown check).
            u.blame["global.teardown"] = f"the mempool is never destroyed: its {reserve} objects stay"
            leaked = max(0, leaked - reserve - 2)
        if u.still_has_objects and order_bad:
            u.blame["ex4.teardown_order"] = ("kmem_cache_destroy() found the pool's reserve still "
                                             "in the cache: destroy the mempool first")
        if leaked:
            if self.reference_leak(session):
                u.blame["ex5.balanced"] = (f"{leaked} sample(s) were never freed: a reference is "
                                           "taken and never dropped (kref_put missing)")
            else:
                u.blame["ex1.freed"] = f"{leaked} sample(s) still allocated after rmmod"
        u.leaked = leaked
        owner = next(iter(u.blame), None)
        if owner and u.still_has_objects:
            start, end = u.report_lines
            session.claim(start, end, owner)

    def after_second_unload(self, session: GuestSession, console: tuple[int, int]) -> None:
        u = self.clock(session).unload
        owner = next(iter(u.blame), None) if u else None
        lines = session.console_since(0)[console[0]:console[1]]
        if owner and any("still has objects" in ln or "Objects remaining" in ln for ln in lines):
            session.claim(console[0], console[1], owner)

    def after_reload(self, session: GuestSession) -> str | None:
        """Loaded a second time: it must sample again."""
        best = self._views.best() if self._views else None
        if best is None:
            return None
        period = self.period_s(session)
        session.sleep(3 * period + 0.5)
        if not self.read(session, best.path).samples:
            return f"{best.path} shows no sample after {3 * period + 0.5:.1f} s"
        return None

    def owner_of_report(self, line: str) -> str | None:
        # A sysfs show that writes past its page overwrites the red zone of the seq_file's
        # page buffer (kmalloc-4k) at every read: ex1.page_bound's bug, reported once there.
        if ("Redzone overwritten" in line or "Padding overwritten" in line) and "-4k" in line:
            return "ex1.page_bound"
        return None

    def summary(self) -> dict[str, Any]:
        v = self._views
        return {
            "history_files": [{"path": x.path, "area": x.area, "writable": x.writable,
                               "example": x.read.samples[-1].line if x.read.samples else ""}
                              for x in (v.views if v else [])],
            "sampling_period_parameter": self.period_param() or "",
        }


def kernel_reports(lines: list[str], session: GuestSession | None = None) -> list[klog.Anomaly]:
    """The reports in `lines`; with a session, not the kinds a `no_reports` check of its kernel
    judges (a locking report is ex1.locking's, wherever it is printed)."""
    from grader.checks.lifecycle import covered_kinds

    others = covered_kinds(session.run, session.kernel) if session is not None else set()
    return [a for a in klog.scan(lines).anomalies if a.severity != "info" and a.kind not in others]


def shrink_first(caches: list[str]) -> str:
    """A shell snippet to run before counting slab objects: shrinking a cache empties KASAN's
    quarantine of its objects (the debug kernel keeps freed objects there, still counted, to
    catch late uses); on the other kernels it only returns empty slabs, the counts are the
    same."""
    own = " ".join(f"/sys/kernel/slab/{shlex.quote(c)}/shrink" for c in caches)
    return f"for f in {own} /sys/kernel/slab/kmalloc-*/shrink; do echo 1 > $f; done 2>/dev/null; "


def deadline(command: str, scratch: str, seconds: float, on_hang: str) -> str:
    """A shell snippet: run `command` in the background, print its output if it ends within
    `seconds` (guest time), else run `on_hang` and leave it behind: a task asleep on a lock
    that is never released ignores even SIGKILL, so `timeout` would wait with it forever."""
    ticks = max(1, int(seconds * 50))
    return (f"rm -f {scratch}.done; ({command} >{scratch} 2>/dev/null; : >{scratch}.done) & "
            f"n=0; while [ ! -e {scratch}.done ] && [ $n -lt {ticks} ]; do sleep 0.02; "
            f"n=$((n+1)); done; if [ -e {scratch}.done ]; then cat {scratch}; else {on_hang}; fi")


def first_line(text: str) -> str:
    return next((ln for ln in text.splitlines() if ln.strip()), "")


_NUM = re.compile(r"\d+")
