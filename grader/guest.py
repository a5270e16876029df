"""A QEMU guest the grader drives: boot a kernel with modules, run commands, watch the kernel log."""
from __future__ import annotations

import collections
import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from grader import klog
from grader.errors import GraderError, GuestError

QEMU = "qemu-system-x86_64"
_RES = re.compile(rb"RES (\S+) (-?\d+) (\d+) (\d+) (\d+) (\d+)\n")
_READY = re.compile(rb"READY (\S+)\n")
CONSOLE_LINES_CAP = 100_000
BOOT_ATTEMPTS = 3
CONSOLE_FILE_CAP = 32 << 20


class GuestDied(Exception):
    """The guest stopped (panic, oops with oops=panic, triple fault): the module's doing."""

    def __init__(self, reason: str, log: list[str]):
        super().__init__(reason)
        self.reason = reason
        self.log = log


class GuestHung(Exception):
    """The guest stopped answering within the host-side deadline."""

    def __init__(self, reason: str, log: list[str]):
        super().__init__(reason)
        self.reason = reason
        self.log = log


@dataclass
class CommandResult:
    command: str
    status: int  # exit status; 128+N for signal N; -1 when the process could not be killed
    stdout: str
    stderr: str
    elapsed_s: float
    timed_out: bool = False
    unkillable: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out


@dataclass
class BootSpec:
    kernel: Path  # vmlinuz
    initrd: Path
    cmdline: tuple[str, ...]
    memory_mib: int = 512
    cpus: int = 2
    accel: str = "tcg"
    extra_cmdline: tuple[str, ...] = ()


@dataclass
class _Channel:
    buf: bytearray = field(default_factory=bytearray)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: QEMU gets SIGKILL if the grader dies, even by SIGKILL (no orphans).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


class Process(Protocol):
    """What the guest needs of a running QEMU: subprocess.Popen has it; a backend that runs
    QEMU elsewhere (a container) provides the same four methods."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


Launcher = Callable[[list[str], IO[bytes]], Process]


def host_launcher(argv: list[str], log: IO[bytes]) -> Process:
    """QEMU as a child process of the grader, killed with it (no orphans)."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            preexec_fn=_die_with_parent)


def qemu_version() -> str:
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"version (\S+)", out.stdout)
    return m.group(1) if m else "unknown"


class Guest:
    """One booted guest. Use as a context manager: QEMU is always torn down on exit."""

    def __init__(self, spec: BootSpec, workdir: Path, *, boot_timeout: float = 30.0,
                 launcher: Launcher | None = None):
        self.spec = spec
        self.launcher: Launcher = launcher or host_launcher
        self.workdir = workdir
        self.boot_timeout = boot_timeout
        self.release = ""
        self.console_lines: list[str] = []
        self.boot_s = 0.0
        self._proc: Process | None = None
        self._con = _Channel()
        self._ctl = _Channel()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._socks: list[socket.socket] = []
        self._seq = 0
        self._console_file = None
        self._partial = b""
        self._console_bytes = 0
        self.console_dropped = 0
        self.console_tail: collections.deque[str] = collections.deque(maxlen=400)
        self.fatal: klog.Anomaly | None = None
        self.boot_failures: list[str] = []

    # ---- lifecycle -------------------------------------------------------------------
    def command_line(self) -> list[str]:
        s = self.spec
        accel = ["-accel", "kvm", "-cpu", "host"] if s.accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
        return [
            QEMU, *accel, "-m", str(s.memory_mib), "-smp", str(s.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(s.kernel), "-initrd", str(s.initrd),
            "-append", " ".join((*s.cmdline, *s.extra_cmdline)),
            "-chardev", f"socket,id=con,path={self.workdir / 'con.sock'}",
            "-serial", "chardev:con",
            "-chardev", f"socket,id=ctl,path={self.workdir / 'ctl.sock'}",
            "-serial", "chardev:ctl",
        ]

    def start(self) -> Guest:
        """Boot, retrying a boot that fails: nothing of the submission runs before the agent
        answers (modules are only files in /mod until insmod), so a failed boot is the
        environment's (seen under TCG with 2 vCPUs: about one boot in 25 oopses on an int3
        during early text patching, or stalls), never the student's."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            t0 = time.monotonic()
            try:
                self._start_once()
                break
            except GuestError as e:
                self.boot_failures.append(str(e).splitlines()[0])
                if attempt == BOOT_ATTEMPTS or "cannot start QEMU" in str(e):
                    raise
                for name in ("console.log", "qemu.log"):
                    if (self.workdir / name).exists():
                        (self.workdir / name).rename(self.workdir / f"{name}.boot{attempt}")
                self._reset()
        self.boot_s = time.monotonic() - t0
        return self

    def _reset(self) -> None:
        self._proc, self._reader, self._socks = None, None, []
        self._con, self._ctl = _Channel(), _Channel()
        del self.console_lines[:]
        self.console_tail.clear()
        self._partial, self._console_bytes, self.console_dropped = b"", 0, 0
        self.fatal = None

    def _start_once(self) -> None:
        listeners = []
        for name in ("con.sock", "ctl.sock"):
            path = self.workdir / name
            path.unlink(missing_ok=True)
            ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ls.bind(str(path))
            ls.listen(1)
            ls.settimeout(15)
            listeners.append(ls)
        self._console_file = open(self.workdir / "console.log", "wb")
        qlog = open(self.workdir / "qemu.log", "wb")
        try:
            self._proc = self.launcher(self.command_line(), qlog)
        except (OSError, GraderError) as e:
            for ls in listeners:
                ls.close()
            self._console_file.close()
            if isinstance(e, GraderError):
                raise
            raise GuestError(f"cannot start QEMU ({e}): apt-get install -y qemu-system-x86") from e
        finally:
            qlog.close()
        try:
            for ls in listeners:
                conn, _ = ls.accept()
                self._socks.append(conn)
        except (TimeoutError, OSError) as e:
            self.close()
            raise GuestError(f"QEMU did not connect its serial ports: {self._qemu_log()}") from e
        finally:
            for ls in listeners:
                ls.close()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        with self._cond:
            ok = self._cond.wait_for(
                lambda: _READY.search(self._ctl.buf) or not self.alive or self.fatal,
                timeout=self.boot_timeout,
            )
            m = _READY.search(bytes(self._ctl.buf))
            if m:
                self.release = m.group(1).decode()
                del self._ctl.buf[: m.end()]
        if not m:
            reason = "did not boot" if ok else f"did not boot within {self.boot_timeout:.0f} s"
            log = self.console_lines[-40:]
            self.close()
            raise GuestError(f"guest {reason}; QEMU said: {self._qemu_log()}; console tail:\n"
                             + "\n".join(log))

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, timeout: float = 3.0) -> None:
        """Power off politely, then kill: never leaves a QEMU behind."""
        if self._proc is None:
            return
        if self.alive and self._socks:
            try:
                self._socks[1].sendall(b"OFF 0 0 0\n")
                self._proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired, IndexError):
                pass
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        if self._reader:
            self._reader.join(timeout=2)
        if self._console_file:
            self._console_file.close()
            self._console_file = None

    def _qemu_log(self) -> str:
        try:
            return (self.workdir / "qemu.log").read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    # ---- reading ---------------------------------------------------------------------
    def _read_loop(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self._socks[0], selectors.EVENT_READ, self._con)
        sel.register(self._socks[1], selectors.EVENT_READ, self._ctl)
        open_count = 2
        while open_count:
            for key, _ in sel.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    open_count -= 1
                    continue
                with self._cond:
                    if key.data is self._con:
                        self._on_console(data)
                    else:
                        self._ctl.buf += data
                    self._cond.notify_all()
            if self._proc is not None and self._proc.poll() is not None and open_count:
                # QEMU is gone; whatever is left in the sockets is read above, then stop.
                with self._cond:
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _on_console(self, data: bytes) -> None:
        # A module flooding the log must not exhaust the grader: past the caps the log is
        # still scanned for a fatal report, and only its last lines are kept.
        self._console_bytes += len(data)
        if self._console_file and self._console_bytes <= CONSOLE_FILE_CAP:
            self._console_file.write(data)
            self._console_file.flush()
        text = self._partial + data
        *lines, self._partial = text.split(b"\n")
        if len(self._partial) > 65536:
            lines.append(self._partial)
            self._partial = b""
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")[:2000]
            if len(self.console_lines) < CONSOLE_LINES_CAP:
                self.console_lines.append(line)
            else:
                self.console_dropped += 1
                self.console_tail.append(line)
            c = klog.classify(line)
            if c and c[1] == "fatal" and self.fatal is None:
                self.fatal = klog.Anomaly(c[0], c[1], len(self.console_lines) - 1, line)

    def recent_console(self, n: int = 60) -> list[str]:
        """The last n console lines, including those past the cap."""
        if self.console_dropped:
            return [*self.console_lines[-5:], f"[grader: {self.console_dropped} lines dropped]",
                    *list(self.console_tail)[-n:]]
        return self.console_lines[-n:]

    # ---- commands --------------------------------------------------------------------
    def run(self, command: str, timeout: float = 10.0, *, check: bool = False) -> CommandResult:
        """Run a /bin/sh command in the guest. The guest kills it after `timeout` seconds;
        the host gives up on the whole guest a little later (GuestHung) and raises GuestDied
        when the guest stops (a panic), without waiting for the timeout."""
        if not self.alive:
            raise GuestDied(self._death_reason(), self.recent_console(60))
        self._seq += 1
        cid = str(self._seq)
        payload = command.encode()
        header = f"RUN {cid} {int(timeout * 1000)} {len(payload)}\n".encode()
        try:
            self._socks[1].sendall(header + payload)
        except OSError as e:
            raise GuestDied(self._death_reason(), self.recent_console(60)) from e
        deadline = time.monotonic() + timeout + 5.0
        fatal_since = 0.0
        with self._cond:
            while True:
                # bytes(): a match on a bytearray reads its groups lazily from the buffer,
                # which is trimmed below.
                m = _RES.match(bytes(self._ctl.buf[:128]))
                if m:
                    rid, status, elapsed, flags, outlen, errlen = m.groups()
                    outlen, errlen, flags = int(outlen), int(errlen), int(flags)
                    end = m.end() + outlen + errlen
                    if len(self._ctl.buf) >= end:
                        body = bytes(self._ctl.buf[m.end() : end])
                        del self._ctl.buf[:end]
                        if rid.decode() != cid:
                            continue  # a late answer to a command we gave up on
                        res = CommandResult(
                            command=command, status=int(status),
                            stdout=body[:outlen].decode("utf-8", errors="replace"),
                            stderr=body[outlen:].decode("utf-8", errors="replace"),
                            elapsed_s=int(elapsed) / 1000, timed_out=bool(flags & 1),
                            unkillable=bool(flags & 2), truncated=bool(flags & 4),
                        )
                        if check and not res.ok:
                            raise GuestError(f"guest command failed: {command!r}: {res.stderr}")
                        return res
                if not self.alive:
                    break
                if self.fatal is not None:
                    # oops=panic: the kernel panics and QEMU exits within a moment; wait for
                    # that (the lock is released while waiting) so the whole report is read.
                    fatal_since = fatal_since or time.monotonic()
                    if time.monotonic() - fatal_since > 5:
                        break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestHung(
                        f"no answer to {command!r} within {timeout + 5:.0f} s",
                        self.recent_console(60),
                    )
                self._cond.wait(timeout=min(left, 0.5))
        raise GuestDied(self._death_reason(), self.recent_console(80))

    def _death_reason(self) -> str:
        if self.fatal is not None:
            return f"kernel {self.fatal.kind}: {klog.strip_timestamp(self.fatal.line).strip()}"
        code = self._proc.poll() if self._proc else None
        return f"guest stopped (QEMU exit status {code})"

    # ---- conveniences ----------------------------------------------------------------
    def read(self, path: str, timeout: float = 10.0) -> CommandResult:
        return self.run(f"cat {shlex.quote(path)}", timeout)

    def write(self, path: str, data: str, timeout: float = 10.0) -> CommandResult:
        return self.run(f"printf %s {shlex.quote(data)} > {shlex.quote(path)}", timeout)

    def spawn(self, command: str) -> int:
        """Start a background process and return its PID."""
        res = self.run(f"{command} >/dev/null 2>&1 </dev/null & echo $!", 10)
        return int(res.stdout.strip())

    def insmod(self, module: str, params: dict[str, object] | None = None,
               timeout: float = 30.0) -> CommandResult:
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (params or {}).items())
        return self.run(f"insmod /mod/{shlex.quote(module)}.ko {args}", timeout)

    def rmmod(self, module: str, timeout: float = 30.0) -> CommandResult:
        return self.run(f"rmmod {shlex.quote(module)}", timeout)

    def dmesg(self) -> list[str]:
        return self.run("dmesg", 20).stdout.splitlines()

    def console_since(self, mark: int) -> list[str]:
        return self.console_lines[mark:]


def kvm_usable() -> bool:
    """Cheap first look; the real probe (a boot) is done by `grader setup` and cached."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK)
