"""Kernel profiles: the small TOML files under vm-images/, loaded into frozen dataclasses."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from grader.errors import ConfigError

DEFAULT_PROFILE = "6.1"


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
            image_package=d["image_package"],
            headers_package=d["headers_package"],
            pin=d.get("pin", ""),
            cmdline=tuple(d["cmdline"]),
            memory_mib=int(d.get("memory_mib", 512)),
            cpus=int(d.get("cpus", 1)),
            path=path,
        )
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"kernel profile {path} is invalid: {e!r}") from e
