"""What a batch grades: submissions from a folder or a list file, each with its student id.

A folder holds one archive or folder per student; the student id is the name without its
archive suffix (`alice.tar.gz` -> `alice`), unless a mapping CSV (columns file, student, name)
says otherwise. A list file names one submission per line: either bare paths, or a CSV with a
header that has a `path` column and optional `student`, `name`, `profile`, `compat` columns, so
that one batch can grade submissions on several kernel profiles.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from grader.errors import ConfigError, GraderError

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".txz", ".tar", ".zip", ".c", ".ko")
LIST_COLUMNS = ("path", "student", "name", "profile", "compat")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


@dataclass(frozen=True)
class Entry:
    """One submission to grade. profile/compat None: the batch's own options."""

    student: str
    path: Path
    name: str = ""
    profile: str | None = None
    compat: bool | None = None


def student_from_name(path: Path) -> str:
    """`alice.tar.gz` -> `alice`; a folder keeps its name."""
    name = path.name
    if path.is_dir():
        return name
    low = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def from_folder(folder: Path) -> list[Entry]:
    """One entry per archive, file or folder directly in `folder` (hidden names skipped)."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder of submissions")
    return [
        Entry(student=student_from_name(p), path=p)
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".")
    ]


def _parse_compat(value: str, where: str) -> bool | None:
    v = value.strip().lower()
    if not v:
        return None
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{where}: compat must be true or false (or empty), not {value!r}")


def from_list(list_file: Path) -> list[Entry]:
    """Entries of a list file; relative paths are taken from the list file's folder."""
    text = list_file.read_text(encoding="utf-8-sig")
    base = list_file.parent
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"{list_file}: no submission listed")
    header = next(csv.reader([lines[0]]))
    if "path" not in [h.strip().lower() for h in header]:
        return [_entry(base, path=ln.strip()) for ln in lines]
    reader = csv.DictReader(lines)
    assert reader.fieldnames is not None
    fields = {f: f.strip().lower() for f in reader.fieldnames}
    unknown = sorted(set(fields.values()) - set(LIST_COLUMNS))
    if unknown:
        raise ConfigError(f"{list_file}: unknown column(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(LIST_COLUMNS)}")
    out = []
    for n, row in enumerate(reader, 2):
        r = {fields[k]: (v or "").strip() for k, v in row.items() if k is not None}
        if not r.get("path"):
            raise ConfigError(f"{list_file}:{n}: empty path")
        out.append(_entry(base, path=r["path"], student=r.get("student", ""),
                          name=r.get("name", ""), profile=r.get("profile") or None,
                          compat=_parse_compat(r.get("compat", ""), f"{list_file}:{n}")))
    return out


def _entry(base: Path, *, path: str, student: str = "", name: str = "",
           profile: str | None = None, compat: bool | None = None) -> Entry:
    p = Path(path)
    p = p if p.is_absolute() else base / p
    return Entry(student=student or student_from_name(p), path=p, name=name, profile=profile,
                 compat=compat)


def apply_mapping(entries: list[Entry], mapping_csv: Path) -> tuple[list[Entry], list[str]]:
    """Student ids and names from a mapping CSV (columns: file, student, name; a header row).

    `file` matches a submission's file or folder name. Returns the entries and the names of
    the submissions the mapping does not list (they keep the id taken from their name).
    """
    with mapping_csv.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        file_col = cols.get("file")
        id_col = cols.get("student") or cols.get("student_id") or cols.get("id")
        if not file_col or not id_col:
            raise ConfigError(f"{mapping_csv}: needs a header with columns file, student "
                              f"(and optionally name); found {', '.join(cols) or 'none'}")
        name_col = cols.get("name")
        table = {}
        for row in reader:
            key = (row.get(file_col) or "").strip()
            if key:
                table[key] = ((row.get(id_col) or "").strip(),
                              (row.get(name_col) or "").strip() if name_col else "")
    out, unmapped = [], []
    for e in entries:
        hit = table.get(e.path.name)
        if hit and hit[0]:
            out.append(Entry(student=hit[0], path=e.path, name=hit[1] or e.name,
                             profile=e.profile, compat=e.compat))
        else:
            out.append(e)
            unmapped.append(e.path.name)
    return out, unmapped


def check_unique(entries: list[Entry]) -> None:
    """Two submissions for one student id is an error that names them."""
    seen: dict[str, list[str]] = {}
    for e in entries:
        seen.setdefault(e.student, []).append(str(e.path))
    dups = {s: ps for s, ps in seen.items() if len(ps) > 1}
    if dups:
        lines = [f"  {s}: {', '.join(ps)}" for s, ps in sorted(dups.items())]
        raise ConfigError("several submissions for one student id (rename them or use "
                          "--mapping):\n" + "\n".join(lines))


def content_digest(path: Path) -> str:
    """The submission digest `grader run` puts in its stamp (grader.intake's rule)."""
    from grader.intake import directory_digest

    if path.is_dir():
        try:
            return directory_digest(path)
        except GraderError as e:  # a link or device inside: grader run will refuse it too
            return "unreadable:" + hashlib.sha256(str(e).encode()).hexdigest()
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as e:
        return "unreadable:" + hashlib.sha256(str(e).encode()).hexdigest()
    return h.hexdigest()
