"""Rubric validation, profile loading and the command line (fast, no guest)."""
from __future__ import annotations

import pytest

from grader import cli
from grader.checks import REGISTRY
from grader.errors import ConfigError
from grader.profiles import available_profiles, load_profile
from grader.rubric import load_rubric


def test_tp07_rubric_is_consistent():
    r = load_rubric("tp07")
    ids = [c.id for c in r.checks()]
    assert len(ids) == len(set(ids))
    assert [e.number for e in r.exercises] == list(range(8))
    assert all(c.kind in REGISTRY for c in r.checks())
    assert r.max_points() == sum(c.points for c in r.checks()) > 0
    # Every exercise of the lab has static and behavioural evidence.
    for e in r.exercises[1:]:
        assert {c.phase for c in e.checks} & {"loaded", "unloaded"}, e.title


def test_needs_are_physical_never_a_format_or_naming_check():
    """A strict check (the lab's exact names and formats) costs its own points only: a check
    that needed one would cascade a label or a file name into other exercises' points."""
    r = load_rubric("tp07")
    strict = {c.id for c in r.checks() if c.strict}
    assert strict >= {"ex1.sysfs_format", "ex3.cache_name", "ex6.debugfs_format"}
    for c in r.checks():
        assert not set(c.needs) & strict, f"{c.id} needs {set(c.needs) & strict}"


def test_a_need_on_a_strict_check_is_refused(tmp_path):
    p = _write(tmp_path, '[[exercises]]\nnumber = 0\ntitle = "t"\n[[exercises.checks]]\n'
                         'id = "s"\ntitle = "s"\nkind = "built"\npoints = 1\nphase = "static"\n'
                         'strict = true\n[[exercises.checks]]\nid = "a"\ntitle = "a"\n'
                         'kind = "license"\npoints = 1\nphase = "static"\nneeds = ["s"]\n')
    with pytest.raises(ConfigError, match="strict format or naming check"):
        load_rubric(str(p))


def test_unknown_limit_and_clock_are_refused(tmp_path):
    p = tmp_path / "r.toml"
    text = load_rubric("tp07").path.read_text()
    p.write_text(text.replace("[limits]\n", "[limits]\nhistroy_wait_s = 3\n"))
    with pytest.raises(ConfigError, match="unknown limit"):
        load_rubric(str(p))
    p.write_text(text.replace('clock = "realtime"', 'clock = "slow"'))
    with pytest.raises(ConfigError, match="clock must be one of"):
        load_rubric(str(p))


def test_each_exercise_has_its_own_file_of_checks():
    """A newcomer finds an exercise's checks from file names alone."""
    import grader.labs.tp07 as tp07

    r = load_rubric("tp07")
    for e in r.exercises[1:]:
        kinds = {c.kind for c in e.checks if c.kind in REGISTRY}
        modules = {REGISTRY[k].__module__.rsplit(".", 1)[-1] for k in kinds}
        lab_files = {m for m in modules if m.startswith("ex")}
        assert all(m.startswith(f"ex{e.number}_") for m in lab_files), (e.number, modules)
    assert tp07.make_probes


def _write(tmp_path, text):
    p = tmp_path / "r.toml"
    base = (load_rubric("tp07").path.read_text()).split("[[exercises]]")[0]
    p.write_text(base + text)
    return p


def test_unknown_check_kind_is_refused(tmp_path):
    p = _write(tmp_path, '[[exercises]]\nnumber = 0\ntitle = "t"\n[[exercises.checks]]\n'
                         'id = "a"\ntitle = "a"\nkind = "nope"\npoints = 1\nphase = "static"\n')
    with pytest.raises(ConfigError, match="unknown kind 'nope'"):
        load_rubric(str(p))


def test_needs_must_exist_and_not_run_later(tmp_path):
    p = _write(tmp_path, '[[exercises]]\nnumber = 0\ntitle = "t"\n[[exercises.checks]]\n'
                         'id = "a"\ntitle = "a"\nkind = "built"\npoints = 1\nphase = "static"\n'
                         'needs = ["b"]\n')
    with pytest.raises(ConfigError, match="needs 'b'"):
        load_rubric(str(p))
    p = _write(tmp_path, '[[exercises]]\nnumber = 0\ntitle = "t"\n[[exercises.checks]]\n'
                         'id = "b"\ntitle = "b"\nkind = "loads"\npoints = 1\nphase = "loaded"\n'
                         '[[exercises.checks]]\nid = "a"\ntitle = "a"\nkind = "built"\npoints = 1\n'
                         'phase = "static"\nneeds = ["b"]\n')
    with pytest.raises(ConfigError, match="later phase"):
        load_rubric(str(p))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="valid profiles: 5.10, 6.1, 6.12"):  # and more
        load_profile("4.19")
    with pytest.raises(ConfigError, match="valid rubrics: tp07"):
        load_rubric("tp08")


def test_profiles_are_data():
    assert {"5.10", "6.1", "6.12"} <= set(available_profiles())
    for name in available_profiles():
        p = load_profile(name)
        assert "slab_nomerge" in p.cmdline and "oops=panic" in p.cmdline
        assert p.apt_sources and p.build_suite


def test_run_help_explains_every_option_with_examples(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--profile", "--rubric", "--out", "--format", "--json", "--verbose", "--compat",
                "--no-compat", "--module", "--quiet", "--backend"):
        assert opt in out
    assert "examples:" in out and "grader run reference/taskmonitor" in out


def test_bad_usage_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run"])
    assert e.value.code == 2
    assert cli.main(["run", "/nonexistent.tar", "--profile", "9.9", "-q"]) == 2
    assert "valid profiles" in capsys.readouterr().err


def test_missing_submission_is_the_students_problem(tmp_path, capsys):
    code = cli.main(["run", str(tmp_path / "missing.tgz"), "--out", str(tmp_path / "o"), "-q"])
    assert code == 3
    assert "missing.tgz" in capsys.readouterr().err


def test_the_lab_hides_some_checks_from_students_and_run_offers_the_audience(capsys):
    hidden = [c.id for c in load_rubric("tp07").checks() if not c.visible]
    assert len(hidden) >= 2, hidden
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "--audience" in capsys.readouterr().out
