"""`grader image build`: one self-contained Docker image per kernel profile, made from local files.

This is how a course freezes its grading environment: the grader (from this checkout), the
profile's kernel tree and build root exactly as provisioned in the cache, QEMU and the guest image.
No registry is contacted: the image starts from a debootstrapped bookworm root brought in with
`docker import` (as the docker backend's images are), and the grader is added by a docker build
whose steps run without network, so the image is proven to need no download.

Inside the image:
  /opt/grader/cache  GRADER_CACHE. roots/<suite>: the build root, with the kernel's usr/src and
                     usr/lib/linux-kbuild-* inside it where bwrap would mount them (so the chroot
                     sandbox of grader/build.py sees them there); kernels/<profile>: resolved.json
                     and the rest of the kernel tree, with links to those two parts; the guest
                     image, accel.json and whatever else `grader setup`, run in the build, leaves.
  /opt/grader/src    GRADER_HOME: pyproject.toml, vm-images/, rubrics/, reference/, ci/.
  /opt/grader/venv   the grader, installed from the checkout's sources by pip (offline: the
                     wheels of its dependencies are in the build context), first on PATH.
  /opt/grader/ci     the CI job scripts (ci/*.sh of the checkout).

Every report graded in the image carries GRADER_IMAGE in its stamp: the id of the image as built
(an image cannot hold its own id, so the last, metadata-only step that sets the variable comes
after; its label org.grader.image and the tag <repo>:<profile>-<id12> name the same id).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader import __version__
from grader.errors import EnvironmentProblem
from grader.profiles import DEFAULT_PROFILE, available_profiles, cache_root, project_root
from grader.provision import Progress, _stderr, debootstrap_root, root_dir

if TYPE_CHECKING:
    import docker

    from grader.profiles import Profile
    from grader.provision import Kernel

# Bump when the way images are made changes: every image is then made again.
RECIPE = "grader-image-2"
BASE_ROOT = "image-bookworm"  # under roots/, next to the build roots
BASE_SUITE = "bookworm"  # Python 3.11, whatever the profile's own release
BASE_MIRROR = "http://deb.debian.org/debian"
# What `grader setup` checks on the host (provision.HOST_PACKAGES) and what the grader runs.
BASE_PACKAGES = ("python3", "python3-venv", "qemu-system-x86", "busybox-static", "bubblewrap",
                 "debootstrap", "gcc", "libc6-dev", "debian-archive-keyring")
# Left out of the image's roots: documentation, translations, apt's downloads and lists.
STRIPPED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
            "var/cache/apt", "var/lib/apt/lists")
# What of the checkout goes into the image (the grader is installed from this copy).
SOURCE_ITEMS = ("pyproject.toml", "README.md", "grader", "vm-images", "rubrics", "reference", "ci")
SOURCE_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")

PREFIX = "/opt/grader"
IMAGE_CACHE = f"{PREFIX}/cache"
IMAGE_HOME = f"{PREFIX}/src"
IMAGE_VENV = f"{PREFIX}/venv"
PATH_ENV = f"{IMAGE_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ENV_REPO = "grader-env"  # the imported layer: base root, build root, kernel
DEFAULT_TAG = "grader:{profile}"
LABEL = "org.grader."
INPUTS_LABEL = LABEL + "inputs"
IMAGE_LABEL = LABEL + "image"


@dataclass
class ImageResult:
    profile: str
    tags: list[str]
    image_id: str  # what `docker images` shows
    stamped: str  # what reports made in the image carry (GRADER_IMAGE)
    size_bytes: int
    reused: bool  # nothing had changed: the existing image was tagged again
    inputs: str = ""  # digest of what it is made of (environment, sources, pinned versions)
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall seconds

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


# ---- inputs -------------------------------------------------------------------------------
def _hash_file(h: Any, path: Path) -> None:
    h.update(b"\0" + str(path).encode() + b"\0")
    h.update(path.read_bytes())


def root_stamp_digest(root: Path) -> str:
    """What a debootstrapped root is: its stamp and its installed packages."""
    h = hashlib.sha256()
    for name in (".grader-root.json", "var/lib/dpkg/status"):
        _hash_file(h, root / name)
    return h.hexdigest()


def env_digest(base: Path, build_root: Path, kernel: Kernel) -> str:
    """The imported layer's inputs: both roots (stamp and packages) and the exact kernel."""
    h = hashlib.sha256(RECIPE.encode())
    h.update(root_stamp_digest(base).encode())
    h.update(root_stamp_digest(build_root).encode())
    h.update(kernel.profile.encode() + b"\0" + kernel.release.encode() + b"\0")
    _hash_file(h, kernel.tree.parent / "resolved.json")
    return h.hexdigest()


def copy_sources(dest: Path) -> Path:
    """The parts of the checkout the image holds, into dest (made anew)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    home = project_root()
    for item in SOURCE_ITEMS:
        src = home / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=SOURCE_IGNORED)
        elif src.is_file():
            shutil.copy2(src, dest / item)
    return dest


def tree_digest(top: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        h.update(b"\0" + str(path.relative_to(top)).encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        h.update(path.read_bytes())
    return h.hexdigest()


def pinned_requirements() -> list[str]:
    """The versions installed with this grader: the image gets the same ones."""
    pins = set()
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"]
        if name and name.lower() != "grader":
            pins.add(f"{name}=={d.version}")
    return sorted(pins, key=str.lower)


# ---- the imported layer ---------------------------------------------------------------------
def base_root(progress: Progress = _stderr) -> Path:
    """roots/image-bookworm: what the grader and QEMU run on (made once, like the build roots)."""
    return debootstrap_root(BASE_ROOT, BASE_SUITE, BASE_PACKAGES, BASE_MIRROR, progress)


def _link_copy(src: Path, dest: Path) -> None:
    """Copy a tree as hard links (same filesystem: instant, no space): files are never changed
    in the copy, only removed or added."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["cp", "-a", "--link", str(src), str(dest)], capture_output=True, text=True)
    if p.returncode != 0:
        raise EnvironmentProblem(f"cannot copy {src} to {dest}: {p.stderr.strip()[-500:]}")


def _strip(root: Path) -> None:
    for rel in STRIPPED:
        shutil.rmtree(root / rel, ignore_errors=True)


def stage_env(dest: Path, base: Path, build_root: Path, profile: Profile, kernel: Kernel) -> Path:
    """The image's filesystem, assembled under dest from hard links into the cache."""
    shutil.rmtree(dest, ignore_errors=True)
    _link_copy(base, dest)
    _strip(dest)
    cache = dest / IMAGE_CACHE.lstrip("/")
    root = cache / "roots" / profile.build_suite
    _link_copy(build_root, root)
    _strip(root)
    # The kernel's headers and kbuild inside the build root, where the sandboxes expect them.
    for rel in ("usr/src", kernel.kbuild):
        shutil.rmtree(root / rel, ignore_errors=True)  # the empty mount points
        _link_copy(kernel.tree / rel, root / rel)
    # The rest of the tree as it is (the kernel, its modules), with links to the parts above.
    kdir = cache / "kernels" / profile.name
    tree = kdir / kernel.release
    _link_copy(kernel.tree, tree)
    shutil.copy2(kernel.tree.parent / "resolved.json", kdir / "resolved.json")
    in_image_root = f"{IMAGE_CACHE}/roots/{profile.build_suite}"
    for rel in ("usr/src", kernel.kbuild):
        shutil.rmtree(tree / rel)
        (tree / rel).symlink_to(f"{in_image_root}/{rel}")
    return dest


def ensure_env_image(client: docker.DockerClient, profile: Profile, kernel: Kernel,
                     progress: Progress) -> tuple[str, float]:
    """grader-env:<profile>-<digest12>, imported unless it exists: (its name, seconds spent)."""
    import docker

    from grader.docker_backend import DIGEST_LABEL, import_root

    base = base_root(progress)
    build_root = root_dir(profile.build_suite)
    digest = env_digest(base, build_root, kernel)
    name = f"{ENV_REPO}:{profile.name}-{digest[:12]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        if client.images.get(name).labels.get(DIGEST_LABEL) == digest:
            return name, 0.0
    t0 = time.monotonic()
    stage = cache_root() / "image" / profile.name / "rootfs"
    progress(f"image: assembling the {profile.name} environment (bookworm with QEMU, the "
             f"{profile.build_suite} build root, kernel {kernel.release})")
    try:
        stage_env(stage, base, build_root, profile, kernel)
        progress("image: importing it (docker import; about a minute)")
        import_root(stage, ENV_REPO, profile.name, digest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    # Earlier environments of this profile, unless an image still stands on them.
    for img in client.images.list(name=ENV_REPO):
        if img.labels.get(DIGEST_LABEL) != digest and all(
                t.startswith(f"{ENV_REPO}:{profile.name}-") for t in img.tags):
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(img.id)
    return name, time.monotonic() - t0


# ---- the grader layer -----------------------------------------------------------------------
def dockerfile(env_image: str, profile: Profile) -> str:
    """Adds the grader to the environment and runs `grader setup` in it (guest image, accel
    probe, anything setup prepares), without network: what it would download is missing.
    The dependencies come before the sources, so that the engine's cache keeps their layer
    when only the grader changes."""
    pip = f"{IMAGE_VENV}/bin/pip install --no-index --no-cache-dir --disable-pip-version-check"
    return f"""\
FROM {env_image}
COPY wheels /tmp/grader-wheels
RUN python3 -m venv {IMAGE_VENV} \\
 && {pip} --find-links /tmp/grader-wheels -r /tmp/grader-wheels/{REQUIREMENTS}
COPY src {IMAGE_HOME}
RUN {pip} --no-deps --find-links /tmp/grader-wheels {IMAGE_HOME} \\
 && rm -rf /tmp/grader-wheels {IMAGE_HOME}/build {IMAGE_HOME}/*.egg-info \\
 && ln -s {IMAGE_HOME}/ci {PREFIX}/ci && chmod a+rx {IMAGE_HOME}/ci/*.sh
ENV PATH={PATH_ENV} GRADER_HOME={IMAGE_HOME} GRADER_CACHE={IMAGE_CACHE} \\
    GRADER_PROFILE={profile.name} LC_ALL=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
RUN grader setup --profile {profile.name} --no-install \\
 && chmod 1777 {IMAGE_CACHE} \\
 && find {IMAGE_CACHE} -mindepth 1 -maxdepth 1 ! -name roots ! -name kernels \\
      -exec chmod -R a+rwX {{}} + \\
 && grader --version
CMD ["grader", "--help"]
"""


REQUIREMENTS = "requirements.txt"
# What pip needs to build the grader from its sources in the image (pyproject's build-system).
BUILD_REQUIREMENTS = ("setuptools>=64", "wheel")


def make_wheels(src: Path, wheels: Path, progress: Progress) -> list[str]:
    """The wheels of the grader's dependencies (at the versions installed here) and of its
    build backend, into `wheels`: from the cache's wheelhouse, else from PyPI (or pip's cache)
    into the wheelhouse once. The grader itself is built from its sources in the image."""
    project = tomllib.loads((src / "pyproject.toml").read_text())
    deps = list(project["project"].get("dependencies", []))
    build = list(project.get("build-system", {}).get("requires", BUILD_REQUIREMENTS))
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    (wheels / REQUIREMENTS).write_text("\n".join(deps) + "\n")
    pins = wheels.parent / "constraints.txt"
    pins.write_text("\n".join(pinned_requirements()) + "\n")
    house = cache_root() / "image" / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q",
           "--only-binary=:all:", "-c", str(pins), *dict.fromkeys([*deps, *build, *BUILD_REQUIREMENTS])]
    local = [*pip, "--no-index", "--find-links", str(house), "-d", str(wheels)]
    if subprocess.run(local, capture_output=True).returncode != 0:
        progress("image: fetching the wheels of the grader's dependencies (once)")
        _pip([*pip, "-d", str(house)])
        _pip(local)
    return sorted(p.name for p in wheels.glob("*.whl"))


def _pip(cmd: list[str]) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise EnvironmentProblem(f"{' '.join(cmd[2:5])} failed (exit {p.returncode}): "
                                 f"{p.stderr.strip()[-1500:]}\nPyPI (or pip's cache) is needed "
                                 f"to fetch the grader's dependencies once")


def _docker_build(client: docker.DockerClient, progress: Progress, **kwargs: Any) -> str:
    """A docker build (the engine's classic builder, no network); returns the image id."""
    import docker

    image_id, tail = "", []
    try:
        for chunk in client.api.build(rm=True, forcerm=True, network_mode="none", decode=True,
                                      **kwargs):
            if "error" in chunk:
                raise EnvironmentProblem(
                    "the image build failed: " + str(chunk["error"]).strip()
                    + "\n" + "".join(tail[-30:]))
            if "stream" in chunk:
                tail.append(chunk["stream"])
                line = chunk["stream"].strip()
                if line.startswith("Step ") or line == "---> Using cache":
                    progress(f"image: {line[:150]}")
            image_id = (chunk.get("aux") or {}).get("ID", image_id)
    except docker.errors.DockerException as e:
        raise EnvironmentProblem(f"the image build failed: {e}") from e
    if not image_id:
        raise EnvironmentProblem("the image build gave no image id:\n" + "".join(tail[-30:]))
    return str(image_id)


# ---- the whole image ------------------------------------------------------------------------
@contextlib.contextmanager
def _lock(profile: str) -> Iterator[None]:
    path = cache_root() / "image" / f"{profile}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def tag_names(tags: list[str] | None, profile: str) -> list[str]:
    names = [t.replace("{profile}", profile) for t in (tags or [DEFAULT_TAG])]
    return [n if ":" in n.rsplit("/", 1)[-1] else f"{n}:{profile}" for n in names]


def _tag(client: docker.DockerClient, image_id: str, names: list[str]) -> None:
    for name in names:
        repo, tag = name.rsplit(":", 1)
        client.api.tag(image_id, repo, tag, force=True)


def _drop_replaced(client: docker.DockerClient, image_id: str, repo: str, profile: str) -> None:
    """Remove the image a new build replaced when nothing but its own id tag names it any more
    (an image also tagged otherwise, e.g. grader:6.1-2025s, is the course's and stays)."""
    import docker

    with contextlib.suppress(docker.errors.DockerException):
        img = client.images.get(image_id)
        own = f"{repo}:{profile}-{img.labels.get(IMAGE_LABEL, '').split(':')[-1][:12]}"
        if set(img.tags) <= {own}:
            client.images.remove(image_id, force=False)


def build_image(profile_name: str = DEFAULT_PROFILE, tags: list[str] | None = None,
                progress: Progress = _stderr) -> ImageResult:
    """The image of one profile, made unless one with the same inputs exists (then tagged)."""
    import docker

    from grader import session
    from grader.provision import connect

    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    env = session.prepare(profile_name, progress=progress)  # provisions the host's cache if needed
    client = connect(timeout=1800)
    profile, kernel = env.profile, env.kernel
    names = tag_names(tags, profile.name)
    seconds["prepare"] = time.monotonic() - t0
    with _lock(profile.name):
        t0 = time.monotonic()
        env_image, dt = ensure_env_image(client, profile, kernel, progress)
        seconds["base root"] = time.monotonic() - t0 - dt
        seconds["environment layer"] = dt
        t0 = time.monotonic()
        work = cache_root() / "image" / profile.name
        src = copy_sources(work / "context" / "src")
        h = hashlib.sha256(f"{RECIPE}\0{env_image}\0{tree_digest(src)}\0".encode())
        h.update("\n".join(pinned_requirements()).encode())
        inputs = h.hexdigest()
        found = client.images.list(filters={"label": f"{INPUTS_LABEL}={inputs}"})
        if found:
            img = found[0]
            _tag(client, img.id, names)
            seconds["grader layer"] = time.monotonic() - t0
            return ImageResult(profile.name, names, img.id, img.labels.get(IMAGE_LABEL, ""),
                               int(img.attrs.get("Size", 0)), True, inputs, seconds)
        make_wheels(src, work / "context" / "wheels", progress)
        (work / "context" / "Dockerfile").write_text(dockerfile(env_image, profile))
        seconds["wheels"] = time.monotonic() - t0
        t0 = time.monotonic()
        progress("image: adding the grader and running `grader setup` in it (no network)")
        content = _docker_build(client, progress, path=str(work / "context"))
        seconds["grader layer"] = time.monotonic() - t0
        t0 = time.monotonic()
        labels = {INPUTS_LABEL: inputs, IMAGE_LABEL: content, LABEL + "profile": profile.name,
                  LABEL + "kernel": f"{kernel.release} ({kernel.version})",
                  LABEL + "grader-version": __version__}
        stamp = f"FROM {content}\nENV GRADER_IMAGE={content}\n"
        final = _docker_build(client, progress, fileobj=io.BytesIO(stamp.encode()),
                              labels=labels)
        old = None
        with contextlib.suppress(docker.errors.ImageNotFound):
            old = client.images.get(names[0]).id
        repo = names[0].rsplit(":", 1)[0]
        _tag(client, final, [*names, f"{repo}:{profile.name}-{content.split(':')[-1][:12]}"])
        seconds["stamp"] = time.monotonic() - t0
        if old and old != final:
            _drop_replaced(client, old, repo, profile.name)
        size = int(client.images.get(final).attrs.get("Size", 0))
        shutil.rmtree(work / "context", ignore_errors=True)
    return ImageResult(profile.name, names, final, content, size, False, inputs, seconds)


# ---- command line ---------------------------------------------------------------------------
DESCRIPTION = """\
Makes one self-contained Docker image per kernel profile: the grader of this checkout, the
profile's kernel and build root exactly as provisioned in the cache (one exact kernel release),
QEMU (TCG when the container has no /dev/kvm) and the guest image. Built from local files: no
registry is needed (the base is a debootstrapped root brought in with `docker import`; the
grader's dependencies come from PyPI or pip's cache once). Inside, `grader run` and `grader
batch` need no download and no privileges; every report's stamp names the image.
"""

EPILOG = """\
examples:
  grader image build                          grader:6.1
  grader image build --profile 5.10 --tag registry.example.edu/os/grader:5.10-2025s
  grader image build --all --tag grader:{profile}-2025s
  docker save grader:6.1 | gzip > grader-6.1.tar.gz       move it; `docker load` on the runner
  docker run --rm -v "$PWD:/work" -w /work grader:6.1 /opt/grader/ci/grade.sh
"""


def cmd_build(args: argparse.Namespace) -> int:
    profiles = available_profiles() if args.all else (args.profile or [DEFAULT_PROFILE])
    for name in profiles:
        r = build_image(name, args.tag)
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items())
        print(f"image {', '.join(r.tags)}: {r.image_id} ({r.size_bytes / 1e9:.2f} GB), "
              f"{'unchanged, tagged again' if r.reused else 'built'} in {r.total_s:.1f} s "
              f"({steps})")
        print(f"  reports made in it are stamped image={r.stamped}")
        print(f"  move it: docker save {r.tags[0]} | gzip > grader-{name}.tar.gz")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from grader.provision import connect

    img = connect().images.get(args.image)
    info = {"id": img.id, "tags": img.tags, "size_bytes": img.attrs.get("Size"),
            **{k.removeprefix(LABEL): v for k, v in (img.labels or {}).items()
               if k.startswith(LABEL)}}
    print(json.dumps(info, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("image", help="a self-contained Docker image per kernel profile (for CI)",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="image_cmd", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="make the image of a profile (idempotent)",
                           description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--profile", "-p", action="append", metavar="NAME",
                   help=f"kernel profile (repeatable; one of {', '.join(available_profiles())}; "
                        f"default {DEFAULT_PROFILE})")
    b.add_argument("--all", action="store_true", help="one image per profile in vm-images/")
    b.add_argument("--tag", "-t", action="append", metavar="NAME[:TAG]",
                   help="name the image (repeatable; '{profile}' is replaced; a name without "
                        "a tag gets the profile's name; default grader:{profile})")
    b.set_defaults(func=cmd_build)
    i = actions.add_parser("inspect", help="what an image holds: profile, kernel, stamped id",
                           epilog="example:\n  grader image inspect grader:6.1\n",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("image", help="an image name or id")
    i.set_defaults(func=cmd_inspect)
