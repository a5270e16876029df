"""What a batch folder shows: per-submission pages, the class page, the CSV and the manifest.

All of it is derived from the stored results (results/<key>/report.json) and rewritten at the end
of every run, each file atomically: a kill never leaves a half-written page either.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.batch.rows import MISSING, ClassRow
from grader.batch.store import GRADED, INCOMPLETE, Store, write_atomic
from grader.exports.table import render_csv
from grader.report.audience import for_audience
from grader.report.class_report import ClassInfo, render_class_html
from grader.report.html_report import render_html
from grader.report.junit_report import render_junit
from grader.report.terminal import render_terminal

MANIFEST = "batch.json"
CLASS_PAGE = "class.html"
GRADES_CSV = "grades.csv"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RowSource:
    """One student as the manifest lists it: where the result is and how it was asked for."""

    student: str
    name: str
    key: str
    profile: str
    submission: str


def class_digest(students: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(students)).encode()).hexdigest()


def build_rows(sources: list[RowSource], store: Store, audience: str) -> list[ClassRow]:
    rows = []
    for s in sources:
        rec = store.record(s.key)
        row = ClassRow(student=s.student, name=s.name, key=s.key, status=MISSING, result=None,
                       reason="not graded yet", profile=s.profile)
        if rec is not None:
            row.status, row.reason = rec.status, rec.reason
            if rec.status in (GRADED, INCOMPLETE):
                result = store.result(s.key)
                if result is not None:
                    row.result = for_audience(result, audience)
                    row.report = f"results/{s.key}/report.html"
        rows.append(row)
    return sorted(rows, key=lambda r: r.student)


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_atomic(path, text)


def write_pages(rows: list[ClassRow], store: Store) -> None:
    """report.html (with a link back to the class page), report.xml and report.txt of each
    graded submission, in its audience's view (report.json keeps everything)."""
    done: set[str] = set()
    for r in rows:
        if r.result is None or r.key in done:
            continue
        done.add(r.key)
        d = store.path(r.key)
        _write_if_changed(d / "report.html", render_html(r.result, class_link="../../class.html"))
        _write_if_changed(d / "report.xml", render_junit(r.result))
        _write_if_changed(d / "report.txt", render_terminal(r.result, verbose=True))


def write_class_outputs(root: Path, rows: list[ClassRow], info: ClassInfo) -> dict[str, Path]:
    out = {"class": root / CLASS_PAGE, "csv": root / GRADES_CSV}
    _write_if_changed(out["class"], render_class_html(rows, info))
    _write_if_changed(out["csv"], render_csv(rows))
    return out


def write_manifest(root: Path, data: dict[str, Any]) -> Path:
    path = root / MANIFEST
    _write_if_changed(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    from grader.errors import ConfigError

    path = Path(root) / MANIFEST
    try:
        d = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{root}: not a batch folder (no {MANIFEST}): run `grader batch` "
                          f"with --out {root} first") from e
    except ValueError as e:
        raise ConfigError(f"{path}: unreadable manifest: {e}") from e
    if d.get("version") != MANIFEST_VERSION:
        raise ConfigError(f"{path}: manifest version {d.get('version')!r}, this grader reads "
                          f"{MANIFEST_VERSION}")
    return d


def sources_of(manifest: dict[str, Any]) -> list[RowSource]:
    return [RowSource(**{k: r[k] for k in ("student", "name", "key", "profile", "submission")})
            for r in manifest["rows"]]


def class_info(manifest: dict[str, Any], audience: str, shards: str = "") -> ClassInfo:
    return ClassInfo(title=manifest.get("title") or manifest["rubric_name"],
                     grader_version=manifest["grader_version"],
                     rubric=manifest["rubric_name"], rubric_digest=manifest["rubric_digest"],
                     kernels=tuple(sorted(manifest["kernels"].items())), audience=audience,
                     shards=shards)
