"""Kernel profiles built from source: Debian's linux-source package, tinyconfig plus a fragment.

A profile with `source_package` (vm-images/debug.toml) is not unpacked from Debian's binary
packages: `grader setup` downloads the kernel source with the profile's private apt state (like
the other profiles), configures it as `make tinyconfig` plus the profile's fragment (a data file
under vm-images/), and builds it inside the profile's Debian build root (bubblewrap, no network,
the profile's own gcc). The finished tree is shaped like the unpacked Debian packages, so that the
module build and the guest use it unchanged (see provision.Kernel):

    kernels/<profile>/resolved.json                      the stamp: versions, key, timings
    kernels/<profile>/<release>/boot/vmlinuz-<release>   the bzImage
    kernels/<profile>/<release>/usr/src/linux-<version>  the configured, built tree: Kbuild for
                                                         external modules (headers and kbuild)
    kernels/<profile>/<release>/lib/modules/<release>/   `make modules_install` (qemu_fw_cfg.ko)

The build is keyed by a digest of the source version and the fragment: the release is
`<kernelversion><CONFIG_LOCALVERSION>-<key>`, so a report's kernel release names the exact
configuration, and a changed fragment builds a new tree (the old one is removed afterwards).
The tree is built in place, at the very path the module-build sandbox later mounts it at
(/usr/src/linux-<version>), so nothing in it refers to a host path.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from grader import provision
from grader.errors import ConfigError, EnvironmentProblem
from grader.profiles import Profile, cache_root, profile_dir

Progress = Callable[[str], None]

# What building a kernel needs in the build root, besides provision.ROOT_PACKAGES (gcc, make,
# libc6-dev, libelf-dev for objtool): the Kconfig parser's generators, bc for timeconst.h,
# libssl-dev for the certificate tools, cpio for the initramfs rules.
KERNEL_BUILD_PACKAGES = ("flex", "bison", "bc", "libssl-dev", "cpio")
# Bumped when the recipe below changes in a way that changes the built kernel.
RECIPE = "1"
BUILD_TIMEOUT_S = 3600
# Quiet Kbuild prints one "  CC      path" line per step: they drive the progress bar.
_STEP = re.compile(r"^\s{2}([A-Z][A-Z0-9_]*(?: \[M\])?)\s+(\S+)")
_CONFIG_LINE = re.compile(r"^(CONFIG_\w+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_\w+) is not set$")


def parse_config(text: str) -> dict[str, str]:
    """CONFIG_X -> value of a .config or fragment; 'n' for '# CONFIG_X is not set'."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _CONFIG_LINE.match(line):
            values[m[1]] = m[2]
        elif m := _NOT_SET.match(line):
            values[m[1]] = "n"
    return values


def dropped_options(fragment: dict[str, str], config: dict[str, str]) -> list[str]:
    """The fragment's values that the final .config does not have (Kconfig dropped them:
    usually a dependency the fragment does not enable)."""
    return [f"{k}={v} (final .config: {config.get(k, 'n')})"
            for k, v in fragment.items() if config.get(k, "n") != v]


def fragment_path(profile: Profile) -> Path:
    path = profile_dir() / profile.config_fragment
    if not path.is_file():
        raise ConfigError(f"kernel profile {profile.name}: configuration fragment {path} is missing")
    return path


def build_key(source_version: str, fragment_text: str) -> str:
    """What the built kernel depends on, as 10 hex digits (the cache key, part of the release):
    the recipe, the source version and the fragment's values (its comments and order do not
    matter: editing an explanation does not rebuild the kernel)."""
    values = parse_config(fragment_text)
    canonical = "\n".join(f"{k}={values[k]}" for k in sorted(values))
    h = hashlib.sha256()
    for part in (RECIPE, source_version, canonical):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:10]


def stamp_path(profile: Profile) -> Path:
    return profile.cache_dir / "resolved.json"


def current(profile: Profile) -> dict[str, object] | None:
    """The stamp of the profile's built kernel if it matches the fragment as it is now."""
    try:
        d = json.loads(stamp_path(profile).read_text())
    except (OSError, ValueError):
        return None
    if d.get("key") != build_key(str(d.get("version")), fragment_path(profile).read_text()):
        return None
    if not (profile.cache_dir / str(d.get("tree")) / str(d.get("vmlinuz"))).is_file():
        return None
    return d


@contextlib.contextmanager
def _locked(profile: Profile) -> Iterator[None]:
    """One builder per profile at a time (two `grader setup` at once wait for each other)."""
    profile.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(profile.cache_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- the source ------------------------------------------------------------------------------
def download_source(profile: Profile, *, refresh: bool, progress: Progress) -> tuple[str, Path]:
    """(Debian version, path of the .deb) of the profile's source package. The .deb is kept in
    the profile's apt state: a changed fragment rebuilds without downloading again."""
    adir = cache_root() / "apt" / profile.name
    debs = adir / "debs"
    old = json.loads(stamp_path(profile).read_text()) if stamp_path(profile).exists() else {}
    if not refresh and old.get("version"):
        kept = debs / f"{profile.source_package}_{old['version']}_all.deb"
        if kept.is_file():
            return str(old["version"]), kept
    for sub in ("lists/partial", "cache/archives/partial"):
        (adir / sub).mkdir(parents=True, exist_ok=True)
    (adir / "sources.list").write_text(provision._sources(profile))
    opts = provision._apt_opts(adir)
    progress(f"{profile.name}: resolving {profile.source_package} in {profile.build_suite}")
    provision._run(["apt-get", *opts, "update", "-q"], what="apt-get update (profile archive)")
    version, _ = provision._depends(opts, profile.source_package)
    if profile.pin and not version.startswith(profile.pin):
        raise EnvironmentProblem(f"profile {profile.name} is pinned to {profile.pin} but the "
                                 f"archive now offers {profile.source_package} {version}")
    deb = debs / f"{profile.source_package}_{version}_all.deb"
    if not deb.is_file():
        progress(f"{profile.name}: downloading {profile.source_package} {version} (about 140 MB)")
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir(parents=True)
        provision._run(["apt-get", *opts, "download", f"{profile.source_package}={version}"],
                       what="apt-get download", cwd=debs)
        found = sorted(debs.glob(f"{profile.source_package}_*.deb"))
        if not found:
            raise EnvironmentProblem(f"apt-get download left no {profile.source_package} .deb in {debs}")
        found[0].rename(deb)
    return version, deb


def unpack_source(deb: Path, dest: Path) -> None:
    """The kernel tree of a linux-source .deb (a tarball inside the package) as `dest`."""
    scratch = dest.with_name(dest.name + ".deb")
    shutil.rmtree(scratch, ignore_errors=True)
    _run_checked(["dpkg-deb", "-x", str(deb), str(scratch)], "unpacking the source package")
    tarballs = sorted((scratch / "usr/src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise EnvironmentProblem(f"{deb.name} holds no usr/src/linux-source-*.tar.*")
    into = dest.parent / (dest.name + ".x")
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    _run_checked(["tar", "-xf", str(tarballs[0]), "-C", str(into)], "unpacking the kernel source")
    tops = list(into.iterdir())
    if len(tops) != 1 or not (tops[0] / "Makefile").is_file():
        raise EnvironmentProblem(f"unexpected layout of {tarballs[0].name}: {[t.name for t in tops]}")
    shutil.rmtree(dest, ignore_errors=True)
    tops[0].rename(dest)
    shutil.rmtree(into, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)


def _run_checked(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise EnvironmentProblem(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n"
                                 f"{p.stderr.strip()[-2000:]}")


# ---- the sandbox -----------------------------------------------------------------------------
def sandbox(root: Path, tree: Path, src_rel: str, argv: list[str], *,
            env: dict[str, str] | None = None) -> list[str]:
    """bwrap running `argv` in the kernel source, inside the build root: no network, the root
    read-only, only the tree writable, mounted where the module build mounts it later."""
    for p in ("usr/src", "out"):
        (root / p).mkdir(parents=True, exist_ok=True)
    cmd = ["bwrap", "--ro-bind", str(root), "/",
           "--bind", str(tree / "usr/src"), "/usr/src",
           "--bind", str(tree), "/out",
           "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
           "--unshare-all", "--die-with-parent", "--new-session",
           "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
           "--setenv", "LC_ALL", "C.UTF-8"]
    for k, v in (env or {}).items():
        cmd += ["--setenv", k, v]
    return [*cmd, "--chdir", f"/{src_rel}", *argv]


def _make(root: Path, tree: Path, src_rel: str, args: list[str], log: Path, what: str,
          on_line: Callable[[str], None] | None = None, timeout: float = BUILD_TIMEOUT_S) -> None:
    cmd = sandbox(root, tree, src_rel, ["make", *args])
    with open(log, "a") as f:
        f.write(f"$ make {' '.join(args)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace",
                                start_new_session=True)
        t0 = time.monotonic()
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                f.write(line)
                if on_line:
                    on_line(line)
                if time.monotonic() - t0 > timeout:
                    proc.kill()
                    raise EnvironmentProblem(f"{what} took more than {timeout:.0f} s; see {log}")
        finally:
            proc.stdout.close()
            rc = proc.wait()
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise EnvironmentProblem(f"{what} failed (exit {rc}); the end of {log}:\n" + "\n".join(tail))


# ---- progress --------------------------------------------------------------------------------
class _Bar:
    """A rich progress bar over the build's steps, estimated from the last build of the profile
    (or the profile's `build_steps`); plain progress lines every quarter when not on a terminal."""

    def __init__(self, profile: Profile, total: int, progress: Progress) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.total = max(total, 1)
        self.done = 0
        self.progress = progress
        self.quarter = 0
        self.bar = Progress(TextColumn(f"[bold]{profile.name} kernel[/]"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[step]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                            disable=not self.console.is_terminal, transient=False)
        self.task = self.bar.add_task("build", total=self.total, step="")

    def __enter__(self) -> _Bar:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def line(self, text: str) -> None:
        m = _STEP.match(text)
        if not m:
            return
        self.done += 1
        if self.done > self.total:
            self.total = self.done + 50
            self.bar.update(self.task, total=self.total)
        self.bar.update(self.task, completed=self.done, step=m[2][-40:])
        if not self.console.is_terminal and self.done * 4 // self.total > self.quarter:
            self.quarter = self.done * 4 // self.total
            self.progress(f"kernel build: {self.done} of about {self.total} steps")


# ---- the build -------------------------------------------------------------------------------
def ensure_source_kernel(profile: Profile, *, refresh: bool = False,
                         progress: Progress | None = None) -> dict:
    """Build the profile's kernel unless the stamp says it is built from this fragment and
    source version; return the stamp (what provision.load_kernel reads)."""
    progress = progress or provision._stderr
    d = current(profile)
    if d is not None and not refresh:
        return d
    with _locked(profile):
        d = current(profile)  # built meanwhile by another setup
        if d is not None and not refresh:
            return d
        version, deb = download_source(profile, refresh=refresh, progress=progress)
        fragment_text = fragment_path(profile).read_text()
        key = build_key(version, fragment_text)
        if d is not None and d.get("key") == key:
            return d  # --refresh found the same source version
        return _build(profile, version, deb, fragment_text, key, progress)


def _build(profile: Profile, version: str, deb: Path, fragment_text: str, key: str,
           progress: Progress) -> dict:
    t0 = time.monotonic()
    root = provision.ensure_root(profile, progress=progress)
    kdir = profile.cache_dir
    work = kdir / f"build-{key}"
    shutil.rmtree(work, ignore_errors=True)
    src_rel = f"usr/src/linux-{version}"
    (work / "usr/src").mkdir(parents=True)
    log = kdir / f"build-{key}.log"
    log.write_text(f"# {profile.source_package} {version}, fragment {profile.config_fragment}, "
                   f"key {key}\n")
    progress(f"{profile.name}: unpacking {deb.name}")
    unpack_source(deb, work / src_rel)
    t_unpack = time.monotonic() - t0

    # Configure: tinyconfig, then the fragment on top, then every dependency resolved.
    local = f"LOCALVERSION=-{key}"
    _make(root, work, src_rel, ["-s", local, "tinyconfig"], log, "make tinyconfig")
    cfg = work / src_rel / ".config"
    cfg.write_text(cfg.read_text() + f"\n# {profile.config_fragment}\n" + fragment_text)
    _make(root, work, src_rel, ["-s", local, "olddefconfig"], log, "make olddefconfig")
    dropped = dropped_options(parse_config(fragment_text), parse_config(cfg.read_text()))
    if dropped:
        raise ConfigError(f"{fragment_path(profile)}: Kconfig dropped {len(dropped)} value(s) "
                          "(a dependency is not enabled; add it to the fragment): "
                          + "; ".join(dropped))
    t_config = time.monotonic() - t0 - t_unpack

    jobs = str(os.cpu_count() or 2)
    progress(f"{profile.name}: building Linux {version} with {profile.config_fragment} "
             f"(-j{jobs}; about 4 minutes on 2 cores)")
    steps = _expected_steps(profile)
    with _Bar(profile, steps, progress) as bar:
        _make(root, work, src_rel, [f"-j{jobs}", local, "bzImage", "modules"], log,
              "the kernel build", on_line=bar.line)
        _make(root, work, src_rel, [local, "INSTALL_MOD_PATH=/out", "modules_install"], log,
              "make modules_install", on_line=bar.line)
        done = bar.done
    t_build = time.monotonic() - t0 - t_unpack - t_config
    release = (work / src_rel / "include/config/kernel.release").read_text().strip()
    vmlinuz = f"boot/vmlinuz-{release}"
    (work / "boot").mkdir()
    shutil.copyfile(work / src_rel / "arch/x86/boot/bzImage", work / vmlinuz)
    shutil.copyfile(cfg, work / f"boot/config-{release}")
    freed = _prune(work / src_rel)

    tree = kdir / release
    shutil.rmtree(tree, ignore_errors=True)
    work.rename(tree)
    d = {
        "release": release, "version": version, "tree": release, "vmlinuz": vmlinuz,
        "headers_dir": src_rel, "kbuild_dir": src_rel,
        "image": profile.source_package, "source_package": profile.source_package,
        "packages": [f"{profile.source_package}={version}"],
        "fragment": profile.config_fragment,
        "fragment_sha256": hashlib.sha256(fragment_text.encode()).hexdigest(),
        "key": key, "build_steps": done, "pruned_mib": freed >> 20,
        "seconds": {"unpack": round(t_unpack, 1), "configure": round(t_config, 1),
                    "build": round(t_build, 1), "total": round(time.monotonic() - t0, 1)},
    }
    tmp = stamp_path(profile).with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=2))
    tmp.rename(stamp_path(profile))
    for old in kdir.iterdir():  # earlier builds of other fragments or versions
        if old.is_dir() and old.name != release:
            shutil.rmtree(old, ignore_errors=True)
    for old in kdir.glob("build-*.log"):
        if old != log:
            old.unlink()
    progress(f"{profile.name}: kernel {release} built in {d['seconds']['total']:.0f} s "
             f"(build {t_build:.0f} s, {done} steps); log {log}")
    return d


def _expected_steps(profile: Profile) -> int:
    try:
        return int(json.loads(stamp_path(profile).read_text())["build_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return profile.build_steps or 1500


# Object files and archives are not needed to build external modules against the tree; the
# host programs (scripts/, tools/objtool), the headers, .config, Module.symvers and the
# generated files are.
_PRUNE_SUFFIXES = (".o", ".a", ".o.cmd", ".a.cmd")
_PRUNE_NAMES = ("vmlinux", "vmlinux.o", "vmlinux.a", ".tmp_vmlinux.kallsyms1",
                ".tmp_vmlinux.kallsyms2", ".tmp_vmlinux.btf")


def _prune(src: Path) -> int:
    """Delete what external module builds never read; returns the bytes freed."""
    freed = 0
    for dirpath, _, files in os.walk(src):
        top = Path(dirpath).relative_to(src).parts[:1]
        if top and top[0] in ("scripts", "tools"):
            continue
        for name in files:
            if name.endswith(_PRUNE_SUFFIXES) or name in _PRUNE_NAMES:
                p = Path(dirpath) / name
                freed += p.lstat().st_size
                p.unlink()
    return freed


def main() -> None:  # pragma: no cover - a debugging aid: python -m grader.kernel_build debug
    from grader.profiles import load_profile

    d = ensure_source_kernel(load_profile(sys.argv[1] if len(sys.argv) > 1 else "debug"))
    print(json.dumps(d, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
