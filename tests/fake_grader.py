"""A stand-in for `grader run` in the fast batch tests (GRADER_BATCH_RUN_COMMAND points at it).

It takes the same arguments as `grader run SUB --out DIR --quiet --format json --rubric R
--profile P --backend B [--compat|--no-compat]` and writes a report.json whose stamp is computed
by the same rules as the real grader's. What it does is read from SUB/fake.json:
    {"checks": {"ex1.a": "passed", ...},   statuses of the fake rubric's checks (default passed)
     "sleep": 2.5,                           seconds to wait before answering
     "child_sleep": 60,                      start a grandchild that sleeps (process-group test)
     "exit": 1,                              exit status instead of a report (3: not a submission)
     "flood": 1000000,                       bytes printed on stdout first
     "incomplete": true,                     one check ends in ERROR
     "reason": "..."}                        reason of every failed check
Each start appends a JSON line to $FAKE_GRADER_LOG (what it was asked, its pid).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader import __version__  # noqa: E402
from grader.batch.entries import content_digest  # noqa: E402
from grader.model import CheckResult, Evidence, ExerciseResult, GradeResult, Stamp, Status  # noqa: E402
from grader.profiles import load_profile  # noqa: E402
from grader.provision import load_kernel  # noqa: E402
from grader.report import write_reports  # noqa: E402

# The fake rubric: (exercise, title, [(check id, title, points, visible)]).
RUBRIC = [
    (0, "Global", [("global.build", "builds", 1.0, True), ("global.load", "loads", 2.0, True)]),
    (1, "History", [("ex1.list", "samples in a list", 2.0, True),
                    ("ex1.hidden", "a hidden check", 1.0, False)]),
    (2, "Shrinker", [("ex2.frees", "frees memory", 3.0, True)]),
]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("submission")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--format", action="append")
    p.add_argument("--rubric", default="tp07")
    p.add_argument("--profile", default="6.1")
    p.add_argument("--backend", default="host")
    p.add_argument("--compat", dest="compat", action="store_true", default=None)
    p.add_argument("--no-compat", dest="compat", action="store_false")
    a = p.parse_args()
    sub = Path(a.submission)
    spec_file = sub / "fake.json" if sub.is_dir() else None
    spec = json.loads(spec_file.read_text()) if spec_file and spec_file.exists() else {}
    log = os.environ.get("FAKE_GRADER_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"submission": str(sub), "pid": os.getpid(), "pgid": os.getpgid(0),
                                "profile": a.profile, "compat": a.compat,
                                "out": a.out}) + "\n")
    if spec.get("flood"):
        chunk = "flood " * 1000 + "\n"
        n = 0
        while n < spec["flood"]:
            sys.stdout.write(chunk)
            n += len(chunk)
        sys.stdout.flush()
    if spec.get("child_sleep"):
        child = subprocess.Popen(["sleep", str(spec["child_sleep"])])
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"grandchild": child.pid}) + "\n")
    time.sleep(float(spec.get("sleep", 0)))
    if "exit" in spec:
        print(f"grader: error: fake failure {spec['exit']}", file=sys.stderr)
        return int(spec["exit"])
    rubric = Path(a.rubric)
    digest = hashlib.sha256(rubric.read_bytes()).hexdigest() if rubric.is_file() else "none"
    kernel = load_kernel(load_profile(a.profile))
    statuses = spec.get("checks", {})
    exercises = []
    for number, title, checks in RUBRIC:
        results = []
        for cid, ctitle, pts, visible in checks:
            st = Status(statuses.get(cid, "passed"))
            if spec.get("incomplete") and cid == "ex2.frees":
                st = Status.ERROR
            results.append(CheckResult(
                id=cid, exercise=number, title=ctitle, status=st,
                points=pts if st is Status.PASSED else 0.0, max_points=pts, visible=visible,
                reason="" if st is Status.PASSED else spec.get("reason", f"{cid} not met"),
                evidence=[Evidence(what=f"cat /sys/kernel/{cid}", expected="ok",
                                   seen=spec.get("seen", "ko"), log=spec.get("log", []))],
                duration_s=0.5))
        exercises.append(ExerciseResult(number, title, results))
    result = GradeResult(
        submission=str(sub),
        stamp=Stamp(grader_version=__version__, profile=a.profile,
                    kernel_release=kernel.release, kernel_package=kernel.version,
                    qemu_version="7.2", accel="tcg", rubric=rubric.stem,
                    rubric_digest=digest, submission_digest=content_digest(sub),
                    backend=a.backend),
        exercises=exercises,
        build_log=spec.get("build_log", ""),
        artifacts={"console_1": str(Path(a.out) / "guest" / "1" / "console.log")},
        complete=not spec.get("incomplete"),
    )
    write_reports(result, Path(a.out), a.format or ["json"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
