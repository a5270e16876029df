"""Build stage: compile a module with our own Kbuild, in a sandbox, with the profile's own compiler.

The submission's Makefile is never run. Its sources are copied into a scratch directory next to
a Kbuild file we write; the kernel's build system then runs inside bubblewrap, in a Debian root
filesystem of the profile's release (so 5.10 gets gcc 10, 6.12 gets gcc 14), with no network,
the kernel tree read-only, and only the scratch directory writable.
"""
from __future__ import annotations

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
from grader.model import Diagnostic, Status
from grader.profiles import Profile
from grader.provision import Kernel, root_dir

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
COMPAT_HEADER = "grader_compat.h"
SRC = "src"
BUILD_TIMEOUT_S = 180
# The compatibility header maps what code written for older kernels uses onto the profile.
COMPAT_TEXT = """\
/* Injected by the grader (--compat): lets code written for 5.x kernels build on 6.0-6.6. */
#ifndef GRADER_COMPAT_H
#define GRADER_COMPAT_H
#include <linux/version.h>
#include <linux/types.h>
/* cputime_t disappeared in 4.11: CPU times have been u64 nanoseconds since. */
typedef u64 cputime_t;
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
    for src in req.sources.rglob("*"):
        if src.is_file() and not src.is_symlink() and src.suffix in (".c", ".h"):
            rel = src.relative_to(req.sources)
            if all(SAFE_NAME.match(p) for p in rel.parts):
                (build / SRC / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, build / SRC / rel)
    (build / "Kbuild").write_text(kbuild_text(req))
    if req.compat:
        (build / COMPAT_HEADER).write_text(COMPAT_TEXT)
    return build


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
        "make", "-C", f"/{kernel.headers}", "M=/mod", "-j2", "modules",
    ]


def _limits() -> None:
    # Hostile code can make the compiler eat memory or write without end: cap both.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 20, 512 << 20))


def build_module(req: BuildRequest, profile: Profile, kernel: Kernel) -> BuildResult:
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
    return finish_build(req, build, cmd, log, t0, timed_out=timed_out,
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
        return BuildResult(Status.PASSED, ko, log, cmd, diags, dur, req.compat)
    if sandbox_failed and not diags:
        return BuildResult(Status.ERROR, None, log, cmd, diags, dur, req.compat)
    return BuildResult(Status.FAILED, None, log, cmd, diags, dur, req.compat)
