"""Glue between provisioning, build and guest: a ready environment for one kernel profile."""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grader import initramfs, provision, snapshots
from grader.backends import Backend
from grader.build import BuildRequest, BuildResult, build_module
from grader.errors import EnvironmentProblem
from grader.guest import Guest, qemu_version
from grader.limits import DEFAULT as LIMITS
from grader.profiles import Profile, cache_root, load_profile, project_root

REFERENCE_DIR = "reference/taskmonitor"


@dataclass(frozen=True)
class Environment:
    profile: Profile
    kernel: provision.Kernel
    base_initrd: Path
    accel: str
    qemu: str


def prepare(profile_name: str | None = None, *, auto_setup: bool = True,
            progress: provision.Progress = provision._stderr) -> Environment:
    """The profile's kernel, build root and guest image, provisioned on first use."""
    profile = load_profile(profile_name)
    try:
        kernel = provision.load_kernel(profile)
        if not (provision.root_dir(profile.build_suite) / ".grader-root.json").exists():
            raise EnvironmentProblem(f"the {profile.build_suite} build root is missing")
        if provision.missing_host_packages():
            raise EnvironmentProblem("host packages missing")
    except EnvironmentProblem:
        if not auto_setup:
            raise
        progress(f"profile {profile.name} is not set up yet: running `grader setup --profile {profile.name}`")
        provision.setup([profile.name], progress=progress)
        kernel = provision.load_kernel(profile)
    base = initramfs.build_base(cache_root())
    return Environment(profile, kernel, base, provision.chosen_accel(), qemu_version())


def build(env: Environment, sources: Path, module: str, objects: list[str], workdir: Path,
          cflags: list[str] | None = None, compat: bool = False,
          backend: Backend | None = None) -> BuildResult:
    req = BuildRequest(sources=sources, module=module, objects=objects, workdir=workdir,
                       cflags=list(cflags or []), compat=compat)
    if backend is not None:
        return backend.build(req, env.profile, env.kernel)
    return build_module(req, env.profile, env.kernel)


def build_reference(env: Environment, workdir: Path, stage: int = 7) -> BuildResult:
    """The reference module at the end of exercise `stage` (1..7)."""
    src = project_root() / REFERENCE_DIR
    return build(env, src, "taskmonitor", ["taskmonitor.o"], workdir, [f"-DTM_STAGE={stage}"])


def boot(env: Environment, modules: dict[str, Path], workdir: Path | None = None,
         extra_cmdline: tuple[str, ...] = (), boot_timeout: float | None = None,
         backend: Backend | None = None, *, clock: str = "realtime",
         snapshot: bool | None = None, progress=lambda _m: None) -> Guest:  # type: ignore[no-untyped-def]
    """A guest (not started yet: use it as a context manager) with the modules under /mod.

    By default it is restored from the profile's saved guest of that clock (made on first
    use, see grader/snapshots.py); `snapshot=False`, an extra kernel command line, modules
    larger than LIMITS.restore_payload_bytes or GRADER_SNAPSHOTS=0 boot it instead."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="grader-guest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = {f"{n}.ko": p.read_bytes() for n, p in modules.items()}
    launcher = backend.launcher() if backend else None
    clk = env.profile.clock(clock)
    use_snapshot = snapshots.enabled() if snapshot is None else snapshot
    small = sum(len(b) for b in files.values()) <= LIMITS.restore_payload_bytes
    if use_snapshot and small and not extra_cmdline:
        qemu = getattr(backend, "qemu_version", "") or env.qemu
        snap = snapshots.ensure(env, clk, launcher=launcher, qemu=qemu, progress=progress)
        spec = dataclasses.replace(snapshots.spec_for(env, clk, snap.initrd),
                                   payload=initramfs.payload(files, workdir / "payload.cpio"),
                                   snapshot=snap.state)
        return Guest(spec, workdir, boot_timeout=boot_timeout, launcher=launcher,
                     release=snap.release)
    initrd = initramfs.with_modules(env.base_initrd, files, workdir / "initrd.img")
    spec = dataclasses.replace(snapshots.spec_for(env, clk, initrd), extra_cmdline=extra_cmdline)
    return Guest(spec, workdir, boot_timeout=boot_timeout, launcher=launcher)


HELPER_MODULES = Path(__file__).resolve().parent / "guest_image" / "modules"


def helper_module(env: Environment, name: str) -> Path:
    """One of the grader's own kernel modules (grader/guest_image/modules/<name>.c, e.g. the
    delay injector of the concurrency checks), built once per kernel release into the cache
    (without debug information: it travels to the guest with the submission's)."""
    import fcntl
    import hashlib

    src = HELPER_MODULES / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = cache_root() / "helper-modules" / env.kernel.release / f"{name}-{digest}.ko"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "src"
            work.mkdir()
            (work / src.name).write_bytes(src.read_bytes())
            b = build(env, work, name, [f"{name}.o"], Path(tmp) / "build")
            ko = b.guest_ko or b.ko
            if ko is None:
                raise EnvironmentProblem(f"the grader's helper module {name} does not build "
                                         f"against {env.kernel.release}:\n{b.log[-2000:]}")
            tmp_out = out.with_suffix(".tmp")
            tmp_out.write_bytes(ko.read_bytes())
            tmp_out.rename(out)
    return out
