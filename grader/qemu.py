"""QEMU itself: the command line of a grading guest, how it is launched, and a small QMP client."""
from __future__ import annotations

import ctypes
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from grader.errors import GuestError

QEMU = "qemu-system-x86_64"
# The fw_cfg file that carries the files to put in the guest's /mod (a newc cpio). A restored
# guest reads it through the qemu_fw_cfg driver, loaded after the restore so that it sees the
# files of the QEMU that restored it, not those of the one that booted.
PAYLOAD_FW_CFG = "opt/grader/payload"


@dataclass(frozen=True)
class BootSpec:
    kernel: Path  # vmlinuz
    initrd: Path
    cmdline: tuple[str, ...]
    memory_mib: int = 512
    cpus: int = 2
    accel: str = "tcg"
    extra_cmdline: tuple[str, ...] = ()
    icount: str = ""  # QEMU -icount argument ("shift=4,sleep=off"): the warped clock; TCG only
    payload: Path | None = None  # fw_cfg file for /mod (restored guests)
    snapshot: Path | None = None  # restore this saved state instead of booting
    clock: str = "realtime"  # the name of the clock, for reports


@dataclass(frozen=True)
class Sockets:
    """Unix sockets QEMU connects to: console (ttyS0), agent (ttyS1), QMP."""

    con: Path
    ctl: Path
    qmp: Path

    def all(self) -> list[Path]:
        return [self.con, self.ctl, self.qmp]


def opt(value: str | Path) -> str:
    """A value inside a QEMU option list: a comma is written as two (an --out folder with a
    comma in its name made QEMU refuse its -chardev)."""
    return str(value).replace(",", ",,")


def argv(spec: BootSpec, socks: Sockets, *, snapshotting: bool = False) -> list[str]:
    """The command line. A guest that will be saved (`snapshotting`) and one restored from that
    state must have the same devices: only the payload's file and -incoming differ."""
    s = spec
    if s.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", "tcg", "-cpu", "max"]
        if s.icount:
            accel += ["-icount", s.icount]
    if s.payload is not None and not snapshotting:
        payload = f"name={PAYLOAD_FW_CFG},file={opt(s.payload)}"
    else:
        payload = f"name={PAYLOAD_FW_CFG},string=none"
    out = [
        QEMU, *accel, "-m", str(s.memory_mib), "-smp", str(s.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(s.kernel), "-initrd", str(s.initrd),
        "-append", " ".join((*s.cmdline, *s.extra_cmdline)),
        "-chardev", f"socket,id=con,path={opt(socks.con)}", "-serial", "chardev:con",
        "-chardev", f"socket,id=ctl,path={opt(socks.ctl)}", "-serial", "chardev:ctl",
        "-chardev", f"socket,id=qmp,path={opt(socks.qmp)}", "-mon", "chardev=qmp,mode=control",
        "-fw_cfg", payload,
    ]
    if s.snapshot is not None and not snapshotting:
        # The state comes through a file descriptor passed over QMP (Guest._finish_restore):
        # no path to mount when QEMU runs in a container, no shell.
        out += ["-incoming", "defer"]
    return out


# ---- launching ---------------------------------------------------------------------------
class Process(Protocol):
    """What the guest needs of a running QEMU: subprocess.Popen has it; a backend that runs
    QEMU elsewhere (a container) provides the same methods."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


Launcher = Callable[[list[str], IO[bytes]], Process]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: QEMU gets SIGKILL if the grader dies, even by SIGKILL (no orphans).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def host_launcher(cmd: list[str], log: IO[bytes]) -> Process:
    """QEMU as a child process of the grader, killed with it (no orphans)."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            preexec_fn=_die_with_parent)


def qemu_version() -> str:
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"version (\S+)", out.stdout)
    return m.group(1) if m else "unknown"


# ---- QMP -------------------------------------------------------------------------------
@dataclass
class Qmp:
    """QEMU's machine protocol over a connected socket: one command at a time, events skipped.
    (Five commands are all we use: a client library would be more than the need.)"""

    sock: socket.socket
    _buf: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError("QEMU's monitor (QMP) did not answer in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                raise GuestError(f"QEMU's monitor (QMP) connection failed: {e}") from e
            if not data:
                raise GuestError("QEMU closed its monitor (QMP): it has stopped")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def handshake(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        greeting = self._message(deadline)
        if "QMP" not in greeting:
            raise GuestError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities", timeout=timeout)

    def execute(self, command: str, timeout: float = 10.0, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise GuestError(f"QEMU's monitor (QMP) connection failed: {e}") from e
        deadline = time.monotonic() + timeout
        while True:
            m = self._message(deadline)
            if "event" in m:
                self.events.append(m)
                continue
            if "error" in m:
                raise GuestError(f"QMP {command} failed: {m['error'].get('desc', m['error'])}")
            return m.get("return")

    def send_fd(self, fd: int, name: str, timeout: float = 10.0) -> None:
        """Hand QEMU an open file descriptor (SCM_RIGHTS) under `name`, for "fd:<name>" URIs."""
        msg = json.dumps({"execute": "getfd", "arguments": {"fdname": name}}).encode() + b"\n"
        try:
            socket.send_fds(self.sock, [msg], [fd])
        except OSError as e:
            raise GuestError(f"QEMU's monitor (QMP) connection failed: {e}") from e
        deadline = time.monotonic() + timeout
        while True:
            m = self._message(deadline)
            if "event" in m:
                self.events.append(m)
                continue
            if "error" in m:
                raise GuestError(f"QMP getfd failed: {m['error'].get('desc', m['error'])}")
            return

    def wait_status(self, done: Callable[[str], bool], timeout: float) -> str:
        """Poll query-status until `done(status)`; returns the status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.execute("query-status", timeout=max(1.0, deadline - time.monotonic()))
            if done(status["status"]):
                return str(status["status"])
            if time.monotonic() > deadline:
                raise GuestError(f"QEMU stayed in state {status['status']!r} for {timeout:.0f} s")
            time.sleep(0.02)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
