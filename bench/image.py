"""Times `grader image build` (median of N) and measures the image:
  - cold: no layer of this image exists (a fresh recipe, so the engine's cache cannot help),
    the host's cache already provisioned (kernels, build roots, the image's base root);
  - cached: nothing changed since the last build (the image is found by its inputs' digest);
  - grader changed: one file of the checkout changed: the
    environment layer and the dependencies' layer are kept, the grader's layers are made again;
  - the image's size, and `docker save` (time, size, and gzip -1 size).

    python bench/image.py [--profile 6.1] [--runs 2] [--base-root]

--base-root also times the debootstrap of the image's base root (roots/image-bookworm, a
download of about 150 MB from Debian's archive), once. It works on a copy of the checkout
(GRADER_HOME). Every image it makes is tagged grader-bench:* and removed at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker

from grader import image
from grader.profiles import cache_root, project_root
from grader.provision import connect

TAG = "grader-bench:{profile}"


def _quiet(_msg: str) -> None:
    pass


def timed(label: str, runs: int, fn) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(runs):
        t0 = time.monotonic()
        r = fn(i)
        out.append(time.monotonic() - t0)
        steps = ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items() if v >= 0.05)
        print(f"  {label} #{i + 1}: {out[-1]:.1f} s ({steps}){' reused' if r.reused else ''}",
              flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="6.1")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--base-root", action="store_true")
    args = ap.parse_args()
    client = connect(timeout=1800)
    tag = TAG.format(profile=args.profile)
    results: dict[str, list[float]] = {}
    made: set[str] = set()
    before = {img.id for img in client.images.list(name=image.ENV_REPO)}
    try:
        if args.base_root:
            shutil.rmtree(cache_root() / "roots" / image.BASE_ROOT, ignore_errors=True)
            t0 = time.monotonic()
            image.base_root(_quiet)
            results["base root (debootstrap)"] = [time.monotonic() - t0]
            print(f"  base root: {results['base root (debootstrap)'][0]:.1f} s", flush=True)

        # A copy of the checkout, so that edits made meanwhile (a shared checkout) do not count.
        home = Path(tempfile.mkdtemp(prefix="grader-bench-home-"))
        for item in image.SOURCE_ITEMS:
            src = project_root() / item
            if src.is_dir():
                shutil.copytree(src, home / item, ignore=image.SOURCE_IGNORED)
            elif src.is_file():
                shutil.copy2(src, home / item)
        os.environ["GRADER_HOME"] = str(home)

        def cold(_i: int) -> image.ImageResult:
            image.RECIPE = f"bench-{uuid.uuid4().hex}"  # new inputs: no layer can be reused
            r = image.build_image(args.profile, [tag], _quiet)
            made.add(r.image_id)
            return r

        results["cold"] = timed("cold", args.runs, cold)
        results["cached"] = timed("cached", max(3, args.runs), lambda _i: image.build_image(
            args.profile, [tag], _quiet))

        def changed(i: int) -> image.ImageResult:
            with open(home / "README.md", "a") as f:
                f.write(f"\n<!-- bench change {uuid.uuid4().hex} -->\n")
            r = image.build_image(args.profile, [tag], _quiet)
            made.add(r.image_id)
            return r

        results["grader changed"] = timed("grader changed", args.runs, changed)
        del os.environ["GRADER_HOME"]
        shutil.rmtree(home, ignore_errors=True)

        img = client.images.get(tag)
        size = int(img.attrs["Size"])
        t0 = time.monotonic()
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        raw = packed = 0
        assert save.stdout and gz.stdin and gz.stdout

        def count() -> None:
            nonlocal packed
            for chunk in iter(lambda: gz.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
                packed += len(chunk)

        counter = threading.Thread(target=count)
        counter.start()
        for chunk in iter(lambda: save.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
            raw += len(chunk)
            gz.stdin.write(chunk)
        gz.stdin.close()
        save.wait()
        gz.wait()
        counter.join()
        save_s = time.monotonic() - t0
    finally:
        for ref in [tag, *made]:
            try:
                client.images.remove(ref, force=True)
            except docker.errors.DockerException:
                pass
        for img in client.images.list(name=image.ENV_REPO):
            if img.id not in before:  # the environments of the cold builds
                try:
                    client.images.remove(img.id, force=True)
                except docker.errors.DockerException:
                    pass

    print(f"\ngrader image build --profile {args.profile}, median of runs (2 cores; other work "
          f"on the machine makes these noisy):")
    for label, xs in results.items():
        print(f"  {label:26} {statistics.median(xs):7.1f} s   (runs: "
              f"{', '.join(f'{x:.1f}' for x in xs)})")
    print(f"  image size                 {size / 1e6:7.0f} MB")
    print(f"  docker save                {save_s:7.1f} s, {raw / 1e6:.0f} MB tar, "
          f"{packed / 1e6:.0f} MB with gzip -1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
