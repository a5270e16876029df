"""Intake stage: take a submission (archive, folder, .c or .ko) safely into a work directory."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from grader.errors import SubmissionError
from grader.kbuild import KbuildInfo, parse_kbuild
from grader.limits import DEFAULT as LIMITS
from grader.limits import Limits

ACCEPTED = (
    "accepted: .tar, .tar.gz/.tgz, .tar.xz, .tar.bz2, .zip, a directory, "
    "a single .c file, or a prebuilt .ko"
)

SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "CVS", "__MACOSX", ".tmp_versions"})
# Never copied into the work tree: a stale .o or .cmd could make kbuild skip compiling the
# student's sources and link an object we did not build.
BUILD_OUTPUTS = (
    "*.o",
    "*.ko",
    "*.cmd",
    "*.mod",
    "*.mod.c",
    "*.mod.o",
    "*.a",
    "*.dwo",
    "Module.symvers",
    "modules.order",
    "Module.markers",
)
JUNK = ("._*", ".DS_Store", "Thumbs.db", "*~", "#*#", ".#*", "*.swp", "*.swo", "*.bak", "*.orig")
KBUILD_FILES = ("Kbuild", "Makefile", "makefile")

# Formats we do not take, named in the refusal so the student knows what to resend.
_FOREIGN = {
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
    b"\x28\xb5\x2f\xfd": "a zstd-compressed file",
    b"%PDF": "a PDF document",
}
_COMPRESSED_TAR = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")

_MODULE_INIT = re.compile(r"\bmodule_init\s*\(")
_USERSPACE = re.compile(
    r"\bint\s+main\s*\(|^\s*#\s*include\s*<(?:stdio|stdlib|unistd|pthread|sys/\w+)\.h>",
    re.MULTILINE,
)
_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)


@dataclass(frozen=True)
class Submission:
    """A submission taken in: where its module sources are and what they build."""

    kind: Literal["source", "ko"]
    root: Path  # directory holding the module sources (or the .ko), inside workdir
    module_name: str
    objects: list[str]  # object files relative to root, in link order
    sources: list[Path]
    headers: list[Path]
    ko: Path | None
    digest: str  # sha256 of the original input
    notes: list[str] = field(default_factory=list)


def intake(
    path: Path,
    workdir: Path,
    *,
    module_name: str | None = None,
    limits: Limits = LIMITS,
) -> Submission:
    """Copy or unpack `path` into `workdir/src` (replaced if present) and locate the module.

    Raises SubmissionError when the input is not accepted, unsafe, too large, or holds no module.
    """
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"{path}: no such file or directory")
    dest = Path(workdir) / "src"
    if path.resolve().is_relative_to(dest.resolve()):
        raise ValueError(f"the submission {path} lies inside the tree intake replaces")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    if path.is_dir():
        entries = _scan_directory(path, skip=Path(workdir).resolve())
        digest = _digest_entries(entries)
        _copy_entries(entries, dest, limits)
        return _locate(dest, digest, module_name, [f"directory {path.name} copied"])

    # An archive can hold at most max_total_bytes of content plus per-member headers.
    if path.stat().st_size > limits.max_total_bytes + limits.max_files * 4096:
        raise SubmissionError(f"{path.name}: the file is too large ({path.stat().st_size} bytes)")
    digest = _file_digest(path)
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith(b"\x7fELF"):
        return _take_ko(path, dest, digest, module_name, limits)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")) and zipfile.is_zipfile(path):
        _extract_zip(path, dest, limits)
        return _locate(dest, digest, module_name, ["zip archive extracted"])
    if head.startswith(_COMPRESSED_TAR) or tarfile.is_tarfile(path):
        _extract_tar(path, dest, limits)
        return _locate(dest, digest, module_name, ["tar archive extracted"])
    for magic, what in _FOREIGN.items():
        if head.startswith(magic):
            raise SubmissionError(f"{path.name} is {what}, which is not accepted; {ACCEPTED}")
    if path.suffix == ".c":
        if path.stat().st_size > limits.max_file_bytes:
            raise SubmissionError(f"{path.name}: file larger than {limits.max_file_bytes} bytes")
        shutil.copyfile(path, dest / path.name)
        return _locate(dest, digest, module_name, ["single C file"])
    if path.suffix == ".ko":
        raise SubmissionError(f"{path.name} is not an ELF file, so not a kernel module")
    raise SubmissionError(f"{path.name}: not a recognised submission; {ACCEPTED}")


# --- safety -------------------------------------------------------------------------------


def _safe_name(name: str) -> PurePosixPath | None:
    """The member's path relative to the destination; None for the archive's root entry."""
    # Windows zip tools sometimes write backslashes; treat them as separators so that
    # `..\..\x` cannot hide.
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"[A-Za-z]:", norm):
        raise _refused(name, "has an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refused(name, "contains '..'")
    return PurePosixPath(*parts) if parts else None


def _refused(name: str, why: str) -> SubmissionError:
    return SubmissionError(f"{name!r} {why}; refused")


def _check_type(name: str, kind: str) -> None:
    """Only regular files and folders are taken; links are refused whatever they point to."""
    if kind == "link":
        raise _refused(name, "is a link (links are not accepted)")
    if kind != "file" and kind != "dir":
        raise _refused(name, "is a device file, fifo or socket")


def _skipped(rel: PurePosixPath) -> bool:
    """Junk (VCS, macOS, editor backups) and build outputs are not taken in."""
    if any(p in SKIPPED_DIRS for p in rel.parts):
        return True
    return any(fnmatch.fnmatchcase(rel.name, pat) for pat in JUNK + BUILD_OUTPUTS)


class _Budget:
    """Counts files and bytes against the limits, on declared sizes and on bytes written."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files = 0
        self.total = 0  # as declared
        self.written = 0  # as actually read

    def declare(self, name: str, size: int) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise SubmissionError(f"more than {self.limits.max_files} files or folders; refused")
        self._size(name, size)
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise SubmissionError(
                f"content larger than {self.limits.max_total_bytes} bytes in all (at {name!r})"
            )

    def _size(self, name: str, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise SubmissionError(f"{name!r} is larger than {self.limits.max_file_bytes} bytes")

    def write(self, name: str, src: IO[bytes], target: Path) -> None:
        """Copy `src` to `target`, counting actual bytes: archives may lie about sizes."""
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with target.open("wb") as out:
            while chunk := src.read(64 * 1024):
                written += len(chunk)
                self._size(name, written)
                self.written += len(chunk)
                if self.written > self.limits.max_total_bytes:
                    raise SubmissionError(
                        f"content larger than {self.limits.max_total_bytes} bytes in all"
                    )
                out.write(chunk)


def _inside(dest: Path, rel: PurePosixPath) -> Path:
    target = dest / rel
    if not target.resolve().is_relative_to(dest.resolve()):
        raise SubmissionError(f"archive member {str(rel)!r} would land outside the tree; refused")
    return target


def _extract_tar(path: Path, dest: Path, limits: Limits) -> None:
    budget = _Budget(limits)
    todo: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    try:
        with tarfile.open(path, "r:*") as tf:
            # Iterate lazily so an archive with millions of headers stops at the limit.
            for m in tf:
                rel = _safe_name(m.name)
                link = m.issym() or m.islnk()
                _check_type(
                    m.name,
                    "link" if link else "file" if m.isreg() else "dir" if m.isdir() else "other",
                )
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own checks
                    try:
                        tarfile.data_filter(m, str(dest))
                    except tarfile.FilterError as e:
                        raise _refused(m.name, f"by the tar data filter ({e})") from e
                budget.declare(m.name, m.size if m.isreg() else 0)
                if rel is not None and m.isreg() and not _skipped(rel):
                    todo.append((m, rel))
            for m, rel in todo:
                src = tf.extractfile(m)
                assert src is not None  # regular members always have a file object
                _write_member(budget, m.name, src, dest, rel)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise SubmissionError(f"{path.name}: damaged or unreadable tar archive ({e})") from e


def _extract_zip(path: Path, dest: Path, limits: Limits) -> None:
    budget = _Budget(limits)
    try:
        with zipfile.ZipFile(path) as zf:
            todo: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
            for info in zf.infolist():
                rel = _safe_name(info.filename)
                _check_type(info.filename, _mode_kind(info.external_attr >> 16, info.is_dir()))
                if info.flag_bits & 0x1:
                    raise _refused(info.filename, "is encrypted")
                budget.declare(info.filename, 0 if info.is_dir() else info.file_size)
                if rel is not None and not info.is_dir() and not _skipped(rel):
                    todo.append((info, rel))
            for info, rel in todo:
                with zf.open(info) as src:
                    _write_member(budget, info.filename, src, dest, rel)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError) as e:
        raise SubmissionError(f"{path.name}: damaged or unreadable zip archive ({e})") from e


def _mode_kind(mode: int, is_dir: bool) -> str:
    # Zip files made off Unix carry no file type: those are plain files or folders.
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR):
        return "dir" if is_dir or stat.S_ISDIR(mode) else "file"
    return "other"


def _write_member(
    budget: _Budget, name: str, src: IO[bytes], dest: Path, rel: PurePosixPath
) -> None:
    target = _inside(dest, rel)
    try:
        budget.write(name, src, target)
    except (NotADirectoryError, IsADirectoryError, FileExistsError) as e:
        raise _refused(name, "clashes with another member") from e


def _scan_directory(top: Path, skip: Path | None = None) -> list[tuple[str, Path]]:
    """Files of a directory input, as sorted (relative posix path, path); links are refused."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        keep = []
        for d in dirnames:
            p = base / d
            if d in SKIPPED_DIRS or (skip is not None and p.resolve() == skip):
                continue
            if p.is_symlink():
                _check_type(p.relative_to(top).as_posix(), "link")
            keep.append(d)
        dirnames[:] = sorted(keep)
        for name in filenames:
            p = base / name
            rel = PurePosixPath(p.relative_to(top).as_posix())
            if _skipped(rel):
                continue
            _check_type(rel.as_posix(), _mode_kind(p.lstat().st_mode, False))
            found.append((rel.as_posix(), p))
    return sorted(found)


def _copy_entries(entries: list[tuple[str, Path]], dest: Path, limits: Limits) -> None:
    budget = _Budget(limits)
    for rel, p in entries:
        budget.declare(rel, p.stat().st_size)
        with p.open("rb") as src:
            budget.write(rel, src, dest / rel)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _digest_entries(entries: list[tuple[str, Path]]) -> str:
    # Length-prefixed so that no two different trees can feed the same byte stream.
    h = hashlib.sha256()
    for rel, p in entries:
        data = p.read_bytes()
        h.update(
            b"%d:%s\0%d:" % (len(rel.encode()), rel.encode("utf-8", "surrogateescape"), len(data))
        )
        h.update(data)
    return h.hexdigest()


def directory_digest(path: Path) -> str:
    """Stable digest of a directory input: sorted relative paths and contents, junk skipped."""
    return _digest_entries(_scan_directory(Path(path)))


# --- prebuilt module ----------------------------------------------------------------------


def _take_ko(
    path: Path, dest: Path, digest: str, module_name: str | None, limits: Limits
) -> Submission:
    # A -g build of a module can pass max_file_bytes; the total limit is the meaningful bound.
    if path.stat().st_size > limits.max_total_bytes:
        raise SubmissionError(f"{path.name}: larger than {limits.max_total_bytes} bytes")
    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            if elf["e_type"] != "ET_REL" or not elf.get_section_by_name(
                ".gnu.linkonce.this_module"
            ):
                raise SubmissionError(
                    f"{path.name} is an ELF file but not a linked kernel module (.ko)"
                )
            modinfo = elf.get_section_by_name(".modinfo")
            info = modinfo.data() if modinfo is not None else b""
    except ELFError as e:
        raise SubmissionError(f"{path.name}: damaged ELF file ({e})") from e
    m = re.search(rb"(?:^|\x00)name=([A-Za-z0-9_-]+)\x00", info)
    name = m.group(1).decode() if m else (module_name or path.stem)
    ko = dest / path.name if path.suffix == ".ko" else dest / f"{name}.ko"
    shutil.copyfile(path, ko)
    notes = ["prebuilt .ko: only stages that need no source will run"]
    if not m:
        notes.append(f"no name= in the .ko's .modinfo; module name taken as {name}")
    return Submission("ko", dest, name, [], [], [], ko, digest, notes)


@dataclass
class _Dir:
    path: Path
    kernel_c: list[Path] = field(default_factory=list)  # .c files that are not userspace
    userspace_c: list[Path] = field(default_factory=list)
    init_c: list[Path] = field(default_factory=list)  # those with module_init(
    kbuild: tuple[str, KbuildInfo] | None = None  # (file name, what it says)


def _read_c(p: Path) -> str:
    # French comments are often latin-1: decoding must never fail.
    return _COMMENTS.sub(" ", p.read_text("utf-8", errors="replace"))


def _walk_tree(dest: Path) -> Iterator[Path]:
    for p in sorted(dest.rglob("*")):
        if p.is_file() and not _skipped(PurePosixPath(p.relative_to(dest).as_posix())):
            yield p


def _survey(dest: Path) -> dict[Path, _Dir]:
    dirs: dict[Path, _Dir] = {}
    for p in _walk_tree(dest):
        d = dirs.setdefault(p.parent, _Dir(p.parent))
        if p.suffix == ".c":
            text = _read_c(p)
            if _MODULE_INIT.search(text):
                d.init_c.append(p)
                d.kernel_c.append(p)
            elif _USERSPACE.search(text):
                d.userspace_c.append(p)
            else:
                d.kernel_c.append(p)
        elif p.name in KBUILD_FILES and d.kbuild is None:
            # Kbuild wins over Makefile, as in kbuild itself; sorted() puts it first.
            info = parse_kbuild(p.read_text("utf-8", errors="replace"))
            if info.modules:
                d.kbuild = (p.name, info)
    return dirs


def _pick(items: list[str], module_name: str | None, what: str, suffix: str = "") -> str:
    """One of several names: the one matching module_name, else taskmonitor, else refuse."""
    if len(items) == 1:
        return items[0]
    for wanted in (module_name, "taskmonitor"):
        if wanted and wanted in items:
            return wanted
    listing = ", ".join(i + suffix for i in items)
    raise SubmissionError(
        f"several {what}: {listing}; keep only one, or name the module to grade (module_name)"
    )


def _rel(p: Path, dest: Path) -> str:
    return p.relative_to(dest).as_posix() or "."


def _locate(dest: Path, digest: str, module_name: str | None, notes: list[str]) -> Submission:
    dirs = _survey(dest)
    with_c = [d for d in dirs.values() if d.kernel_c]
    # A Kbuild may name objects in subfolders (`tm-y := src/main.o`): its folder need hold no .c.
    with_kbuild = [d for d in dirs.values() if d.kbuild and _usable_kbuild(d)]
    if not with_c and not with_kbuild:
        seen = [_rel(p, dest) for p in _walk_tree(dest)]
        listing = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "") or "nothing"
        raise SubmissionError(
            f"no C source file of a kernel module found in the submission (found: {listing})"
        )
    ranked = with_kbuild or [d for d in with_c if d.init_c] or with_c
    chosen = ranked[0] if len(ranked) == 1 else _pick_dir(ranked, module_name, dest)
    root = chosen.path
    if root != dest:
        notes.append(f"sources found in nested folder {_rel(root, dest)}")
    for p in chosen.userspace_c:
        notes.append(f"{p.name} looks like a userspace program (main or libc header): not linked")

    name, objects = _from_kbuild(chosen, module_name, notes) or _from_sources(
        chosen, module_name, notes
    )
    sources = [root / (o[:-2] + ".c") for o in objects if (root / (o[:-2] + ".c")).is_file()]
    for o in objects:
        if not (root / (o[:-2] + ".c")).is_file():
            notes.append(f"object {o} has no {o[:-2]}.c next to it")
    unused = [_rel(d.path, dest) for d in with_c if not set(d.kernel_c) & set(sources)]
    if unused:
        notes.append(f"C files also in {', '.join(unused)}: not part of the module")
    headers = [p for p in _walk_tree(root) if p.suffix == ".h"]
    return Submission("source", root, name, objects, sources, headers, None, digest, notes)


def _pick_dir(ranked: list[_Dir], module_name: str | None, dest: Path) -> _Dir:
    """The one folder whose module is named module_name, else taskmonitor; else refuse."""

    def names(d: _Dir) -> list[str]:
        return d.kbuild[1].modules if d.kbuild else [p.stem for p in d.init_c or d.kernel_c]

    for wanted in (module_name, "taskmonitor"):
        matching = [d for d in ranked if wanted in names(d)]
        if len(matching) == 1:
            return matching[0]
    listing = ", ".join(_rel(d.path, dest) for d in ranked)
    raise SubmissionError(
        f"module sources found in several folders: {listing}; submit only the one to grade"
    )


def _usable_kbuild(d: _Dir) -> bool:
    """A Makefile naming no source that exists here is stale; such Makefiles are common."""
    assert d.kbuild is not None
    info = d.kbuild[1]
    objs = [o for n in info.modules for o in info.composites.get(n) or [f"{n}.o"]]
    return any((d.path / (o[:-2] + ".c")).is_file() for o in objs)


def _from_kbuild(
    d: _Dir, module_name: str | None, notes: list[str]
) -> tuple[str, list[str]] | None:
    if d.kbuild is None:
        return None
    fname, info = d.kbuild
    if not _usable_kbuild(d):
        notes.append(f"{fname} names {', '.join(info.modules)} but no matching source: ignored")
        return None
    name = _pick(info.modules, module_name, f"modules in {fname} (obj-m)")
    objects = info.composites.get(name) or [f"{name}.o"]
    notes.append(f"{fname} found and read for object names (not executed)")
    return name, objects


def _from_sources(d: _Dir, module_name: str | None, notes: list[str]) -> tuple[str, list[str]]:
    if len(d.init_c) == 1:
        main = d.init_c[0]
    elif d.init_c:
        stem = _pick([p.stem for p in d.init_c], module_name, "files with module_init", ".c")
        main = next(p for p in d.init_c if p.stem == stem)
        others = ", ".join(p.name for p in d.init_c if p != main)
        notes.append(
            f"{main.name} chosen as the module; also with module_init, not linked: {others}"
        )
    elif len(d.kernel_c) == 1:
        main = d.kernel_c[0]
        notes.append(f"no module_init( found in {main.name}")
    else:
        listing = ", ".join(p.name for p in d.kernel_c)
        raise SubmissionError(f"several C files ({listing}) and none contains module_init(")
    extras = [p for p in d.kernel_c if p not in d.init_c]
    objects = [f"{main.stem}.o"] + [f"{p.stem}.o" for p in extras]
    if extras:
        notes.append(
            f"{main.name} has module_init; linked with {', '.join(p.name for p in extras)}"
        )
    return main.stem, objects
