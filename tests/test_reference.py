"""The reference taskmonitor, driven directly through the guest API on every kernel profile."""
from __future__ import annotations

import re
import time

import pytest
from conftest import PROFILES

from grader import klog, session
from grader.limits import DEFAULT as LIMITS
from grader.session import boot, build_reference

pytestmark = pytest.mark.guest

LINE = re.compile(r"^pid (\d+) usr (\d+) sys (\d+)$")
PAGE = 4096
SYSFS, DEBUGFS = "/sys/kernel/taskmonitor", "/sys/kernel/debug/taskmonitor"


def samples(text: str) -> list[tuple[int, int, int]]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, f"line not in the lab's format: {line!r}"
        out.append((int(m[1]), int(m[2]), int(m[3])))
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_reference_behaviour(profile, envs, tmp_path):
    env = envs[profile]
    b = build_reference(env, tmp_path / "build", 7)
    assert b.ko, b.log
    assert not b.warnings, b.log
    with boot(env, {"taskmonitor": b.ko}, tmp_path / "guest") as g:
        target = g.spawn("burn")
        r = g.insmod("taskmonitor", {"target": target, "period_ms": 5})
        assert r.ok, r.stderr

        # sysfs: the lab's format, growing user time of a CPU-bound target.
        time.sleep(0.5)
        first = samples(g.read(SYSFS).stdout)
        time.sleep(0.5)
        later = samples(g.read(SYSFS).stdout)
        assert first and {p for p, _, _ in first} == {target}
        assert later[-1][1] > first[0][1]

        # A long history: sysfs stays within PAGE_SIZE, debugfs shows more.
        time.sleep(2)
        sysfs, debugfs = g.read(SYSFS).stdout, g.read(DEBUGFS).stdout
        assert 0 < len(sysfs) <= PAGE
        assert len(debugfs) > PAGE and samples(debugfs)
        assert debugfs.endswith(sysfs) or samples(sysfs)[-1] in samples(debugfs)

        # The slab cache holds the samples; drop_caches runs the shrinker.
        assert g.run("grep -q '^task_sample ' /proc/slabinfo").ok
        before = len(samples(g.read(DEBUGFS).stdout))
        assert g.run("echo 2 > /proc/sys/vm/drop_caches").ok
        after = len(samples(g.read(DEBUGFS).stdout))
        assert after < before // 2, (before, after)

        # A second PID through debugfs, then removed; bad writes fail.
        second = g.spawn("burn")
        assert g.write(DEBUGFS, str(second)).ok
        time.sleep(0.3)
        assert any(p == second for p, _, _ in samples(g.read(DEBUGFS).stdout))
        assert g.write(DEBUGFS, f"-{second}").ok
        n1 = sum(p == second for p, _, _ in samples(g.read(DEBUGFS).stdout))
        time.sleep(0.3)
        n2 = sum(p == second for p, _, _ in samples(g.read(DEBUGFS).stdout))
        assert n2 <= n1
        for bad in ("abc", "99999", f"-{second}", "0", str(target)):
            r = g.write(DEBUGFS, bad)
            assert not r.ok, f"writing {bad!r} should fail"

        # rmmod is clean, leaves nothing behind, and the module loads again.
        assert g.rmmod("taskmonitor").ok
        assert not g.run(f"test -e {SYSFS} || test -e {DEBUGFS}").ok
        assert not g.run("grep -q '^task_sample ' /proc/slabinfo").ok
        assert g.insmod("taskmonitor", {"target": target, "period_ms": 5}).ok
        assert g.rmmod("taskmonitor").ok
        g.run("sleep 0.2")
        scan = klog.scan(g.console_lines)
        assert scan.clean, scan.anomalies


@pytest.mark.parametrize("profile", PROFILES)
def test_every_stage_builds_and_loads(profile, envs, tmp_path):
    """Stage N is the solution at the end of exercise N: each builds without warning and
    loads, samples and unloads cleanly (one guest for the seven stages)."""
    env = envs[profile]
    kos = {}
    for stage in range(1, 8):
        b = build_reference(env, tmp_path / f"s{stage}", stage)
        assert b.ko, f"stage {stage}:\n{b.log}"
        assert not b.warnings, f"stage {stage}:\n{b.log}"
        kos[f"tm{stage}"] = b.ko
    # Every stage is named taskmonitor inside; they are loaded one after the other.
    with boot(env, kos, tmp_path / "guest") as g:
        target = g.spawn("burn")
        for stage in range(1, 8):
            r = g.run(f"insmod /mod/tm{stage}.ko target={target} period_ms=5", 30)
            assert r.ok, f"stage {stage}: {r.stderr}"
            time.sleep(0.2)
            assert samples(g.read(SYSFS).stdout), f"stage {stage}"
            assert g.run(f"test -e {DEBUGFS}").ok == (stage >= 6)
            assert g.run("grep -q '^task_sample ' /proc/slabinfo").ok == (stage >= 3)
            assert g.rmmod("taskmonitor").ok, f"stage {stage}"
        scan = klog.scan(g.console_lines)
        assert scan.clean, scan.anomalies


def test_large_modules_boot_cold_small_ones_are_restored(envs, tmp_path):
    """A restored guest reads its modules through fw_cfg in time quadratic in their size (a
    2.3 MB payload took over 15 s): past LIMITS.restore_payload_bytes the guest boots cold."""
    env = envs["6.1"]
    big, small = tmp_path / "big.ko", tmp_path / "small.ko"
    big.write_bytes(bytes(LIMITS.restore_payload_bytes + 1))
    small.write_bytes(bytes(4096))
    assert session.boot(env, {"big": big}, tmp_path / "g1", snapshot=True).spec.snapshot is None
    assert session.boot(env, {"small": small}, tmp_path / "g2", snapshot=True).spec.snapshot
