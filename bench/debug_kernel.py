"""The `debug` kernel profile's costs: its build (first and cached), its boot, a module build.

    python bench/debug_kernel.py [--rebuild] [--boots 3]

First build: with --rebuild, a complete build (unpack, tinyconfig + vm-images/debug.config,
bzImage, modules_install) into a scratch cache that shares the real cache's build roots and the
downloaded source package, so that neither the network nor a debootstrap is timed; without it,
the timings that `grader setup --profile debug` recorded in the profile's stamp (resolved.json).
Cached: `grader setup --profile debug` again, when the stamp matches (what every later setup
costs). Boot: from starting QEMU to the agent's answer to `true`, cold (no snapshot), median of
--boots boots, for the debug kernel and for the stock 6.1 kernel. Module build: the reference
against each tree. Timings are noisy while others use the machine: run it more than once.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from grader import kernel_build, provision, session
from grader.profiles import cache_root, load_profile


def fresh_build(profile_name: str) -> dict:
    """Build the profile's kernel from scratch in a scratch cache; returns its stamp."""
    real = cache_root()
    profile = load_profile(profile_name)
    stamp = json.loads((profile.cache_dir / "resolved.json").read_text())
    with tempfile.TemporaryDirectory(prefix="grader-bench-kernel-") as tmp:
        scratch = Path(tmp)
        (scratch / "roots").symlink_to(real / "roots")
        debs = scratch / "apt" / profile_name / "debs"
        debs.mkdir(parents=True)
        deb = f"{profile.source_package}_{stamp['version']}_all.deb"
        os.link(real / "apt" / profile_name / "debs" / deb, debs / deb)
        (scratch / "kernels" / profile_name).mkdir(parents=True)
        # Only the version: download_source() then takes the kept .deb, no network.
        (scratch / "kernels" / profile_name / "resolved.json").write_text(
            json.dumps({"version": stamp["version"]}))
        os.environ["GRADER_CACHE"] = str(scratch)
        try:
            return kernel_build.ensure_source_kernel(load_profile(profile_name))
        finally:
            os.environ["GRADER_CACHE"] = str(real)
            shutil.rmtree(scratch / "kernels", ignore_errors=True)


def boots(env: session.Environment, n: int, ko: Path, tmp: Path) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.monotonic()
        with session.boot(env, {"taskmonitor": ko}, tmp / f"{env.profile.name}-g{i}",
                          snapshot=False) as g:
            assert g.run("true").ok
            out.append(time.monotonic() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="debug")
    ap.add_argument("--stock", default="6.1", help="the stock profile to compare with")
    ap.add_argument("--rebuild", action="store_true", help="time a complete first build")
    ap.add_argument("--boots", type=int, default=3)
    a = ap.parse_args()

    provision.setup([a.profile], progress=lambda m: None)  # builds it if needed
    t0 = time.monotonic()
    provision.setup([a.profile], progress=lambda m: None)
    cached = time.monotonic() - t0
    env = session.prepare(a.profile, auto_setup=False)
    stamp = json.loads((env.profile.cache_dir / "resolved.json").read_text())
    first = fresh_build(a.profile) if a.rebuild else stamp
    stock = session.prepare(a.stock, auto_setup=False)

    with tempfile.TemporaryDirectory(prefix="grader-bench-debug-") as t:
        tmp = Path(t)
        built = {e.profile.name: session.build_reference(e, tmp / f"b-{e.profile.name}")
                 for e in (env, stock)}
        for name, b in built.items():
            assert b.ko, f"{name}: {b.log}"
        times = {e.profile.name: boots(e, a.boots, built[e.profile.name].ko, tmp)
                 for e in (env, stock)}

    s = first["seconds"]
    tree_mib = sum(f.stat().st_size for f in env.kernel.tree.rglob("*") if f.is_file()) >> 20
    print(f"profile {a.profile}: kernel {env.kernel.release} from {stamp['packages'][0]}, "
          f"accel {env.accel}, {os.cpu_count()} cores")
    print(f"first build ({'measured now' if a.rebuild else 'recorded by setup'}): "
          f"{s['total']:.0f} s (unpack {s['unpack']:.0f} s, configure {s['configure']:.0f} s, "
          f"build + modules_install {s['build']:.0f} s, {first['build_steps']} Kbuild steps)")
    print(f"cached (`grader setup --profile {a.profile}` again): {cached:.2f} s")
    print(f"cached tree: {tree_mib} MiB after pruning {stamp['pruned_mib']} MiB of objects")
    for name, xs in times.items():
        print(f"cold boot to first command, {name:6s}: median {statistics.median(xs):5.2f} s "
              f"(min {min(xs):.2f}, max {max(xs):.2f}, {len(xs)} boots)")
    for name, b in built.items():
        print(f"reference module build against {name:6s}: {b.duration_s:.2f} s")


if __name__ == "__main__":
    main()
