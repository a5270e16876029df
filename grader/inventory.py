"""What a module created, found by looking rather than assumed: a bounded listing of the places a
module shows itself (files and folders under /sys/kernel, debugfs and /proc, slab caches, kernel
threads) taken just before and just after insmod, compared."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

# Kernel threads: the children of kthreadd (CONFIG_PROC_CHILDREN; else read from every /proc/PID/stat,
# whose fourth field is the parent: kernel thread names hold no space).
KTHREADS = ("{ cat /proc/2/task/2/children 2>/dev/null || "
            "awk '$4 == 2 { print $1 }' /proc/[0-9]*/stat 2>/dev/null; }")

# One guest command, a few hundred lines. The big trees no module of a lab adds to are pruned
# (slab caches are listed from /sys/kernel/slab instead of debugfs' or sysfs' per-cache files).
LIST_SCRIPT = (
    "find /sys/kernel -xdev \\( -path /sys/kernel/slab -o -path /sys/kernel/irq -o -path "
    "/sys/kernel/mm \\) -prune -o -print 2>/dev/null | sed 's/^/F /'; "
    "find /sys/kernel/debug -maxdepth 4 \\( -path /sys/kernel/debug/tracing -o -path "
    "/sys/kernel/debug/slab -o -path /sys/kernel/debug/dynamic_debug -o -path "
    "/sys/kernel/debug/bdi -o -path /sys/kernel/debug/block \\) -prune -o -print 2>/dev/null "
    "| sed 's/^/F /'; "
    "find /proc -maxdepth 2 \\( -name '[0-9]*' -o -path /proc/sys -o -path /proc/self -o -path "
    "/proc/thread-self -o -path /proc/irq -o -path /proc/sysvipc -o -path /proc/fs \\) -prune "
    "-o -print 2>/dev/null | sed 's/^/F /'; "
    "ls /sys/kernel/slab 2>/dev/null | sed 's/^/S /'; "
    f"echo T $({KTHREADS} | tr '\\n' ' ')"
)


@dataclass
class Entry:
    path: str
    kind: str = "?"  # "file", "dir", "other"
    mode: int = 0  # permission bits

    @property
    def writable(self) -> bool:
        return bool(self.mode & 0o222)

    @property
    def readable(self) -> bool:
        return bool(self.mode & 0o444)


@dataclass
class Listing:
    paths: set[str] = field(default_factory=set)
    caches: set[str] = field(default_factory=set)
    kthreads: set[int] = field(default_factory=set)


# The same listing where the module's files are known already (another kernel's guest listed
# them): only what differs from kernel to kernel, the debug kernel's shrinker entries, the slab
# caches and the threads. (A full listing costs seconds under KASAN and lockdep.)
LIGHT_SCRIPT = (
    "ls -1 /sys/kernel/debug/shrinker 2>/dev/null | sed 's|^|F /sys/kernel/debug/shrinker/|'; "
    "ls /sys/kernel/slab 2>/dev/null | sed 's/^/S /'; "
    f"echo T $({KTHREADS} | tr '\\n' ' ')"
)


def merged(known: Inventory, light: Inventory) -> Inventory:
    """A light listing's findings added to the module's files known from another kernel."""
    paths = {e.path for e in known.entries}
    entries = [*known.entries, *(e for e in light.entries if e.path not in paths)]
    return Inventory(sorted(entries, key=lambda e: e.path), light.caches, light.kthreads,
                     light.params or known.params, light.listing)


def parse_listing(text: str) -> Listing:
    out = Listing()
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "F" and rest:
            out.paths.add(rest)
        elif tag == "S" and rest:
            out.caches.add(rest)
        elif tag == "T":
            out.kthreads |= {int(x) for x in rest.split() if x.isdigit()}
    return out


@dataclass
class Inventory:
    """The module's observed interface: what appeared with it."""

    entries: list[Entry] = field(default_factory=list)  # new files and folders, sorted
    caches: list[str] = field(default_factory=list)  # new slab caches
    kthreads: dict[int, str] = field(default_factory=dict)  # new kernel threads (not kworkers)
    params: dict[str, str] = field(default_factory=dict)  # /sys/module/<m>/parameters/*
    listing: str = ""  # the raw listing after insmod, to compare with after rmmod

    def files(self, under: str = "/") -> list[Entry]:
        return [e for e in self.entries if e.kind == "file" and e.path.startswith(under)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [{"path": e.path, "kind": e.kind, "mode": f"{e.mode:o}"} for e in self.entries],
            "slab_caches": list(self.caches),
            "kthreads": [f"{name} ({pid})" for pid, name in sorted(self.kthreads.items())],
            "parameters": dict(self.params),
        }


def describe_script(module: str, before: str = "/tmp/.inv0", after: str = "/tmp/.inv1") -> str:
    """Shell: from two listings in the guest, what is new, described: 'F'/'S'/'T' lines for the
    new paths, caches and threads, 'E' lines with type and mode of each new path, 'N' lines with
    the name of each new thread, 'P' lines with the module's parameters."""
    return (
        f"awk 'NR == FNR {{ seen[$0] = 1; next }} !seen[$0]' {before} {after} > /tmp/.invnew; "
        "cat /tmp/.invnew; "
        "for p in $(sed -n 's/^F //p' /tmp/.invnew); do stat -c 'E %F|%a|%n' \"$p\" 2>/dev/null; done; "
        f"for p in $(cat {before} {after} | sed -n 's/^T //p' | tr ' ' '\\n' | sort | uniq -u); do "
        "echo \"N $p $(cat /proc/$p/comm 2>/dev/null)\"; done; "
        f"cd /sys/module/{shlex.quote(module)}/parameters 2>/dev/null && "
        "for f in *; do [ -r \"$f\" ] && echo \"P $f=$(cat \"$f\" 2>/dev/null)\"; done; cd /"
    )


def parse_described(text: str, listing: str) -> Inventory:
    """The Inventory of what describe_script printed; `listing` is the listing after insmod."""
    inv = Inventory(listing=listing)
    kinds: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "F" and rest:
            inv.entries.append(Entry(rest))
        elif tag == "S" and rest:
            inv.caches.append(rest)
        elif tag == "E":
            kind, _, tail = rest.partition("|")
            mode, _, path = tail.partition("|")
            k = "dir" if kind == "directory" else "file" if "regular" in kind else "other"
            kinds[path] = (k, int(mode, 8) if mode.isdigit() else 0)
        elif tag == "N":
            pid, _, name = rest.partition(" ")
            if pid.isdigit() and name.strip():
                inv.kthreads[int(pid)] = name.strip()
        elif tag == "P":
            name, _, value = rest.partition("=")
            inv.params[name] = value
    for e in inv.entries:
        e.kind, e.mode = kinds.get(e.path, ("?", 0))
    inv.entries.sort(key=lambda e: e.path)
    inv.caches.sort()
    # Kernel workers come and go on their own: only other new threads are the module's.
    inv.kthreads = {p: n for p, n in sorted(inv.kthreads.items()) if not n.startswith("kworker/")}
    return inv


def remaining(inv: Inventory, after_unload: str) -> list[str]:
    """The module's files and folders still there after rmmod, and its caches."""
    now = parse_listing(after_unload)
    left = [e.path for e in inv.entries if e.path in now.paths]
    left += [f"slab cache {c}" for c in inv.caches if c in now.caches]
    return left
