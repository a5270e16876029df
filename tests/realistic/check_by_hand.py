"""Build a realistic submission with the grader's build and drive it by hand in a guest.

Not a test: the tool used to verify each submission of tests/realistic/ behaves as its TOML
says, before the grader's checks are trusted with it. Examples (from the repository root):

    .venv/bin/python tests/realistic/check_by_hand.py build all
    .venv/bin/python tests/realistic/check_by_hand.py probe debugfs_only --verify --clock warped
    .venv/bin/python tests/realistic/check_by_hand.py compare all      # grader run vs the TOMLs
    .venv/bin/python tests/realistic/check_by_hand.py probe debugfs_only \
        --script 'echo $B > /sys/kernel/debug/taskmonitor; sleep 3; cat /sys/kernel/debug/taskmonitor'

`probe` boots a guest with the module, starts a CPU burner (its PID is $T in scripts, a second
one is $B), loads the module with target=$T, waits, lists what the module created under
/sys/kernel and /sys/kernel/debug, its caches and threads, runs the scripts, unloads it, and
prints every kernel-log anomaly. The guest's own `sleep` runs on the guest's clock.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realistic_lib import Realistic, check_ids, load_realistic, materialise  # noqa: E402

from grader import klog, session  # noqa: E402
from grader.guest import Guest, GuestDied  # noqa: E402
from grader.intake import intake  # noqa: E402
from grader.model import GradeResult  # noqa: E402
from grader.profiles import project_root  # noqa: E402

SNAPSHOT = ("find /sys/kernel /sys/kernel/debug -maxdepth 3 2>/dev/null | "
            "grep -Ev '^/sys/kernel/(debug/)?(slab|tracing)/' | sort -u")


def submissions() -> dict[str, Realistic]:
    try:
        ids = check_ids()
    except Exception:  # noqa: BLE001 - the rubric code is being rewritten: take the ids as they stand
        text = (project_root() / "rubrics/tp07.toml").read_text()
        ids = set(re.findall(r'^id = "([^"]+)"', text, re.M))
    return {s.name: s for s in load_realistic(ids=ids)}


def build(sub: Realistic, work: Path):
    env = session.prepare(sub.profile, auto_setup=False)
    src = materialise(sub, work / "in")
    s = intake(src, work / "intake")
    res = session.build(env, s.root, s.module_name, s.objects, work / "build", compat=sub.compat)
    return env, s, res


def cmd_build(names: list[str], work: Path) -> int:
    subs = submissions()
    bad = 0
    for name in sorted(subs) if names == ["all"] else names:
        sub = subs[name]
        _, s, res = build(sub, work / name)
        warns = [f"{d.file}:{d.line}: {d.message}" for d in res.warnings]
        errs = [f"{d.file}:{d.line}: {d.message}" for d in res.errors]
        print(f"{name:34} {sub.profile:5} compat={sub.compat!s:5} {res.status.value:7} "
              f"{res.duration_s:4.1f}s objects={s.objects} warnings={len(warns)}")
        for line in errs + warns:
            print("    " + line)
        if res.status.value != "passed" or warns:
            bad += 1
            if res.status.value != "passed":
                print(res.log[-3000:])
    return 1 if bad else 0


def cmd_probe(name: str, wait: float, scripts: list[str], work: Path, no_rmmod: bool,
              after: list[str], clock: str, burn: str) -> int:
    sub = submissions()[name]
    env, s, res = build(sub, work)
    if res.ko is None:
        print(res.log[-3000:])
        return 1
    t0 = time.monotonic()
    with session.boot(env, {s.module_name: res.ko}, work / "guest", clock=clock) as g:
        try:
            _drive(g, s.module_name, wait, scripts, no_rmmod, after, burn)
        except GuestDied as e:
            print(f"# GUEST DIED: {e}")
        found = klog.scan(g.console_lines).anomalies
        for a in found:
            print(f"# ANOMALY {a.kind} {a.severity}: {klog.strip_timestamp(a.line).strip()}")
        print(f"# {len(found)} anomalies; {time.monotonic() - t0:.0f} s in the guest")
    return 0


# The standard scenario of `verify`, run in the guest's shell once the module has sampled for a
# while: $T is the target, $B a second burner. It finds the module's files (new entries under
# /sys/kernel and /sys/kernel/debug), then looks at what each exercise is about.
SCENARIO = r"""
new() { grep -vxFf /tmp/before /tmp/after; }
find /sys/kernel /sys/kernel/debug -maxdepth 3 2>/dev/null \
  | grep -Ev '^/sys/kernel/(debug/)?(slab|tracing)/' | sort -u > /tmp/after
SYS=""; DBG=""
for f in $(new); do
  [ -f "$f" ] || continue
  case "$f" in /sys/kernel/debug/*) DBG="$DBG $f";; *) SYS="$SYS $f";; esac
done
echo "== files: sysfs[$SYS ] debugfs[$DBG ]"
for f in $SYS $DBG; do
  echo "-- $f: $(cat $f 2>&1 | wc -lc) (lines, bytes); last lines:"; cat $f 2>&1 | tail -2
done
echo "== new caches:"; grep -v '^#' /proc/slabinfo | awk '{print $1}' | sort > /tmp/slab1
for c in $(grep -vxFf /tmp/slab0 /tmp/slab1); do grep "^$c " /proc/slabinfo | cut -c1-40; done
for f in $DBG; do
  cat $f > /tmp/one; dd if=$f bs=7 2>/dev/null > /tmp/seven
  n=$(wc -l < /tmp/one)
  if head -$n /tmp/seven | cmp -s - /tmp/one; then r=SAME; else r=DIFFERENT; fi
  echo "== short reads of $f: one read $n lines, 7-byte reads $(wc -l < /tmp/seven) lines: $r"
done
echo "== drop_caches: lines before/after per file, caches after"
for f in $SYS $DBG; do echo "$f $(cat $f 2>/dev/null | wc -l)"; done
echo 2 > /proc/sys/vm/drop_caches
for f in $SYS $DBG; do echo "$f $(cat $f 2>/dev/null | wc -l)"; done
for c in $(grep -vxFf /tmp/slab0 /tmp/slab1); do grep "^$c " /proc/slabinfo | cut -c1-40; done
sleep 3
for f in $DBG; do
  printf %s $B > $f 2>/dev/null; echo "== add $B: rc=$?"
  sleep 3; echo "   samples of $B: $(grep -cw $B $f)"
  printf %s -$B > $f 2>/dev/null; echo "== remove $B: rc=$?"
  sleep 1; a=$(grep -cw $B $f); sleep 3; echo "   samples of $B: $a then $(grep -cw $B $f)"
  for w in abc 99999 -99998 0; do printf %s $w > $f 2>/dev/null; echo "== write '$w': rc=$?"; done
  burn 50 & P=$!; printf %s $P > $f 2>/dev/null; echo "== add exiting $P: rc=$?"; sleep 3
  kill $P; wait $P 2>/dev/null; sleep 3; echo "   after its exit: $(grep -cw $P $f) samples"
done
"""
# After rmmod: the module's caches, then a second load that must sample again.
RELOAD = r"""
echo "== caches after rmmod:"
for c in $(grep -vxFf /tmp/slab0 /tmp/slab1); do grep "^$c " /proc/slabinfo | cut -c1-40; done
insmod /mod/taskmonitor.ko target=$T; echo "== reload: insmod rc=$?"; sleep 3
for f in $(grep -vxFf /tmp/before /tmp/after); do
  [ -f $f ] && [ -r $f ] && echo "   $f: $(cat $f 2>/dev/null | grep -cw $T) samples of $T"
done
rmmod taskmonitor; echo "   rmmod rc=$?"
"""


def _drive(g: Guest, module: str, wait: float, scripts: list[str], no_rmmod: bool,
           after: list[str], burn: str) -> None:
    print(f"# booted {g.release} in {g.boot_s:.1f} s ({g.clock} clock)")

    def sh(cmd: str, timeout: float = 60.0) -> str:
        r = g.run(cmd, timeout)
        out = r.stdout + (f"[stderr] {r.stderr}" if r.stderr.strip() else "")
        shown = cmd if "\n" not in cmd.strip() else f"<script of {cmd.count(chr(10))} lines>"
        print(f"$ {shown}\n{out.rstrip()}\n[exit {r.status}{' TIMEOUT' if r.timed_out else ''}"
              f", {r.elapsed_s:.1f} s]")
        return r.stdout

    sh(SNAPSHOT + " > /tmp/before; wc -l < /tmp/before")
    sh("grep -v '^#' /proc/slabinfo | awk '{print $1}' | sort > /tmp/slab0; "
       "ps -o pid,comm | sort > /tmp/ps0; true")
    t = g.spawn(burn)
    b = g.spawn(burn)
    print(f"# burners: T={t} B={b}")
    r = g.insmod(module, {"target": t})
    print(f"# insmod: exit {r.status} {r.stderr.strip()}")
    sh(f"sleep {wait}", timeout=wait + 60)
    sh(SNAPSHOT + " > /tmp/after; grep -vxFf /tmp/before /tmp/after")
    sh("grep -v '^#' /proc/slabinfo | awk '{print $1}' | sort > /tmp/slab1; "
       "for c in $(grep -vxFf /tmp/slab0 /tmp/slab1); do grep \"^$c \" /proc/slabinfo; done")
    sh("ps -o pid,comm | sort > /tmp/ps1; grep -vxFf /tmp/ps0 /tmp/ps1")
    for sc in scripts:
        sh(f"T={t}; B={b}; {sc}", timeout=900)
    if not no_rmmod:
        r = g.rmmod(module)
        print(f"# rmmod: exit {r.status} {r.stderr.strip()} ({r.elapsed_s:.1f} s)")
        sh("sleep 2; " + SNAPSHOT + " > /tmp/gone; grep -vxFf /tmp/before /tmp/gone;"
           " ps -o pid,comm | sort > /tmp/ps2; grep -vxFf /tmp/ps0 /tmp/ps2")
        for sc in after:
            sh(f"T={t}; B={b}; {sc}", timeout=900)




def cmd_compare(names: list[str], work: Path) -> int:
    """Grade with `grader run` (whatever the checks are today) and list every check whose
    status differs from the TOML's expectation: the grader's or the TOML's mistake."""
    subs = submissions()
    differ = 0
    for name in sorted(subs) if names == ["all"] else names:
        sub = subs[name]
        src = materialise(sub, work / "in")
        out = work / "out" / name
        cmd = [sys.executable, "-m", "grader.cli", "run", str(src), "--out", str(out),
               "--profile", sub.profile, "--compat" if sub.compat else "--no-compat", "-q",
               "--format", "json"]
        t0 = time.monotonic()
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
        try:
            result = GradeResult.from_dict(json.loads((out / "report.json").read_text()))
        except (OSError, ValueError) as e:
            print(f"{name}: no report ({e})")
            differ += 1
            continue
        got = {c.id: c for ex in result.exercises for c in ex.checks}
        diffs = [(cid, sub.expected(cid).value, c.status.value, c.reason)
                 for cid, c in got.items() if c.status != sub.expected(cid)]
        print(f"{name:34} {result.score:g}/{result.max_score:g} in {time.monotonic() - t0:.0f} s:"
              f" {len(diffs)} difference(s)")
        for cid, want, status, reason in diffs:
            known = " [grader_problem]" if cid in sub.grader_problem else ""
            print(f"    {cid}: expected {want}, got {status}{known}: {reason[:160]}")
        differ += bool(diffs)
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sp = ap.add_subparsers(dest="cmd", required=True)
    b = sp.add_parser("build", help="build submissions (or 'all') and show warnings")
    b.add_argument("names", nargs="+")
    c = sp.add_parser("compare", help="grade with `grader run` and diff against the TOMLs")
    c.add_argument("names", nargs="+")
    p = sp.add_parser("probe", help="load one submission in a guest and look at it")
    p.add_argument("name")
    p.add_argument("--wait", type=float, default=4, help="guest seconds to sample before looking")
    p.add_argument("--script", action="append", default=[],
                   help="shell run in the guest after the first look ($T target, $B burner)")
    p.add_argument("--after", action="append", default=[],
                   help="shell run in the guest after rmmod ($T, $B as for --script)")
    p.add_argument("--verify", action="store_true",
                   help="run the standard scenario (every exercise) and a reload after rmmod")
    p.add_argument("--no-rmmod", action="store_true")
    p.add_argument("--clock", default="realtime", choices=("realtime", "warped"),
                   help="warped: one vCPU whose idle time costs no wall time (long histories)")
    p.add_argument("--burn", default="burn", help="the targets' command, e.g. 'burn 20'")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="realistic-"))
    if a.cmd == "build":
        return cmd_build(a.names, work)
    if a.cmd == "compare":
        return cmd_compare(a.names, work)
    scripts, after = a.script, a.after
    if a.verify:
        scripts, after = [SCENARIO, *scripts], [*after, RELOAD]
    return cmd_probe(a.name, a.wait, scripts, work, a.no_rmmod, after, a.clock, a.burn)


if __name__ == "__main__":
    sys.exit(main())
