"""Records real kernel console logs from guests, as fixtures for the kernel-log parser tests.

    python tests/capture_klogs.py [--profile 6.1 ...]

For each profile: a clean boot with a module loaded and unloaded, an oops (NULL dereference at
load; oops=panic turns it into a panic), a slab poison report (write after free), a WARN_ON,
and a slab cache destroyed while it still has objects. The logs go to
tests/data/klog/<profile>/<case>.log, exactly as the guest's ttyS0 printed them.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from grader import session
from grader.guest import GuestDied

HERE = Path(__file__).resolve().parent / "data" / "klog"
CASES = {
    # case: (module, commands after boot)
    "clean": ("warn", []),  # the module is not loaded: a clean boot, then poweroff
    "oops": ("oops", ["insmod /mod/oops.ko"]),
    "poison": ("poison", ["insmod /mod/poison.ko", "rmmod poison"]),
    "warning": ("warn", ["insmod /mod/warn.ko"]),
    "cache_leak": ("leak", ["insmod /mod/leak.ko", "rmmod leak"]),
}


def capture(profile: str) -> None:
    env = session.prepare(profile)
    out = HERE / profile
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kos = {}
        for mod in sorted({m for m, _ in CASES.values()}):
            b = session.build(env, HERE / "src", mod, [f"{mod}.o"], Path(tmp) / mod)
            if not b.ko:
                raise SystemExit(f"{mod} does not build:\n{b.log}")
            kos[mod] = b.ko
        for case, (mod, commands) in CASES.items():
            with session.boot(env, {mod: kos[mod]}, Path(tmp) / f"g-{case}") as g:
                try:
                    for c in commands:
                        g.run(c, 20)
                    g.run("sleep 0.5", 5)
                except GuestDied:
                    pass
                lines = list(g.console_lines)
            (out / f"{case}.log").write_text("\n".join(lines) + "\n")
            print(f"{profile}/{case}: {len(lines)} lines")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="append")
    args = ap.parse_args()
    for p in args.profile or ["6.1"]:
        capture(p)


if __name__ == "__main__":
    main()
