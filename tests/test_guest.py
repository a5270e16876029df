"""The guest API against a real QEMU guest: commands, timeouts, crashes, teardown."""
from __future__ import annotations

import subprocess
import time

import pytest

from grader import initramfs
from grader.guest import GuestDied
from grader.session import boot

pytestmark = pytest.mark.guest

DATA = __import__("pathlib").Path(__file__).parent / "data" / "klog" / "src"


@pytest.fixture(scope="module")
def oops_ko(envs, tmp_path_factory):
    from grader.session import build

    b = build(envs["6.1"], DATA, "oops", ["oops.o"], tmp_path_factory.mktemp("oops"))
    assert b.ko, b.log
    return b.ko


def _qemus_of(workdir) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if str(workdir) in ln]


def test_commands_timeouts_and_teardown(envs, oops_ko, tmp_path):
    g = boot(envs["6.1"], {"oops": oops_ko}, tmp_path)
    with g:
        assert g.release == envs["6.1"].kernel.release
        r = g.run("echo out; echo err >&2; exit 3")
        assert (r.status, r.stdout, r.stderr) == (3, "out\n", "err\n")
        # The guest kills a command at its timeout and stays usable.
        t0 = time.monotonic()
        r = g.run("sleep 30", timeout=1)
        assert r.timed_out and time.monotonic() - t0 < 30  # killed, not slept through
        assert g.run("true").ok
        # A background process does not hold the command open.
        pid = g.spawn("burn")
        assert g.run(f"test -d /proc/{pid}").ok
        # Large output arrives whole, byte for byte.
        r = g.run("head -c 300000 /dev/zero | tr '\\0' x")
        assert r.stdout == "x" * 300000
        # Files and the module channel.
        assert g.write("/tmp/f", "hello").ok and g.read("/tmp/f").stdout == "hello"
        assert g.run("ls /mod").stdout.split() == ["oops.ko"]
        assert _qemus_of(tmp_path)
    assert not g.alive and not _qemus_of(tmp_path)


def test_panic_ends_the_guest_at_once(envs, oops_ko, tmp_path):
    with boot(envs["6.1"], {"oops": oops_ko}, tmp_path) as g:
        t0 = time.monotonic()
        with pytest.raises(GuestDied) as e:
            g.run("insmod /mod/oops.ko", timeout=60)
        # oops=panic + -no-reboot: seconds, not the 60 s timeout.
        assert time.monotonic() - t0 < 60  # ended by the panic, not by the timeout
        assert "NULL pointer dereference" in e.value.reason
        assert any("Kernel panic" in ln for ln in g.console_lines)
        assert (tmp_path / "console.log").read_text().count("Oops") >= 1
    assert not _qemus_of(tmp_path)


def test_qemu_is_killed_when_the_caller_fails(envs, oops_ko, tmp_path):
    with pytest.raises(RuntimeError), boot(envs["6.1"], {"oops": oops_ko}, tmp_path) as g:
        assert g.alive
        raise RuntimeError("caller bug")
    assert not _qemus_of(tmp_path)


def test_module_archive_is_appended_aligned(tmp_path):
    base = tmp_path / "base.cpio.gz"
    base.write_bytes(b"\x1f\x8b" + b"x" * 5)
    out = initramfs.with_modules(base, {"m.ko": b"abc"}, tmp_path / "i.img")
    data = out.read_bytes()
    assert data[8:14] == b"070701"  # the appended archive starts on a 4-byte boundary


def test_a_failed_boot_is_retried(envs, oops_ko, tmp_path):
    """A boot that dies before the agent answers is the environment's: booted again."""
    from grader.guest import host_launcher

    calls = []

    def flaky(argv, log):
        calls.append(argv)
        if len(calls) == 1:  # no init: the kernel panics at once, as a broken boot would
            i = argv.index("-append") + 1
            argv = [*argv[:i], argv[i].replace("rdinit=/init", "rdinit=/nonexistent"), *argv[i + 1:]]
        return host_launcher(argv, log)

    g = boot(envs["6.1"], {"oops": oops_ko}, tmp_path, snapshot=False)  # a real boot
    g.launcher = flaky
    with g:
        assert g.run("true").ok
        assert len(calls) == 2 and len(g.boot_failures) == 1
        assert (tmp_path / "console.log.boot1").exists()
    assert not _qemus_of(tmp_path)


@pytest.mark.parametrize("clock", ["warped", "realtime"])
def test_restored_guest_keeps_its_clock_and_gets_the_modules(envs, oops_ko, tmp_path, clock):
    """A guest restored from the saved boot: its CPUs and clock are the clock's, /mod holds the
    modules (through fw_cfg), and an --out folder with a comma in its name is no problem for
    QEMU's options."""
    work = tmp_path / "out,with,commas"
    with boot(envs["6.1"], {"oops": oops_ko}, work, clock=clock) as g:
        assert g.restored and g.clock == clock
        assert g.run("ls /mod").stdout.split() == ["oops.ko"]
        cpus = int(g.run("nproc").stdout)
        assert cpus == envs["6.1"].profile.clock(clock).cpus
        # Idle guest time is free in the warped clock: 100 guest seconds of sleep take far
        # fewer wall seconds there (and as many in the realtime one, not tried here).
        if clock == "warped":
            r = g.run("a=$(cut -d. -f1 /proc/uptime); sleep 100; b=$(cut -d. -f1 /proc/uptime); "
                      "echo $((b - a))", 300)
            assert int(r.stdout) >= 100 and r.elapsed_s >= 100
        assert g.release == envs["6.1"].kernel.release
    assert not _qemus_of(work)
