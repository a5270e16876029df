"""Batch throughput: `grader batch` over a class of variants at -j1 and -j2, and a resumed batch.

    python bench/batch.py [--count 12] [--jobs 1 2] [--runs 1] [--profile 6.1] [--no-combine]

The class is the variant corpus of tests/variants/ (single-bug modules: some crash, most load
and lose a few points), cycled to --count submissions, each made unique by a comment so that no
two share a result key. Each -jN batch starts from an empty folder; the resumed time is the same
batch started again once everything is done (nothing to grade: keys, manifest, pages).
Prints submissions per minute (the median over --runs) and where the time went.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_class(dest: Path, count: int) -> list[Path]:
    from variants_lib import load_variants, materialise

    variants = [v for v in load_variants() if v.profile == "6.1" and not v.compat]
    subs = []
    for i in range(count):
        v = variants[i % len(variants)]
        d = materialise(v, dest / f"s{i:03d}")
        if d.is_dir():  # unique content: a comment at the end of the main file
            main = next(d.glob("*.c"))
            main.write_text(main.read_text() + f"\n/* student {i} */\n")
        subs.append(d)
    return subs


def run_batch(list_file: Path, out: Path, jobs: int, profile: str,
              extra: tuple[str, ...] = ()) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "grader.cli", "batch", str(list_file), "--out", str(out),
           "-j", str(jobs), "--profile", profile, "--quiet", *extra]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if r.returncode not in (0, 5):
        sys.exit(f"grader batch failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return dt, r.returncode


def graded_seconds(out: Path) -> list[float]:
    return [json.loads((d / "record.json").read_text())["seconds"]
            for d in (out / "results").iterdir()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--profile", default="6.1")
    ap.add_argument("--no-combine", action="store_true",
                    help="grade on the profile's kernel only (by default the rubric combines the "
                         "debug kernel's checks, when it is provisioned)")
    a = ap.parse_args()
    extra = ("--no-combine",) if a.no_combine else ()
    with tempfile.TemporaryDirectory(prefix="gb-") as tmp:
        root = Path(tmp)
        subs = make_class(root / "c", a.count)
        lst = root / "list.txt"
        lst.write_text("".join(f"{s}\n" for s in subs))
        print(f"class: {len(subs)} submissions (variants of tests/variants, profile "
              f"{a.profile}{', no debug kernel' if a.no_combine else ', combined as the rubric says'}"
              f"); {time.strftime('%Y-%m-%d %H:%M:%S')}")
        for jobs in a.jobs:
            rates, resumed, per_sub = [], [], []
            for run in range(a.runs):
                out = root / f"o{jobs}{run}"
                dt, rc = run_batch(lst, out, jobs, a.profile, extra)
                rates.append(len(subs) / dt * 60)
                per_sub += graded_seconds(out)
                again, _ = run_batch(lst, out, jobs, a.profile, extra)
                resumed.append(again)
                note = "" if rc == 0 else " (some without a final grade)"
                print(f"  -j{jobs} run {run + 1}: {dt:6.1f} s = {rates[-1]:5.2f} subs/min, "
                      f"resumed {again:4.2f} s{note}")
            print(f"-j{jobs}: median {statistics.median(rates):5.2f} submissions/min; one "
                  f"grading median {statistics.median(per_sub):5.1f} s (max "
                  f"{max(per_sub):5.1f}); resumed batch with nothing to do: median "
                  f"{statistics.median(resumed):4.2f} s")


if __name__ == "__main__":
    main()
