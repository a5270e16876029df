"""The docker backend against a real engine: images, the build, QEMU in a container, leftovers,
and one full grading. Needs a running engine (the README's test command starts one); outside CI
its absence skips these tests with the command to run, in CI (CI=true) it is a failure."""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import unavailable

from grader import session
from grader.build import inner_command
from grader.docker_backend import run_command
from grader.errors import EnvironmentProblem
from grader.model import Status
from grader.profiles import project_root

pytestmark = pytest.mark.docker

REFERENCE = project_root() / "reference" / "taskmonitor"


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    from grader.provision import ensure_engine

    try:
        return ensure_engine(install=False)
    except EnvironmentProblem as e:
        unavailable(f"no usable Docker engine: {e}; run: ./grader.sh setup --docker")


@pytest.fixture(scope="module")
def backend(engine, envs):  # type: ignore[no-untyped-def]
    from grader.docker_backend import DockerBackend

    b = DockerBackend()
    env = envs["6.1"]
    b.prepare(env.profile, env.kernel)
    yield b
    b.cleanup()


def _mine(engine) -> list[object]:  # type: ignore[no-untyped-def]
    return engine.containers.list(all=True, filters={"label": f"grader.pid={os.getpid()}"})


def _qemus_of(workdir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if str(workdir) in ln]


def test_images_are_made_once_and_labelled(engine, envs, backend):
    from grader.docker_backend import DIGEST_LABEL, DockerBackend, root_digest
    from grader.provision import root_dir

    again = DockerBackend()
    again.prepare(envs["6.1"].profile, envs["6.1"].kernel)
    assert again.import_seconds == {"grader-build:bookworm": 0.0, "grader-qemu:bookworm": 0.0}
    img = engine.images.get("grader-build:bookworm")
    digest = root_digest(root_dir("bookworm"))
    assert img.labels[DIGEST_LABEL] == digest
    assert f"grader-build:bookworm-{digest[:12]}" in img.tags
    assert backend.qemu_version.startswith("1:")


def test_build_reference_and_a_compile_error(envs, backend, tmp_path):
    env = envs["6.1"]
    r = session.build(env, REFERENCE, "taskmonitor", ["taskmonitor.o"], tmp_path / "ok",
                      backend=backend)
    assert r.status is Status.PASSED, r.log
    assert r.ko is not None and r.ko.is_file() and r.ko.stat().st_uid == os.getuid()
    assert (tmp_path / "ok" / "build.log").read_text() == r.log
    # The report shows the command run in the sandbox, without the host's paths...
    assert r.command == inner_command(env.kernel)
    # ...and the container that ran it has no network, a read-only root, no capabilities.
    cmd = run_command(backend.build_spec("img", env.kernel, tmp_path / "ok"))
    assert cmd[:2] == ["docker", "run"] and cmd[cmd.index("--network") + 1] == "none"
    assert "--read-only" in cmd and cmd[cmd.index("--cap-drop") + 1] == "ALL"

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copyfile(REFERENCE / "taskmonitor.c", bad / "taskmonitor.c")
    with open(bad / "taskmonitor.c", "a") as f:
        f.write("\nstatic int broken(void) { return undeclared_thing; }\n")
    d = session.build(env, bad, "taskmonitor", ["taskmonitor.o"], tmp_path / "bad-docker",
                      backend=backend)
    assert d.status is Status.FAILED and d.ko is None
    assert any(e.file == "taskmonitor.c" and "undeclared_thing" in e.message for e in d.errors)
    # Same semantics as the host build: the same diagnostics, file and line.
    h = session.build(env, bad, "taskmonitor", ["taskmonitor.o"], tmp_path / "bad-host")
    assert h.status is Status.FAILED
    assert [(x.file, x.line, x.severity) for x in d.errors] == \
           [(x.file, x.line, x.severity) for x in h.errors]


def test_a_hanging_build_is_killed_at_the_timeout(envs, backend, tmp_path, monkeypatch):
    from grader import docker_backend

    monkeypatch.setattr(docker_backend, "BUILD_TIMEOUT_S", 3)
    spec = backend.build_spec
    monkeypatch.setattr(backend, "build_spec", lambda *a: {**spec(*a), "command": ["sleep", "60"]})
    t0 = time.monotonic()
    r = session.build(envs["6.1"], REFERENCE, "taskmonitor", ["taskmonitor.o"], tmp_path,
                      backend=backend)
    assert r.status is Status.TIMED_OUT and time.monotonic() - t0 < 15
    assert "killed after 3 s" in r.log


def test_container_process_protocol(engine, backend):
    log = io.BytesIO()
    p = backend.start_qemu(["sleep", "30"], log)
    assert p.pid > 0 and p.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.5)
    p.kill()
    assert p.wait(timeout=10) not in (None, 0) and p.poll() is not None
    assert not _mine(engine)
    # QEMU's own complaints reach the log.
    p = backend.start_qemu(["qemu-system-x86_64", "-no-such-option"], log)
    assert p.wait(timeout=30) != 0
    assert b"no-such-option" in log.getvalue()
    assert not _mine(engine)


def test_boot_run_and_teardown(engine, envs, backend, tmp_path):
    env = envs["6.1"]
    r = session.build(env, REFERENCE, "taskmonitor", ["taskmonitor.o"], tmp_path / "b",
                      backend=backend)
    assert r.ko, r.log
    workdir = tmp_path / "guest"
    with session.boot(env, {"taskmonitor": r.ko}, workdir, backend=backend) as g:
        assert g.release == env.kernel.release
        res = g.run("insmod /mod/taskmonitor.ko && grep -c taskmonitor /proc/modules")
        assert (res.status, res.stdout) == (0, "1\n"), res.stderr
        (c,) = _mine(engine)
        assert c.labels["grader.role"] == "qemu"
        assert c.attrs["HostConfig"]["NetworkMode"] == "none"
        assert c.attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert _qemus_of(workdir)  # QEMU runs in the host's kernel, in the container
    assert not g.alive and not _mine(engine) and not _qemus_of(workdir)


def test_a_failing_caller_leaves_nothing(engine, envs, backend, tmp_path, monkeypatch):
    env = envs["6.1"]
    r = session.build(env, REFERENCE, "taskmonitor", ["taskmonitor.o"], tmp_path / "b",
                      backend=backend)
    # A relative working directory, as `grader run` uses by default (grader-out/...).
    monkeypatch.chdir(tmp_path)
    assert r.ko is not None
    with pytest.raises(RuntimeError), \
            session.boot(env, {"taskmonitor": r.ko}, Path("rel-guest"), backend=backend) as g:
        assert g.run("true").ok
        raise RuntimeError("caller bug")
    assert not _mine(engine) and not _qemus_of(tmp_path)


KILLED_GRADER = """
import sys, time
from pathlib import Path
from grader import session
from grader.docker_backend import DockerBackend
env = session.prepare("6.1", auto_setup=False)
b = DockerBackend()
b.prepare(env.profile, env.kernel)
g = session.boot(env, {}, Path(sys.argv[1]), backend=b).start()
print("booted", flush=True)
time.sleep(300)
"""


def test_cleanup_removes_the_guest_of_a_killed_grader(engine, backend, tmp_path):
    p = subprocess.Popen([sys.executable, "-c", KILLED_GRADER, str(tmp_path / "g")],
                         stdout=subprocess.PIPE, text=True, cwd=project_root())
    label = f"grader.pid={p.pid}"
    try:
        assert p.stdout is not None and p.stdout.readline() == "booted\n"
        assert engine.containers.list(filters={"label": label})
    finally:
        p.send_signal(signal.SIGKILL)  # no `finally` of its own runs: the container stays
        p.wait()
    assert engine.containers.list(filters={"label": label})
    backend.cleanup()
    assert not engine.containers.list(all=True, filters={"label": label})
    assert not _qemus_of(tmp_path)


def test_cleanup_removes_leftovers_of_dead_graders_only(engine, backend):
    from grader.docker_backend import QEMU_REPO, QEMU_SUITE, owner_labels

    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = {**owner_labels("qemu"), "grader.pid": str(dead.pid), "grader.pidstart": "1"}
    alive = {**owner_labels("qemu"), "grader.pid": "1",
             "grader.pidstart": Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19]}
    image = f"{QEMU_REPO}:{QEMU_SUITE}"
    leftover = engine.containers.run(image, ["sleep", "600"], detach=True, labels=gone,
                                     network_mode="none")
    other = engine.containers.run(image, ["sleep", "600"], detach=True, labels=alive,
                                  network_mode="none")
    mine = engine.containers.run(image, ["sleep", "600"], detach=True,
                                 labels=owner_labels("qemu"), network_mode="none")
    try:
        backend.cleanup()
        ids = {c.id for c in engine.containers.list(all=True, filters={"label": "grader=1"})}
        assert leftover.id not in ids and mine.id not in ids
        assert other.id in ids  # its grader (here: pid 1) still runs
    finally:
        for c in (leftover, other, mine):
            try:
                c.remove(force=True)
            except Exception:
                pass


def test_full_grading_in_docker(engine, envs, tmp_path):
    from grader.pipeline import RunOptions, grade

    t0 = time.monotonic()
    result = grade(RunOptions(submission=REFERENCE, outdir=tmp_path, backend="docker"))
    print(f"full grading in docker: {time.monotonic() - t0:.1f} s")
    assert result.stamp.backend == "docker"
    lost = [(c.id, c.status, c.reason) for e in result.exercises for c in e.checks
            if c.points < c.max_points]
    assert result.complete and result.score == result.max_score, lost
    assert not _mine(engine)
