"""`grader image build` and the CI templates under ci/, for real: the image is built once for
this module (profile 6.1), then graded in as the GitLab docker executor would run the student's
job (`docker run`, no privileges, the repository mounted as the working directory, CI_*
variables), and compared with the same grade made on the host. Needs a running Docker engine;
outside CI its absence skips these tests with the command to run, in CI (CI=true) it fails."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable

from grader.errors import EnvironmentProblem
from grader.limits import DEFAULT as LIMITS
from grader.profiles import project_root

ROOT = project_root()
REFERENCE = ROOT / "reference" / "taskmonitor"
GITLAB_JOB = ROOT / "ci" / "gitlab" / "grade.gitlab-ci.yml"
GITLAB_CLASS = ROOT / "ci" / "gitlab" / "class.gitlab-ci.yml"
PROFILE = "6.1"
TAG = f"grader-test:{PROFILE}"
IMAGE_LABEL = "org.grader.image"


# ---- without an engine ----------------------------------------------------------------------
def test_an_old_report_without_the_image_field_still_loads():
    from grader.model import GradeResult, Stamp

    stamp = Stamp("0.1.0", "6.1", "6.1.0-57-cloud-amd64", "6.1.192-3", "7.2", "tcg", "tp07",
                  "r" * 64, "s" * 64, image="sha256:abc")
    d = GradeResult(submission="alice", stamp=stamp).to_dict()
    assert d["stamp"]["image"] == "sha256:abc"
    assert GradeResult.from_dict(d).stamp.image == "sha256:abc"
    del d["stamp"]["image"]  # a report.json written before the field existed
    assert GradeResult.from_dict(d).stamp.image == ""


def test_tag_names():
    from grader.image import tag_names

    assert tag_names(None, "6.1") == ["grader:6.1"]
    assert tag_names(["reg.example.edu:5000/os/grader:{profile}-2025s", "mine"], "5.10") == [
        "reg.example.edu:5000/os/grader:5.10-2025s", "mine:5.10"]


def test_the_host_keeps_bubblewrap(envs, monkeypatch):
    """The chroot sandbox is only for the image's layout: on the host nothing changes."""
    from grader.build import choose_sandbox

    env = envs[PROFILE]
    monkeypatch.delenv("GRADER_SANDBOX", raising=False)
    assert choose_sandbox(env.profile, env.kernel)[0] == "bwrap"
    monkeypatch.setenv("GRADER_SANDBOX", "none")
    with pytest.raises(EnvironmentProblem, match="valid: bwrap, chroot"):
        choose_sandbox(env.profile, env.kernel)


# ---- the image --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    from grader.provision import ensure_engine

    try:
        return ensure_engine(install=False)
    except EnvironmentProblem as e:
        unavailable(f"no usable Docker engine: {e}; run: ./grader.sh setup --docker")


@pytest.fixture(scope="module")
def image(engine, envs):  # type: ignore[no-untyped-def]
    """The image of profile 6.1, built once for the module (minutes when nothing is cached)."""
    from grader.image import build_image

    envs[PROFILE]  # the profile must be provisioned on the host first
    t0 = time.monotonic()
    r = build_image(PROFILE, [TAG])
    print(f"\nimage {TAG}: {'reused' if r.reused else 'built'} in {time.monotonic() - t0:.1f} s, "
          f"{r.size_bytes / 1e6:.0f} MB, steps {r.seconds}", file=sys.stderr)
    return r


def docker_run(image: str, *args: str, volumes: dict[Path, str] | None = None,
               env: dict[str, str] | None = None, workdir: str = "", user: str = "",
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`docker run` as a CI runner does it: no --privileged, no device, no added capability;
    and no network, so that anything the image would still download fails here."""
    cmd = ["docker", "run", "--rm", "--network", "none"]
    for host, inside in (volumes or {}).items():
        cmd += ["-v", f"{host}:{inside}"]
    for k, v in (env or {}).items():
        cmd += ["-e", f"{k}={v}"]
    if workdir:
        cmd += ["-w", workdir]
    if user:
        cmd += ["--user", user]
    return subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=timeout)


def in_image(image: str, code: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return docker_run(image, "python3", "-c", code, **kw)


@pytest.mark.docker
def test_the_image_is_made_once_and_says_what_it_holds(engine, envs, image):
    from grader.image import build_image

    before = image
    for _ in range(3):
        again = build_image(PROFILE, [TAG])
        if again.inputs == before.inputs:
            break
        # The shared checkout changed during the build (another engineer's edit): made anew.
        assert not again.reused and again.image_id != before.image_id
        before = again
    assert again.reused and again.image_id == before.image_id and again.stamped == before.stamped
    img = engine.images.get(TAG)
    kernel = envs[PROFILE].kernel
    assert img.labels["org.grader.profile"] == PROFILE
    assert img.labels["org.grader.kernel"] == f"{kernel.release} ({kernel.version})"
    assert img.labels[IMAGE_LABEL] == again.stamped
    assert f"GRADER_IMAGE={again.stamped}" in img.attrs["Config"]["Env"]
    assert not img.attrs.get("RepoDigests")  # made here, never pulled from a registry
    # The kernel tree is the host's, file for file (spot checks).
    tree = kernel.tree
    rels = [kernel.vmlinuz, f"{kernel.headers}/Makefile", f"{kernel.headers}/Module.symvers"]
    inside = [f"/opt/grader/cache/kernels/{PROFILE}/{kernel.release}/{rel}" for rel in rels]
    p = docker_run(TAG, "sha256sum", *inside)
    assert p.returncode == 0, p.stderr
    seen = [ln.split()[0] for ln in p.stdout.splitlines()]
    assert seen == [hashlib.sha256((tree / rel).read_bytes()).hexdigest() for rel in rels]


@pytest.mark.docker
def test_the_build_sandbox_in_the_container(image):
    """bwrap cannot make its namespaces in an unprivileged container: the chroot sandbox is
    chosen, as nobody, with the host sandbox's limits, the kernel tree and root read-only."""
    code = """
import json, os
from grader import session
from grader.build import _empty, choose_sandbox, root_dir, run_in_chroot
env = session.prepare("6.1", auto_setup=False)
name, why = choose_sandbox(env.profile, env.kernel)
root = root_dir(env.profile.build_suite)
_empty(root / "mod")
script = ("id -u; id -g; ulimit -v; ulimit -f; pwd; "
          "touch /mod/written && echo mod-writable; "
          "touch /usr/src/x 2>/dev/null && echo kernel-writable; "
          "touch /usr/bin/x 2>/dev/null && echo root-writable; "
          "echo $HOME $PATH")
code, out, timed_out = run_in_chroot(root, ["sh", "-c", script])
slow = run_in_chroot(root, ["sleep", "30"], timeout_s=1)
print(json.dumps({"name": name, "why": why, "code": code, "out": out.split(),
                  "timeout": [slow[2], slow[0]]}))
"""
    p = in_image(TAG, code)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["name"] == "chroot" and "bubblewrap cannot create namespaces" in r["why"]
    assert r["code"] == 0
    # dash's ulimit: -v in KiB, -f in blocks of 512 bytes.
    assert r["out"] == ["65534", "65534", str(LIMITS.build_memory_bytes // 1024),
                        str(LIMITS.build_file_bytes // 512), "/mod", "mod-writable",
                        "/tmp", "/usr/bin:/bin"]
    assert r["timeout"] == [True, -9]

    # Forcing bwrap shows why it is not chosen: the build cannot run (an ERROR, not the student's).
    code = """
import tempfile, pathlib
from grader import session
env = session.prepare("6.1", auto_setup=False)
r = session.build_reference(env, pathlib.Path(tempfile.mkdtemp()))
print(r.status, r.log.strip().splitlines()[-1])
"""
    p = in_image(TAG, code, env={"GRADER_SANDBOX": "bwrap"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("error bwrap:"), p.stdout

    # Not root in the container: no sandbox can be made, and the message says what to do.
    p = in_image(TAG, code, user="1000:1000")
    assert p.returncode != 0
    assert "run the grader's image as its default user" in p.stderr, p.stderr


@pytest.mark.docker
def test_the_module_built_in_the_image_is_the_hosts(envs, image, tmp_path):
    from grader import session

    host = session.build_reference(envs[PROFILE], tmp_path)
    assert host.ko is not None, host.log
    code = """
import hashlib, tempfile, pathlib
from grader import session
env = session.prepare("6.1", auto_setup=False)
r = session.build_reference(env, pathlib.Path(tempfile.mkdtemp()))
print(r.status, hashlib.sha256(r.ko.read_bytes()).hexdigest(), r.log.splitlines()[0])
"""
    p = in_image(TAG, code)
    assert p.returncode == 0, p.stderr
    status, digest, first = p.stdout.split(" ", 2)
    assert status == "passed"
    assert first.startswith("[grader] build sandbox: chroot as uid 65534")
    # Same compiler, same kernel tree, same paths (/mod): the very same bytes.
    assert digest == hashlib.sha256(host.ko.read_bytes()).hexdigest()


# ---- the GitLab job ---------------------------------------------------------------------------
def gitlab_job(path: Path, name: str) -> dict[str, Any]:
    """One job of a GitLab template: its script lines, artifact paths, JUnit report and
    `parallel:`, read with a few regular expressions (the templates are ours, kept simple)."""
    m = re.search(rf"^{re.escape(name)}:\n((?:[ #].*\n|\n)*)", path.read_text(), re.M)
    assert m, f"no job {name} in {path}"
    job = m.group(1)

    def items(key: str, indent: int) -> list[str]:
        found = re.search(rf"^ {{{indent}}}{key}:\n((?: {{{indent + 2}}}- .*\n)+)", job, re.M)
        return re.findall(r"- (.+)", found.group(1)) if found else []

    junit = re.search(r"^ +junit: (\S+)$", job, re.M)
    parallel = re.search(r"^  parallel: (\d+)", job, re.M)
    return {"script": items("script", 2), "paths": items("paths", 4),
            "junit": junit.group(1) if junit else None,
            "parallel": int(parallel.group(1)) if parallel else None}


def student_repo(path: Path, sources: dict[str, str]) -> Path:
    """A student's repository as the runner checks it out: the files, and .git."""
    path.mkdir(parents=True)
    for name, text in sources.items():
        (path / name).write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=student", "-c", "user.email=s@example.edu"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "tp07"], check=True)
    return path


def run_gitlab_job(repo: Path, extra_env: dict[str, str] | None = None, *,
                   template: Path = GITLAB_JOB, job: str = "grade",
                   project: str = "tp07-alice") -> subprocess.CompletedProcess[str]:
    """A job as GitLab's docker executor runs it: the image, the repository mounted at
    CI_PROJECT_DIR as the working directory, the script lines in a shell that stops on errors,
    the template's variables and GitLab's CI_* ones."""
    script = gitlab_job(template, job)["script"]
    inside = f"/builds/os-course/{project}"
    variables = dict(re.findall(r"^  (GRADER_\w+): (\S+)$", template.read_text(), re.M))
    variables.pop("GRADER_IMAGE", None)  # the image is the one built here
    env = {"CI": "true", "GITLAB_CI": "true", "CI_PROJECT_DIR": inside,
           "CI_PROJECT_NAME": project, "CI_PROJECT_PATH": f"os-course/{project}",
           "CI_JOB_NAME": job, "CI_JOB_ID": "1", "CI_PIPELINE_ID": "1",
           "CI_COMMIT_SHA": "0" * 40, **variables, **(extra_env or {})}
    return docker_run(TAG, "sh", "-c", "set -e\n" + "\n".join(script), volumes={repo: inside},
                      env=env, workdir=inside)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def junit_statuses(path: Path) -> dict[str, str]:
    """check id -> passed / failed / skipped / <error type>, as a CI dashboard reads it."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    out = {}
    for case in root.iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag == "failure":
                kind = "failed"
            elif child.tag == "skipped":
                kind = "skipped"
            elif child.tag == "error":
                kind = child.get("type") or "error"
        out[case.get("name")] = kind
    return out


def statuses(report: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {c["id"]: c["status"] for e in report["exercises"] for c in e["checks"]}


def as_junit(st: dict[str, str]) -> dict[str, str]:
    """The report's statuses as JUnit can say them: it has no 'not graded' (a check of a kernel
    the job does not combine, e.g. the debug kernel's), only skipped."""
    return {k: "skipped" if v == "not_graded" else v for k, v in st.items()}


def host_grade(submission: Path, out: Path) -> dict:  # type: ignore[type-arg]
    """The same grading on the host. The image holds one kernel, its profile's: the host grades
    on that kernel only too (--no-combine), not combined with a debug kernel it may have."""
    p = subprocess.run([sys.executable, "-m", "grader.cli", "run", str(submission), "--out",
                        str(out), "--profile", PROFILE, "-q", "--format", "json", "--no-combine"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.docker
@pytest.mark.guest
def test_gitlab_job_grades_the_reference_as_the_host_does(engine, image, tmp_path):
    repo = student_repo(tmp_path / "repo", {p.name: p.read_text() for p in REFERENCE.iterdir()
                                            if p.is_file()})
    p = run_gitlab_job(repo)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    job = gitlab_job(GITLAB_JOB, "grade")
    junit, paths = job["junit"], job["paths"]
    assert paths == ["grader-report/"] and junit == "grader-report/report.xml"
    report_dir = repo / paths[0]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["complete"] and report["score"] == report["max_score"], p.stdout[-3000:]

    # The JUnit report GitLab reads, with a JUnit reading of every check.
    seen = junit_statuses(repo / junit)
    assert seen == as_junit(statuses(report))
    assert set(statuses(report).values()) <= {"passed", "not_graded"}
    # The HTML report kept as an artifact: a page with the score and the stamp's image.
    page = _Text()
    page.feed((report_dir / "report.html").read_text())
    text = " ".join(page.text)
    assert "html" in page.tags and "table" in page.tags
    stamped = engine.images.get(TAG).labels[IMAGE_LABEL]  # the image the job ran in
    assert stamped in text
    assert re.search(rf"\b{report['score']:g}\s*/\s*{report['max_score']:g}\b", text), text[:2000]
    # Graded in the image: stamped with it, built in the chroot sandbox, the history kept out.
    assert report["stamp"]["image"] == stamped
    assert report["build_log"].startswith("[grader] build sandbox: chroot as uid 65534")
    assert report["submission"] == "tp07-alice"
    assert not (report_dir / "work" / "build" / "src" / ".git").exists()

    # The same grade on the host: same statuses, same score (timings aside).
    host = host_grade(REFERENCE, tmp_path / "host")
    assert statuses(report) == statuses(host)
    assert report["score"] == host["score"] and report["max_score"] == host["max_score"]
    for key in ("profile", "kernel_release", "kernel_package", "accel", "rubric_digest"):
        assert report["stamp"][key] == host["stamp"][key], key
    assert host["stamp"]["image"] == ""


@pytest.mark.docker
def test_gitlab_job_on_a_module_that_does_not_compile(image, tmp_path):
    """A failure shows as a JUnit failure with the compiler's file and line, as on the host;
    the job itself passes (graded) unless the course sets a pass score. The same script on
    GitHub writes the job summary."""
    text = (REFERENCE / "taskmonitor.c").read_text()
    broken = text.replace("kref_init(&ts->refcount);", "kref_init(ts->refcount);", 1)
    assert broken != text
    sources = {"taskmonitor.c": broken, "Makefile": "obj-m += taskmonitor.o\n"}
    repo = student_repo(tmp_path / "repo", sources)
    p = run_gitlab_job(repo)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads((repo / "grader-report" / "report.json").read_text())
    seen = junit_statuses(repo / "grader-report" / "report.xml")
    assert seen["global.build"] == "failed" and seen == as_junit(statuses(report))
    host = host_grade(student_repo(tmp_path / "host-copy", sources), tmp_path / "host")
    assert statuses(report) == statuses(host)
    assert report["diagnostics"] == host["diagnostics"] and report["diagnostics"]
    assert any(d["file"] == "taskmonitor.c" and d["line"] > 0 for d in report["diagnostics"])

    summary = repo / "summary.md"
    os.chown(repo, 1000, 1000)  # a runner's user: the reports must become theirs
    p = run_gitlab_job(repo, {"GRADER_PASS_SCORE": str(report["max_score"]),
                              "GITHUB_STEP_SUMMARY": "/builds/os-course/tp07-alice/summary.md"})
    assert p.returncode == 1 and "is below" in p.stderr, p.stderr[-2000:]
    assert summary.read_text().startswith(f"## Grade: {report['score']:g} / {report['max_score']:g}")
    assert "global.build" in summary.read_text()
    # The reports belong to whoever owns the repository, not to the container's root.
    assert {f.stat().st_uid for f in (repo / "grader-report").rglob("*")} == {1000}


def test_the_templates_call_scripts_that_exist():
    """Every script a template calls is in ci/ (as /opt/grader/ci/ in the image), is
    executable and is valid POSIX shell."""
    called = set()
    for path in sorted((ROOT / "ci").rglob("*.yml")):
        if "gradescope" in path.parts:
            continue
        called |= set(re.findall(r"/opt/grader/ci/([\w.-]+\.sh)", path.read_text()))
    assert called == {"grade.sh", "batch-shard.sh", "merge.sh"}
    for name in called:
        script = ROOT / "ci" / name
        assert os.access(script, os.X_OK), script
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0, script
    assert shutil.which("sh")


@pytest.mark.docker
def test_gitlab_class_jobs_grade_in_slices_and_merge(image, tmp_path):
    """The staff pipeline: the `parallel:` job's script once per slice (CI_NODE_INDEX of
    CI_NODE_TOTAL), each slice's folder kept, then the merge job's script over all of them (as
    GitLab extracts every slice's artifacts side by side), and over the folders named as
    actions/download-artifact names them (the GitHub matrix). Modules that do not compile keep
    it fast: one build each, no guest."""
    grade, merge = gitlab_job(GITLAB_CLASS, "grade-class"), gitlab_job(GITLAB_CLASS, "merge-class")
    n = grade["parallel"]
    assert n and n > 1 and grade["paths"] == ["shards/"] and merge["paths"] == ["class/"]
    text = (REFERENCE / "taskmonitor.c").read_text().replace(
        "kref_init(&ts->refcount);", "kref_init(ts->refcount);", 1)
    students = ["alice", "bob", "carol", "dave", "erin"]
    repo = student_repo(tmp_path / "staff", {"README": "TP07 submissions\n"})
    for who in students:
        (repo / "submissions" / who).mkdir(parents=True)
        (repo / "submissions" / who / "taskmonitor.c").write_text(f"/* {who} */\n{text}")

    for k in range(1, n + 1):
        p = run_gitlab_job(repo, {"CI_NODE_INDEX": str(k), "CI_NODE_TOTAL": str(n)},
                           template=GITLAB_CLASS, job="grade-class", project="tp07-staff")
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        assert (repo / "shards" / str(k)).is_dir()
    p = run_gitlab_job(repo, template=GITLAB_CLASS, job="merge-class", project="tp07-staff")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    with open(repo / "class" / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r[next(iter(r))] for r in rows) == students, rows

    # GitHub: download-artifact puts slice K under shards/shard-K; the same merge.
    gh = repo / "gh"
    for k in range(1, n + 1):
        shutil.copytree(repo / "shards" / str(k), gh / f"shard-{k}")
    p = run_gitlab_job(repo, {"GRADER_SHARDS_DIR": "gh", "GRADER_CLASS": "gh-class"},
                       template=GITLAB_CLASS, job="merge-class", project="tp07-staff")
    assert p.returncode == 0, p.stderr[-2000:]
    assert (repo / "gh-class" / "grades.csv").read_bytes() == (repo / "class" / "grades.csv").read_bytes()

    # A slice missing: the merge refuses (grader merge names what is missing).
    shutil.rmtree(gh / "shard-2")
    p = run_gitlab_job(repo, {"GRADER_SHARDS_DIR": "gh", "GRADER_CLASS": "gh-class2"},
                       template=GITLAB_CLASS, job="merge-class", project="tp07-staff")
    assert p.returncode != 0 and f"missing shard(s): 2/{n}" in p.stderr, p.stderr[-2000:]
    assert not (repo / "gh-class2" / "grades.csv").exists()
