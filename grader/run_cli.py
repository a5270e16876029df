"""`grader run`: grade one or several submissions and write their reports."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader.profiles import DEFAULT_PROFILE, available_profiles
from grader.report.audience import AUDIENCES, DEFAULT_AUDIENCE

DESCRIPTION = """\
Grades a TP07 submission exercise by exercise: takes it in safely, builds it with the grader's
own Kbuild (the submission's Makefile is read for object names, never run), inspects the .ko
(symbols, .modinfo, DWARF), loads it in a QEMU guest and runs the behavioural checks of the
rubric. A crash or hang of the module costs the student the check where it happened; the grader
reboots a fresh guest and goes on.

SUBMISSION may be a .tar, .tar.gz/.tgz, .tar.xz, .zip, a directory, a single .c file, or a
prebuilt .ko (then only the checks that need no source run, and the report says so).
"""

EPILOG = """\
examples:
  grader run reference/taskmonitor                 grade the reference (full marks)
  grader run alice.tar.gz --out out/alice          reports in out/alice/report.{json,html,xml,txt}
  grader run bob.zip --profile 5.10                on the kernel generation the lab was written for
  grader run carol.tgz --compat                    code using cputime_t / one-argument register_shrinker
  grader run dave.tgz --json                       the whole result as JSON on stdout
  grader run a.tgz b.tgz c.tgz --out out/          several submissions, one report folder each
  grader run e.tgz --backend docker                build and guest inside Docker containers
  grader run f.tgz --profile debug                 everything on the debug kernel (KASAN, lockdep...)
  grader run g.tgz --no-combine                    the stock kernel only: debug checks not graded

exit status: 0 when grading completed, whatever the score; 2 bad usage or rubric/profile;
3 not a submission; 4 the environment is missing something (the message says what to do).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="grade submissions exercise by exercise",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="what to grade")
    p.add_argument("--profile", "-p", default=DEFAULT_PROFILE, metavar="NAME",
                   help=f"kernel profile: {', '.join(available_profiles())} (default "
                        f"{DEFAULT_PROFILE}); e.g. --profile 5.10")
    p.add_argument("--rubric", "-r", default="tp07", metavar="NAME|PATH",
                   help="rubric name under rubrics/ or a TOML path (default tp07)")
    p.add_argument("--out", "-o", metavar="DIR",
                   help="report folder (default grader-out/<submission name>); with several "
                        "submissions, one sub-folder each")
    p.add_argument("--format", "-f", action="append", choices=["json", "junit", "html", "text"],
                   help="report files to write (repeatable; default all four)")
    p.add_argument("--json", action="store_true",
                   help="print the JSON result on stdout instead of the terminal summary")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the evidence (commands, expected, seen, log) of every check")
    compat = p.add_mutually_exclusive_group()
    compat.add_argument("--compat", dest="compat", action="store_true", default=None,
                        help="build with the compatibility header: cputime_t as u64, and the "
                             "one-argument register_shrinker() of 5.x kernels on 6.0-6.6 "
                             "(e.g. grading 2017-2018 code on 6.1); the report says so")
    compat.add_argument("--no-compat", dest="compat", action="store_false",
                        help="never use the compatibility header, whatever the rubric says")
    combine = p.add_mutually_exclusive_group()
    combine.add_argument("--combine", action="append", metavar="PROFILE",
                         help="also grade the checks that need another kernel (the debug kernel) "
                              "in guests of that kernel (repeatable; default: as the rubric says, "
                              "when that kernel is set up); e.g. --combine debug")
    combine.add_argument("--no-combine", dest="combine", action="store_const", const=[],
                         help="grade on the --profile kernel only: the checks that need another "
                              "kernel are reported as not graded")
    p.add_argument("--backend", "-b", default="host", choices=["host", "docker"],
                   help="where the build and the guest run: host (default: bubblewrap and a "
                        "QEMU child process, no container engine needed) or docker (both in "
                        "containers; needs a running Docker engine); e.g. --backend docker")
    p.add_argument("--module", metavar="NAME",
                   help="module name when the submission does not say (default: the rubric's)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    p.add_argument("--audience", choices=AUDIENCES, default=DEFAULT_AUDIENCE,
                   help="student: leave the rubric's hidden checks out of every output "
                        "(what a course's CI shows its students); staff: everything")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from grader.pipeline import RunOptions, safe_grade
    from grader.report import render_json, render_terminal, write_reports

    formats = set(args.format or ["json", "junit", "html", "text"])
    several = len(args.submissions) > 1

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[grader] {msg}", file=sys.stderr, flush=True)

    for s in args.submissions:
        path = Path(s)
        name = path.name.split(".")[0] or "submission"
        if args.out:
            out = Path(args.out) / name if several else Path(args.out)
        else:
            out = Path("grader-out") / name
        opts = RunOptions(submission=path, outdir=out, profile=args.profile, rubric=args.rubric,
                          compat=args.compat, module_name=args.module, backend=args.backend,
                          combine=None if args.combine is None else tuple(args.combine))
        result = safe_grade(opts, progress)
        written = write_reports(result, out, formats, audience=args.audience)
        if args.json:
            print(render_json(result, args.audience))
        else:
            print(render_terminal(result, color=sys.stdout.isatty(), verbose=args.verbose,
                                  audience=args.audience))
            print("reports: " + ", ".join(str(p) for p in written.values()))
    return 0
