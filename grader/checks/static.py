"""Static checks: what the built .ko and the sources show without running anything."""
from __future__ import annotations

from typing import TYPE_CHECKING

from grader.checks import Outcome, check
from grader.model import Evidence, Status

if TYPE_CHECKING:
    from grader.checks.context import Context
    from grader.rubric import CheckSpec

GPL_COMPATIBLE = {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                  "Dual MPL/GPL"}


@check("built")
def built(ctx: Context, spec: CheckSpec) -> Outcome:
    b = ctx.build
    if ctx.prebuilt:
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
def license_(ctx: Context, spec: CheckSpec) -> Outcome:
    if ctx.info is None:
        log = ctx.build.log if ctx.build else ""
        if "missing MODULE_LICENSE" in log:
            return Outcome.fail("no MODULE_LICENSE: modpost refuses the module", 'MODULE_LICENSE("GPL")',
                                "ERROR: modpost: missing MODULE_LICENSE()", "build log")
        return Outcome.skip("no module was built")
    lic = ctx.info.license
    if lic in GPL_COMPATIBLE:
        return Outcome.ok(f'MODULE_LICENSE("{lic}")')
    seen = f'MODULE_LICENSE("{lic}")' if lic else "no MODULE_LICENSE in .modinfo"
    return Outcome.fail("the module must declare a GPL-compatible license (debugfs and the "
                        "shrinker API are GPL-only)", 'MODULE_LICENSE("GPL")', seen, ".modinfo")


@check("teardown_pairs")
def teardown_pairs(ctx: Context, spec: CheckSpec) -> Outcome:
    from grader.inspect_ko import unpaired

    assert ctx.info is not None
    missing = unpaired(ctx.info, [(list(s), list(t)) for s, t in ctx.rubric.pairs])
    if not missing:
        return Outcome.ok("every setup call found has its teardown")
    text = "; ".join(f"{s} without {' or '.join(t)}" for s, t in missing)
    return Outcome.fail(f"setup without teardown: {text}", "each setup paired with a teardown",
                        text, "symbols imported and inlined in the .ko")


@check("apis")
def apis(ctx: Context, spec: CheckSpec) -> Outcome:
    from grader.inspect_ko import match_any

    assert ctx.info is not None
    found, missing = [], []
    for alternatives in spec.params["require"]:
        m = match_any(ctx.info, list(alternatives))
        if m:
            found.append(f"{m[0]} ({m[1]})")
        else:
            missing.append(" or ".join(alternatives))
    if missing:
        return Outcome.fail(f"not used: {'; '.join(missing)}", "; ".join(" or ".join(a) for a in spec.params["require"]),
                            "found: " + (", ".join(found) or "none"), "symbols and DWARF of the .ko")
    return Outcome.ok("uses " + ", ".join(found))


USER_COPIES = ["copy_from_user", "_copy_from_user", "__copy_from_user", "strncpy_from_user",
               "simple_write_to_buffer", "memdup_user", "memdup_user_nul", "kstrtoint_from_user",
               "kstrtouint_from_user", "kstrtol_from_user", "kstrtoul_from_user",
               "kstrtoll_from_user", "kstrtoull_from_user", "kstrtobool_from_user"]


@check("copies_from_user")
def copies_from_user(ctx: Context, spec: CheckSpec) -> Outcome:
    from grader.inspect_ko import match_any

    # The .ko, not the source text: code the preprocessor left out (#if) must not count.
    # On x86 copy_from_user() is inlined; DWARF still names it.
    found = match_any(ctx.info, USER_COPIES) if ctx.info is not None else None
    if found:
        return Outcome.ok(f"the module uses {found[0]} ({found[1]})")
    return Outcome.fail("user data is never copied with copy_from_user or a helper "
                        "(kstrto*_from_user, simple_write_to_buffer, memdup_user...)",
                        "a user-copy helper in the write handler", "none found",
                        "symbols and DWARF of the .ko")
