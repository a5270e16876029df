"""Variants of the reference module with one bug each: loading, validating, materialising.

A variant is a TOML file under tests/variants/ (see tests/variants/README.md for the format). It
never holds a copy of the reference: it says which exact strings of reference/taskmonitor/
taskmonitor.c to replace, and which checks must not pass. Materialising a variant writes a
submission as a student would hand it in (a folder, or a tar.gz), into a directory the caller
chooses (a pytest tmp dir, never the repository).
"""
from __future__ import annotations

import io
import tarfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from grader.model import Status
from grader.profiles import project_root
from grader.rubric import Rubric, load_rubric

VARIANTS_DIR = Path(__file__).parent / "variants"
REFERENCE_FILE = "reference/taskmonitor/taskmonitor.c"
MODULE = "taskmonitor"
LAYOUTS = ("flat", "nested", "split")
# Statuses a variant may expect of a check that does not pass. ERROR is never expected: it is
# the grader's own failure, never the student's.
EXPECTABLE = {Status.FAILED, Status.CRASHED, Status.TIMED_OUT, Status.SKIPPED}
_KEYS = {"description", "bug", "stage", "profile", "compat", "layout", "nested_dir", "split",
         "files", "replace", "expect", "grader_problem", "kernels"}


class VariantError(Exception):
    """A variant file is malformed, or no longer applies to the reference."""


@dataclass(frozen=True)
class Replacement:
    old: str
    new: str
    file: str = "taskmonitor.c"  # the materialised main file, or an extra file of the variant


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    bug: str
    stage: int = 7
    profile: str = "6.1"
    compat: bool = False
    layout: str = "flat"
    nested_dir: str = "rendu-tp07/taskmonitor"  # layout "nested": folders inside the archive
    main: str = "taskmonitor.c"  # layout "split": what the reference file is called
    files: dict[str, str] = field(default_factory=dict)  # extra files: name -> text
    replacements: tuple[Replacement, ...] = ()
    expect: dict[str, Status] = field(default_factory=dict)  # check id -> non-passing status
    # check id (or "*": the whole grade) -> why the grader does not (yet) give the expected
    # status: a known grader problem, reported to the lead; tested as xfail(strict=True).
    grader_problem: dict[str, str] = field(default_factory=dict)
    # Other kernels its grading combines (["debug"]): graded in the corpus's combined batch;
    # the others are graded on their profile alone, the checks of other kernels not graded.
    kernels: tuple[str, ...] = ()
    path: Path | None = None

    def expected(self, check_id: str, rubric: Rubric | None = None) -> Status:
        """The expected status; a check of a kernel this variant's grading does not combine
        is not graded."""
        if rubric is not None:
            spec = rubric.check(check_id)
            if spec.kernel and spec.kernel not in self.kernels and spec.kernel != self.profile:
                return Status.NOT_GRADED
        return self.expect.get(check_id, Status.PASSED)

    def points_lost(self, rubric: Rubric) -> float:
        return sum(rubric.check(c).points for c in self.expect)

    def affected_by_problems(self, rubric: Rubric) -> set[str] | None:
        """The checks a known grader problem may change: those listed and every check that
        needs one of them (transitively); None when the whole grade is affected ("*")."""
        if "*" in self.grader_problem:
            return None
        out = set(self.grader_problem)
        for spec in rubric.checks():  # in rubric order: a check's needs come before it
            if out & set(spec.needs):
                out.add(spec.id)
        return out


def reference_text() -> str:
    return (project_root() / REFERENCE_FILE).read_text()


def stage_text(stage: int, text: str | None = None) -> str:
    """The reference (or `text`) as the solution at the end of exercise `stage`: a student's
    submission has no cflags, so the stage is a #define on top of the file."""
    if not 1 <= stage <= 7:
        raise VariantError(f"stage {stage} is not between 1 and 7")
    return f"#define TM_STAGE {stage}\n" + (reference_text() if text is None else text)


def apply_replacements(text: str, reps: list[Replacement] | tuple[Replacement, ...],
                       where: str) -> str:
    """Apply each replacement in order; each `old` must occur exactly once at that point."""
    for i, r in enumerate(reps, 1):
        n = text.count(r.old)
        if n != 1:
            head = r.old.strip().splitlines()[0] if r.old.strip() else repr(r.old)
            raise VariantError(f"{where}: replacement #{i} (starting {head!r}) must match exactly "
                               f"once in {r.file}, found {n} times: the reference changed, "
                               "update the variant")
        text = text.replace(r.old, r.new)
    return text


def load_variant(path: Path, rubric: Rubric | None = None) -> Variant:
    rubric = rubric or load_rubric("tp07")
    where = path.name
    try:
        d = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise VariantError(f"{where}: {e}") from e
    unknown = set(d) - _KEYS
    if unknown:
        raise VariantError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    for key in ("description", "bug"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            raise VariantError(f"{where}: '{key}' (a non-empty string) is required")
    layout = d.get("layout", "flat")
    if layout not in LAYOUTS:
        raise VariantError(f"{where}: layout must be one of {LAYOUTS}, not {layout!r}")
    ids = {c.id for c in rubric.checks()}
    expect: dict[str, Status] = {}
    raw_expect = dict(d.get("expect", {}))
    rest = raw_expect.pop("*", None)  # the status of every check not listed
    for cid, st in [*raw_expect.items(), *([("*", rest)] if rest else [])]:
        if cid != "*" and cid not in ids:
            raise VariantError(f"{where}: [expect] names unknown check {cid!r}")
        try:
            status = Status(st)
        except ValueError:
            status = None
        if status not in EXPECTABLE:
            raise VariantError(f"{where}: [expect] {cid} = {st!r}: expected one of "
                               f"{sorted(s.value for s in EXPECTABLE)} (a passing check is "
                               "simply not listed)")
        if cid == "*":
            expect.update({i: status for i in ids if i not in raw_expect})
        else:
            expect[cid] = status
    problems = dict(d.get("grader_problem", {}))
    for cid in problems:
        if cid != "*" and cid not in ids:
            raise VariantError(f"{where}: [grader_problem] names unknown check {cid!r}")
    files = dict(d.get("files", {}))
    reps = []
    for r in d.get("replace", []):
        if set(r) - {"old", "new", "file"} or "old" not in r or "new" not in r:
            raise VariantError(f"{where}: each [[replace]] needs 'old' and 'new' (and an "
                               "optional 'file')")
        if not r["old"]:
            raise VariantError(f"{where}: an empty 'old' matches everywhere")
        reps.append(Replacement(r["old"], r["new"], r.get("file", "taskmonitor.c")))
    split = dict(d.get("split", {}))
    main = split.pop("main", "taskmonitor.c")
    if split:
        raise VariantError(f"{where}: [split] only takes 'main', not {sorted(split)}")
    if layout == "split" and not any(n.endswith(".c") for n in files):
        raise VariantError(f"{where}: layout 'split' needs a second .c file in [files]")
    for r in reps:
        if r.file != "taskmonitor.c" and r.file not in files:
            raise VariantError(f"{where}: replacement in unknown file {r.file!r}")
    stage = int(d.get("stage", 7))
    if not 1 <= stage <= 7:
        raise VariantError(f"{where}: stage must be between 1 and 7")
    return Variant(
        name=path.stem, description=d["description"].strip(), bug=d["bug"].strip(),
        stage=stage, profile=str(d.get("profile", "6.1")), compat=bool(d.get("compat", False)),
        layout=layout, nested_dir=d.get("nested_dir", Variant.nested_dir), main=main,
        files=files, replacements=tuple(reps), expect=expect, grader_problem=problems,
        kernels=tuple(d.get("kernels", ())), path=path,
    )


def load_variants(directory: Path = VARIANTS_DIR) -> list[Variant]:
    rubric = load_rubric("tp07")
    return [load_variant(p, rubric) for p in sorted(directory.glob("*.toml"))]


def variant_sources(v: Variant) -> dict[str, str]:
    """Every file of the variant's module folder: name -> text (replacements applied)."""
    main = [r for r in v.replacements if r.file == "taskmonitor.c"]
    out = {v.main: stage_text(v.stage, apply_replacements(reference_text(), main, v.name))}
    for name, text in v.files.items():
        reps = [r for r in v.replacements if r.file == name]
        out[name] = apply_replacements(text, reps, v.name)
    if v.layout in ("nested", "split"):
        out.setdefault("Makefile", student_makefile(
            [n[:-2] + ".o" for n in out if n.endswith(".c")] if v.layout == "split" else []))
    return out


def student_makefile(objects: list[str]) -> str:
    """The Makefile students write (the grader reads it for names, never runs it)."""
    lines = [f"obj-m += {MODULE}.o"]
    if objects:
        lines.append(f"{MODULE}-objs := {' '.join(objects)}")
    lines += ["", "KDIR ?= /lib/modules/$(shell uname -r)/build", "", "all:",
              "\t$(MAKE) -C $(KDIR) M=$(PWD) modules", "", "clean:",
              "\t$(MAKE) -C $(KDIR) M=$(PWD) clean", ""]
    return "\n".join(lines)


def write_folder(files: dict[str, str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def write_targz(files: dict[str, str], archive: Path) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tf:
        dirs = sorted({str(Path(n).parent) for n in files} - {"."})
        for d in dirs:  # the folders too, as `tar czf` writes them
            for i in range(1, len(Path(d).parts) + 1):
                name = "/".join(Path(d).parts[:i])
                if name not in tf.getnames():
                    info = tarfile.TarInfo(name)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return archive


def materialise(v: Variant, dest: Path) -> Path:
    """Write the variant as a submission under `dest`; returns what to grade."""
    files = variant_sources(v)
    if v.layout == "nested":
        top = v.nested_dir.strip("/")
        tree = {f"{top}/{n}": t for n, t in files.items()}
        tree[f"{top.split('/')[0]}/README.txt"] = "TP07 - taskmonitor\n"
        return write_targz(tree, dest / f"{v.name}.tar.gz")
    return write_folder(files, dest / v.name)


def materialise_stage(stage: int, dest: Path) -> Path:
    """The reference at the end of exercise `stage`, as a one-file submission."""
    return write_folder({"taskmonitor.c": stage_text(stage)}, dest / f"stage{stage}")
