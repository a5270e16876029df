"""The grading pipeline: intake -> build -> inspect -> run -> score; each stage timed."""
from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from grader import __version__, session
from grader.backends import get_backend
from grader.checks.context import RunContext
from grader.checks.runner import run_checks
from grader.errors import GraderError
from grader.guest import Guest
from grader.model import GradeResult, StageResult, Stamp, Status
from grader.profiles import load_profile
from grader.rubric import Rubric, load_rubric

HELPERS = ("grader_delay",)  # grader/guest_image/modules/ built per kernel, in every guest


@dataclass
class RunOptions:
    submission: Path
    outdir: Path
    profile: str | None = None
    rubric: str = "tp07"
    compat: bool | None = None  # None: as the rubric says
    module_name: str | None = None
    cflags: tuple[str, ...] = ()
    backend: str = "host"
    combine: tuple[str, ...] | None = None  # kernels to combine; None: as the rubric says


class _Stages:
    def __init__(self) -> None:
        self.items: list[StageResult] = []

    def add(self, name: str, status: Status, t0: float, detail: str = "") -> None:
        self.items.append(StageResult(name, status, round(time.monotonic() - t0, 3), detail))


def grade(opts: RunOptions, progress: Callable[[str], None] = lambda _m: None) -> GradeResult:
    """Grade one submission. Raises GraderError only when grading itself cannot happen
    (unknown rubric or profile, unusable environment, an input that is not a submission)."""
    from grader.hints import compat_note, generation_note, source_hints
    from grader.inspect_ko import inspect_ko
    from grader.intake import intake

    rubric: Rubric = load_rubric(opts.rubric)
    load_profile(opts.profile)  # an unknown profile is bad usage: say so before any work
    stages = _Stages()
    work = opts.outdir / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(opts.outdir / "guest", ignore_errors=True)
    work.mkdir(parents=True)

    t0 = time.monotonic()
    sub = intake(opts.submission, work, module_name=opts.module_name or rubric.module)
    stages.add("intake", Status.PASSED, t0, f"{sub.kind}: {sub.module_name} ({len(sub.sources)} source files)")
    progress(f"intake: {sub.kind} module {sub.module_name}")

    t0 = time.monotonic()
    env = session.prepare(opts.profile, progress=progress)
    backend = get_backend(opts.backend)
    backend.prepare(env.profile, env.kernel)
    stages.add("environment", Status.PASSED, t0,
               f"{env.profile.name}: {env.kernel.release}, backend {backend.name}")

    compat = rubric.compat if opts.compat is None else opts.compat
    notes = list(sub.notes)
    result = GradeResult(
        submission=str(opts.submission),
        stamp=Stamp(grader_version=__version__, profile=env.profile.name,
                    kernel_release=env.kernel.release, kernel_package=env.kernel.version,
                    qemu_version=getattr(backend, "qemu_version", "") or env.qemu,
                    accel=env.accel, rubric=rubric.name,
                    rubric_digest=rubric.digest, submission_digest=sub.digest,
                    backend=backend.name, image=os.environ.get("GRADER_IMAGE", "")),
        notes=notes,
    )
    build = None
    ko = sub.ko
    hints = None
    if sub.kind == "source":
        hints = source_hints(list(sub.sources))
        gen = generation_note(hints, env.profile.name)
        if gen:
            notes.append(gen)
        t0 = time.monotonic()
        progress("build")
        # The builds against other kernels (the debug one) run beside the main one.
        pool = ThreadPoolExecutor(max_workers=1)
        extra_future = pool.submit(extra_kernels, rubric, opts, env, sub, work, compat, backend,
                                   progress)
        build = session.build(env, sub.root, sub.module_name, list(sub.objects), work,
                              list(opts.cflags), compat=compat, backend=backend)
        stages.add("build", build.status, t0, f"{len(build.errors)} error(s), "
                   f"{len(build.warnings)} warning(s)")
        result.build_log, result.build_command = build.log, build.command
        result.diagnostics = build.diagnostics
        if build.status is Status.FAILED:
            hint = compat_note([d.message for d in build.diagnostics], compat)
            if hint and hint not in notes:
                notes.append(hint)
        if compat:
            notes.append("built with the compatibility header (the <linux/sched/*.h> headers split "
                         "off in 4.11, cputime_t as u64, one-argument register_shrinker on 6.0-6.6)")
        if build.ko:
            ko = opts.outdir / f"{sub.module_name}.ko"
            shutil.copyfile(build.ko, ko)
            result.artifacts["ko"] = str(ko)
        result.artifacts["build_log"] = str(work / "build.log")
    if sub.kind == "source":
        extra = extra_future.result()
        pool.shutdown()
    else:
        extra = extra_kernels(rubric, opts, env, sub, work, compat, backend, progress)
    for name, k in extra.envs.items():
        result.stamp.kernels[name] = k.kernel.release
    for name, reason in extra.unavailable.items():
        notes.append(f"the checks that need the {name} kernel are not graded: {reason}")

    info = None
    if ko is not None:
        t0 = time.monotonic()
        info = inspect_ko(ko)
        stages.add("inspect", Status.PASSED, t0, f"{len(info.imports)} imports, "
                   f"{len(info.inlined)} inlined functions")
        if sub.kind == "ko" and info.vermagic and env.kernel.release not in info.vermagic:
            notes.append(f"the .ko was built for '{info.vermagic}', not {env.kernel.release}")

    # What the guest loads: the module without its debug information when the build made one.
    guest_ko = build.guest_ko if build is not None and build.guest_ko else ko
    numbers = itertools.count(1)

    def boot_guest(kernel: str, clock: str) -> Guest:
        n = next(numbers)
        if kernel == env.profile.name:
            kenv, kko = env, guest_ko
        else:
            kenv, kko = extra.envs[kernel], extra.kos[kernel]
        assert kko is not None
        name = f"{n}-{clock}" + ("" if kernel == env.profile.name else f"-{kernel}")
        # The grader's own helper modules travel with the submission's (the concurrency
        # check's delay injector).
        mods = {**{h: session.helper_module(kenv, h) for h in HELPERS}, sub.module_name: kko}
        return session.boot(kenv, mods, opts.outdir / "guest" / name,
                            backend=backend, clock=clock, progress=progress)

    run = RunContext(rubric=rubric, module=sub.module_name, ko=ko, info=info, hints=hints,
                     build=build, boot_guest=boot_guest, prebuilt=sub.kind == "ko",
                     progress=progress, profile=env.profile.name,
                     extra_kernels=tuple(extra.envs), unavailable=extra.unavailable)
    t0 = time.monotonic()
    try:
        result.exercises = run_checks(run)
    finally:
        backend.cleanup()
    sessions = list(run.sessions.values())
    boots = [t for s in sessions for t in s.boot_times]
    stages.add("run", Status.PASSED, t0, f"{len(boots)} guest(s): "
               + ", ".join(f"{s.boots} {s.clock}" for s in sessions)
               + (f"; restore/boot {min(boots):.1f} s" if boots else ""))
    failures = [f for s in sessions for f in s.boot_failures]
    if failures:
        notes.append(f"a guest failed to start {len(failures)} time(s) and was started again "
                     f"(the environment's fault, not counted): {failures[0][:200]}")
    if run.interface is not None:
        result.interface = {**run.interface.to_dict(), **run.lab.summary()}
    for path in sorted((opts.outdir / "guest").glob("*/console.log")):
        result.artifacts[f"console_{path.parent.name}"] = str(path)
    errors = [c for e in result.exercises for c in e.checks if c.status is Status.ERROR]
    result.complete = not errors and all(s.status is not Status.ERROR for s in stages.items)
    result.stages = stages.items
    return result


def safe_grade(opts: RunOptions, progress: Callable[[str], None] = lambda _m: None) -> GradeResult:
    """grade(), letting only GraderError through (a bug of ours is a GraderError too)."""
    try:
        return grade(opts, progress)
    except GraderError:
        raise
    except Exception as e:
        raise GraderError(f"internal error while grading {opts.submission}: {e!r}") from e


@dataclass
class _Extra:
    envs: dict[str, session.Environment]
    kos: dict[str, Path]
    unavailable: dict[str, str]


def extra_kernels(rubric: Rubric, opts: RunOptions, env: session.Environment, sub, work: Path,  # type: ignore[no-untyped-def]
                  compat: bool, backend, progress: Callable[[str], None]) -> _Extra:
    """The other kernels the rubric's checks need and this grading combines ([kernels] combine
    or --combine): each prepared (never built here: `grader setup --profile NAME`) and the
    module built against it. Those that cannot be used say why; their checks are not graded."""
    from grader.errors import EnvironmentProblem

    wanted = rubric.combine if opts.combine is None else opts.combine
    out = _Extra({}, {}, {})
    for name in rubric.kernels():
        if name == env.profile.name:
            continue
        if name not in wanted:
            out.unavailable[name] = (f"this grading runs on {env.profile.name} only: grade with "
                                     f"`--profile {name}` or `--combine {name}`")
            continue
        if sub.kind != "source":
            out.unavailable[name] = "a prebuilt .ko is built for one kernel only"
            continue
        try:
            kenv = session.prepare(name, auto_setup=False)
        except EnvironmentProblem:
            out.unavailable[name] = (f"the {name} kernel is not set up on this machine: run "
                                     f"`grader setup --profile {name}`")
            continue
        b = session.build(kenv, sub.root, sub.module_name, list(sub.objects), work / name,
                          list(opts.cflags), compat=compat, backend=backend)
        ko = b.guest_ko or b.ko
        if ko is None:
            first = b.errors[0].message if b.errors else b.status.value
            out.unavailable[name] = f"the module does not build against the {name} kernel: {first}"
            continue
        out.envs[name], out.kos[name] = kenv, ko
    return out
