"""Build stage: compile a module with our own Kbuild, in a sandbox, with the profile's own compiler.

The submission's Makefile is never run. Its sources are copied into a scratch directory next to
a Kbuild file we write; the kernel's build system then runs inside bubblewrap, in a Debian root
filesystem of the profile's release (so 5.10 gets gcc 10, 6.12 gets gcc 14), with no network,
the kernel tree read-only, and only the scratch directory writable.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import EnvironmentProblem
from grader.limits import DEFAULT as LIMITS
from grader.model import Diagnostic, Status
from grader.profiles import Profile, cache_root
from grader.provision import Kernel, root_dir

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
COMPAT_HEADER = "grader_compat.h"
SRC = "src"
BUILD_TIMEOUT_S = LIMITS.build_timeout_s
# The compatibility header maps what code written for older kernels uses onto the profile.
COMPAT_TEXT = """\
/* Injected by the grader (--compat): lets code written for older kernels (4.x, 5.x) build here. */
#ifndef GRADER_COMPAT_H
#define GRADER_COMPAT_H
#include <linux/version.h>
#include <linux/types.h>
/* cputime_t disappeared in 4.11: CPU times have been u64 nanoseconds since. */
typedef u64 cputime_t;
/*
 * 4.11 split <linux/sched.h>: task_lock(), get_task_struct() and put_task_struct() moved to
 * <linux/sched/task.h>, task_cputime() to <linux/sched/cputime.h>, signal helpers to
 * <linux/sched/signal.h>, mm helpers to <linux/sched/mm.h>. Code of 2017-2018 includes only
 * <linux/sched.h>; without these it stops on implicit declarations.
 */
#include <linux/sched.h>
#include <linux/sched/cputime.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 0, 0) && LINUX_VERSION_CODE < KERNEL_VERSION(6, 7, 0)
#include <linux/atomic.h>
#include <linux/shrinker.h>
/* 6.0 added a printf-style name to register_shrinker(); accept the one-argument form. */
#define register_shrinker(s, ...) (register_shrinker)((s), "%s", KBUILD_MODNAME)
#endif
#endif
"""


@dataclass
class BuildRequest:
    sources: Path  # directory with the module's .c and .h files (may have subdirectories)
    module: str  # module name: the .ko is <module>.ko
    objects: list[str]  # object files relative to `sources`, e.g. ["taskmonitor.o"]
    workdir: Path  # scratch space; the build happens in workdir/"build"
    cflags: list[str] = field(default_factory=list)  # extra, e.g. ["-DTM_STAGE=3"]
    compat: bool = False


@dataclass
class BuildResult:
    status: Status  # PASSED (built), FAILED (the code does not build), ERROR (our environment)
    ko: Path | None
    log: str
    command: list[str]
    diagnostics: list[Diagnostic]
    duration_s: float
    compat_used: bool = False
    guest_ko: Path | None = None  # the same module without debug info: what the guest loads

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


_DIAG = re.compile(r"^/mod/(?:src/)?(?P<file>[^:\s]+):(?P<line>\d+):(?:(?P<col>\d+):)?\s*"
                   r"(?P<sev>fatal error|error|warning|note):\s*(?P<msg>.*)$")
_MODPOST = re.compile(r"^(?:ERROR|WARNING): modpost: (?P<msg>.*)$")


def parse_diagnostics(log: str) -> list[Diagnostic]:
    """Compiler and modpost messages, with file and line relative to the submission."""
    out = []
    for line in log.splitlines():
        m = _DIAG.match(line)
        if m:
            sev = "error" if m["sev"] == "fatal error" else m["sev"]
            out.append(Diagnostic(sev, m["file"], int(m["line"]), int(m["col"] or 0), m["msg"]))
            continue
        m = _MODPOST.match(line)
        if m:
            sev = "error" if line.startswith("ERROR") else "warning"
            out.append(Diagnostic(sev, "(modpost)", 0, 0, m["msg"].replace("/mod/src/", "").replace("/mod/", "")))
    return out


def kbuild_text(req: BuildRequest) -> str:
    # The sources live in src/ so that the module is always a composite object: a module named
    # like one of its own files (taskmonitor.o made of taskmonitor.c + util.c) would otherwise
    # be a circular dependency in Kbuild.
    objs = " ".join(f"{SRC}/{o}" for o in req.objects)
    flags = ["-g", f"-I$(src)/{SRC}", *req.cflags]
    if req.compat:
        flags += ["-include", f"$(src)/{COMPAT_HEADER}"]
    return (f"obj-m := {req.module}.o\n{req.module}-y := {objs}\n"
            f"ccflags-y += {' '.join(flags)}\n")


def _prepare(req: BuildRequest) -> Path:
    for name in [req.module, *req.objects]:
        if not SAFE_NAME.match(Path(name).name) or ".." in Path(name).parts:
            raise ValueError(f"unsafe module or object name: {name!r}")
    build = req.workdir / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    inside = build.resolve()
    for src in req.sources.rglob("*"):
        if inside == src.resolve() or inside in src.resolve().parents:
            continue  # the work folder inside the sources: do not copy it into itself
        if src.is_file() and not src.is_symlink() and src.suffix in (".c", ".h"):
            rel = src.relative_to(req.sources)
            if all(SAFE_NAME.match(p) for p in rel.parts):
                (build / SRC / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, build / SRC / rel)
    (build / "Kbuild").write_text(kbuild_text(req))
    (build / "grader.mk").write_text(makefile_text(req))
    if req.compat:
        (build / COMPAT_HEADER).write_text(COMPAT_TEXT)
    return build


GUEST_KO_SUFFIX = ".guest.ko"


def makefile_text(req: BuildRequest) -> str:
    """The one command run in the sandbox: Kbuild, then a copy of the module without debug
    information for the guest (a tenth of the size: it travels through QEMU's fw_cfg, read a
    byte at a time). The .ko with DWARF stays for inspection. Stripping happens here, in the
    sandbox, because the .ko is made of the student's bytes."""
    ko = f"/mod/{req.module}.ko"
    return ("# Written by the grader, run in the build sandbox.\n"
            "all:\n"
            "\t$(MAKE) -C $(KDIR) M=/mod modules\n"
            f"\tobjcopy --strip-debug {ko} /mod/{req.module}{GUEST_KO_SUFFIX}\n")


def inner_command(kernel: Kernel) -> list[str]:
    """What runs inside the sandbox (host bwrap or container): the command shown in reports."""
    return ["make", "-f", "/mod/grader.mk", f"KDIR=/{kernel.headers}", "-j2"]


def sandbox_command(profile: Profile, kernel: Kernel, build: Path) -> list[str]:
    root = root_dir(profile.build_suite)
    if not (root / ".grader-root.json").exists():
        raise EnvironmentProblem(
            f"the {profile.build_suite} build root is missing: run `grader setup --profile {profile.name}`"
        )
    if not shutil.which("bwrap"):
        raise EnvironmentProblem("bubblewrap is missing: apt-get install -y bubblewrap")
    src_dir = kernel.tree / "usr/src"
    kb = kernel.kbuild
    # Mount points must exist in the (read-only) root.
    for p in ("usr/src", kb, "mod"):
        (root / p).mkdir(parents=True, exist_ok=True)
    return [
        "bwrap", "--ro-bind", str(root), "/",
        "--ro-bind", str(src_dir), "/usr/src",
        "--ro-bind", str(kernel.tree / kb), f"/{kb}",
        "--bind", str(build), "/mod",
        "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--unshare-all", "--die-with-parent", "--new-session",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
        "--setenv", "LC_ALL", "C.UTF-8",
        "--chdir", "/mod",
        *inner_command(kernel),
    ]


def _limits() -> None:
    # Hostile code can make the compiler eat memory or write without end: cap both.
    resource.setrlimit(resource.RLIMIT_AS, (LIMITS.build_memory_bytes,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMITS.build_file_bytes,) * 2)


def build_module(req: BuildRequest, profile: Profile, kernel: Kernel) -> BuildResult:
    sandbox, why = choose_sandbox(profile, kernel)
    if sandbox == "chroot":
        return build_in_chroot(req, profile, kernel, why)
    t0 = time.monotonic()
    build = _prepare(req)
    cmd = sandbox_command(profile, kernel, build)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_limits)
    try:
        out, _ = proc.communicate(timeout=BUILD_TIMEOUT_S)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    log = out.decode("utf-8", errors="replace")
    # The sandbox itself failing is our environment, not the student's code.
    return finish_build(req, build, inner_command(kernel), log, t0, timed_out=timed_out,
                        succeeded=proc.returncode == 0, sandbox_failed="bwrap:" in log)


def finish_build(req: BuildRequest, build: Path, cmd: list[str], log: str, t0: float, *,
                 timed_out: bool, succeeded: bool, sandbox_failed: bool,
                 timeout_s: float = BUILD_TIMEOUT_S) -> BuildResult:
    """The BuildResult of a finished build, whichever backend ran it; keeps the log."""
    diags = parse_diagnostics(log)
    ko = build / f"{req.module}.ko"
    dur = time.monotonic() - t0
    if timed_out:
        log += f"\n[grader] build killed after {timeout_s:g} s\n"
    (req.workdir / "build.log").write_text(log)
    if timed_out:
        return BuildResult(Status.TIMED_OUT, None, log, cmd, diags, dur, req.compat)
    if succeeded and ko.exists():
        guest = build / f"{req.module}{GUEST_KO_SUFFIX}"
        return BuildResult(Status.PASSED, ko, log, cmd, diags, dur, req.compat,
                           guest if guest.exists() else None)
    if sandbox_failed and not diags:
        return BuildResult(Status.ERROR, None, log, cmd, diags, dur, req.compat)
    return BuildResult(Status.FAILED, None, log, cmd, diags, dur, req.compat)


# ---- the sandbox inside a container -------------------------------------------------------
# In an unprivileged container (the image of `grader image build` under docker's default
# seccomp profile) bubblewrap cannot create namespaces. There the build runs with `chroot` into
# the build root, which the image holds with the kernel tree inside it at the paths bwrap would
# mount (usr/src, usr/lib/linux-kbuild-*), as an unprivileged user that owns nothing there but
# /mod: the same rlimits, timeout and /mod layout as the host's sandbox, the root and the kernel
# tree read-only by ownership, and the container's network (none under `docker run --network
# none`). Only CAP_SYS_CHROOT is needed, which docker grants a container's root by default.
SANDBOXES = ("bwrap", "chroot")
SANDBOX_UID = 65534  # nobody/nogroup in Debian roots
_CHROOT_ENV = ("PATH=/usr/bin:/bin", "HOME=/tmp", "LC_ALL=C.UTF-8")


@functools.cache
def bwrap_problem() -> str:
    """Why bubblewrap cannot make its sandbox here ('' when it can): tried once per process."""
    if not shutil.which("bwrap"):
        return "bwrap is not installed"
    p = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--dev", "/dev",
                        "--proc", "/proc", "--die-with-parent", "true"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode == 0:
        return ""
    last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
    return last.split(" See <", 1)[0]  # Debian's bwrap adds links to its README


def kernel_in_root(root: Path, kernel: Kernel) -> bool:
    """Whether the kernel tree is inside the build root (the layout of `grader image build`)."""
    return (root / kernel.headers / "Makefile").is_file() and (root / kernel.kbuild).is_dir()


def choose_sandbox(profile: Profile, kernel: Kernel) -> tuple[str, str]:
    """(sandbox name, why): $GRADER_SANDBOX when set; bwrap when it works; chroot when bwrap
    cannot create namespaces, this process is root and the kernel tree is in the build root."""
    forced = os.environ.get("GRADER_SANDBOX", "")
    if forced:
        if forced not in SANDBOXES:
            raise EnvironmentProblem(f"GRADER_SANDBOX={forced!r} is not a sandbox; valid: "
                                     f"{', '.join(SANDBOXES)} (or unset: chosen automatically)")
        return forced, f"{forced} (GRADER_SANDBOX)"
    if not kernel_in_root(root_dir(profile.build_suite), kernel):
        return "bwrap", "bwrap"  # the host: a failure of bwrap shows in the build log
    problem = bwrap_problem()
    if not problem:
        return "bwrap", "bwrap"
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            f"bubblewrap cannot create namespaces here ({problem}) and the chroot sandbox needs "
            f"root: run the grader's image as its default user (root inside the container; no "
            f"--privileged or added capability is needed), e.g. without `--user`")
    return "chroot", (f"chroot as uid {SANDBOX_UID} (bubblewrap cannot create namespaces "
                      f"here: {problem})")


def chroot_command(root: Path, inner: list[str]) -> list[str]:
    """`inner` run in `root` as an unprivileged user, in /mod, with a clean environment."""
    return ["chroot", f"--userspec={SANDBOX_UID}:{SANDBOX_UID}", f"--groups={SANDBOX_UID}",
            str(root), "/usr/bin/env", "-i", "--chdir=/mod", *_CHROOT_ENV, *inner]


def _chroot_limits() -> None:
    _limits()
    # No set-uid binary of the root may give the build its privileges back.
    PR_SET_NO_NEW_PRIVS = 38
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def run_in_chroot(root: Path, inner: list[str], timeout_s: float = BUILD_TIMEOUT_S
                  ) -> tuple[int, str, bool]:
    """Run `inner` in the chroot sandbox: (exit status, output, timed out)."""
    proc = subprocess.Popen(chroot_command(root, inner), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_chroot_limits)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    return proc.returncode, out.decode("utf-8", errors="replace"), timed_out


def _empty(directory: Path) -> None:
    """Remove what is in `directory` (never following links), and make it the sandbox's."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o755, exist_ok=True)
    os.chown(directory, SANDBOX_UID, SANDBOX_UID)


def build_in_chroot(req: BuildRequest, profile: Profile, kernel: Kernel, why: str) -> BuildResult:
    """As build_module, in the chroot sandbox. The root has one /mod, so builds of one root take
    turns (a lock outside the root, which the sandbox cannot remove); each takes seconds."""
    t0 = time.monotonic()
    build = _prepare(req)
    root = root_dir(profile.build_suite)
    if not kernel_in_root(root, kernel):
        raise EnvironmentProblem(f"the chroot sandbox needs the kernel tree inside {root} "
                                 f"(the layout of `grader image build`)")
    mod = root / "mod"
    lock = cache_root() / "locks" / f"chroot-{profile.build_suite}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            _empty(mod)
            shutil.copytree(build, mod, dirs_exist_ok=True)
            for d, dirs, files in os.walk(mod):
                for name in [*dirs, *files]:
                    os.lchown(os.path.join(d, name), SANDBOX_UID, SANDBOX_UID)
            code, out, timed_out = run_in_chroot(root, inner_command(kernel))
            shutil.copytree(mod, build, symlinks=True, dirs_exist_ok=True)
        finally:
            shutil.rmtree(mod, ignore_errors=True)
            mod.mkdir(mode=0o755, exist_ok=True)
    log = f"[grader] build sandbox: {why}\n{out}"
    # chroot and env exit 125-127 when they cannot run the command: our environment's fault.
    return finish_build(req, build, inner_command(kernel), log, t0, timed_out=timed_out,
                        succeeded=code == 0, sandbox_failed=code in (125, 126, 127))
