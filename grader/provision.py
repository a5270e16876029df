"""`grader setup`: host packages, kernels from Debian's archive, build roots, guest image, accel probe.

Everything lands in the cache directory ($GRADER_CACHE, default ~/.cache/grader); nothing is
installed into the system but the host packages listed in HOST_PACKAGES (and only as root).
Every step is idempotent: a finished step leaves a stamp and is skipped next time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader.errors import EnvironmentProblem
from grader.profiles import Profile, cache_root, load_profile

if TYPE_CHECKING:
    import docker

# tool or file -> Debian package that provides it
HOST_PACKAGES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "/bin/busybox": "busybox-static",
    "debootstrap": "debootstrap",
    "bwrap": "bubblewrap",
    "gcc": "gcc",
    "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "/usr/share/keyrings/debian-archive-keyring.gpg": "debian-archive-keyring",
}
# What every build root gets besides the minimal base: the profile's compiler and Kbuild's needs.
ROOT_PACKAGES = ("gcc", "make", "libc6-dev", "libelf-dev", "dwarves")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], *, what: str, cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise EnvironmentProblem(
            f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()[-3000:]}"
        )
    return p.stdout


# ---- host packages -----------------------------------------------------------------------
def missing_host_packages() -> list[str]:
    missing = []
    for tool, pkg in HOST_PACKAGES.items():
        found = Path(tool).exists() if tool.startswith("/") else shutil.which(tool)
        if not found and pkg not in missing:
            missing.append(pkg)
    return missing


def ensure_host_packages(progress: Progress = _stderr, install: bool = True) -> None:
    missing = missing_host_packages()
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EnvironmentProblem(
            "missing host packages: " + ", ".join(missing)
            + "\nrun as root: apt-get update && " + " ".join(cmd)
        )
    progress(f"installing host packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise EnvironmentProblem(f"apt-get install failed:\n{p.stderr[-2000:]}\nrun: {' '.join(cmd)}")


# ---- kernels -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Kernel:
    """A provisioned kernel: where its files are and exactly which one it is."""

    profile: str
    release: str  # uname -r, e.g. 6.1.0-56-cloud-amd64
    version: str  # Debian package version, e.g. 6.1.192-2
    tree: Path  # unpacked packages
    vmlinuz: str  # relative to tree
    headers: str  # relative to tree, e.g. usr/src/linux-headers-6.1.0-56-cloud-amd64
    kbuild: str  # relative to tree, e.g. usr/lib/linux-kbuild-6.1
    packages: tuple[str, ...]

    @property
    def vmlinuz_path(self) -> Path:
        return self.tree / self.vmlinuz


def _apt_opts(adir: Path) -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={adir / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={adir / 'lists'}",
        "-o", f"Dir::Cache={adir / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]


def _sources(profile: Profile) -> str:
    lines = []
    for src in profile.apt_sources:
        parts = src.split()
        if parts[0] == "deb" and "[" not in src:
            parts.insert(1, f"[signed-by={KEYRING}]")
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def _depends(opts: list[str], pkg: str) -> tuple[str, list[tuple[str, str]]]:
    """(version, [(dependency name, version constraint)]) of the candidate of pkg."""
    out = _run(["apt-cache", *opts, "show", "--no-all-versions", pkg], what=f"apt-cache show {pkg}")
    version = re.search(r"^Version: (\S+)", out, re.MULTILINE)
    deps = re.search(r"^Depends: (.*)$", out, re.MULTILINE)
    if not version:
        raise EnvironmentProblem(f"no package {pkg} in the profile's archive")
    items = []
    for alt in (deps.group(1).split(",") if deps else []):
        first = alt.split("|")[0].strip()
        m = re.match(r"(\S+)(?:\s*\(([^)]*)\))?", first)
        if m:
            items.append((m.group(1), (m.group(2) or "").strip()))
    return version.group(1), items


def resolve_kernel(profile: Profile, adir: Path) -> dict[str, str]:
    """Meta packages -> the exact image, headers, common headers and kbuild packages."""
    opts = _apt_opts(adir)
    _, deps = _depends(opts, profile.image_package)
    image = next((n for n, _ in deps if n.startswith("linux-image-")), None)
    _, deps = _depends(opts, profile.headers_package)
    headers = next((n for n, _ in deps if n.startswith("linux-headers-")), None)
    if not image or not headers:
        raise EnvironmentProblem(f"cannot resolve the kernel packages of profile {profile.name}")
    version, hdeps = _depends(opts, headers)
    common = next(n for n, _ in hdeps if n.startswith("linux-headers-") and n.endswith("-common"))
    kbuild = next(n for n, _ in hdeps if n.startswith("linux-kbuild-"))
    release = image.removeprefix("linux-image-")
    if profile.pin and not release.startswith(profile.pin):
        raise EnvironmentProblem(
            f"profile {profile.name} is pinned to {profile.pin} but the archive now offers {release}"
        )
    return {"release": release, "version": version, "image": image, "headers": headers,
            "common": common, "kbuild": kbuild}


def ensure_kernel(profile: Profile, *, refresh: bool = False, progress: Progress = _stderr) -> Kernel:
    if profile.from_source:  # built from Debian's kernel source: grader/kernel_build.py
        from grader import kernel_build

        kernel_build.ensure_source_kernel(profile, refresh=refresh, progress=progress)
        return load_kernel(profile)
    kdir = profile.cache_dir
    stamp = kdir / "resolved.json"
    if stamp.exists() and not refresh:
        k = load_kernel(profile)
        if k.vmlinuz_path.exists():
            return k
    t0 = time.monotonic()
    progress(f"{profile.name}: resolving {profile.image_package} in {profile.build_suite}")
    adir = cache_root() / "apt" / profile.name
    for sub in ("lists/partial", "cache/archives/partial"):
        (adir / sub).mkdir(parents=True, exist_ok=True)
    (adir / "sources.list").write_text(_sources(profile))
    _run(["apt-get", *_apt_opts(adir), "update", "-q"], what="apt-get update (profile archive)")
    r = resolve_kernel(profile, adir)
    progress(f"{profile.name}: downloading {r['image']} {r['version']} and its headers")
    debs = adir / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir()
    pkgs = [r["image"], r["headers"], r["common"], r["kbuild"]]
    _run(["apt-get", *_apt_opts(adir), "download", *pkgs], what="apt-get download", cwd=debs)
    tree = kdir / r["release"]
    tmp = kdir / (r["release"] + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], what=f"unpacking {deb.name}")
    shutil.rmtree(tree, ignore_errors=True)
    tmp.rename(tree)
    shutil.rmtree(debs, ignore_errors=True)  # unpacked; the .debs are not needed any more
    headers = f"usr/src/{r['headers']}"
    link = os.readlink(tree / headers / "scripts")  # ../../lib/linux-kbuild-6.1/scripts
    kbuild = "usr/lib/" + Path(link).parent.name
    vmlinuz = f"boot/vmlinuz-{r['release']}"
    if not (tree / vmlinuz).exists() or not (tree / kbuild).is_dir():
        raise EnvironmentProblem(f"unexpected layout of the kernel packages in {tree}")
    data = {**r, "vmlinuz": vmlinuz, "headers_dir": headers, "kbuild_dir": kbuild,
            "packages": [f"{p}={r['version']}" for p in pkgs]}
    stamp.write_text(json.dumps(data, indent=2))
    progress(f"{profile.name}: kernel {r['release']} ({r['version']}) ready "
             f"in {time.monotonic() - t0:.1f} s")
    return load_kernel(profile)


def load_kernel(profile: Profile) -> Kernel:
    stamp = profile.cache_dir / "resolved.json"
    if not stamp.exists():
        raise EnvironmentProblem(
            f"kernel profile {profile.name} is not provisioned: run `grader setup --profile {profile.name}`"
        )
    d = json.loads(stamp.read_text())
    if profile.from_source:
        from grader import kernel_build

        if kernel_build.current(profile) is None:
            raise EnvironmentProblem(
                f"the {profile.name} kernel was built from another configuration fragment (or is "
                f"incomplete): run `grader setup --profile {profile.name}` to rebuild it")
    return Kernel(
        profile=profile.name, release=d["release"], version=d["version"],
        tree=profile.cache_dir / d.get("tree", d["release"]), vmlinuz=d["vmlinuz"], headers=d["headers_dir"],
        kbuild=d["kbuild_dir"], packages=tuple(d["packages"]),
    )


# ---- build roots -------------------------------------------------------------------------
def root_dir(suite: str) -> Path:
    return cache_root() / "roots" / suite


def debootstrap_root(name: str, suite: str, packages: tuple[str, ...], mirror: str,
                     progress: Progress = _stderr) -> Path:
    """roots/<name>: a minimal Debian `suite` root with `packages`, made once (stamped). A root
    that has more packages than asked is kept; one that lacks some gets them installed in place
    (a root in use by other builds is never replaced for that)."""
    root = root_dir(name)
    stamp = root / ".grader-root.json"
    want = {"suite": suite, "packages": list(packages)}
    try:
        have = json.loads(stamp.read_text())
        if have == want or (have["suite"] == suite and set(packages) <= set(have["packages"])):
            return root
        if have["suite"] == suite:
            extra = tuple(p for p in packages if p not in have["packages"])
            return extend_root(root, (*have["packages"], *extra), extra, progress)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not shutil.which("debootstrap"):
        raise EnvironmentProblem("debootstrap is missing: apt-get install -y debootstrap")
    progress(f"debootstrap {suite} root '{name}' with {', '.join(packages)} (about a minute)")
    t0 = time.monotonic()
    tmp = root.with_name(name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log = root.with_name(name + ".debootstrap.log")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
           suite, str(tmp), mirror]
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise EnvironmentProblem(f"debootstrap failed, see {log}: {' '.join(cmd)}")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    stamp.write_text(json.dumps(want))
    progress(f"root '{name}' ready in {time.monotonic() - t0:.0f} s")
    return root


def extend_root(root: Path, packages: tuple[str, ...], extra: tuple[str, ...],
                progress: Progress = _stderr) -> Path:
    """Install `extra` into an existing root with its own apt (network on, as root), then stamp
    it with `packages`. About 10 s, against about a minute for a new debootstrap."""
    progress(f"adding {', '.join(extra)} to the build root {root.name}")
    t0 = time.monotonic()
    log = root.with_name(root.name + ".extend.log")
    cmd = ["bwrap", "--bind", str(root), "/", "--dev", "/dev", "--proc", "/proc",
           "--tmpfs", "/tmp", "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf",
           "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
           "--clearenv", "--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin",
           "--setenv", "HOME", "/root", "--setenv", "DEBIAN_FRONTEND", "noninteractive",
           "sh", "-ec", 'apt-get update -q && apt-get install -y -q --no-install-recommends "$@"'
           " && apt-get clean && rm -rf /var/lib/apt/lists/*", "sh", *extra]
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise EnvironmentProblem(f"installing {', '.join(extra)} into {root} failed, see {log}; "
                                 f"removing {root} makes `grader setup` debootstrap it anew")
    suite = json.loads((root / ".grader-root.json").read_text())["suite"]
    (root / ".grader-root.json").write_text(json.dumps({"suite": suite, "packages": list(packages)}))
    progress(f"root '{root.name}' extended in {time.monotonic() - t0:.0f} s")
    return root


def root_packages(profile: Profile) -> tuple[str, ...]:
    """What the profile's build root needs: the compiler and Kbuild's needs, and what building
    a kernel needs for a profile built from source."""
    if profile.from_source:
        from grader.kernel_build import KERNEL_BUILD_PACKAGES

        return (*ROOT_PACKAGES, *KERNEL_BUILD_PACKAGES)
    return ROOT_PACKAGES


def profile_mirror(profile: Profile) -> str:
    src = next(s for s in profile.apt_sources if "security" not in s)
    return next(p for p in src.split() if p.startswith("http"))


def ensure_root(profile: Profile, *, progress: Progress = _stderr) -> Path:
    """The build root of the profile's release: a minimal Debian with its own gcc."""
    return debootstrap_root(profile.build_suite, profile.build_suite, root_packages(profile),
                            profile_mirror(profile), progress)


# ---- accelerator probe -------------------------------------------------------------------
def accel_file() -> Path:
    return cache_root() / "accel.json"


def chosen_accel() -> str:
    """kvm only where the setup probe booted a real guest with it; tcg otherwise."""
    forced = os.environ.get("GRADER_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    try:
        return "kvm" if json.loads(accel_file().read_text()).get("kvm") else "tcg"
    except (OSError, ValueError):
        return "tcg"


def probe_kvm(profile: Profile, kernel: Kernel, progress: Progress = _stderr) -> bool:
    from grader import guest, initramfs
    from grader.guest import qemu_version

    qv = qemu_version()
    try:
        old = json.loads(accel_file().read_text())
        if old.get("qemu") == qv:
            return bool(old["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    ok, reason = False, "/dev/kvm not accessible"
    if guest.kvm_usable():
        spec = guest.BootSpec(kernel=kernel.vmlinuz_path, initrd=initramfs.build_base(cache_root()),
                              cmdline=profile.cmdline, accel="kvm", memory_mib=256, cpus=1)
        try:
            with guest.Guest(spec, cache_root() / "probe", boot_timeout=30) as g:
                ok = g.run("true", 10).ok
                reason = "booted"
        except Exception as e:  # any failure means: do not use KVM here
            reason = str(e).splitlines()[0][:300]
    progress(f"KVM {'works' if ok else 'unusable'} ({reason}); guests use {'kvm' if ok else 'tcg'}")
    accel_file().write_text(json.dumps({"kvm": ok, "qemu": qv, "reason": reason}))
    return ok


# ---- saved guests -------------------------------------------------------------------------
def save_guests(profiles: list[str], progress: Progress = _stderr) -> None:
    """A booted guest of each profile and clock, saved once (grader/snapshots.py), so that no
    grading pays for a boot; skipped when GRADER_SNAPSHOTS=0."""
    from grader import session, snapshots

    if not snapshots.enabled():
        return
    for name in profiles:
        env = session.prepare(name, auto_setup=False, progress=progress)
        for clock in env.profile.clocks.values():
            snapshots.ensure(env, clock, progress=progress)


# ---- all ---------------------------------------------------------------------------------
@dataclass
class SetupReport:
    profiles: dict[str, dict[str, str]]
    accel: str
    initramfs: str
    seconds: float


def setup(profiles: list[str], *, refresh: bool = False, progress: Progress = _stderr,
          install: bool = True) -> SetupReport:
    """Provision every named profile (kernel + build root) and the guest image."""
    t0 = time.monotonic()
    ensure_host_packages(progress, install=install)
    from grader import initramfs

    base = initramfs.build_base(cache_root())
    progress(f"guest image {base.name} ready")
    loaded = [load_profile(p) for p in profiles]
    # One root per Debian suite, with what every profile of that suite needs in it.
    suites: dict[str, tuple[tuple[str, ...], str]] = {}
    for p in loaded:
        pkgs, _ = suites.get(p.build_suite, ((), ""))
        pkgs = (*pkgs, *(x for x in root_packages(p) if x not in pkgs))
        suites[p.build_suite] = (pkgs, profile_mirror(p))
    # Downloads and debootstraps are network- and disk-bound: run the profiles side by side.
    with ThreadPoolExecutor(max_workers=max(1, len(loaded) * 2)) as ex:
        kfut = {p.name: ex.submit(ensure_kernel, p, refresh=refresh, progress=progress)
                for p in loaded if not p.from_source}
        rfut = [ex.submit(debootstrap_root, suite, suite, pkgs, mirror, progress)
                for suite, (pkgs, mirror) in suites.items()]
        kernels = {n: f.result() for n, f in kfut.items()}
        for f in rfut:
            f.result()
    # Kernels built from source need their root first, and both cores: one after the other.
    for p in loaded:
        if p.from_source:
            kernels[p.name] = ensure_kernel(p, refresh=refresh, progress=progress)
    kernels = {p.name: kernels[p.name] for p in loaded}
    probe_kvm(loaded[0], kernels[loaded[0].name], progress)
    save_guests([p.name for p in loaded], progress)
    return SetupReport(
        profiles={n: {"release": k.release, "version": k.version} for n, k in kernels.items()},
        accel=chosen_accel(), initramfs=str(base), seconds=time.monotonic() - t0,
    )


# ---- container engine (the docker backend) ----------------------------------------------
ENGINE_WAIT_S = 30.0
START_HINT = ("start it as root: `dockerd >/var/log/dockerd.log 2>&1 &` (or `systemctl start "
              "docker`); `python3 -c 'from grader.provision import ensure_engine; "
              "ensure_engine(install=True)'` installs and starts it")
INSTALL_HINT = f"install it as root: `apt-get install -y docker.io`, then {START_HINT}"


def _engine_problem(err: Exception) -> EnvironmentProblem:
    text = str(err)
    if "Permission denied" in text or "PermissionError" in text:
        return EnvironmentProblem(
            f"cannot talk to the Docker engine (permission denied): run as root or add the user "
            f"to the docker group ({text[:300]})")
    if os.environ.get("DOCKER_HOST"):
        return EnvironmentProblem(f"the Docker engine at DOCKER_HOST={os.environ['DOCKER_HOST']} "
                                  f"does not answer: {text[:300]}")
    if not shutil.which("dockerd"):
        return EnvironmentProblem(f"no Docker engine on this machine: {INSTALL_HINT}")
    return EnvironmentProblem(f"the Docker engine is not running: {START_HINT} ({text[:300]})")


def connect(timeout: float = 60) -> docker.DockerClient:
    """A client of a running engine ($DOCKER_HOST or the local socket), or EnvironmentProblem."""
    try:
        import docker
    except ImportError as e:
        raise EnvironmentProblem("the docker Python SDK is missing: pip install 'docker>=7'") from e
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as e:
        raise _engine_problem(e) from e
    return client


def ensure_engine(install: bool = True, progress: Progress = _stderr) -> docker.DockerClient:
    """A running engine. As root on Debian: installs docker.io when `install` and it is missing,
    and starts dockerd when it is not running (systemctl where systemd runs, otherwise dockerd
    detached with its log in the cache), then waits until it answers (at most 30 s)."""
    try:
        return connect()
    except EnvironmentProblem as e:
        problem = e
    if os.environ.get("DOCKER_HOST") or os.geteuid() != 0:
        raise problem  # a remote engine, or no right to start one: only staff can fix it
    if not shutil.which("dockerd"):
        if not install or not shutil.which("apt-get"):
            raise problem
        progress("installing docker.io (apt-get install -y docker.io)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        p = subprocess.run(["apt-get", "install", "-y", "docker.io"], env=env,
                           capture_output=True, text=True)
        if p.returncode != 0 or not shutil.which("dockerd"):
            raise EnvironmentProblem(f"apt-get install -y docker.io failed:\n{p.stderr[-2000:]}")
    t0 = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    log = cache_root() / "docker" / "dockerd.log"
    if Path("/run/systemd/system").is_dir():
        progress("starting the Docker engine: systemctl start docker")
        subprocess.run(["systemctl", "start", "docker"], capture_output=True)
    else:
        progress(f"starting the Docker engine: dockerd (log: {log})")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            # Its own session: the engine outlives this process and its terminal's signals.
            proc = subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    while time.monotonic() - t0 < ENGINE_WAIT_S:
        try:
            client = connect(timeout=5)
            progress(f"Docker engine running ({time.monotonic() - t0:.1f} s)")
            return client
        except EnvironmentProblem as e:
            problem = e
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise EnvironmentProblem(f"the Docker engine did not start within {ENGINE_WAIT_S:.0f} s "
                             f"({problem}); dockerd's log ({log}):\n{tail}")
