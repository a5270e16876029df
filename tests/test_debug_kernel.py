"""The `debug` kernel profile: a Linux 6.1 built from Debian's source with the kernel's detectors.

Fast tests: the profile and its configuration fragment as data, the cache key, the check that
Kconfig kept every value of the fragment. Guest tests (marker guest): the reference module built
against the source-built tree, loaded and sampling on that kernel, and every detector the debug
checks rely on present in the running guest (KASAN, lockdep, failslab, the shrinker debugfs),
and qemu_fw_cfg.ko shipped where Debian's packages put it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from grader import kernel_build, klog
from grader.errors import ConfigError
from grader.profiles import load_profile, profile_dir

# What the debug checks need of the kernel; each must survive `make olddefconfig`.
DETECTORS = {
    "CONFIG_KASAN": "y", "CONFIG_KASAN_GENERIC": "y", "CONFIG_PROVE_LOCKING": "y",
    "CONFIG_DEBUG_ATOMIC_SLEEP": "y", "CONFIG_DEBUG_LIST": "y", "CONFIG_FAILSLAB": "y",
    "CONFIG_FAULT_INJECTION_DEBUG_FS": "y", "CONFIG_SHRINKER_DEBUG": "y",
    "CONFIG_SLUB_DEBUG": "y", "CONFIG_FW_CFG_SYSFS": "m", "CONFIG_MODULE_UNLOAD": "y",
}


# ---- the profile as data --------------------------------------------------------------------
def test_debug_profile_is_source_built_and_others_are_not():
    p = load_profile("debug")
    assert p.from_source and p.source_package == "linux-source-6.1"
    assert p.build_suite == "bookworm"  # gcc 12, like the 6.1 profile
    assert (profile_dir() / p.config_fragment).is_file()
    assert "oops=panic" in p.cmdline and "slab_nomerge" in p.cmdline
    for name in ("5.10", "6.1", "6.12"):
        stock = load_profile(name)
        assert not stock.from_source and stock.image_package and stock.headers_package


def test_fragment_asks_for_every_detector():
    frag = kernel_build.parse_config(
        (profile_dir() / load_profile("debug").config_fragment).read_text())
    for key, value in DETECTORS.items():
        assert frag.get(key) == value, key


def test_parse_config_reads_values_and_unset_options():
    cfg = kernel_build.parse_config(
        'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\nCONFIG_D=n\n# comment\n')
    assert cfg == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"', "CONFIG_D": "n"}


def test_dropped_options_names_what_kconfig_did_not_keep():
    frag = {"CONFIG_KASAN": "y", "CONFIG_X": "n", "CONFIG_M": "m"}
    final = {"CONFIG_KASAN": "n", "CONFIG_M": "m"}
    assert kernel_build.dropped_options(frag, final) == ["CONFIG_KASAN=y (final .config: n)"]
    assert kernel_build.dropped_options(frag, {**final, "CONFIG_KASAN": "y"}) == []


def test_build_key_follows_fragment_and_source_version():
    k = kernel_build.build_key("6.1.192-3", "CONFIG_KASAN=y\n")
    assert re.fullmatch(r"[0-9a-f]{10}", k)
    assert k == kernel_build.build_key("6.1.192-3", "CONFIG_KASAN=y\n")
    assert k != kernel_build.build_key("6.1.192-3", "CONFIG_KASAN=y\nCONFIG_KCSAN=y\n")
    assert k != kernel_build.build_key("6.1.192-3", "CONFIG_KASAN=n\n")
    # Comments and order are not the configuration: editing them does not rebuild.
    assert k == kernel_build.build_key("6.1.192-3", "# why\nCONFIG_KASAN=y\n\n")
    assert k != kernel_build.build_key("6.1.193-1", "CONFIG_KASAN=y\n")


def test_a_stale_build_is_not_current(tmp_path, monkeypatch):
    """A stamp made from another fragment is not current: load_kernel refuses it with the
    command that rebuilds, so a changed fragment is never graded with the old kernel."""
    import json

    from grader import provision

    monkeypatch.setenv("GRADER_CACHE", str(tmp_path))
    p = load_profile("debug")
    p.cache_dir.mkdir(parents=True)
    (p.cache_dir / "6.1.192-grader-debug-x" / "boot").mkdir(parents=True)
    (p.cache_dir / "6.1.192-grader-debug-x" / "boot" / "vmlinuz").write_bytes(b"k")
    stamp = {"release": "6.1.192-grader-debug-x", "version": "6.1.192-3",
             "tree": "6.1.192-grader-debug-x", "vmlinuz": "boot/vmlinuz",
             "headers_dir": "usr/src/linux-6.1.192-3", "kbuild_dir": "usr/src/linux-6.1.192-3",
             "packages": ["linux-source-6.1=6.1.192-3"], "key": "0000000000"}
    (p.cache_dir / "resolved.json").write_text(json.dumps(stamp))
    assert kernel_build.current(p) is None
    with pytest.raises(provision.EnvironmentProblem, match="grader setup --profile debug"):
        provision.load_kernel(p)
    fragment = (profile_dir() / p.config_fragment).read_text()
    stamp["key"] = kernel_build.build_key("6.1.192-3", fragment)
    (p.cache_dir / "resolved.json").write_text(json.dumps(stamp))
    k = provision.load_kernel(p)
    assert k.tree == p.cache_dir / "6.1.192-grader-debug-x" and k.version == "6.1.192-3"


def test_missing_fragment_is_a_config_error(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "vm-images").mkdir(parents=True)
    src = profile_dir() / "debug.toml"
    (home / "vm-images" / "debug.toml").write_text(src.read_text())
    monkeypatch.setenv("GRADER_HOME", str(home))
    with pytest.raises(ConfigError, match="debug.config"):
        kernel_build.fragment_path(load_profile("debug"))


# ---- the built kernel in a guest -------------------------------------------------------------
@pytest.mark.guest
def test_reference_builds_loads_and_samples_with_every_detector_present(envs, tmp_path):
    from grader import session

    env = envs["debug"]  # provisioned by `grader setup --profile debug` (or --all)
    cfg = kernel_build.parse_config(
        (env.kernel.tree / f"boot/config-{env.kernel.release}").read_text())
    for key, value in DETECTORS.items():
        assert cfg.get(key) == value, key
    fw_cfg = (env.kernel.tree / "lib/modules" / env.kernel.release
              / "kernel/drivers/firmware/qemu_fw_cfg.ko")
    assert fw_cfg.is_file(), "modules_install did not ship qemu_fw_cfg.ko"

    b = session.build_reference(env, tmp_path / "build")
    assert b.ko, b.log
    with session.boot(env, {"taskmonitor": b.ko, "qemu_fw_cfg": fw_cfg},
                      tmp_path / "guest") as g:
        assert g.release == env.kernel.release
        pid = g.spawn("burn")
        assert g.insmod("taskmonitor", {"target": pid, "period_ms": 50}).ok
        g.run("sleep 1", 5)
        lines = [ln for ln in g.read("/sys/kernel/taskmonitor").stdout.splitlines() if ln]
        assert len(lines) >= 5 and all(str(pid) in ln for ln in lines), lines

        # The shrinker, seen from the kernel's side: one line "<memcg> <count>".
        shrinkers = g.run("ls /sys/kernel/debug/shrinker").stdout.split()
        mine = [s for s in shrinkers if re.fullmatch(r"taskmonitor-\d+", s)]
        assert len(mine) == 1, shrinkers
        count = g.read(f"/sys/kernel/debug/shrinker/{mine[0]}/count").stdout.split()
        assert count[0] == "0" and int(count[1]) >= len(lines)
        assert g.run(f"test -w /sys/kernel/debug/shrinker/{mine[0]}/scan").ok

        # failslab, and its per-cache switch for the module's own cache.
        for f in ("probability", "times", "cache-filter", "ignore-gfp-wait"):
            assert g.run(f"test -f /sys/kernel/debug/failslab/{f}").ok, f
        assert g.run("test -f /sys/kernel/slab/task_sample/failslab").ok

        # lockdep and KASAN are live.
        assert "lock-classes" in g.read("/proc/lockdep_stats").stdout
        dmesg = g.run("dmesg").stdout
        assert "KernelAddressSanitizer initialized" in dmesg

        # fw_cfg as the snapshot path reads it: the module loads (a restored guest has it
        # loaded already, from the same tree) and QEMU's device is there.
        assert g.run("grep -q '^qemu_fw_cfg ' /proc/modules || insmod /mod/qemu_fw_cfg.ko").ok
        assert g.run("test -d /sys/firmware/qemu_fw_cfg/by_name/etc").ok

        assert g.rmmod("taskmonitor").ok
        assert g.run("test ! -e /sys/kernel/taskmonitor").ok
        # Nothing of the reference trips a detector.
        bad = [ln for ln in g.console_lines
               if re.search(r"BUG:|WARNING:|KASAN|lockdep|circular|invalid context", ln)]
        assert not bad, bad


# ---- the detectors' reports, as recorded by tests/capture_klogs.py --profile debug -------------
KLOG = Path(__file__).parent / "data" / "klog" / "debug"


def _scan(case: str) -> klog.LogScan:
    return klog.scan((KLOG / f"{case}.log").read_text())


def test_kasan_use_after_free_is_an_error_naming_the_function():
    """The show-without-reference race (stage 5, a 1 ms delay injected after the module's own
    unlock): KASAN names the access, not only its consequence."""
    scan = _scan("kasan_use_after_free")
    kasan = [a for a in scan.anomalies if a.kind == "kasan"]
    assert kasan and "use-after-free in taskmonitor_show" in kasan[0].line
    assert not scan.fatal  # kasan.fault=report: the guest goes on


def test_mutex_under_spinlock_is_sleeping_in_atomic():
    scan = _scan("sleeping_in_atomic")
    assert "sleeping_in_atomic" in scan.kinds() and not scan.fatal


def test_reference_and_a_stalled_pool_leave_a_clean_log():
    assert _scan("reference").clean
    # mempool_alloc(GFP_KERNEL) without reserve waits, it never returns NULL: nothing is logged
    assert _scan("failslab_no_reserve").clean


def test_lock_held_returning_to_user_is_found():
    assert "lockdep" in _scan("lock_held_returning_to_user").kinds()


def test_null_dereference_is_named_under_kasan():
    assert "null_deref" in _scan("oops").kinds()
