"""Shared fixtures. Slow tests build modules and boot real guests; they need `grader setup --all`
(the README's test command runs it first). Outside CI a missing profile skips those tests with the
command to run; in CI (CI=true) it is a failure, so that no test silently stops testing."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from grader import session
from grader.errors import EnvironmentProblem
from grader.profiles import project_root

PROFILES = ("5.10", "6.1", "6.12")


def unavailable(msg: str) -> NoReturn:
    """Skip a test whose environment is missing; in CI, fail it instead."""
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def require_env(profile: str) -> session.Environment:
    try:
        return session.prepare(profile, auto_setup=False)
    except EnvironmentProblem as e:
        unavailable(f"profile {profile} not provisioned ({e}); run: ./grader.sh setup --all")


@pytest.fixture(scope="session")
def envs() -> dict[str, session.Environment]:
    """Lazily prepared environments, one per profile."""
    cache: dict[str, session.Environment] = {}

    class _Envs(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> session.Environment:
            cache[key] = require_env(key)
            return cache[key]

    return _Envs()


HOSTILE_DIR = Path(__file__).parent / "hostile"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The test suite's one grading of the whole corpus: every variant (tests/variants/), every
    realistic submission (tests/realistic/), every hostile module (tests/hostile/) and the
    reference, graded by one `grader batch` on their own kernel only (--no-combine), killed with
    SIGKILL a third of the way and resumed (tests/corpus.py); then, by a second batch, the
    variants that need the debug kernel and the reference, combined with it, and the reference
    on the debug kernel alone. Every test that needs a grade of the corpus reads it from here."""
    from corpus import grade_corpus
    from realistic_lib import load_realistic
    from realistic_lib import materialise as materialise_realistic
    from variants_lib import load_variants, materialise

    base = tmp_path_factory.mktemp("corpus")
    subs = base / "submissions"
    subs.mkdir()
    variants = load_variants()
    entries = [(f"variant-{v.name}", materialise(v, subs), v.profile, v.compat)
               for v in variants if not v.kernels]
    entries += [(f"realistic-{r.name}", materialise_realistic(r, subs), r.profile, r.compat)
                for r in load_realistic()]
    entries += [(f"hostile-{d.name}", d, None, None)
                for d in sorted(p for p in HOSTILE_DIR.iterdir() if p.is_dir())]
    reference = project_root() / "reference" / "taskmonitor"
    entries.append(("reference", reference, None, None))
    combined = [(f"variant-{v.name}", materialise(v, subs), v.profile, v.compat)
                for v in variants if v.kernels]
    combined += [("reference-combined", reference, None, None),
                 ("reference-debug", reference, "debug", None)]
    for profile in sorted({e[2] or "6.1" for e in [*entries, *combined]}):
        require_env(profile)
    jobs = int(os.environ.get("GRADER_TEST_JOBS", "2"))
    results = grade_corpus(entries, base / "out", jobs=jobs, extra_args=("--no-combine",))
    more = grade_corpus(combined, base / "out-debug", jobs=jobs, kill_fraction=None,
                        extra_args=("--combine", "debug"))
    results.update(more)
    results.facts["statuses"].update(more.facts["statuses"])
    results.facts["debug_batch"] = {k: v for k, v in more.facts.items() if k != "statuses"}
    return results
