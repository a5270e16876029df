"""Where the untrusted parts run: the module's build and the QEMU guest. One small class,
chosen by name: `host` (bubblewrap + a QEMU child process, the default, needs no container
engine) or `docker` (both inside containers made from the same root filesystems)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.errors import ConfigError

if TYPE_CHECKING:
    from grader.build import BuildRequest, BuildResult
    from grader.guest import Launcher
    from grader.profiles import Profile
    from grader.provision import Kernel


class Backend:
    """prepare() once, then build() and launcher() as often as needed, cleanup() at the end."""

    name = "host"

    def prepare(self, profile: Profile, kernel: Kernel) -> None:
        """Make sure what this backend needs exists (images, engine); idempotent."""

    def build(self, req: BuildRequest, profile: Profile, kernel: Kernel) -> BuildResult:
        from grader.build import build_module

        return build_module(req, profile, kernel)

    def launcher(self) -> Launcher:
        from grader.guest import host_launcher

        return host_launcher

    def cleanup(self) -> None:
        """Remove whatever this backend left running (containers); never raises."""


BACKENDS: dict[str, str] = {"host": "grader.backends:Backend",
                            "docker": "grader.docker_backend:DockerBackend"}


def get_backend(name: str = "host") -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    import importlib

    mod, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(mod), cls)()  # type: ignore[no-any-return]
