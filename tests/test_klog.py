"""The kernel-log parser against real console logs recorded from guests (tests/capture_klogs.py)."""
from pathlib import Path

import pytest

from grader import klog

DATA = Path(__file__).parent / "data" / "klog"
# The debug kernel's logs are tested in test_debug_kernel.py (KASAN reports first).
PROFILES = sorted(p.name for p in DATA.iterdir() if p.is_dir() and p.name not in ("src", "debug"))


def load(profile: str, case: str) -> str:
    return (DATA / profile / f"{case}.log").read_text()


def test_fixtures_cover_every_profile():
    assert set(PROFILES) == {"5.10", "6.1", "6.12"}


@pytest.mark.parametrize("profile", PROFILES)
def test_clean_boot_has_no_anomaly(profile):
    scan = klog.scan(load(profile, "clean"))
    assert scan.clean and not scan.fatal, scan.anomalies


@pytest.mark.parametrize("profile", PROFILES)
def test_oops_is_fatal_and_named(profile):
    scan = klog.scan(load(profile, "oops"))
    assert scan.fatal
    assert {"null_deref", "oops", "panic"} <= scan.kinds()
    first = scan.first("fatal")
    assert first is not None and "NULL pointer dereference" in first.line


@pytest.mark.parametrize("profile", PROFILES)
def test_poison_report_is_an_error_not_fatal(profile):
    scan = klog.scan(load(profile, "poison"))
    assert "slab_poison" in scan.kinds()
    assert not scan.fatal  # the guest goes on: the check that caused it fails, others run
    assert not scan.clean


@pytest.mark.parametrize("profile", PROFILES)
def test_warning_is_found(profile):
    scan = klog.scan(load(profile, "warning"))
    assert "warning" in scan.kinds() and not scan.fatal
    w = next(a for a in scan.anomalies if a.kind == "warning")
    assert "warn_init" in w.line


@pytest.mark.parametrize("profile", PROFILES)
def test_cache_destroyed_with_objects(profile):
    scan = klog.scan(load(profile, "cache_leak"))
    assert "slab_leak" in scan.kinds()


def test_excerpt_keeps_context():
    lines = load("6.1", "oops").splitlines()
    a = klog.scan(lines).first("fatal")
    ex = klog.excerpt(lines, a.line_no, 2, 10)
    assert a.line.rstrip() in ex and len(ex) == 12


def test_timestamps_are_stripped():
    assert klog.strip_timestamp("[    3.290687] BUG: x") == "BUG: x"
    assert klog.classify("[ 1.0] WARNING: CPU: 0 PID: 1 at foo.c:1 f+0x0/0x1") == ("warning", "warning")
    assert klog.classify("[ 1.0] random line") is None


def test_a_warning_inside_a_slab_report_belongs_to_it():
    """Recorded while grading a module whose sysfs show writes past its page: SLUB's red-zone
    report, and WARNINGs SLUB's printing of the corrupted object triggers, are one report."""
    scan = klog.scan(load("6.1", "redzone_sysfs"))
    groups = klog.reports(scan.anomalies)
    header = next(a for a in scan.anomalies if a.kind == "slab_poison")
    assert "Right Redzone overwritten" in header.line
    warnings = [(a, h) for a, h in groups if a.kind == "warning"]
    assert warnings and all(h is header for _, h in warnings)
    alone = klog.reports([a for a in scan.anomalies if a.kind == "warning"])
    assert all(a is h for a, h in alone)  # without the report, a WARNING is its own
