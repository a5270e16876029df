"""Grades a batch: one `grader run` subprocess per submission, in parallel, each bounded.

A submission that crashes or hangs its guest is handled by `grader run` itself (it is graded:
the crash costs the check where it happened). What the batch bounds is the grader run as a
whole: a wall timeout, after which its whole process group is killed; its output kept to a
head and a tail; its death tied to the batch's (setpriv --pdeathsig: a batch killed by SIGKILL
leaves no grader behind, and grader run's own PR_SET_PDEATHSIG takes QEMU down with it).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from grader import __version__
from grader.batch.entries import Entry, content_digest
from grader.batch.store import FAILED, GRADED, INCOMPLETE, REJECTED, KeyParts, Record, Store
from grader.errors import ConfigError
from grader.model import GradeResult
from grader.profiles import load_profile, project_root

# Test hook: a JSON list that replaces `<venv>/bin/grader run` (e.g. a fake grader).
COMMAND_ENV = "GRADER_BATCH_RUN_COMMAND"
# Per-submission wall timeout when not given: a backstop above grader run's own per-check
# timeouts (each check can cost a guest boot plus its command timeout, scaled on a slow host).
BASE_TIMEOUT_S = 300.0
PER_CHECK_TIMEOUT_S = 60.0
# QEMU's own memory beside the guest's RAM, per running grading (measured: ~200-300 MiB RSS).
QEMU_OVERHEAD_MIB = 512
OUTPUT_HEAD = OUTPUT_TAIL = 16 * 1024
KILL_GRACE_S = 10.0


def grader_command() -> list[str]:
    """The command that grades one submission: `grader run` of this very installation."""
    env = os.environ.get(COMMAND_ENV)
    if env:
        cmd = json.loads(env)
        if not (isinstance(cmd, list) and cmd and all(isinstance(x, str) for x in cmd)):
            raise ConfigError(f"{COMMAND_ENV} must be a JSON list of strings, not {env!r}")
        return cmd
    script = Path(sys.executable).with_name("grader")
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-m", "grader.cli", "run"]


def rubric_path(name_or_path: str) -> Path:
    """The rubric file `grader run --rubric` will read (same rule as grader.rubric)."""
    p = Path(name_or_path)
    if p.is_file():
        return p.resolve()
    p = project_root() / "rubrics" / f"{name_or_path}.toml"
    if not p.is_file():
        names = ", ".join(sorted(x.stem for x in (project_root() / "rubrics").glob("*.toml")))
        raise ConfigError(f"unknown rubric {name_or_path!r}; valid rubrics: {names} (or a path)")
    return p


def rubric_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def derive_timeout(path: Path) -> float:
    """BASE + PER_CHECK x the rubric's number of checks (tp07: 31 checks -> 2160 s)."""
    try:
        d = tomllib.loads(path.read_text())
        n = sum(len(e.get("checks", [])) for e in d.get("exercises", []))
    except (OSError, ValueError, AttributeError):
        n = 30
    return BASE_TIMEOUT_S + PER_CHECK_TIMEOUT_S * max(n, 1)


def default_jobs(memory_mib: int) -> int:
    """As many gradings as cores, and as fit in the available memory (guest + QEMU each)."""
    cores = len(os.sched_getaffinity(0))
    avail_mib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail_mib = int(line.split()[1]) // 1024
    except OSError:
        pass
    by_mem = cores if avail_mib is None else avail_mib // (memory_mib + QEMU_OVERHEAD_MIB)
    return max(1, min(cores, by_mem))


@dataclass(frozen=True)
class BatchOptions:
    rubric: str = "tp07"
    profile: str = "6.1"
    compat: bool | None = None
    combine: tuple[str, ...] | None = None  # passed to grader run (None: as the rubric says)
    backend: str = "host"
    jobs: int = 1
    timeout_s: float | None = None  # None: derive_timeout(rubric)
    force: bool = False
    quiet: bool = False
    command: tuple[str, ...] = ()  # empty: grader_command()


@dataclass
class Planned:
    entry: Entry
    parts: KeyParts
    key: str
    profile: str
    record: Record | None  # what the store holds for this key


@dataclass
class BatchRun:
    planned: list[Planned]
    graded: list[Record] = field(default_factory=list)
    reused: int = 0
    interrupted: bool = False
    seconds: float = 0.0


def kernel_releases(profiles: set[str]) -> dict[str, str]:
    """profile -> exact kernel release; an unknown or unprovisioned profile stops the batch."""
    from grader.provision import load_kernel

    return {p: load_kernel(load_profile(p)).release for p in sorted(profiles)}


def plan(entries: list[Entry], store: Store, opts: BatchOptions) -> list[Planned]:
    rdigest = rubric_digest(rubric_path(opts.rubric))
    profiles = {e.profile or opts.profile for e in entries}
    releases = kernel_releases(profiles)
    out = []
    for e in entries:
        profile = e.profile or opts.profile
        compat = e.compat if e.compat is not None else opts.compat
        parts = KeyParts(content_digest(e.path), rdigest, releases[profile], __version__, compat,
                         opts.combine)
        key = parts.key()
        out.append(Planned(e, parts, key, profile, store.record(key)))
    return out


class _Capture:
    """Keeps the first and last bytes of a stream; counts what it drops in between."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = OUTPUT_HEAD - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > OUTPUT_TAIL:
            cut = len(self.tail) - OUTPUT_TAIL
            self.dropped += cut
            del self.tail[:cut]

    def text(self) -> str:
        mid = f"\n[... {self.dropped} bytes of output dropped ...]\n" if self.dropped else ""
        return (bytes(self.head).decode("utf-8", "replace") + mid
                + bytes(self.tail).decode("utf-8", "replace"))


class _Children:
    """The process groups running now, so that an interrupted batch can end them all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def add(self, p: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.add(p)

    def remove(self, p: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.discard(p)

    def kill_all(self) -> None:
        with self.lock:
            self.stopping = True
            for p in self.procs:
                _killpg(p, signal.SIGKILL)


def _killpg(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


def _command(item: Planned, staged: Path, opts: BatchOptions) -> list[str]:
    cmd = [*(opts.command or grader_command()), str(item.entry.path.resolve()),
           "--out", str(staged), "--quiet", "--format", "json",
           "--rubric", str(rubric_path(opts.rubric)), "--profile", item.profile,
           "--backend", opts.backend]
    compat = item.parts.compat
    if compat is not None:
        cmd.append("--compat" if compat else "--no-compat")
    if opts.combine is not None:
        cmd += [f"--combine={k}" for k in opts.combine] or ["--no-combine"]
    setpriv = shutil.which("setpriv")
    # The grader dies with the thread that started it (the batch's worker): no orphan after
    # a SIGKILL of the batch. setpriv, not preexec_fn: preexec_fn is unsafe with threads.
    return [setpriv, "--pdeathsig", "KILL", *cmd] if setpriv else cmd


def grade_one(item: Planned, store: Store, opts: BatchOptions, children: _Children) -> Record:
    """Run `grader run` on one submission, bounded, and commit what it gave to the store.
    A failure of the batch's own code here is recorded as the grader's failure of this
    submission (graded again next time), never allowed to stop the other gradings."""
    try:
        return _grade_one(item, store, opts, children)
    except Exception as e:  # noqa: BLE001 - recorded, shown, retried
        return Record(key=item.key, status=FAILED, parts=item.parts.__dict__.copy(),
                      reason=f"the batch failed to grade this submission: {e!r}; graded "
                             f"again on the next run", finished=round(time.time(), 3))


def _grade_one(item: Planned, store: Store, opts: BatchOptions, children: _Children) -> Record:
    timeout = opts.timeout_s or derive_timeout(rubric_path(opts.rubric))
    staged = store.stage(item.key)
    cmd = _command(item, staged, opts)
    t0 = time.monotonic()
    cap = _Capture()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    children.add(proc)
    store.log("started", key=item.key, student=item.entry.student, pid=proc.pid)
    if children.stopping:
        _killpg(proc, signal.SIGKILL)
    assert proc.stdout is not None
    reader = threading.Thread(target=_pump, args=(proc.stdout, cap), daemon=True)
    reader.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _killpg(proc, signal.SIGTERM)
        try:
            rc = proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _killpg(proc, signal.SIGKILL)
            rc = proc.wait()
    finally:
        children.remove(proc)
    _killpg(proc, signal.SIGKILL)  # whatever the grader left in its group
    reader.join(timeout=5)
    seconds = round(time.monotonic() - t0, 2)
    output = cap.text()
    rec = Record(key=item.key, status=FAILED, parts=item.parts.__dict__.copy(), seconds=seconds,
                 exit_code=rc, output_tail=output[-4000:], finished=round(time.time(), 3))
    if children.stopping and not timed_out:
        rec.reason = "the batch was interrupted"
    elif timed_out:
        rec.reason = (f"the grader gave no result within {timeout:.0f} s and was stopped "
                      f"(its whole process group killed); graded again on the next run")
    elif rc == 0:
        _take_report(rec, staged, store.path(item.key), item.parts)
    elif rc == 3:
        rec.status = REJECTED
        rec.reason = _last_error(output) or "not a submission (grader run exit 3)"
    else:
        rec.reason = (f"grader run ended with exit status {rc}: "
                      f"{_last_error(output) or 'no message'}; graded again on the next run")
    if children.stopping and rec.status == FAILED:
        shutil.rmtree(staged, ignore_errors=True)
        return rec
    store.commit(staged, rec)
    return rec


def _pump(stream, cap: _Capture) -> None:  # type: ignore[no-untyped-def]
    while chunk := stream.read1(65536):
        cap.feed(chunk)


def _last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("grader: error:")]
    return (errs or lines or [""])[-1][:500]


def _take_report(rec: Record, staged: Path, final: Path, parts: KeyParts) -> None:
    """Check the report grader run wrote and point its artifact paths at the final folder."""
    path = staged / "report.json"
    try:
        d = json.loads(path.read_text())
        result = GradeResult.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        rec.reason = f"grader run ended well but its report.json is unusable: {e!r}"
        return
    prefix = str(staged)
    d["artifacts"] = {k: (str(final) + v[len(prefix):] if v.startswith(prefix) else v)
                      for k, v in d.get("artifacts", {}).items()}
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    s = result.stamp
    seen = {"submission_digest": s.submission_digest, "rubric_digest": s.rubric_digest,
            "kernel_release": s.kernel_release, "grader_version": s.grader_version}
    for name, value in seen.items():
        expected = getattr(parts, name)
        if value != expected:
            rec.warnings.append(f"the report's {name} is {value!r}, the batch computed "
                                f"{expected!r}")
    rec.status = GRADED if result.complete else INCOMPLETE
    if not result.complete:
        rec.reason = "incomplete: some check or stage ended in a grader error; graded again " \
                     "on the next run"


# ---- the whole batch ---------------------------------------------------------------------
def _line(p: Planned, rec: Record, store: Store) -> str:
    what = rec.status
    if rec.status in (GRADED, INCOMPLETE):
        r = store.result(p.key)
        if r is not None:
            what = f"{r.score:g}/{r.max_score:g}" + ("" if r.complete else " (incomplete)")
    elif rec.reason:
        what = f"{rec.status}: {rec.reason[:160]}"
    return f"{p.entry.student}: {what} in {rec.seconds:.0f} s"


def run_batch(planned: list[Planned], store: Store, opts: BatchOptions) -> BatchRun:
    """Grade every planned submission whose key has no final result (all with --force)."""
    t0 = time.monotonic()
    run = BatchRun(planned)
    todo: dict[str, Planned] = {}
    for p in planned:
        if not opts.force and p.record is not None and p.record.final:
            run.reused += 1
            continue
        todo.setdefault(p.key, p)  # two students with the same submission: graded once
    store.log("start", total=len(planned), todo=len(todo), reused=run.reused, jobs=opts.jobs,
              force=opts.force)
    for p in planned:
        if p.key not in todo:
            store.log("reused", key=p.key, student=p.entry.student)
    progress = _progress(opts.quiet)
    children = _Children()
    with progress:
        task = progress.add_task("grading", total=len(todo))
        pool = ThreadPoolExecutor(max_workers=max(1, opts.jobs), thread_name_prefix="grade")
        futures: dict[Future[Record], Planned] = {}
        try:
            for p in todo.values():
                futures[pool.submit(grade_one, p, store, opts, children)] = p
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    p = futures[f]
                    rec = f.result()
                    run.graded.append(rec)
                    store.log("graded" if rec.status != FAILED else "failed", key=p.key,
                              student=p.entry.student, status=rec.status,
                              seconds=rec.seconds, reason=rec.reason)
                    progress.advance(task)
                    if not opts.quiet:
                        progress.console.print(_line(p, rec, store), highlight=False,
                                               markup=False, soft_wrap=True)
        except KeyboardInterrupt:
            run.interrupted = True
            children.kill_all()
            pool.shutdown(wait=True, cancel_futures=True)
            store.log("interrupted")
        else:
            pool.shutdown(wait=True)
    run.seconds = round(time.monotonic() - t0, 2)
    store.log("end", graded=len(run.graded), reused=run.reused, seconds=run.seconds)
    return run


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *a: object) -> None:
        return None

    def add_task(self, *a: object, **k: object) -> int:
        return 0

    def advance(self, *a: object) -> None:
        return None


def _progress(quiet: bool):  # type: ignore[no-untyped-def]
    if quiet:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True))
