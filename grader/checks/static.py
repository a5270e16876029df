"""Generic static checks: what the built .ko and the build show without running anything."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.inspect_ko import match_any, order_violations, unpaired
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import CheckCall

GPL_COMPATIBLE = {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                  "Dual MPL/GPL"}


@check("built")
def built(c: CheckCall) -> Outcome:
    b = c.run.build
    if c.run.prebuilt:
        return Outcome.ok("prebuilt .ko given: not built by the grader")
    if b is None:
        return Outcome.fail("no build was attempted")
    ev = [Evidence(what=" ".join(b.command), expected="a .ko",
                   seen="\n".join(f"{d.file}:{d.line}: {d.severity}: {d.message}" for d in b.errors[:20]))]
    if b.status is Status.PASSED:
        warn = f" with {len(b.warnings)} warning(s)" if b.warnings else ""
        return Outcome(Status.PASSED, f"built in {b.duration_s:.1f} s{warn}")
    if b.status is Status.ERROR:
        return Outcome(Status.ERROR, "the build sandbox failed (grader environment)", ev)
    if b.status is Status.TIMED_OUT:
        return Outcome(Status.TIMED_OUT, "the compiler did not finish in time", ev)
    first = b.errors[0] if b.errors else None
    where = f": {first.file}:{first.line}: {first.message}" if first else ""
    return Outcome(Status.FAILED, f"does not build{where}", ev)


@check("license")
def license_(c: CheckCall) -> Outcome:
    info = c.run.info
    if info is None:
        log = c.run.build.log if c.run.build else ""
        if "missing MODULE_LICENSE" in log:
            return Outcome.fail("no MODULE_LICENSE: modpost refuses the module", 'MODULE_LICENSE("GPL")',
                                "ERROR: modpost: missing MODULE_LICENSE()", "build log")
        if "GPL-incompatible module" in log or "uses GPL-only symbol" in log:
            return Outcome.fail("the license is not GPL-compatible: modpost refuses the GPL-only "
                                "symbols (debugfs, shrinker)", 'MODULE_LICENSE("GPL")',
                                "modpost: GPL-only symbols", "build log")
        return Outcome.skip("no module was built")
    lic = info.license
    if lic in GPL_COMPATIBLE:
        return Outcome.ok(f'MODULE_LICENSE("{lic}")')
    seen = f'MODULE_LICENSE("{lic}")' if lic else "no MODULE_LICENSE in .modinfo"
    return Outcome.fail("the module must declare a GPL-compatible license (debugfs and the "
                        "shrinker API are GPL-only)", 'MODULE_LICENSE("GPL")', seen, ".modinfo")


def _exit_path(c: CheckCall) -> Evidence:
    info = c.run.info
    calls = info.exit_calls if info else None
    seen = " -> ".join(calls) if calls else ("no exit function" if calls is None else "no call")
    return Evidence("kernel calls of the exit function, in order (disassembled .ko)", seen=seen)


@check("teardown_pairs")
def teardown_pairs(c: CheckCall) -> Outcome:
    info = c.run.info
    assert info is not None
    missing = unpaired(info, [(list(s), list(t)) for s, t in c.rubric.pairs])
    ev = _exit_path(c)
    if not missing:
        return Outcome.ok("every setup call found has its teardown on the exit path", ev)
    where = "on the exit path" if info.exit_calls is not None else "anywhere"
    text = "; ".join(f"{s} without {' or '.join(t)} {where}" for s, t in missing)
    return Outcome(Status.FAILED, f"setup without teardown: {text}", [ev])


@check("teardown_order")
def teardown_order(c: CheckCall) -> Outcome:
    info = c.run.info
    assert info is not None
    rules = c.params.get("rules", [])
    broken = order_violations(info, [(list(r["first"]), list(r["then"])) for r in rules])
    ev = _exit_path(c)
    if info.exit_calls is None:
        return Outcome.fail("the module has no exit function", "an exit function", "none",
                            "symbols of the .ko")
    if not broken:
        return Outcome.ok("the exit path tears down in a safe order", ev)
    whys = []
    for first, then in broken:
        rule = next(r for r in rules if first in r["first"] and then in r["then"])
        whys.append(f"{then}() is called before {first}(): {rule['why']}")
    return Outcome(Status.FAILED, "; ".join(whys), [ev])


@check("apis")
def apis(c: CheckCall) -> Outcome:
    info = c.run.info
    assert info is not None
    found, missing = [], []
    for alternatives in c.params["require"]:
        m = match_any(info, list(alternatives))
        if m:
            found.append(f"{m[0]} ({m[1]})")
        else:
            missing.append(" or ".join(alternatives))
    if missing:
        return Outcome.fail(f"not used: {'; '.join(missing)}",
                            "; ".join(" or ".join(a) for a in c.params["require"]),
                            "found: " + (", ".join(found) or "none"), "symbols and DWARF of the .ko")
    return Outcome.ok("uses " + ", ".join(found))


USER_COPIES = ["copy_from_user", "_copy_from_user", "__copy_from_user", "strncpy_from_user",
               "simple_write_to_buffer", "memdup_user", "memdup_user_nul", "kstrtoint_from_user",
               "kstrtouint_from_user", "kstrtol_from_user", "kstrtoul_from_user",
               "kstrtoll_from_user", "kstrtoull_from_user", "kstrtobool_from_user", "get_user",
               "__get_user_1", "__get_user_4", "__get_user_8"]


@check("copies_from_user")
def copies_from_user(c: CheckCall) -> Outcome:
    # The .ko, not the source text: code the preprocessor left out (#if) must not count.
    # On x86 copy_from_user() is inlined; DWARF still names it.
    info = c.run.info
    found = match_any(info, USER_COPIES) if info is not None else None
    if found:
        return Outcome.ok(f"the module uses {found[0]} ({found[1]})")
    return Outcome.fail("user data is never copied with copy_from_user or a helper "
                        "(kstrto*_from_user, simple_write_to_buffer, memdup_user...)",
                        "a user-copy helper in the write handler", "none found",
                        "symbols and DWARF of the .ko")
