"""Saved guests: a profile's guest is booted once per clock and saved right after its agent
answers; every grading restores that state (about 0.3 s) instead of booting (3-6 s under TCG).

All restored guests start from the same instant of the same boot: same kernel, same memory
layout, same PIDs. The submission's files come in through a QEMU fw_cfg file (see
grader/qemu.py PAYLOAD_FW_CFG), read by the qemu_fw_cfg driver of the profile's own kernel,
loaded after the restore. A state is keyed by everything that makes it: QEMU's version, the
kernel, the guest image, the command line, memory, CPUs and clock; a change of any of them
makes a new one. Made under a file lock, so that parallel graders make it once.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader import initramfs
from grader.errors import EnvironmentProblem, GuestError
from grader.guest import Guest
from grader.profiles import Clock, cache_root
from grader.qemu import BootSpec, Launcher

if TYPE_CHECKING:
    from grader.session import Environment

FORMAT = 1  # bump when what a saved guest holds changes
FW_CFG_GUEST_PATH = "lib/grader/qemu_fw_cfg.ko"


@dataclass(frozen=True)
class Snapshot:
    state: Path  # QEMU's saved state
    initrd: Path  # the guest image it was booted with (restores pass the same one)
    release: str  # uname -r
    boot_s: float  # how long the boot took when it was made
    boot_log: Path  # the console of that boot


def fw_cfg_module(kernel_tree: Path) -> bytes:
    """The profile kernel's own qemu_fw_cfg.ko (decompressed: busybox insmod takes plain ELF)."""
    for pattern in ("qemu_fw_cfg.ko", "qemu_fw_cfg.ko.xz"):
        for path in sorted(kernel_tree.rglob(pattern)):
            data = path.read_bytes()
            return lzma.decompress(data) if path.suffix == ".xz" else data
    raise EnvironmentProblem(
        f"no qemu_fw_cfg module in {kernel_tree}: the kernel needs CONFIG_FW_CFG_SYSFS=m "
        "(or set GRADER_SNAPSHOTS=0 to boot every guest)")


def spec_for(env: Environment, clock: Clock, initrd: Path) -> BootSpec:
    icount = clock.icount if env.accel == "tcg" else ""
    return BootSpec(kernel=env.kernel.vmlinuz_path, initrd=initrd, cmdline=env.profile.cmdline,
                    memory_mib=env.profile.memory_mib, cpus=clock.cpus, accel=env.accel,
                    icount=icount, clock=clock.name)


def key(env: Environment, clock: Clock, qemu: str, base_initrd: Path) -> str:
    vmlinuz = env.kernel.vmlinuz_path.stat()
    parts = {
        "format": FORMAT, "qemu": qemu, "profile": env.profile.name,
        "kernel": [env.kernel.release, env.kernel.version, vmlinuz.st_size, vmlinuz.st_mtime_ns],
        "initrd": base_initrd.name, "cmdline": list(env.profile.cmdline),
        "memory": env.profile.memory_mib, "cpus": clock.cpus, "accel": env.accel,
        "icount": clock.icount if env.accel == "tcg" else "",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path):  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load(d: Path) -> Snapshot | None:
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not (d / "state").exists() or not (d / "initrd.img").exists():
        return None
    return Snapshot(d / "state", d / "initrd.img", meta["release"], float(meta["boot_s"]),
                    d / "boot.log")


def ensure(env: Environment, clock: Clock, *, launcher: Launcher | None = None,
           qemu: str | None = None, progress=lambda _m: None) -> Snapshot:  # type: ignore[no-untyped-def]
    """The saved guest of (profile, clock), made now if needed (one boot, about 5 s)."""
    qemu = qemu or env.qemu
    d = cache_root() / "snapshots" / f"{env.profile.name}-{clock.name}-{key(env, clock, qemu, env.base_initrd)}"
    snap = _load(d)
    if snap is not None:
        return snap
    with _locked(d.with_name(d.name + ".lock")):
        snap = _load(d)  # made by another grader while we waited
        if snap is not None:
            return snap
        progress(f"saving a booted {env.profile.name} guest ({clock.name} clock) for later "
                 "gradings (once)")
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        initrd = initramfs.with_files(env.base_initrd,
                                      {FW_CFG_GUEST_PATH: fw_cfg_module(env.kernel.tree)},
                                      tmp / "initrd.img")
        g = Guest(spec_for(env, clock, initrd), tmp / "boot", launcher=launcher)
        t0 = time.monotonic()
        try:
            g.start(snapshotting=True)
            boot_s = time.monotonic() - t0
            if not g.run("true", 30).ok:
                raise GuestError("the freshly booted guest does not run commands")
            g.save_state(tmp / "state")
        finally:
            g.close()
        shutil.copyfile(tmp / "boot" / "console.log", tmp / "boot.log")
        shutil.rmtree(tmp / "boot", ignore_errors=True)
        (tmp / "meta.json").write_text(json.dumps(
            {"release": g.release, "boot_s": round(boot_s, 3), "clock": clock.name,
             "profile": env.profile.name, "qemu": qemu, "made": time.time()}, indent=2))
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
        progress(f"guest saved in {time.monotonic() - t0:.1f} s")
    snap = _load(d)
    assert snap is not None
    return snap


def enabled() -> bool:
    """GRADER_SNAPSHOTS=0 boots every guest instead (to rule snapshots out when debugging)."""
    return os.environ.get("GRADER_SNAPSHOTS", "1") != "0"
