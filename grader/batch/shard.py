"""Beyond one machine: stable slices of a class, and the merge of their batch folders.

A student's slice depends only on their id (a hash), so the same student always lands in the
same slice whatever else the class holds, and N CI jobs can each grade one slice. `merge` joins
the slices' folders into one, refusing (with the list) when a slice is missing, repeated, or
graded with another rubric, kernel or grader, or from another class list.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.batch.outputs import (
    build_rows,
    class_info,
    read_manifest,
    sources_of,
    write_class_outputs,
    write_manifest,
    write_pages,
)
from grader.batch.store import Store, fsync_dir
from grader.errors import ConfigError


def parse_shard(text: str) -> tuple[int, int]:
    """"2/3" -> (2, 3); K counts from 1."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/3), not {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/3), not {text!r}")
    return k, n


def shard_of(student: str, n: int) -> int:
    """The slice (1..n) of a student: a hash of the id, stable across runs and machines."""
    h = int.from_bytes(hashlib.sha256(student.encode("utf-8", "surrogateescape")).digest()[:8],
                       "big")
    return h % n + 1


class MergeRefused(ConfigError):
    """The slices cannot be joined; the message lists every reason."""


@dataclass
class Merged:
    out: Path
    students: int
    outputs: dict[str, Path] = field(default_factory=dict)


def _shard(m: dict[str, Any]) -> tuple[int, int]:
    s = m.get("shard")
    return (int(s[0]), int(s[1])) if s else (1, 1)


def check_shards(manifests: dict[Path, dict[str, Any]]) -> list[str]:
    """Every reason the folders cannot be merged (empty: they can)."""
    problems = []
    ns = {_shard(m)[1] for m in manifests.values()}
    if len(ns) > 1:
        problems.append("the folders come from different splits: N = "
                        + ", ".join(str(n) for n in sorted(ns)))
    n = max(ns)
    seen: dict[int, list[str]] = {}
    for folder, m in manifests.items():
        seen.setdefault(_shard(m)[0], []).append(str(folder))
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        problems.append("missing shard(s): " + ", ".join(f"{k}/{n}" for k in missing))
    for k, folders in sorted(seen.items()):
        if len(folders) > 1:
            problems.append(f"shard {k}/{n} given twice: {', '.join(folders)}")
    for what, label in (("rubric_digest", "rubric"), ("kernels", "kernel"),
                        ("grader_version", "grader version"), ("class_digest", "class list")):
        values: dict[str, list[str]] = {}
        for folder, m in manifests.items():
            v = m.get(what)
            values.setdefault(repr(v if not isinstance(v, dict) else sorted(v.items())),
                              []).append(f"{folder} (shard {_shard(m)[0]}/{_shard(m)[1]})")
        if len(values) > 1:
            detail = "; ".join(f"{v} in {', '.join(fs)}" for v, fs in values.items())
            problems.append(f"the shards disagree on the {label}: {detail}")
    if not problems:
        everyone = set(next(iter(manifests.values())).get("class_students", []))
        graded = {r["student"] for m in manifests.values() for r in m["rows"]}
        lost = sorted(everyone - graded)
        if lost:
            problems.append("students of the class in no shard: " + ", ".join(lost))
    return problems


def _copy_result(src: Path, dst_store: Store, key: str) -> None:
    dst = dst_store.path(key)
    rec = "record.json"
    if dst.is_dir() and (dst / rec).read_bytes() == (src / rec).read_bytes():
        return
    staged = dst_store.staging / f"merge.{key}.{uuid.uuid4().hex[:8]}"
    staged.parent.mkdir(parents=True, exist_ok=True)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, staged, copy_function=link, symlinks=True)
    dst_store.results.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        old = dst_store.staging / f"old.{key}.{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(staged, dst)
    fsync_dir(dst_store.results)


def merge(folders: list[Path], out: Path, audience: str = "staff") -> Merged:
    manifests = {Path(f): read_manifest(Path(f)) for f in folders}
    problems = check_shards(manifests)
    if problems:
        raise MergeRefused("cannot merge these shards:\n  " + "\n  ".join(problems))
    store = Store(out)
    store.lock()
    try:
        store.clean_staging()
        rows_meta: list[dict[str, Any]] = []
        for folder, m in sorted(manifests.items(), key=lambda fm: _shard(fm[1])[0]):
            for r in m["rows"]:
                src = folder / "results" / r["key"]
                if src.is_dir():
                    _copy_result(src, store, r["key"])
                rows_meta.append(r)
        first = next(iter(manifests.values()))
        rows_meta.sort(key=lambda r: r["student"])
        manifest = {**first, "shard": None, "rows": rows_meta,
                    "merged_from": [str(f) for f in sorted(manifests, key=lambda f: str(f))],
                    "audience": audience}
        rows = build_rows(sources_of(manifest), store, audience)
        write_pages(rows, store)
        n = _shard(first)[1]
        outputs = write_class_outputs(out, rows, class_info(manifest, audience,
                                                            f"{n} shards merged"))
        outputs["manifest"] = write_manifest(out, manifest)
    finally:
        store.unlock()
    return Merged(out, len(rows), outputs)
