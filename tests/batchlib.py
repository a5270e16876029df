"""Helpers of the fast batch tests: a fake environment where `grader batch` runs tests/fake_grader.py.

The fake needs no kernel and no guest: GRADER_CACHE points at a folder holding only the
resolved.json of each profile (all the batch reads of a kernel), and GRADER_BATCH_RUN_COMMAND (the
batch's documented test hook) replaces `grader run`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FAKE = Path(__file__).with_name("fake_grader.py")
RUBRIC_TEXT = """\
name = "fake"
title = "Fake lab"
[[exercises]]
number = 1
[[exercises.checks]]
id = "ex1.list"
"""
RELEASES = {"6.1": "6.1.0-99-cloud-amd64", "5.10": "5.10.0-99-cloud-amd64"}


@dataclass
class FakeEnv:
    root: Path
    env: dict[str, str]
    rubric: Path
    log: Path

    def submission(self, name: str, spec: dict | None = None, source: str = "int x;\n") -> Path:
        d = self.root / "subs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "taskmonitor.c").write_text(source)
        if spec is not None:
            (d / "fake.json").write_text(json.dumps(spec))
        return d

    def batch(self, *args: str, check: bool = False, timeout: float = 120,
              **popen) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "grader.cli", "batch", *args, "--rubric", str(self.rubric)]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check, **popen)

    def grader(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "grader.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=120)

    def starts(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(ln) for ln in self.log.read_text().splitlines() if '"submission"' in ln]


def make_fake_env(root: Path) -> FakeEnv:
    cache = root / "cache"
    for profile, release in RELEASES.items():
        kdir = cache / "kernels" / profile
        kdir.mkdir(parents=True)
        (kdir / "resolved.json").write_text(json.dumps({
            "release": release, "version": "1.0-1", "vmlinuz": f"boot/vmlinuz-{release}",
            "headers_dir": "usr/src/h", "kbuild_dir": "usr/lib/k", "packages": []}))
    rubric = root / "rubric.toml"
    rubric.write_text(RUBRIC_TEXT)
    log = root / "fake.log"
    env = {**os.environ, "GRADER_CACHE": str(cache), "FAKE_GRADER_LOG": str(log),
           "GRADER_BATCH_RUN_COMMAND": json.dumps([sys.executable, str(FAKE)])}
    env.pop("GRADER_HOME", None)
    return FakeEnv(root, env, rubric, log)


def make_result(submission: str = "alice", statuses: dict[str, str] | None = None, *,
                reason: str = "not met", log: tuple[str, ...] = (), build_log: str = "",
                complete: bool = True, source_note: str = ""):
    """A GradeResult shaped like tests/fake_grader.py's, built directly (no subprocess)."""
    from fake_grader import RUBRIC

    from grader.model import (
        CheckResult,
        Evidence,
        ExerciseResult,
        GradeResult,
        Stamp,
        Status,
    )

    statuses = statuses or {}
    exercises = []
    for number, title, checks in RUBRIC:
        out = []
        for cid, ctitle, pts, visible in checks:
            st = Status(statuses.get(cid, "passed"))
            out.append(CheckResult(
                id=cid, exercise=number, title=ctitle, status=st,
                points=pts if st is Status.PASSED else 0.0, max_points=pts, visible=visible,
                reason="" if st is Status.PASSED else reason,
                evidence=[Evidence(what=f"cat /sys/kernel/{cid}", expected="ok", seen="ko",
                                   log=list(log))], duration_s=0.25))
        exercises.append(ExerciseResult(number, title, out))
    return GradeResult(
        submission=submission,
        stamp=Stamp(grader_version="0.1.0", profile="6.1", kernel_release="6.1.0-99-cloud-amd64",
                    kernel_package="1.0-1", qemu_version="7.2", accel="tcg", rubric="fake",
                    rubric_digest="ab" * 32, submission_digest="cd" * 32),
        exercises=exercises, build_log=build_log, complete=complete,
        notes=[source_note] if source_note else [])
