"""Every timeout and size limit of the grader, in one place.

Guest timeouts are in the guest's own seconds: in the time-warped guest (QEMU -icount sleep=off)
an idle guest second costs a few milliseconds of wall time, a busy one a fraction of a wall
second; the guest enforces them (its agent kills a command at its deadline). The host only keeps
a safety net in wall time, far above, for a guest that stops answering altogether.

A rubric may override the guest fields by name in its `[limits]` table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    # ---- intake: what a submission may unpack to
    max_total_bytes: int = 20 * MiB
    max_files: int = 2000
    max_file_bytes: int = 5 * MiB
    # ---- build (wall seconds, bytes)
    build_timeout_s: float = 180.0
    build_memory_bytes: int = 4 << 30
    build_file_bytes: int = 512 * MiB
    # ---- guest lifecycle (wall seconds)
    boot_timeout_s: float = 60.0  # cold boot, kernel start to the agent's READY
    boot_attempts: int = 3  # a boot that fails before the agent answers is retried
    restore_timeout_s: float = 30.0  # restoring a saved guest
    # A restored guest reads its modules from fw_cfg, in time quadratic in their size (the
    # driver seeks from the start for each 4 KiB sysfs read; measured on 6.1 under TCG:
    # 256 KiB 1.0 s, 512 KiB 2.6 s, 1 MiB 9 s): larger payloads boot cold (3-6 s).
    restore_payload_bytes: int = 256 * 1024
    # ---- guest commands (guest seconds)
    command_s: float = 15.0  # an ordinary command
    insmod_s: float = 30.0  # insmod / rmmod (init and exit functions)
    history_wait_s: float = 3600.0  # how long a check waits for a history to grow
    discover_wait_s: float = 60.0  # how long discovery waits for a first sample in some file
    read_s: float = 5.0  # a read of a module's file that takes longer is killed: it hangs
    # ---- host-side safety net around a guest command (wall seconds):
    # host deadline = guest timeout * host_factor + host_grace_s
    host_factor: float = 2.0
    host_grace_s: float = 10.0
    # ---- console and output caps
    console_lines_cap: int = 100_000  # lines kept in memory (the rest: a rolling tail)
    console_file_cap: int = 32 * MiB  # bytes of console.log written to disk
    agent_output_cap: int = 1 * MiB  # per command and stream, enforced in the guest agent
    evidence_lines: int = 12  # lines of a command's output kept as evidence

    def with_overrides(self, overrides: dict[str, Any]) -> Limits:
        """A copy with some fields replaced; an unknown name is an error (a typo in a rubric)."""
        names = {f.name: f.type for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        cast = {k: type(getattr(self, k))(v) for k, v in overrides.items()}
        return dataclasses.replace(self, **cast)


DEFAULT = Limits()
