"""The class-level subcommands: `grader batch`, `grader merge`, `grader diff`, `grader export`."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

from grader import __version__
from grader.errors import ConfigError
from grader.profiles import DEFAULT_PROFILE, available_profiles, load_profile
from grader.report.audience import AUDIENCES, DEFAULT_AUDIENCE

EXIT_UNGRADED = 5

BATCH_DESCRIPTION = """\
Grades a whole class: SOURCE is a folder holding one archive or folder per student, or a list
file (one path per line, or a CSV with a header: path,student,name,profile,compat). Each
submission is graded by its own `grader run` subprocess, in parallel, with a wall timeout, its
whole process group killed on timeout, and its output bounded: a submission that crashes,
hangs, floods the log or eats memory costs its own points and nothing else.

Resumable and idempotent: each result is kept under a key made of the submission's content
digest, the rubric digest, the kernel's exact release and the grader version, and moved into
place in one rename once it is on disk. Kill the batch at any moment (even SIGKILL) and start it
again: it grades only what is missing. A result the grader could not produce (its own failure,
an incomplete grade) is recorded as such and graded again on the next run.

Writes, in --out: class.html (the class page), grades.csv, batch.json (the manifest),
batch.log (one JSON line per event), and results/<key>/ for each submission (report.json and
the pages, with a link back to the class page).
"""

BATCH_EPILOG = f"""\
examples:
  grader batch submissions/ --out class/                  every archive or folder in submissions/
  grader batch submissions/ --out class/ -j 2 --mapping students.csv   ids and names from a CSV
  grader batch list.csv --out class/                      per-line profile/compat (CSV columns)
  grader batch submissions/ --out class/ --force          grade everything again
  grader batch submissions/ --out shard1/ --shard 1/3     one stable slice of three (CI matrix)
  grader merge shard1/ shard2/ shard3/ --out class/       join the slices
  grader diff old-class/ class/                           what a regrade changed, and why
  grader export moodle class/ --roster roster.csv --out moodle.csv

exit status: 0 every submission has a final result (whatever its score); {EXIT_UNGRADED} some could not
be graded (listed; run the same command again to retry them); 2 bad usage, rubric or profile;
4 the environment is missing something; 130 interrupted (every grader it started is killed).

test hook: GRADER_BATCH_RUN_COMMAND='["python", "fake_grader.py"]' replaces `grader run`.
"""


def _audience_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audience", choices=AUDIENCES, default=DEFAULT_AUDIENCE,
                   help="staff (default): every check; student: the checks the rubric hides "
                        "(visible = false) are left out of the pages and exports")


def add_batch_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("batch", help="grade a whole class in parallel, resumable; class page "
                                     "and CSV", description=BATCH_DESCRIPTION,
                       epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="a folder of submissions, or a list file")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="the batch folder")
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="gradings at once (default: from the cores and the memory, each guest "
                        "taking the profile's memory_mib plus QEMU's own)")
    p.add_argument("--profile", "-p", default=DEFAULT_PROFILE, metavar="NAME",
                   help=f"kernel profile unless a list line says otherwise: "
                        f"{', '.join(available_profiles())} (default {DEFAULT_PROFILE})")
    p.add_argument("--rubric", "-r", default="tp07", metavar="NAME|PATH",
                   help="rubric name under rubrics/ or a TOML path (default tp07)")
    compat = p.add_mutually_exclusive_group()
    compat.add_argument("--compat", dest="compat", action="store_true", default=None,
                        help="build every submission with the compatibility header")
    compat.add_argument("--no-compat", dest="compat", action="store_false",
                        help="never use the compatibility header")
    combine = p.add_mutually_exclusive_group()
    combine.add_argument("--combine", action="append", metavar="PROFILE",
                         help="also grade the checks that need another kernel (e.g. debug), as "
                              "grader run --combine does (default: as the rubric says)")
    combine.add_argument("--no-combine", dest="combine", action="store_const", const=[],
                         help="grade on --profile's kernel only")
    p.add_argument("--backend", "-b", default="host", choices=["host", "docker"],
                   help="passed to grader run (default host)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="wall time of one grading before its process group is killed (default: "
                        "300 s + 60 s per check of the rubric)")
    p.add_argument("--force", action="store_true", help="grade again what is already graded")
    p.add_argument("--mapping", metavar="CSV",
                   help="student ids and names: a CSV with columns file, student, name")
    p.add_argument("--shard", metavar="K/N",
                   help="grade only slice K of N (stable: a hash of the student id)")
    p.add_argument("--title", help="the class page's title (default: the rubric's)")
    _audience_opt(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no lines")
    p.set_defaults(func=cmd_batch)


def _rubric_meta(path: Path) -> tuple[str, str]:
    try:
        d = tomllib.loads(path.read_text())
        return str(d.get("name") or path.stem), str(d.get("title") or d.get("name") or path.stem)
    except (OSError, ValueError):
        return path.stem, path.stem


def _on_sigterm(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_batch(args: argparse.Namespace) -> int:
    from grader.batch import entries as en
    from grader.batch import outputs, runner, shard
    from grader.batch.store import Store

    source = Path(args.source)
    if source.is_dir():
        items = en.from_folder(source)
    elif source.is_file():
        items = en.from_list(source)
    else:
        raise ConfigError(f"{source}: no such folder or list file")
    if args.mapping:
        items, unmapped = en.apply_mapping(items, Path(args.mapping))
        if unmapped:
            print(f"grader batch: {len(unmapped)} submission(s) not in {args.mapping}, id taken "
                  f"from the name: {', '.join(unmapped)}", file=sys.stderr)
    en.check_unique(items)
    everyone = sorted(e.student for e in items)
    shard_kn = shard.parse_shard(args.shard) if args.shard else None
    if shard_kn:
        items = [e for e in items if shard.shard_of(e.student, shard_kn[1]) == shard_kn[0]]
    rpath = runner.rubric_path(args.rubric)
    profiles = sorted({e.profile or args.profile for e in items} | {args.profile})
    memory = max(load_profile(p).memory_mib for p in profiles)
    opts = runner.BatchOptions(rubric=args.rubric, profile=args.profile, compat=args.compat,
                               combine=None if args.combine is None else tuple(args.combine),
                               backend=args.backend,
                               jobs=args.jobs or runner.default_jobs(memory),
                               timeout_s=args.timeout, force=args.force, quiet=args.quiet)
    out = Path(args.out)
    store = Store(out)
    room = 107 - len(str(store.staging.resolve() / "123456789012-123456" / "guest/1/con.sock"))
    if room < 0:
        print(f"grader batch: warning: --out {out} is {-room} character(s) too long for the "
              f"UNIX sockets QEMU makes below it (107 bytes at most): use a shorter path",
              file=sys.stderr)
    store.lock()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        left = store.clean_staging()
        if left:
            store.log("cleaned", staged=left)
        planned = runner.plan(items, store, opts)
        if not args.quiet:
            todo = sum(1 for p in planned if args.force or not (p.record and p.record.final))
            print(f"grader batch: {len(planned)} submission(s), {todo} to grade, -j{opts.jobs}, "
                  f"timeout {opts.timeout_s or runner.derive_timeout(rpath):.0f} s each",
                  file=sys.stderr)
        run = runner.run_batch(planned, store, opts)
        name, title = _rubric_meta(rpath)
        manifest = {
            "version": outputs.MANIFEST_VERSION, "grader_version": __version__,
            "rubric_name": name, "title": args.title or title,
            "rubric_digest": runner.rubric_digest(rpath),
            "kernels": runner.kernel_releases(set(profiles) & {p.profile for p in planned}
                                              or {args.profile}),
            "shard": list(shard_kn) if shard_kn else None,
            "class_students": everyone, "class_digest": outputs.class_digest(everyone),
            "audience": args.audience,
            "rows": [{"student": p.entry.student, "name": p.entry.name, "key": p.key,
                      "profile": p.profile, "submission": str(p.entry.path)}
                     for p in sorted(planned, key=lambda p: p.entry.student)],
        }
        rows = outputs.build_rows(outputs.sources_of(manifest), store, args.audience)
        outputs.write_pages(rows, store)
        shards = f"slice {shard_kn[0]} of {shard_kn[1]}" if shard_kn else ""
        written = outputs.write_class_outputs(out, rows, outputs.class_info(manifest,
                                                                             args.audience,
                                                                             shards))
        outputs.write_manifest(out, manifest)
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.unlock()
    if run.interrupted:
        print("grader batch: interrupted; what was finished is kept, run again to go on",
              file=sys.stderr)
        return 130
    bad = [r for r in rows if r.status not in ("graded", "rejected")]
    print(f"graded {len(run.graded)}, reused {run.reused}, in {run.seconds:.1f} s; "
          f"class page: {written['class']}; CSV: {written['csv']}")
    if bad:
        print(f"grader batch: {len(bad)} submission(s) without a final grade (run again to "
              f"retry): " + ", ".join(f"{r.student} ({r.status})" for r in bad),
              file=sys.stderr)
        return EXIT_UNGRADED
    return 0


# ---- merge -----------------------------------------------------------------------------------
def add_merge_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("merge", help="join the batch folders of `grader batch --shard K/N`",
                       description="Joins the folders of the N slices of a class into one: "
                                   "results, class page, CSV. Refuses, with the list, when a "
                                   "slice is missing or repeated, or when two slices were "
                                   "graded with another rubric, kernel, grader or class list.",
                       epilog="example:\n  grader merge shard1/ shard2/ shard3/ --out class/\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="SHARD_DIR")
    p.add_argument("--out", "-o", required=True, metavar="DIR")
    _audience_opt(p)
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from grader.batch.shard import merge

    m = merge([Path(f) for f in args.folders], Path(args.out), args.audience)
    print(f"merged {len(args.folders)} shard(s), {m.students} students; class page: "
          f"{m.outputs['class']}; CSV: {m.outputs['csv']}")
    return 0


# ---- diff ------------------------------------------------------------------------------------
def add_diff_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("diff", help="students and checks whose verdict changed between two "
                                    "batches, and why",
                       description="Compares two batch folders check by check. For each "
                                   "student whose verdicts changed it says why, from the two "
                                   "reports' stamps: rubric, kernel, grader or submission.",
                       epilog="example:\n  grader diff class-v1/ class-v2/\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--json", action="store_true", help="the differences as JSON")
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    from grader.batch.diffing import diff_batches

    d = diff_batches(Path(args.old), Path(args.new))
    print(json.dumps(d.to_dict(), indent=2) if args.json else d.render(), end="")
    return 0


# ---- export ----------------------------------------------------------------------------------
EXPORT_EPILOG = """\
examples:
  grader export csv class/ --out grades.csv
  grader export moodle class/ --roster roster.csv --item "TP07" --out moodle.csv
  grader export canvas class/ --roster roster.csv --item "TP07 (4711)" --out canvas.csv
  grader export gradescope out/report.json --out /autograder/results/results.json

The roster is a CSV with a header: id (required), email, name, canvas_id, sis_user_id,
sis_login_id, section. A submission belongs to the student whose id or e-mail is its student
id. moodle and canvas first print the roster check (submissions with no student, students with
no submission) and refuse to write while a submission has no student.
"""


def add_export_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="gradebook files: csv, moodle, canvas, gradescope",
                       description="Writes a gradebook file from a batch folder (csv, moodle, "
                                   "canvas) or from one report.json (gradescope).",
                       epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=["csv", "moodle", "canvas", "gradescope"])
    p.add_argument("source", metavar="SOURCE", help="a batch folder, or a report.json")
    p.add_argument("--out", "-o", default="-", metavar="FILE", help="default: stdout")
    p.add_argument("--roster", metavar="CSV", help="the course's roster (moodle, canvas)")
    p.add_argument("--item", default="", metavar="NAME",
                   help="the gradebook column: Moodle's grade item, Canvas's assignment as "
                        "'Name (id)' (default: the rubric's name)")
    _audience_opt(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from grader.exports import RosterRefused, render_canvas, render_csv, render_moodle
    from grader.exports.gradescope import render_gradescope

    source = Path(args.source)
    if args.format == "gradescope":
        from grader.report import load_json

        text = render_gradescope(load_json(source.read_text()), args.audience)
    else:
        from grader.batch.outputs import build_rows, read_manifest, sources_of
        from grader.batch.store import Store

        manifest = read_manifest(source)
        rows = build_rows(sources_of(manifest), Store(source), args.audience)
        if args.format == "csv":
            text = render_csv(rows)
        else:
            if not args.roster:
                raise ConfigError(f"export {args.format} needs --roster CSV (columns id, email, "
                                  f"name, ...)")
            from grader.batch.roster import check_roster, load_roster

            check = check_roster([r.student for r in rows], load_roster(Path(args.roster)))
            item = args.item or manifest["rubric_name"]
            try:
                render = render_moodle if args.format == "moodle" else render_canvas
                text = render(rows, check, item)
            except RosterRefused as e:
                raise ConfigError(str(e)) from e
            print(check.describe(), file=sys.stderr)
            ungraded = [r.student for r in rows if not r.final]
            if ungraded:
                print(f"left blank (no final grade): {', '.join(ungraded)}", file=sys.stderr)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        from grader.batch.store import write_atomic

        write_atomic(Path(args.out), text)
        print(f"{args.format}: {args.out}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """All four subcommands (batch, merge, diff, export)."""
    add_batch_parser(sub)
    add_merge_parser(sub)
    add_diff_parser(sub)
    add_export_parser(sub)
