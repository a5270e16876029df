"""`grader batch`, `merge`, `diff`: the store, keys, resume after SIGKILL, bounds, shards.

Fast tests run the real `grader batch` command with tests/fake_grader.py in place of `grader run`
(the batch's documented test hook). The guest test at the end grades the real corpus (variants,
hostile modules, reference) through tests/corpus.py, killed with SIGKILL a third of the way and
started again.
"""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batchlib import FakeEnv, make_fake_env

from grader.batch import entries as en
from grader.batch.shard import parse_shard, shard_of
from grader.batch.store import FAILED, GRADED, REJECTED, KeyParts, Record, Store, write_atomic
from grader.errors import ConfigError


@pytest.fixture
def fake(tmp_path: Path) -> FakeEnv:
    return make_fake_env(tmp_path)


def _records(out: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "record.json").read_text())
            for p in (out / "results").iterdir()}


def _csv(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))


# ---- store ---------------------------------------------------------------------------------
def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "d" / "f.json"
    write_atomic(p, "one")
    write_atomic(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.json"]


def test_key_changes_with_each_part() -> None:
    base = KeyParts("sub", "rub", "6.1.0-1", "0.1.0", None)
    keys = {base.key(), KeyParts("sub2", "rub", "6.1.0-1", "0.1.0").key(),
            KeyParts("sub", "rub2", "6.1.0-1", "0.1.0").key(),
            KeyParts("sub", "rub", "6.1.0-2", "0.1.0").key(),
            KeyParts("sub", "rub", "6.1.0-1", "0.2.0").key(),
            KeyParts("sub", "rub", "6.1.0-1", "0.1.0", True).key()}
    assert len(keys) == 6
    assert base.key() == KeyParts("sub", "rub", "6.1.0-1", "0.1.0", None).key()


def test_commit_is_one_rename_and_staging_is_cleaned(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.lock()
    staged = store.stage("k1")
    (staged / "report.json").write_text("{}")
    assert not store.path("k1").exists()  # nothing in results/ before the rename
    store.commit(staged, Record(key="k1", status=GRADED, parts={}))
    assert sorted(p.name for p in store.path("k1").iterdir()) == ["record.json", "report.json"]
    assert store.record("k1").status == GRADED
    left = store.stage("k2")  # a batch killed here leaves this behind
    (left / "report.json").write_text("{half")
    assert store.clean_staging() == 1 and not left.exists()
    assert store.record("k2") is None


def test_one_batch_per_folder(tmp_path: Path) -> None:
    a, b = Store(tmp_path), Store(tmp_path)
    a.lock()
    with pytest.raises(ConfigError, match="another grader batch"):
        b.lock()
    a.unlock()
    b.lock()


# ---- entries -------------------------------------------------------------------------------
def test_student_ids_from_names_mapping_and_list(tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("alice.tar.gz", "bob.zip", "carol.tgz", ".hidden"):
        (subs / name).write_bytes(b"x")
    (subs / "dave").mkdir()
    items = en.from_folder(subs)
    assert [e.student for e in items] == ["alice", "bob", "carol", "dave"]
    mapping = tmp_path / "map.csv"
    mapping.write_text('file,student,name\nbob.zip,b042,"Bob, Jr."\n')
    mapped, unmapped = en.apply_mapping(items, mapping)
    assert [(e.student, e.name) for e in mapped][1] == ("b042", "Bob, Jr.")
    assert unmapped == ["alice.tar.gz", "carol.tgz", "dave"]
    lst = tmp_path / "list.csv"
    lst.write_text("path,student,profile,compat\nsubs/dave,d1,5.10,yes\nsubs/bob.zip,,,\n")
    got = en.from_list(lst)
    assert [(e.student, e.profile, e.compat) for e in got] == [("d1", "5.10", True),
                                                               ("bob", None, None)]
    assert got[0].path == tmp_path / "subs" / "dave"
    plain = tmp_path / "plain.txt"
    plain.write_text("# a comment\nsubs/alice.tar.gz\n")
    assert [e.student for e in en.from_list(plain)] == ["alice"]
    with pytest.raises(ConfigError, match="alice"):
        en.check_unique([*items, en.Entry("alice", subs / "other.zip")])


def test_content_digest_is_the_graders(tmp_path: Path) -> None:
    from grader.intake import intake

    d = tmp_path / "sub"
    d.mkdir()
    (d / "taskmonitor.c").write_text("int x;\n")
    assert en.content_digest(d) == intake(d, tmp_path / "w").digest
    f = tmp_path / "one.c"
    f.write_text("int y;\n")
    assert en.content_digest(f) == intake(f, tmp_path / "w2").digest


def test_shards_are_stable_and_cover_everyone() -> None:
    ids = [f"student{i:03d}" for i in range(300)]
    slices = [shard_of(s, 3) for s in ids]
    assert slices == [shard_of(s, 3) for s in ids]
    assert {1, 2, 3} == set(slices)
    assert all(60 < slices.count(k) < 140 for k in (1, 2, 3))
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


# ---- the batch command, with the fake grader -------------------------------------------------
def test_batch_resumes_without_regrading_and_retries_failures(fake: FakeEnv) -> None:
    fake.submission("alice", {})
    fake.submission("bob", {"checks": {"ex1.list": "failed", "global.load": "crashed"}})
    fake.submission("carol", {"exit": 1})  # the grader itself fails
    fake.submission("dave", {"exit": 3})  # not a submission: the student's fault, final
    fake.submission("erin", {"incomplete": True})  # a grader error inside the grade
    out = fake.root / "out"
    r = fake.batch(str(fake.root / "subs"), "--out", str(out), "-j2")
    assert r.returncode == 5, r.stderr  # some submissions have no final grade
    assert "carol (failed)" in r.stderr and "erin (incomplete)" in r.stderr
    recs = {json.loads((out / "results" / row["key"] / "record.json").read_text())["status"]
            for row in json.loads((out / "batch.json").read_text())["rows"]}
    assert recs == {GRADED, FAILED, REJECTED, "incomplete"}
    rows = {r["student"]: r for r in _csv(out)}
    assert rows["alice"]["total"] == "9" and rows["alice"]["complete"] == "yes"
    assert rows["bob"]["total"] == "5" and rows["bob"]["ex1"] == "1"
    assert rows["carol"]["total"] == "" and rows["carol"]["complete"] == "no"
    assert rows["dave"]["total"] == "0" and rows["dave"]["status"] == "rejected"
    first = {s["submission"] for s in fake.starts()}
    assert len(fake.starts()) == 5 and len(first) == 5
    mtimes = {k: os.stat(out / "results" / k / "report.json").st_mtime_ns
              for k in _records(out) if (out / "results" / k / "report.json").exists()}

    r = fake.batch(str(fake.root / "subs"), "--out", str(out), "-j2")
    again = [Path(s["submission"]).name for s in fake.starts()[5:]]
    assert sorted(again) == ["carol", "erin"]  # only what had no final grade
    for k, m in mtimes.items():
        if _records(out)[k]["status"] == GRADED:
            assert os.stat(out / "results" / k / "report.json").st_mtime_ns == m

    r = fake.batch(str(fake.root / "subs"), "--out", str(out), "-j2", "--force")
    assert len(fake.starts()) == 12  # --force: all five again


def test_timeout_kills_the_whole_process_group(fake: FakeEnv) -> None:
    fake.submission("slow", {"sleep": 60, "child_sleep": 120})
    fake.submission("quick", {})
    out = fake.root / "out"
    t0 = time.monotonic()
    r = fake.batch(str(fake.root / "subs"), "--out", str(out), "-j2", "--timeout", "3")
    assert time.monotonic() - t0 < 60  # ended by the 3 s timeout, not by the 60 s sleep
    assert r.returncode == 5
    slow = next(v for v in _records(out).values() if v["status"] == FAILED)
    assert "within 3 s" in slow["reason"]
    grandchild = next(json.loads(ln)["grandchild"] for ln in fake.log.read_text().splitlines()
                      if "grandchild" in ln)
    assert not _alive(grandchild), "the grader's own child outlived the timeout"
    assert {r["student"]: r["total"] for r in _csv(out)}["quick"] == "9"


def test_flood_is_bounded(fake: FakeEnv) -> None:
    fake.submission("flood", {"flood": 20_000_000})
    out = fake.root / "out"
    r = fake.batch(str(fake.root / "subs"), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    (rec,) = _records(out).values()
    assert rec["status"] == GRADED and len(rec["output_tail"]) <= 4000
    assert sum(p.stat().st_size for p in (out / "results").rglob("*") if p.is_file()) < 1_000_000


def test_list_file_options_reach_grader_run(fake: FakeEnv) -> None:
    a = fake.submission("a", {})
    b = fake.submission("b", {})
    lst = fake.root / "list.csv"
    lst.write_text(f"path,student,profile,compat\n{a},s-a,5.10,true\n{b},s-b,,\n")
    out = fake.root / "out"
    r = fake.batch(str(lst), "--out", str(out), "--no-compat", "--quiet")
    assert r.returncode == 0, r.stderr
    got = {Path(s["submission"]).name: (s["profile"], s["compat"]) for s in fake.starts()}
    assert got == {"a": ("5.10", True), "b": ("6.1", False)}
    m = json.loads((out / "batch.json").read_text())
    assert m["kernels"] == {"5.10": "5.10.0-99-cloud-amd64", "6.1": "6.1.0-99-cloud-amd64"}


def test_sigkill_mid_batch_loses_nothing_and_regrades_nothing(fake: FakeEnv) -> None:
    for i in range(8):
        fake.submission(f"s{i}", {"sleep": 0.7, "child_sleep": 60}, source=f"int x{i};\n")
    out = fake.root / "out"
    cmd = [sys.executable, "-m", "grader.cli", "batch", str(fake.root / "subs"), "--out",
           str(out), "-j2", "--quiet", "--rubric", str(fake.rubric)]
    p = subprocess.Popen(cmd, env=fake.env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (out / "results").is_dir() and len(list((out / "results").iterdir())) >= 3:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = {k: os.stat(out / "results" / k / "report.json").st_ino for k in _records(out)}
    assert 3 <= len(done) < 8
    for k in done:  # every result present is whole
        json.loads((out / "results" / k / "report.json").read_text())
    children = [s["pid"] for s in fake.starts()]
    # The graders get SIGKILL from their parent's death (pdeathsig): soon, not at once on a
    # loaded machine; what matters is that none lives on.
    deadline = time.monotonic() + 30
    while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)], "a grader outlived the killed batch"

    r = fake.batch(str(fake.root / "subs"), "--out", str(out), "-j2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(_records(out)) == 8
    for k, ino in done.items():
        assert os.stat(out / "results" / k / "report.json").st_ino == ino
    # No key graded twice across the runs. (A kill between a result's rename and its log line
    # loses the line, never the result: the results are counted above.)
    graded = [e["key"] for e in Store(out).events() if e["event"] == "graded"]
    assert len(graded) == len(set(graded))
    assert not list((out / ".st").iterdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


# ---- shards and merge ------------------------------------------------------------------------
def _class(fake: FakeEnv, n: int = 9) -> None:
    for i in range(n):
        fake.submission(f"st{i:02d}", {"checks": {"ex1.list": "failed"}} if i % 3 else {})


def test_merge_of_three_shards_equals_one_batch_byte_for_byte(fake: FakeEnv) -> None:
    _class(fake)
    subs = str(fake.root / "subs")
    whole = fake.root / "whole"
    assert fake.batch(subs, "--out", str(whole), "--quiet").returncode == 0
    shards = []
    for k in (1, 2, 3):
        d = fake.root / f"shard{k}"
        r = fake.batch(subs, "--out", str(d), "--shard", f"{k}/3", "--quiet")
        assert r.returncode == 0, r.stderr
        shards.append(str(d))
    assert sum(len(json.loads((Path(d) / "batch.json").read_text())["rows"])
               for d in shards) == 9
    merged = fake.root / "merged"
    r = fake.grader("merge", *shards, "--out", str(merged))
    assert r.returncode == 0, r.stderr
    assert (merged / "grades.csv").read_bytes() == (whole / "grades.csv").read_bytes()
    html = (merged / "class.html").read_text()
    for row in json.loads((merged / "batch.json").read_text())["rows"]:
        assert (merged / "results" / row["key"] / "report.html").exists()
        assert f'href="results/{row["key"]}/report.html"' in html


def test_merge_refuses_missing_and_disagreeing_shards(fake: FakeEnv) -> None:
    _class(fake, 6)
    subs = str(fake.root / "subs")
    for k in (1, 2, 3):
        fake.batch(subs, "--out", str(fake.root / f"s{k}"), "--shard", f"{k}/3", "--quiet")
    r = fake.grader("merge", str(fake.root / "s1"), str(fake.root / "s3"), "--out",
                    str(fake.root / "m"))
    assert r.returncode == 2 and "missing shard(s): 2/3" in r.stderr
    fake.rubric.write_text(fake.rubric.read_text() + "# changed\n")
    fake.batch(subs, "--out", str(fake.root / "s2"), "--shard", "2/3", "--quiet")
    r = fake.grader("merge", *(str(fake.root / f"s{k}") for k in (1, 2, 3)), "--out",
                    str(fake.root / "m"))
    assert r.returncode == 2 and "disagree on the rubric" in r.stderr
    assert "s2" in r.stderr and not (fake.root / "m" / "grades.csv").exists()


# ---- diff --------------------------------------------------------------------------------------
def test_diff_names_changed_checks_and_why(fake: FakeEnv) -> None:
    fake.submission("alice", {})
    bob = fake.submission("bob", {})
    subs = str(fake.root / "subs")
    old, new = fake.root / "old", fake.root / "new"
    assert fake.batch(subs, "--out", str(old), "--quiet").returncode == 0
    (bob / "fake.json").write_text(json.dumps({"checks": {"ex2.frees": "failed"}}))
    fake.rubric.write_text(fake.rubric.read_text() + "# v2\n")
    assert fake.batch(subs, "--out", str(new), "--quiet").returncode == 0
    r = fake.grader("diff", str(old), str(new), "--json")
    d = json.loads(r.stdout)
    assert [c["student"] for c in d["changed"]] == ["bob"]
    (bob_change,) = d["changed"]
    assert bob_change["causes"] == ["rubric changed", "submission changed"]
    assert bob_change["checks"] == [{"id": "ex2.frees", "old": "passed 3/3",
                                     "new": "failed 0/3"}]
    assert d["unchanged"] == 1
    text = fake.grader("diff", str(old), str(new)).stdout
    assert "bob: 9/9 -> 6/9 (rubric changed, submission changed)" in text


# ---- the real corpus, graded once by `grader batch`, killed and resumed ----------------------
HOSTILE = Path(__file__).parent / "hostile"  # graded in the `corpus` fixture (conftest.py)
# Hostile modules whose attack brings the guest down or hangs it: a check must say so.
CRASH_OR_HANG = {"hang_init", "spin_init", "panic_init", "inject_script"}


@pytest.mark.guest
def test_corpus_batch_killed_and_resumed_loses_and_regrades_nothing(corpus) -> None:  # type: ignore[no-untyped-def]
    f = corpus.facts
    print(f"corpus batch facts: { {k: v for k, v in f.items() if k != 'statuses'} }")
    assert f["entries"] >= 30
    assert f["killed"] and 0 < f["done_at_kill"] < f["entries"]
    assert f["orphans"] == [], "graders outlived the SIGKILLed batch"
    assert f["half_written"] == [] and f["half_written_after"] == []
    assert f["lost"] == [] and f["replaced"] == [] and f["regraded"] == []
    assert f["staging_left"] == [] and f["missing"] == []
    assert f["disagreements"] == []
    assert not [s for s, st in f["statuses"].items() if st == "failed"], f["statuses"]
    assert (corpus.batch_dir / "class.html").exists()


@pytest.mark.guest
def test_hostile_submissions_are_graded_and_charged(corpus) -> None:  # type: ignore[no-untyped-def]
    from grader.model import Status

    for d in sorted(p.name for p in HOSTILE.iterdir() if p.is_dir()):
        name = f"hostile-{d}"
        assert corpus.facts["statuses"][name] == "graded", (name, corpus.facts["statuses"][name])
        r = corpus[name]
        assert r.complete and r.score < r.max_score / 2, (name, r.score)
        statuses = {c.status for e in r.exercises for c in e.checks}
        if d in CRASH_OR_HANG:
            assert statuses & {Status.CRASHED, Status.TIMED_OUT}, (name, statuses)
    assert corpus["reference"].score == corpus["reference"].max_score
