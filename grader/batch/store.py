"""Results of a batch on disk, under content keys, written so that no kill leaves half a result.

A result's key is a digest of what decides its grade: the submission's content digest, the
rubric's digest, the kernel's exact release, the grader's version and the build options
(compat). Same key, same grade: a batch started again skips every key it already holds.

Layout of a batch folder:
    results/<key>/          one finished result: report.json (written by `grader run`),
                            record.json (how it went), the derived pages, guest logs
    .st/                    results being made (a short name: QEMU's sockets live below it,
                            and a UNIX socket path has at most 107 bytes); a directory moves into results/ in one
                            rename() once every file in it is on disk (fsync), so results/
                            never holds a half-written result, whatever kills the batch
    batch.log               one JSON line per event (graded, reused, failed...), appended
    .lock                   flock()ed while a batch writes here (freed by the kernel on kill)
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grader.errors import ConfigError
from grader.model import GradeResult

KEY_CHARS = 32  # hex digits of the key used as a folder name (128 bits)

# A record's status. GRADED and INCOMPLETE carry a report; REJECTED is the submission's own
# fault (not a submission at all: `grader run` exit 3); FAILED is the grader's failure.
GRADED = "graded"
INCOMPLETE = "incomplete"  # a report, but some check or stage ended in ERROR: graded again
REJECTED = "rejected"
FAILED = "failed"
FINAL = (GRADED, REJECTED)


@dataclass(frozen=True)
class KeyParts:
    submission_digest: str
    rubric_digest: str
    kernel_release: str
    grader_version: str
    compat: bool | None = None
    combine: tuple[str, ...] | None = None  # other kernels combined (None: as the rubric says)

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:KEY_CHARS]


@dataclass
class Record:
    """How the grading of one key went (record.json, beside report.json)."""

    key: str
    status: str
    parts: dict[str, Any]
    reason: str = ""  # why it failed or was rejected, in words
    seconds: float = 0.0
    exit_code: int | None = None
    output_tail: str = ""  # the end of `grader run`'s output, bounded
    finished: float = 0.0  # time.time()
    warnings: list[str] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old content or the new one, never a part."""
    raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _fsync_tree(top: Path) -> None:
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            p = Path(dirpath) / name
            if not stat.S_ISREG(p.lstat().st_mode):  # a QEMU socket, a link: nothing to sync
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.results = self.root / "results"
        self.staging = self.root / ".st"
        self.log_path = self.root / "batch.log"
        self._lock_fd: int | None = None

    # ---- the batch folder's lock --------------------------------------------------------
    def lock(self) -> None:
        """Only one batch writes a folder at a time; the kernel frees the lock on any death."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"another grader batch is writing to {self.root}; wait for "
                                  f"it to end or use another --out") from e
            raise
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def clean_staging(self) -> int:
        """Remove what a killed batch left half-made (needs the lock). Returns how many."""
        if not self.staging.is_dir():
            return 0
        n = 0
        for p in self.staging.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
        return n

    # ---- results --------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.results / key

    def record(self, key: str) -> Record | None:
        try:
            return Record.from_dict(json.loads((self.path(key) / "record.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def result(self, key: str) -> GradeResult | None:
        try:
            text = (self.path(key) / "report.json").read_text()
        except OSError:
            return None
        return GradeResult.from_dict(json.loads(text))

    def stage(self, key: str) -> Path:
        """A fresh, private folder where the result of `key` is made."""
        d = self.staging / f"{key[:12]}-{uuid.uuid4().hex[:6]}"
        d.mkdir(parents=True)
        return d

    def commit(self, staged: Path, record: Record) -> Path:
        """Move a staged result into results/ in one rename, after everything is on disk."""
        write_atomic(staged / "record.json", json.dumps(asdict(record), indent=2, sort_keys=True))
        _fsync_tree(staged)
        final = self.path(record.key)
        self.results.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():  # --force, or a failure graded again: the old one goes first
            old = self.staging / f"old.{record.key}.{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(staged, final)
        fsync_dir(self.results)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    # ---- the event log -------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "pid": os.getpid(), "event": event,
                           **fields}, sort_keys=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def events(self) -> list[dict[str, Any]]:
        """Every event logged; a line cut by a kill is skipped."""
        out = []
        try:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return out
        for ln in lines:
            try:
                out.append(json.loads(ln))
            except ValueError:
                continue
        return out
