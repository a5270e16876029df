"""Guest image: a newc cpio initramfs of busybox-static, our static helpers and /init."""
from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from grader.errors import EnvironmentProblem

GUEST_SRC = Path(__file__).resolve().parent / "guest_image"
HELPERS = ("agent", "burn", "memhog", "readloop", "rtrun")
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, no leading slash
    mode: int  # full st_mode (type and permissions)
    data: bytes = b""


def _dir(path: str) -> Entry:
    return Entry(path, 0o040755)


def _file(path: str, data: bytes, mode: int = 0o755) -> Entry:
    return Entry(path, 0o100000 | mode, data)


def cpio_newc(entries: list[Entry]) -> bytes:
    """Serialise entries in the 'newc' format the kernel unpacks (see the kernel's
    Documentation/driver-api/early-userspace/buffer-format.rst). Deterministic: no mtimes."""
    out = io.BytesIO()

    def pad4() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, e in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = e.path.encode() + b"\0"
        fields = [ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, 0, 0, len(name), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name)
        pad4()
        out.write(e.data)
        pad4()
    return out.getvalue()


def compile_helpers(outdir: Path) -> dict[str, Path]:
    """Compile the guest helpers statically with the host gcc (they run in the guest only)."""
    outdir.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which("gcc")
    if not gcc:
        raise EnvironmentProblem("gcc is missing: apt-get install -y gcc libc6-dev")
    built = {}
    for name in HELPERS:
        out = outdir / name
        cmd = [gcc, "-static", "-O2", "-Wall", "-o", str(out), str(GUEST_SRC / f"{name}.c")]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise EnvironmentProblem(
                f"could not compile the guest helper {name} ({' '.join(cmd)}):\n{p.stderr}\n"
                "a static libc is needed: apt-get install -y libc6-dev"
            )
        built[name] = out
    return built


def source_digest() -> str:
    """Digest of everything that goes into the base image, to name it in the cache."""
    h = hashlib.sha256()
    for name in (*HELPERS, "init"):
        src = GUEST_SRC / (name if name == "init" else f"{name}.c")
        h.update(name.encode() + b"\0" + src.read_bytes())
    if BUSYBOX.exists():
        h.update(BUSYBOX.read_bytes())
    return h.hexdigest()[:16]


def build_base(cache: Path) -> Path:
    """Build (once) the base initramfs: busybox, helpers, /init. Returns its path."""
    if not BUSYBOX.exists():
        raise EnvironmentProblem(
            f"{BUSYBOX} is missing: apt-get install -y busybox-static"
        )
    digest = source_digest()
    target = cache / "initramfs" / f"base-{digest}.cpio.gz"
    if target.exists():
        return target
    helpers = compile_helpers(cache / "initramfs" / f"helpers-{digest}")
    entries = [_dir(d) for d in ("bin", "dev", "proc", "sys", "tmp", "mod", "root", "etc")]
    entries.append(_file("bin/busybox", BUSYBOX.read_bytes()))
    entries += [_file(f"bin/{n}", p.read_bytes()) for n, p in helpers.items()]
    entries.append(_file("init", (GUEST_SRC / "init").read_bytes()))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    # Level 1: the kernel decompresses it at every boot; size matters less than speed.
    tmp.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=1, mtime=0))
    tmp.rename(target)
    return target


def with_files(base: Path, files: dict[str, bytes], out: Path) -> Path:
    """Append an uncompressed cpio holding `files` (archive path -> bytes) to the base image.

    The kernel unpacks concatenated archives in order, so nothing of the base image is rebuilt
    and nothing travels through the slow serial port."""
    dirs = sorted({str(p) for n in files for p in Path(n).parents} - {"."})
    extra = cpio_newc([*(_dir(d) for d in dirs),
                       *(_file(n, data, 0o644) for n, data in files.items())])
    head = base.read_bytes()
    with open(out, "wb") as f:
        f.write(head)
        # The kernel looks for the next archive's header at a 4-byte boundary; zeros are skipped.
        f.write(b"\0" * (-len(head) % 4))
        f.write(extra)
    return out


def with_modules(base: Path, modules: dict[str, bytes], out: Path) -> Path:
    """The base image with /mod/<name> files (a cold-booted guest's modules)."""
    return with_files(base, {f"mod/{name}": data for name, data in modules.items()}, out)


def payload(files: dict[str, bytes], out: Path) -> Path:
    """A newc cpio of `files` (name -> bytes) that a restored guest unpacks into /mod."""
    out.write_bytes(cpio_newc([_file(n, data, 0o644) for n, data in files.items()]))
    return out
