"""A QEMU guest the grader drives: boot or restore a kernel, run commands, watch the kernel log.

A guest is either booted cold (the modules travel in the initramfs) or restored from a state
saved right after a boot (grader/snapshots.py): restoring takes a fraction of a second where a
boot under TCG takes seconds; the modules then travel through a QEMU fw_cfg file.
"""
from __future__ import annotations

import collections
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader import klog
from grader.errors import GraderError, GuestError
from grader.limits import DEFAULT as LIMITS
from grader.qemu import (
    PAYLOAD_FW_CFG,
    BootSpec,
    Launcher,
    Process,
    Qmp,
    Sockets,
    argv,
    host_launcher,
    qemu_version,
)

__all__ = ["BootSpec", "CommandResult", "Guest", "GuestDied", "GuestHung", "Launcher",
           "Process", "host_launcher", "qemu_version"]

_RES = re.compile(rb"RES (\S+) (-?\d+) (\d+) (\d+) (\d+) (\d+)\n")
_READY = re.compile(rb"READY (\S+)\n")


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
class _Channel:
    buf: bytearray = field(default_factory=bytearray)


class Guest:
    """One guest. Use as a context manager: QEMU is always torn down on exit."""

    def __init__(self, spec: BootSpec, workdir: Path, *, boot_timeout: float | None = None,
                 launcher: Launcher | None = None, release: str = ""):
        self.spec = spec
        self.launcher: Launcher = launcher or host_launcher
        self.workdir = workdir
        self.boot_timeout = boot_timeout or LIMITS.boot_timeout_s
        self.release = release  # uname -r; known in advance for a restored guest
        self.console_lines: list[str] = []
        self.boot_s = 0.0
        self.restored = False
        self._proc: Process | None = None
        self._con = _Channel()
        self._ctl = _Channel()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._socks: list[socket.socket] = []
        self._qmp: Qmp | None = None
        self._scratch: Path | None = None
        self._seq = 0
        self._console_file = None
        self._partial = b""
        self._console_bytes = 0
        self.console_dropped = 0
        self.console_tail: collections.deque[str] = collections.deque(maxlen=400)
        self.fatal: klog.Anomaly | None = None
        self.boot_failures: list[str] = []

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def clock(self) -> str:
        return self.spec.clock

    def sockets(self) -> Sockets:
        # Unix socket paths must stay short (108 bytes) and QEMU options need their commas
        # doubled: the sockets live in a private scratch folder, never under --out.
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="grader-q"))
        d = self._scratch
        return Sockets(d / "con", d / "ctl", d / "qmp")

    def command_line(self, *, snapshotting: bool = False) -> list[str]:
        return argv(self.spec, self.sockets(), snapshotting=snapshotting)

    def start(self, *, snapshotting: bool = False) -> Guest:
        """Restore the saved state (spec.snapshot) or boot. A failed cold boot is retried:
        nothing of the submission runs before the agent answers (modules are only files in /mod
        until insmod), so it is the environment's (seen under TCG with 2 vCPUs: about one boot
        in 25 oopses on an int3 during early text patching, or stalls), never the student's."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        restore = self.spec.snapshot is not None and not snapshotting
        attempts = 1 if restore else LIMITS.boot_attempts
        for attempt in range(1, attempts + 1):
            t0 = time.monotonic()
            try:
                self._start_once(restore=restore, snapshotting=snapshotting)
                break
            except GuestError as e:
                self.boot_failures.append(str(e).splitlines()[0])
                if attempt == attempts or "cannot start QEMU" in str(e):
                    raise
                for name in ("console.log", "qemu.log"):
                    if (self.workdir / name).exists():
                        (self.workdir / name).rename(self.workdir / f"{name}.boot{attempt}")
                self._reset()
        self.boot_s = time.monotonic() - t0
        self.restored = restore
        return self

    def _reset(self) -> None:
        self._proc, self._reader, self._socks, self._qmp = None, None, [], None
        self._con, self._ctl = _Channel(), _Channel()
        del self.console_lines[:]
        self.console_tail.clear()
        self._partial, self._console_bytes, self.console_dropped = b"", 0, 0
        self.fatal = None

    def _start_once(self, *, restore: bool, snapshotting: bool) -> None:
        socks = self.sockets()
        listeners = []
        for path in socks.all():
            path.unlink(missing_ok=True)
            ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ls.bind(str(path))
            ls.listen(1)
            ls.settimeout(15)
            listeners.append(ls)
        self._console_file = open(self.workdir / "console.log", "wb")
        qlog = open(self.workdir / "qemu.log", "wb")
        try:
            self._proc = self.launcher(self.command_line(snapshotting=snapshotting), qlog)
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
        self._qmp = Qmp(self._socks.pop())  # the third connection: QMP, not read by the loop
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self._qmp.handshake()
            if restore:
                self._finish_restore()
            else:
                self._wait_ready()
        except GuestError as e:
            log = self.console_lines[-40:]
            self.close()
            raise GuestError(f"guest {'restore' if restore else 'boot'} failed: {e}; QEMU said: "
                             f"{self._qemu_log()}; console tail:\n" + "\n".join(log)) from None

    def _wait_ready(self) -> None:
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
            raise GuestError("did not boot" if ok else
                             f"did not boot within {self.boot_timeout:.0f} s")

    def _finish_restore(self) -> None:
        """The incoming state is loaded while QEMU is paused: resume it once loaded (a `cont`
        sent while the state is still coming in leaves the guest stopped), then bring the
        payload into /mod."""
        assert self._qmp is not None and self.spec.snapshot is not None
        fd = os.open(self.spec.snapshot, os.O_RDONLY)
        try:
            self._qmp.send_fd(fd, "state")
        finally:
            os.close(fd)
        self._qmp.execute("migrate-incoming", uri="fd:state")
        self._qmp.wait_status(lambda st: st != "inmigrate", LIMITS.restore_timeout_s)
        self._qmp.execute("cont")
        if self.spec.payload is not None:
            raw = f"/sys/firmware/qemu_fw_cfg/by_name/{PAYLOAD_FW_CFG}/raw"
            r = self.run(f"insmod /lib/grader/qemu_fw_cfg.ko && cd /mod && cpio -i -d -m < {raw}",
                         LIMITS.command_s)
            if not r.ok:
                raise GuestError(f"the restored guest could not read its payload: {r.stderr.strip()}")

    def save_state(self, path: Path, timeout: float = 120.0) -> None:
        """Pause the guest and write its whole state to `path` (QEMU migration to a file)."""
        assert self._qmp is not None
        tmp = path.with_name(path.name + ".part")
        self._qmp.execute("stop")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._qmp.send_fd(fd, "state")
        finally:
            os.close(fd)
        self._qmp.execute("migrate", uri="fd:state")
        deadline = time.monotonic() + timeout
        while True:
            st = self._qmp.execute("query-migrate").get("status", "")
            if st == "completed":
                break
            if st in ("failed", "cancelled") or time.monotonic() > deadline:
                raise GuestError(f"saving the guest's state failed (migration {st or 'timed out'})")
            time.sleep(0.05)
        os.replace(tmp, path)

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, timeout: float = 3.0) -> None:
        """Power off politely, then kill: never leaves a QEMU behind."""
        if self._proc is not None:
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
            if self._qmp is not None:
                self._qmp.close()
            if self._reader:
                self._reader.join(timeout=2)
        if self._console_file:
            self._console_file.close()
            self._console_file = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

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
        if self._console_file and self._console_bytes <= LIMITS.console_file_cap:
            self._console_file.write(data)
            self._console_file.flush()
        text = self._partial + data
        *lines, self._partial = text.split(b"\n")
        if len(self._partial) > 65536:
            lines.append(self._partial)
            self._partial = b""
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")[:2000]
            if len(self.console_lines) < LIMITS.console_lines_cap:
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
        # The guest enforces `timeout` in its own seconds; the host only gives up on a guest
        # that stopped answering altogether (guest seconds may pass slower than wall ones on
        # a loaded host).
        host_wait = timeout * LIMITS.host_factor + LIMITS.host_grace_s
        deadline = time.monotonic() + host_wait
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
                        f"no answer to {command!r} within {host_wait:.0f} s",
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
