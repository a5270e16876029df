"""Inspect stage: symbols, .modinfo and DWARF of modules built from tests/data/inspect, and C-text hints."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require_env

from grader.build import BuildRequest, BuildResult, build_module
from grader.errors import EnvironmentProblem
from grader.hints import SourceHints, generation_note, source_hints
from grader.inspect_ko import KoInfo, find_api, inspect_ko, match_any, unpaired
from grader.model import Status
from grader.profiles import load_profile
from grader.provision import load_kernel

DATA = Path(__file__).parent / "data" / "inspect"
PROFILES = ["5.10", "6.1", "6.12"]
# The setup/teardown pairs a rubric would hold, with the symbols each generation really shows:
# KMEM_CACHE() calls __kmem_cache_create_args on 6.12; mempool_create_slab_pool() ends in
# mempool_create (5.10, 6.1) or mempool_create_node_noprof (6.12, matched through "_noprof");
# kthread_run() expands to kthread_create_on_node; sysfs_create_file() is an inline over
# sysfs_create_file_ns, seen in the DWARF or through the _ns import.
PAIRS: list[tuple[list[str], list[str]]] = [
    (["kmem_cache_create", "__kmem_cache_create_args"], ["kmem_cache_destroy"]),
    (["register_shrinker", "shrinker_register", "shrinker_alloc"],
     ["unregister_shrinker", "shrinker_free"]),
    (["mempool_create", "mempool_create_node"], ["mempool_destroy"]),
    (["debugfs_create_file"], ["debugfs_remove", "debugfs_remove_recursive"]),
    (["kthread_create_on_node"], ["kthread_stop"]),
    (["sysfs_create_file", "sysfs_create_file_ns"], ["sysfs_remove_file", "sysfs_remove_file_ns"]),
]
MODULES = {  # test module -> its objects
    "leaky": ["leaky.o"],
    "nolicense": ["nolicense.o"],
    "shrinker": ["shrinker.o"],
    "full": ["taskmonitor.o", "tm_debugfs.o"],
}
Builder = Callable[..., BuildResult]


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """build(module, profile) -> BuildResult, each built once per session; skips if not provisioned."""
    done: dict[tuple[str, str], BuildResult] = {}

    def _build(module: str, profile: str, must_pass: bool = True) -> BuildResult:
        if (module, profile) not in done:
            env = require_env(profile)
            name = "taskmonitor" if module == "full" else module
            req = BuildRequest(sources=DATA / module, module=name, objects=MODULES[module],
                               workdir=tmp_path_factory.mktemp(f"{module}-{profile}"))
            done[module, profile] = build_module(req, env.profile, env.kernel)
        result = done[module, profile]
        if must_pass and result.status != Status.PASSED:
            pytest.fail(f"{module} did not build on {profile} ({result.status}):\n{result.log[-3000:]}")
        return result

    return _build


def _info(build: Builder, module: str, profile: str) -> KoInfo:
    ko = build(module, profile).ko
    assert ko is not None
    return inspect_ko(ko)


# ---- built modules ---------------------------------------------------------------------------
@pytest.mark.build
def test_leaky_symbols_and_modinfo(build: Builder) -> None:
    info = _info(build, "leaky", "6.1")
    assert {"kmem_cache_create", "kmem_cache_alloc", "kmem_cache_free", "debugfs_create_file",
            "debugfs_remove", "refcount_warn_saturate", "param_ops_int"} <= info.imports
    # kref_* are static inlines: no symbol, only DWARF records and what they expand to.
    assert not {"kref_get", "kref_put", "kref_init"} & info.imports
    assert {"leaky_init", "leaky_exit", "leaky_read", "target", "init_module"} <= info.defined
    assert not info.imports & info.defined
    assert info.license == "GPL"
    assert info.params == {"target": {"type": "int", "description": "PID of the process to monitor"}}
    release = load_kernel(load_profile("6.1")).release
    assert info.vermagic is not None and info.vermagic.split()[0] == release
    assert info.modinfo["vermagic"] == [info.vermagic + " "]  # the raw value keeps the macro's blank
    assert info.modinfo["name"] == ["leaky"]
    assert info.modinfo["author"] == ["grader test suite"]
    assert info.has_dwarf and info.notes == ()
    assert {".modinfo", ".symtab", ".debug_info", "__versions"} <= info.sections


@pytest.mark.build
def test_leaky_inlined_kref_and_matching(build: Builder) -> None:
    info = _info(build, "leaky", "6.1")
    assert {"kref_get", "kref_put", "kref_init"} <= info.inlined
    assert find_api(info, "kref_put") == "inlined"
    assert find_api(info, "kmem_cache_create") == "imported"
    assert find_api(info, "leaky_read") == "defined"
    assert find_api(info, "kmem_cache_destroy") is None
    assert match_any(info, ["kref_put", "refcount_warn_saturate"]) == ("kref_put", "inlined")
    assert match_any(info, ["register_shrinker", "shrinker_register"]) is None


@pytest.mark.build
def test_leaky_kmem_cache_never_destroyed(build: Builder) -> None:
    info = _info(build, "leaky", "6.1")
    assert unpaired(info, PAIRS) == [("kmem_cache_create", ["kmem_cache_destroy"])]


@pytest.mark.build
def test_without_dwarf_the_expansion_is_what_remains(build: Builder, tmp_path: Path) -> None:
    if not shutil.which("objcopy"):
        pytest.skip("objcopy (binutils) is not installed")
    ko = build("leaky", "6.1").ko
    assert ko is not None
    stripped = tmp_path / "leaky.ko"
    subprocess.run(["objcopy", "--strip-debug", str(ko), str(stripped)], check=True)
    info = inspect_ko(stripped)
    assert not info.has_dwarf and info.inlined == frozenset()
    assert info.notes and "no DWARF" in info.notes[0]
    # Why rubric alternatives exist: kref_put leaves refcount_warn_saturate behind.
    assert match_any(info, ["kref_put", "refcount_warn_saturate"]) == ("refcount_warn_saturate", "imported")


@pytest.mark.build
@pytest.mark.parametrize("profile", PROFILES)
def test_full_module_pairs_everything(build: Builder, profile: str) -> None:
    info = _info(build, "full", profile)
    assert unpaired(info, PAIRS) == []
    for setups, teardowns in PAIRS:
        assert match_any(info, setups), setups
        assert match_any(info, teardowns), teardowns
    assert {"kref_get", "kref_put", "kref_init", "sysfs_create_file", "sysfs_remove_file"} <= info.inlined
    # Defined and inlined only in the second compilation unit: every unit's DWARF is read.
    assert "tm_dentry_error" in info.inlined
    assert find_api(info, "kthread_create_on_node") == "imported"
    assert find_api(info, "sysfs_create_file_ns") == "imported"
    assert find_api(info, "kstrtoint_from_user") == "imported"
    assert find_api(info, "mempool_alloc") == "imported"  # mempool_alloc_noprof on 6.12
    assert info.params["target"]["type"] == "int"


@pytest.mark.build
def test_shrinker_api_follows_the_kernel(build: Builder) -> None:
    old, new = _info(build, "shrinker", "6.1"), _info(build, "shrinker", "6.12")
    assert {"register_shrinker", "unregister_shrinker"} <= old.imports
    assert not {"shrinker_alloc", "shrinker_register", "shrinker_free"} & old.imports
    assert {"shrinker_alloc", "shrinker_register", "shrinker_free"} <= new.imports
    assert not {"register_shrinker", "unregister_shrinker"} & new.imports
    alternatives = ["register_shrinker", "shrinker_register"]
    assert match_any(old, alternatives) == ("register_shrinker", "imported")
    assert match_any(new, alternatives) == ("shrinker_register", "imported")
    assert unpaired(old, PAIRS) == [] and unpaired(new, PAIRS) == []


@pytest.mark.build
def test_module_without_license(build: Builder) -> None:
    # 5.10's modpost only warns about a missing MODULE_LICENSE(); 6.1's refuses the module.
    info = _info(build, "nolicense", "5.10")
    assert info.license is None and "license" not in info.modinfo
    assert info.params == {}
    assert {"kfree", "printk"} <= info.imports
    refused = build("nolicense", "6.1", must_pass=False)
    assert refused.status == Status.FAILED
    assert any("missing MODULE_LICENSE()" in d.message for d in refused.errors)


# ---- no build needed -------------------------------------------------------------------------
def test_not_a_module(tmp_path: Path) -> None:
    text = tmp_path / "x.ko"
    text.write_text("not an ELF file")
    with pytest.raises(EnvironmentProblem, match="not a readable ELF"):
        inspect_ko(text)
    with pytest.raises(EnvironmentProblem, match="not a kernel module"):
        inspect_ko(Path(shutil.which("true") or "/bin/true"))
    with pytest.raises(EnvironmentProblem, match="cannot read"):
        inspect_ko(tmp_path / "missing.ko")


BASE = KoInfo(path=Path("x.ko"), imports=frozenset(), defined=frozenset(), modinfo={}, params={},
              license=None, vermagic=None, inlined=frozenset(), has_dwarf=True, sections=frozenset())


def test_matching_rules() -> None:
    info = replace(BASE, imports=frozenset({"kmem_cache_create", "mempool_create_node_noprof",
                                            "refcount_warn_saturate"}),
                   inlined=frozenset({"kref_put", "kzalloc_noprof"}),
                   defined=frozenset({"kmem_cache_destroy", "save_sample"}))
    assert find_api(info, "mempool_create_node") == "imported"  # 6.10+ *_noprof
    assert find_api(info, "kzalloc") == "inlined"
    assert find_api(info, "save_sample") == "defined"
    assert find_api(info, "mempool_destroy") is None
    assert match_any(info, ["nothing", "refcount_warn_saturate", "kref_put"]) == (
        "refcount_warn_saturate", "imported")
    assert match_any(info, []) is None
    # A module's own function named like the teardown does not release the kernel's cache.
    assert unpaired(info, [(["kmem_cache_create"], ["kmem_cache_destroy"]),
                           (["mempool_create", "mempool_create_node"], ["mempool_destroy"]),
                           (["debugfs_create_file"], ["debugfs_remove"])]) == [
        ("kmem_cache_create", ["kmem_cache_destroy"]),
        ("mempool_create_node", ["mempool_destroy"]),
    ]


def _hints(tmp_path: Path, text: str) -> SourceHints:
    src = tmp_path / "m.c"
    src.write_text(text)
    return source_hints([src])


@pytest.mark.parametrize("text, expected", [
    ("int f(void) { return register_shrinker(&tm->shrinker); }", True),
    ("int f(void) { return register_shrinker(&(tm->s[0])); }", True),
    ("int f(void) {\n  return register_shrinker(\n    &s\n  );\n}", True),
    ('int f(void) { return register_shrinker(&s, "taskmonitor"); }', False),
    ('int f(void) { return register_shrinker(&s, "%s-%d", "a,b", f(1, 2)); }', False),
    ("/* register_shrinker(&s); */ int f(void) { return 0; }", False),
    ("// register_shrinker(&s);\nint f(void) { return 0; }", False),
    ('const char *s = "register_shrinker(&s)";', False),
    ("#define register_shrinker(s) x(s)\n", False),
    ("void f(void) { unregister_shrinker(&s); }", False),
    ("#if 0\nregister_shrinker(&s);\n#endif\n", False),
    ("#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 0, 0)\nregister_shrinker(&s);\n"
     '#else\nregister_shrinker(&s, "tm");\n#endif\n', False),
    ("#ifndef TM_H\n#define TM_H\nint f(void) { return register_shrinker(&s); }\n#endif\n", True),
])
def test_one_arg_register_shrinker(tmp_path: Path, text: str, expected: bool) -> None:
    assert _hints(tmp_path, text).one_arg_register_shrinker is expected


def test_other_hints(tmp_path: Path) -> None:
    h = _hints(tmp_path, 'cputime_t ut;\nint f(void) { return register_shrinker(&s, "tm"); }\n'
                         "struct shrinker *p = shrinker_alloc(0, \"tm\");\n")
    assert h.uses_cputime_t and h.named_register_shrinker and h.uses_shrinker_alloc
    assert not h.one_arg_register_shrinker and not h.copy_from_user
    assert not _hints(tmp_path, "/* cputime_t */ u64 ut;").uses_cputime_t
    for call in ("copy_from_user(b, ubuf, n)", "kstrtoint_from_user(ubuf, n, 10, &pid)",
                 "kstrtol_from_user(ubuf, n, 0, &v)", "simple_write_to_buffer(b, 8, ppos, ubuf, n)",
                 "strncpy_from_user(b, ubuf, n)", "memdup_user_nul(ubuf, n)", "memdup_user(ubuf, n)"):
        assert _hints(tmp_path, f"void f(void) {{ {call}; }}").copy_from_user, call
    assert not _hints(tmp_path, "// TODO copy_from_user\nvoid f(void) { }").copy_from_user
    assert not _hints(tmp_path, "#if 0\ncopy_from_user(b, u, n);\n#endif\n").copy_from_user


def test_hints_of_the_test_modules() -> None:
    # Both switch on LINUX_VERSION_CODE: they fit every generation.
    full = source_hints(sorted((DATA / "full").glob("*.[ch]")))
    assert full == SourceHints(False, False, False, False, copy_from_user=True)
    assert source_hints([DATA / "shrinker" / "shrinker.c"]) == SourceHints(False, False, False, False, False)
    assert generation_note(full, "6.1") is None


ALL = ["5.10", "6.1", "6.12"]


def test_generation_notes() -> None:
    one_arg = SourceHints(True, False, False, False, False)
    assert generation_note(one_arg, "6.1", ALL) == (
        "This code uses the one-argument register_shrinker() of 5.x kernels (removed in 6.0); "
        "it fits the 5.10 profile (`--profile 5.10`), or build it on 6.1 with `--compat`.")
    assert generation_note(one_arg, "5.10", ALL) is None
    on_612 = generation_note(one_arg, "6.12", ALL)
    assert on_612 and "`--profile 5.10`" in on_612 and "`--profile 6.1 --compat`" in on_612
    cputime = SourceHints(False, False, False, True, False)
    note = generation_note(cputime, "5.10", ALL)
    assert note == ("This code uses cputime_t (removed in 4.11: CPU times have been u64 nanoseconds "
                    "since); build it with `--compat`, which maps it to u64.")
    both = generation_note(replace(one_arg, uses_cputime_t=True), "6.1", ALL)
    assert both and "`--profile 5.10 --compat`" in both and "It also uses cputime_t" in both
    named = generation_note(SourceHints(False, True, False, False, False), "5.10", ALL)
    assert named and "`--profile 6.1`" in named
    assert generation_note(SourceHints(False, True, False, False, False), "6.1", ALL) is None
    alloc = generation_note(SourceHints(False, False, True, False, False), "6.1", ALL)
    assert alloc and "`--profile 6.12`" in alloc
    assert generation_note(SourceHints(False, False, True, False, False), "6.12", ALL) is None
    assert generation_note(one_arg, "6.1", ["6.1"]) == (
        "This code uses the one-argument register_shrinker() of 5.x kernels (removed in 6.0); "
        "build it on 6.1 with `--compat`.")
    assert generation_note(one_arg, "custom", ALL) is None
    assert generation_note(one_arg, "6.1") is not None  # the profiles of vm-images/


def test_compat_is_suggested_for_pre_4_11_code() -> None:
    from grader.hints import compat_note

    msgs = ["implicit declaration of function 'task_lock'; did you mean 'task_rq_lock'?",
            "implicit declaration of function 'put_task_struct'", "unused variable 'x'"]
    note = compat_note(msgs, compat=False)
    assert note and "put_task_struct, task_lock" in note and "--compat" in note
    assert compat_note(["unknown type name 'cputime_t'"], compat=False)
    assert compat_note(msgs, compat=True) is None  # already built with it
    assert compat_note(["implicit declaration of function 'my_helper'"], compat=False) is None
