"""The docker backend: the module's build and the QEMU guest run in containers made from the same
Debian root filesystems as the host backend, imported from the cache (no registry is contacted).

Two images: `grader-build:<suite>` is the profile's build root (roots/<suite>) as is, and
`grader-qemu:bookworm` a minimal bookworm root with QEMU (roots/qemu-bookworm). Each carries
the digest of what it is made from (the root's stamp and package list) as a label and a tag, so
it is imported again only when that changes. Every container is labelled with the grader
process that made it, so that `cleanup()` also finds those of a grader that was killed.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from grader.backends import Backend
from grader.build import BUILD_TIMEOUT_S, BuildResult, _prepare, finish_build, inner_command
from grader.errors import EnvironmentProblem, GuestError
from grader.model import Status
from grader.profiles import cache_root
from grader.provision import Progress, _stderr, connect, debootstrap_root, root_dir

if TYPE_CHECKING:
    import docker

    from grader.build import BuildRequest
    from grader.guest import Launcher, Process
    from grader.profiles import Profile
    from grader.provision import Kernel

BUILD_REPO = "grader-build"
QEMU_REPO = "grader-qemu"
QEMU_SUITE = "bookworm"
QEMU_ROOT = "qemu-bookworm"  # under roots/, next to the build roots
QEMU_PACKAGES = ("qemu-system-x86",)
QEMU_MIRROR = "http://deb.debian.org/debian"
# Bump when the way images are made changes: every image is then imported again.
RECIPE = "grader-docker-1"
DIGEST_LABEL = "grader.source-digest"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BUILD_MEMORY = "4g"
BUILD_PIDS = 512
BUILD_FSIZE = 512 << 20  # as the host build's RLIMIT_FSIZE
QEMU_PIDS = 256  # QEMU's threads count: vCPUs, I/O, RCU
QEMU_OVERHEAD_MIB = 1024  # on top of the guest's RAM: TCG's translation cache, QEMU itself
LOG_CONFIG = {"type": "json-file", "config": {"max-size": "16m"}}


# ---- images -----------------------------------------------------------------------------
def dpkg_version(root: Path, package: str) -> str:
    """The installed version of `package` in a root filesystem, or ''."""
    try:
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return ""
    for para in status.split("\n\n"):
        fields = dict(ln.split(": ", 1) for ln in para.splitlines() if ": " in ln and ln[0] != " ")
        if fields.get("Package") == package and "installed" in fields.get("Status", ""):
            return fields.get("Version", "")
    return ""


def root_digest(root: Path) -> str:
    """What an image is made from: the root's stamp and its installed packages (a changed root
    is a new debootstrap, which writes a new stamp, or an apt run, which changes the status)."""
    h = hashlib.sha256(RECIPE.encode())
    for name in (".grader-root.json", "var/lib/dpkg/status"):
        h.update(b"\0" + name.encode() + b"\0")
        h.update((root / name).read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def _images_lock() -> Iterator[None]:
    # Two graders preparing at once would both import; the second waits and finds the image.
    path = cache_root() / "docker" / "images.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def import_root(root: Path, repo: str, tag: str, digest: str) -> str:
    """Import a root filesystem as `repo:tag` (and `repo:tag-<digest>`); returns the image id."""
    import docker

    api = docker.from_env(timeout=1800).api  # an import of half a gigabyte takes a while
    # tar streams the tree into the engine; it is tagged only once tar has finished cleanly.
    tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert tar.stdout is not None
        out = api.import_image_from_stream(
            tar.stdout, changes=[f"ENV PATH={PATH_ENV}", f"LABEL {DIGEST_LABEL}={digest}",
                                 f"LABEL grader.source={root}"])
    except docker.errors.DockerException as e:
        tar.kill()
        tar.wait()
        raise EnvironmentProblem(f"docker import of {root} failed: {e}") from e
    err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
    rc = tar.wait()
    image_id = ""
    for line in str(out).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("error"):
            raise EnvironmentProblem(f"docker import of {root} failed: {msg['error']}")
        if str(msg.get("status", "")).startswith("sha256:"):
            image_id = msg["status"]
    if rc != 0 or not image_id:
        if image_id:
            with contextlib.suppress(docker.errors.DockerException):
                api.remove_image(image_id, force=True)
        raise EnvironmentProblem(f"docker import of {root} failed (tar exit {rc}): "
                                 f"{err[-1000:] or str(out)[-1000:]}")
    api.tag(image_id, repo, tag)
    api.tag(image_id, repo, f"{tag}-{digest[:12]}")
    return image_id


def ensure_image(client: docker.DockerClient, root: Path, repo: str, tag: str,
                 progress: Progress = _stderr) -> tuple[str, float]:
    """`repo:tag` made from `root`, imported unless it exists with the same digest.
    Returns (image id, seconds spent importing: 0 when it was up to date)."""
    import docker

    digest = root_digest(root)
    name = f"{repo}:{tag}"
    with _images_lock():
        old = None
        try:
            img = client.images.get(name)
            if img.labels.get(DIGEST_LABEL) == digest:
                return img.id, 0.0
            old = img.id
        except docker.errors.ImageNotFound:
            pass
        progress(f"docker: importing {root} as {name} (once per change of that root)")
        t0 = time.monotonic()
        image_id = import_root(root, repo, tag, digest)
        dt = time.monotonic() - t0
        progress(f"docker: image {name} ready in {dt:.1f} s")
        if old and old != image_id:
            # The outdated image, unless a container still uses it.
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(old, force=True)
        return image_id, dt


def ensure_qemu_root(progress: Progress = _stderr) -> Path:
    """roots/qemu-bookworm: a minimal bookworm with QEMU, made like the build roots."""
    return debootstrap_root(QEMU_ROOT, QEMU_SUITE, QEMU_PACKAGES, QEMU_MIRROR, progress)


# ---- container ownership ----------------------------------------------------------------
def _proc_start(pid: int) -> str:
    """The process's start time (clock ticks since boot), '' when it is gone: a pid with another
    start time is another process that reused the number. A zombie (killed, not yet reaped)
    counts as gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] in ("Z", "X") else fields[19]


def _pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def owner_labels(role: str) -> dict[str, str]:
    """Labels naming this grader process, so that leftovers can be told from live containers."""
    pid = os.getpid()
    return {"grader": "1", "grader.role": role, "grader.pid": str(pid),
            "grader.pidstart": _proc_start(pid), "grader.pidns": _pidns(),
            "grader.boot": _boot_id()}


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the grader that made a container may still be running. Containers made in
    another PID namespace (a grader in a container) are assumed alive: their pid means nothing
    here."""
    if labels.get("grader.boot") and labels["grader.boot"] != _boot_id():
        return False  # made before the machine rebooted
    if labels.get("grader.pidns", "") != _pidns():
        return True
    try:
        pid = int(labels.get("grader.pid", ""))
    except ValueError:
        return True
    start = _proc_start(pid)
    return bool(start) and start == labels.get("grader.pidstart", start)


def _is_mine(labels: dict[str, str]) -> bool:
    mine = owner_labels("")
    return all(labels.get(k) == mine[k] for k in ("grader.pid", "grader.pidstart", "grader.pidns"))


# ---- QEMU in a container ----------------------------------------------------------------
def qemu_mounts(argv: list[str]) -> dict[str, bool]:
    """Host directories QEMU's argv names -> read-only?: the directories of the files it reads
    (-kernel, -initrd) read-only, those of its unix sockets (path=) read-write. Relative paths
    are made absolute: the container starts in the same working directory."""
    dirs: dict[str, bool] = {}
    for opt, val in zip(argv, argv[1:], strict=False):
        if opt in ("-kernel", "-initrd", "-dtb", "-bios"):
            d = os.path.dirname(os.path.abspath(val))
            dirs.setdefault(d, True)
        for part in val.split(","):
            for key in ("path=", "file="):
                if part.startswith(key):
                    dirs[os.path.dirname(os.path.abspath(part[len(key):]))] = False
    return dirs


def _guest_mib(argv: list[str]) -> int:
    for opt, val in zip(argv, argv[1:], strict=False):
        if opt == "-m":
            digits = "".join(ch for ch in val.split(",")[0] if ch.isdigit())
            return int(digits or 128)
    return 128


def _own_copy(log: IO[bytes]) -> IO[bytes]:
    """Our own handle on the log: the Guest closes its copy once QEMU is started, as it may
    with a child process that inherited the file descriptor."""
    try:
        return os.fdopen(os.dup(log.fileno()), "ab", buffering=0)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return log  # an in-memory stream: written as is


class ContainerProcess:
    """QEMU in a container, with the subprocess.Popen methods the Guest uses. A watcher thread
    waits for the container to stop, writes its output to the log, removes it, and only then
    reports the exit status: when poll() says QEMU is gone, so is the container."""

    def __init__(self, container: Any, log: IO[bytes], args: list[str]):
        self.args = args
        self.id: str = container.id
        self._c = container
        self._log = _own_copy(log)
        self._owns_log = self._log is not log
        self.returncode: int | None = None
        self._done = threading.Event()
        try:
            container.reload()
            self.pid = int(container.attrs["State"].get("Pid") or 0)  # QEMU, seen from the host
        except Exception:
            self.pid = 0
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"qemu-container-{self.id[:12]}")
        self._watcher.start()

    def _watch(self) -> None:
        code = -1
        try:
            for attempt in range(3):
                try:
                    code = int(self._c.wait()["StatusCode"])
                    break
                except Exception:
                    # Removed under us (kill) or the engine hiccuped: look once more.
                    try:
                        self._c.reload()
                    except Exception:
                        break
                    if self._c.status in ("exited", "dead"):
                        code = int(self._c.attrs["State"].get("ExitCode", -1))
                        break
                    time.sleep(0.5 * (attempt + 1))
            with contextlib.suppress(Exception):
                out = self._c.logs(stdout=True, stderr=True)
                if out:
                    self._log.write(out)
                    self._log.flush()
        finally:
            with contextlib.suppress(Exception):
                self._c.remove(force=True)
            if self._owns_log:
                with contextlib.suppress(Exception):
                    self._log.close()
            self.returncode = code
            self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL QEMU; the watcher then saves the output and removes the container."""
        if self._done.is_set():
            return
        with contextlib.suppress(Exception):
            self._c.kill()
        if not self._done.wait(15):
            with contextlib.suppress(Exception):
                self._c.remove(force=True)


# ---- the backend ------------------------------------------------------------------------
def _mount(target: str, source: str, read_only: bool) -> Any:
    from docker.types import Mount

    return Mount(target=target, source=os.path.realpath(source), type="bind", read_only=read_only)


def run_command(spec: dict[str, Any]) -> list[str]:
    """The `docker run` equivalent of a container spec: logged with the build to reproduce it."""
    cmd = ["docker", "run", "--rm", "--network", "none"]
    if spec.get("read_only"):
        cmd.append("--read-only")
    for path, opts in spec.get("tmpfs", {}).items():
        cmd += ["--tmpfs", f"{path}:{opts}"]
    for m in spec.get("mounts", []):
        cmd += ["-v", f"{m['Source']}:{m['Target']}" + (":ro" if m.get("ReadOnly") else "")]
    if spec.get("mem_limit"):
        cmd += ["--memory", spec["mem_limit"], "--memory-swap", spec["memswap_limit"]]
    if spec.get("pids_limit"):
        cmd += ["--pids-limit", str(spec["pids_limit"])]
    for cap in spec.get("cap_drop", []):
        cmd += ["--cap-drop", cap]
    for opt in spec.get("security_opt", []):
        cmd += ["--security-opt", opt]
    for u in spec.get("ulimits", []):
        cmd += ["--ulimit", f"{u['Name']}={u['Soft']}:{u['Hard']}"]
    cmd += ["--user", spec["user"], "-w", spec["working_dir"]]
    for k, v in spec.get("environment", {}).items():
        cmd += ["-e", f"{k}={v}"]
    return [*cmd, spec["image"], *spec["command"]]


class DockerBackend(Backend):
    """Build and QEMU in containers: no network, read-only root, no capabilities, limits."""

    name = "docker"

    def __init__(self, progress: Progress = _stderr):
        self.progress = progress
        self._client: docker.DockerClient | None = None
        self._build_images: dict[str, str] = {}  # suite -> image id
        self._qemu_image = ""
        self.import_seconds: dict[str, float] = {}  # image name -> seconds (0: was up to date)
        self.qemu_version = ""  # of the QEMU in the image (Debian package version)

    # ---- engine and images -------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def prepare(self, profile: Profile, kernel: Kernel) -> None:
        """Connect to the engine, and make the build and QEMU images unless up to date."""
        self._build_image(profile.build_suite)
        self._qemu()

    def _build_image(self, suite: str) -> str:
        if suite not in self._build_images:
            root = root_dir(suite)
            if not (root / ".grader-root.json").exists():
                raise EnvironmentProblem(
                    f"the {suite} build root is missing: run `grader setup` for its profile")
            image_id, dt = ensure_image(self.client, root, BUILD_REPO, suite, self.progress)
            self._build_images[suite] = image_id
            self.import_seconds[f"{BUILD_REPO}:{suite}"] = dt
        return self._build_images[suite]

    def _qemu(self) -> str:
        if not self._qemu_image:
            root = ensure_qemu_root(self.progress)
            image_id, dt = ensure_image(self.client, root, QEMU_REPO, QEMU_SUITE, self.progress)
            self._qemu_image = image_id
            self.import_seconds[f"{QEMU_REPO}:{QEMU_SUITE}"] = dt
            self.qemu_version = dpkg_version(root, "qemu-system-x86")
        return self._qemu_image

    # ---- build -------------------------------------------------------------------------
    def build_spec(self, image: str, kernel: Kernel, build: Path) -> dict[str, Any]:
        """The container that runs Kbuild: the same mounts as the host's bwrap sandbox."""
        from docker.types import LogConfig, Ulimit

        kb = kernel.kbuild
        return dict(
            image=image,
            command=inner_command(kernel),
            mounts=[_mount("/usr/src", str(kernel.tree / "usr/src"), True),
                    _mount(f"/{kb}", str(kernel.tree / kb), True),
                    _mount("/mod", str(build), False)],
            tmpfs={"/tmp": "rw,size=512m,mode=1777"},
            read_only=True, network_mode="none", network_disabled=True,
            mem_limit=BUILD_MEMORY, memswap_limit=BUILD_MEMORY, pids_limit=BUILD_PIDS,
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            ulimits=[Ulimit(name="fsize", soft=BUILD_FSIZE, hard=BUILD_FSIZE)],
            user=f"{os.getuid()}:{os.getgid()}", working_dir="/mod",
            environment={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C.UTF-8"},
            labels=owner_labels("build"), log_config=LogConfig(**LOG_CONFIG),
        )

    def build(self, req: BuildRequest, profile: Profile, kernel: Kernel) -> BuildResult:
        """As grader.build.build_module, with make in a container of grader-build:<suite>."""
        import docker
        import requests

        t0 = time.monotonic()
        image = self._build_image(profile.build_suite)
        build = _prepare(req)
        spec = self.build_spec(image, kernel, build.resolve())
        cmd = run_command(spec)
        code, log, timed_out, oom = -1, "", False, False
        container = None
        try:
            container = self.client.containers.create(**spec)
            container.start()
            try:
                code = int(container.wait(timeout=BUILD_TIMEOUT_S)["StatusCode"])
            except requests.exceptions.RequestException:
                if time.monotonic() - t0 < BUILD_TIMEOUT_S - 1:
                    raise  # not the timeout: the engine went away
                timed_out = True
                with contextlib.suppress(docker.errors.DockerException):
                    container.kill()
            log = container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
            container.reload()
            oom = bool(container.attrs["State"].get("OOMKilled"))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            log += f"\n[grader] the build container failed: {e}\n"
            (req.workdir / "build.log").write_text(log)
            return BuildResult(Status.ERROR, None, log, cmd, [], time.monotonic() - t0,
                               req.compat)
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
        if oom and not timed_out:
            log += f"\n[grader] the build ran out of memory ({BUILD_MEMORY})\n"
        # Exit 125-127: the container could not run make (our environment, not the code).
        return finish_build(req, build, inner_command(kernel), log, t0, timed_out=timed_out, succeeded=code == 0,
                            sandbox_failed=not oom and code in (125, 126, 127),
                            timeout_s=BUILD_TIMEOUT_S)

    # ---- guest -------------------------------------------------------------------------
    def qemu_spec(self, argv: list[str]) -> dict[str, Any]:
        """The container QEMU runs in: the paths its argv names mounted at the same place."""
        from docker.types import LogConfig

        spec: dict[str, Any] = dict(
            image=self._qemu(), command=argv,
            mounts=[_mount(d, d, ro) for d, ro in sorted(qemu_mounts(argv).items())],
            read_only=True, network_mode="none", network_disabled=True,
            mem_limit=f"{_guest_mib(argv) + QEMU_OVERHEAD_MIB}m", pids_limit=QEMU_PIDS,
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            user=f"{os.getuid()}:{os.getgid()}", working_dir=os.getcwd(),
            labels=owner_labels("qemu"), log_config=LogConfig(**LOG_CONFIG),
        )
        spec["memswap_limit"] = spec["mem_limit"]
        if "kvm" in argv and os.path.exists("/dev/kvm"):
            spec["devices"] = ["/dev/kvm:/dev/kvm:rwm"]
            spec["group_add"] = [str(os.stat("/dev/kvm").st_gid)]
        return spec

    def start_qemu(self, argv: list[str], log: IO[bytes]) -> Process:
        import docker

        container = None
        try:
            container = self.client.containers.create(**self.qemu_spec(argv))
            container.start()
        except docker.errors.DockerException as e:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
            raise GuestError(f"cannot start QEMU in a container: {e}") from e
        return ContainerProcess(container, log, argv)

    def launcher(self) -> Launcher:
        self._qemu()  # fail here, with the reason, rather than at the first boot
        return self.start_qemu

    # ---- cleanup -----------------------------------------------------------------------
    def cleanup(self) -> None:
        """Remove this process's containers, and those of graders that no longer run."""
        with contextlib.suppress(Exception):
            client = self._client or connect(timeout=10)
            for c in client.containers.list(all=True, filters={"label": "grader=1"}):
                if _is_mine(c.labels) or not owner_alive(c.labels):
                    with contextlib.suppress(Exception):
                        c.remove(force=True)
