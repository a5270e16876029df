"""Kernel profiles: the small TOML files under vm-images/, loaded into frozen dataclasses."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import ConfigError

# The profile used when none is named; an image made by `grader image build` sets it to its own.
DEFAULT_PROFILE = os.environ.get("GRADER_PROFILE") or "6.1"


def project_root() -> Path:
    """The directory holding vm-images/, rubrics/ and reference/ (the repository)."""
    env = os.environ.get("GRADER_HOME")
    return Path(env) if env else Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    env = os.environ.get("GRADER_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "grader"


@dataclass(frozen=True)
class Clock:
    """How a guest keeps time. "warped": one vCPU and QEMU's -icount with sleep=off, so that
    idle guest time passes at no wall cost (slow samplers, long histories); "realtime": several
    vCPUs on the wall clock (races need real parallelism)."""

    name: str
    cpus: int
    icount: str = ""  # QEMU -icount argument, e.g. "shift=4,sleep=off"; "" for none

    @property
    def warped(self) -> bool:
        return bool(self.icount)


DEFAULT_CLOCKS = {
    "warped": {"cpus": 1, "icount": "shift=4,sleep=off"},
    "realtime": {"cpus": 2},
}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    build_suite: str
    apt_sources: tuple[str, ...]
    image_package: str
    headers_package: str
    pin: str
    cmdline: tuple[str, ...]
    memory_mib: int
    cpus: int
    path: Path
    # A kernel built from source (grader/kernel_build.py) instead of Debian's binary packages:
    # the source package, the configuration fragment under vm-images/ applied on top of
    # tinyconfig, and the expected number of build steps (the progress bar's first estimate).
    source_package: str = ""
    config_fragment: str = ""
    build_steps: int = 0
    clocks: dict[str, Clock] = field(default_factory=dict, hash=False, compare=False)

    @property
    def from_source(self) -> bool:
        return bool(self.source_package)

    def clock(self, name: str) -> Clock:
        if name not in self.clocks:
            raise ConfigError(f"profile {self.name} has no clock {name!r}; "
                              f"valid: {', '.join(sorted(self.clocks))}")
        return self.clocks[name]

    @property
    def cache_dir(self) -> Path:
        return cache_root() / "kernels" / self.name


def profile_dir() -> Path:
    return project_root() / "vm-images"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.toml"))


def load_profile(name: str | None = None) -> Profile:
    """Load a profile by name; an unknown name fails with the list of valid ones."""
    name = name or DEFAULT_PROFILE
    path = profile_dir() / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(
            f"unknown kernel profile {name!r}; valid profiles: {', '.join(available_profiles())}"
        )
    try:
        d = tomllib.loads(path.read_text())
        return Profile(
            name=d["name"],
            description=d.get("description", ""),
            build_suite=d["build_suite"],
            apt_sources=tuple(d["apt_sources"]),
            image_package=d.get("image_package", "") if d.get("source_package") else d["image_package"],
            headers_package=d.get("headers_package", "") if d.get("source_package") else d["headers_package"],
            pin=d.get("pin", ""),
            cmdline=tuple(d["cmdline"]),
            memory_mib=int(d.get("memory_mib", 512)),
            cpus=int(d.get("cpus", 1)),
            path=path,
            source_package=d.get("source_package", ""),
            config_fragment=d.get("config_fragment", ""),
            build_steps=int(d.get("build_steps", 0)),
            clocks={
                n: Clock(n, int(c.get("cpus", 1)), str(c.get("icount", "")))
                for n, c in {**DEFAULT_CLOCKS, **d.get("clocks", {})}.items()
            },
        )
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"kernel profile {path} is invalid: {e!r}") from e
