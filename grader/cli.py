"""Command line: one subcommand per stage or task, `main(argv) -> int`."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from grader import __version__
from grader.errors import GraderError
from grader.profiles import DEFAULT_PROFILE, available_profiles, load_profile

EXIT_CODES = """exit status:
  0  the command did its job (for `run`: grading completed, whatever the score)
  1  a bug of the grader
  2  bad usage, or an invalid rubric or profile
  3  the submission cannot be taken in (not an archive, no module source)
  4  the environment is missing something (packages, cache, QEMU): the message says what to do
  130 interrupted (Ctrl-C); QEMU is torn down first
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _profile_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", "-p", default=DEFAULT_PROFILE, metavar="NAME",
                   help=f"kernel profile (one of: {', '.join(available_profiles())}; "
                        f"default {DEFAULT_PROFILE})")


def cmd_setup(args: argparse.Namespace) -> int:
    from grader import provision

    names = available_profiles() if args.all else (args.profile or [DEFAULT_PROFILE])
    r = provision.setup(names, refresh=args.refresh, install=not args.no_install)
    for name, k in r.profiles.items():
        print(f"profile {name}: kernel {k['release']} (Debian {k['version']})")
    if args.docker:
        from grader.docker_backend import DockerBackend

        provision.ensure_engine(install=not args.no_install)
        backend = DockerBackend()
        for name in names:
            profile = load_profile(name)
            backend.prepare(profile, provision.load_kernel(profile))
        print("docker backend: engine running, images ready")
    print(f"accelerator: {r.accel}; guest image: {r.initramfs}")
    print(f"setup done in {r.seconds:.1f} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from grader import session

    env = session.prepare(args.profile)
    work = Path(tempfile.mkdtemp(prefix="grader-demo-"))
    b = session.build_reference(env, work, args.stage)
    if not b.ko:
        print(b.log, file=sys.stderr)
        return 1
    print(f"built reference stage {args.stage} in {b.duration_s:.1f} s: {b.ko}")
    with session.boot(env, {"taskmonitor": b.ko}, work / "guest") as g:
        print(f"guest {g.release} ({env.accel}) answered after {g.boot_s:.1f} s")
        pid = g.spawn("burn")
        r = g.insmod("taskmonitor", {"target": pid, "period_ms": args.period_ms})
        print(f"$ insmod taskmonitor.ko target={pid} period_ms={args.period_ms} -> {r.status}"
              f" {r.stderr.strip()}")
        time.sleep(args.seconds)
        for path in ("/sys/kernel/taskmonitor", "/sys/kernel/debug/taskmonitor"):
            r = g.read(path)
            lines = r.stdout.splitlines()
            print(f"$ cat {path}   # {len(r.stdout)} bytes, {len(lines)} lines")
            shown = lines if len(lines) <= 12 else [*lines[:5], "...", *lines[-5:]]
            print("\n".join(shown) if r.ok else r.stderr.strip())
        print(f"$ grep task_sample /proc/slabinfo\n{g.run('grep task_sample /proc/slabinfo').stdout}", end="")
        r = g.rmmod("taskmonitor")
        print(f"$ rmmod taskmonitor -> {r.status}")
        print("kernel log (console):")
        print("\n".join(g.console_lines[-5:]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from grader.report import load_json, render_terminal, write_reports

    result = load_json(Path(args.result).read_text())
    if args.out:
        for fmt, path in write_reports(result, Path(args.out), set(args.format),
                                       audience=args.audience).items():
            print(f"{fmt}: {path}")
    else:
        print(render_terminal(result, color=sys.stdout.isatty(), verbose=args.verbose,
                              audience=args.audience))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grader", formatter_class=_Formatter,
        description="Grades Linux kernel modules of the TP07 'taskmonitor' lab: builds them "
                    "against a pinned kernel, inspects the .ko, runs them in a QEMU guest.",
        epilog="examples:\n  grader setup --all\n  grader run submission.tar.gz\n"
               "  grader demo --profile 5.10\n\n" + EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"grader {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("setup", formatter_class=_Formatter,
                       help="provision kernels, build roots and the guest image (idempotent)",
                       description="Installs missing host packages (as root, with apt-get), then "
                                   "fetches each profile's kernel from Debian's archive into the "
                                   "cache ($GRADER_CACHE, default ~/.cache/grader), debootstraps "
                                   "a build root per Debian release, builds the guest image and "
                                   "probes KVM.",
                       epilog="example:\n  grader setup --profile 6.1 --profile 5.10\n")
    p.add_argument("--profile", "-p", action="append", metavar="NAME",
                   help="profile to provision (repeatable; default 6.1)")
    p.add_argument("--all", action="store_true", help="provision every profile in vm-images/")
    p.add_argument("--refresh", action="store_true",
                   help="resolve the kernel packages again (a newer Debian point release)")
    p.add_argument("--docker", action="store_true",
                   help="also prepare the docker backend: install and start the engine (as "
                        "root), and import the build and QEMU images")
    p.add_argument("--no-install", action="store_true",
                   help="never run apt-get; print the command instead")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("demo", formatter_class=_Formatter,
                       help="boot the reference module and show what it prints",
                       description="Builds the reference taskmonitor, boots it in the guest with a "
                                   "CPU burner as target, and prints sysfs, debugfs and slabinfo.",
                       epilog="example:\n  grader demo --profile 6.12 --stage 6\n")
    _profile_opt(p)
    p.add_argument("--stage", type=int, default=7, choices=range(1, 8), metavar="N",
                   help="reference at the end of exercise N (1-7, default 7)")
    p.add_argument("--period-ms", type=int, default=20, help="sampling period (default 20 ms)")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to sample (default 3)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", formatter_class=_Formatter,
                       help="render a saved JSON result again (terminal, html, junit, text)",
                       epilog="example:\n  grader report out/report.json --format html --out out/\n")
    p.add_argument("result", help="a report.json written by `grader run`")
    p.add_argument("--format", action="append", default=[], choices=["json", "junit", "html", "text"])
    p.add_argument("--out", help="directory to write the formats to (default: terminal)")
    p.add_argument("--verbose", "-v", action="store_true", help="show the evidence of every check")
    p.add_argument("--audience", choices=["staff", "student"], default="staff",
                   help="student: leave the rubric's hidden checks out")
    p.set_defaults(func=cmd_report)

    from grader import run_cli

    run_cli.add_parser(sub)
    from grader.batch import cli as batch_cli  # batch, merge, diff, export

    batch_cli.add_parser(sub)
    from grader import image as image_cli  # image build / inspect

    image_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except GraderError as e:
        print(f"grader: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("grader: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
