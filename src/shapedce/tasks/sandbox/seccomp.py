"""The seccomp filter every sample runs under (bubblewrap loads it: `bwrap --seccomp FD`).

    from shapedce.tasks.sandbox.seccomp import memfd
    fd = memfd()        # an fd holding the compiled classic-BPF program, or None on other machines

A deny list on top of the namespaces: system calls no HumanEval program needs and that widen the
kernel surface a sample can reach (debugging other processes, kernel keyrings, eBPF, perf events,
userfaultfd, io_uring, mounting, module loading, namespace switching, ...) fail with EPERM, as
does every x32 call on x86_64. A call through another ABI (i386 on x86_64, 32-bit ARM on aarch64),
the classic way around a filter, kills the process. Numbers are the kernel's for x86_64
(asm/unistd_64.h) and for aarch64 (asm-generic/unistd.h); on any other machine there is no
filter (`memfd()` is None) and docs/guides/trust.md says so.
"""

from __future__ import annotations

import os
import platform
import struct

DENY = {
    # name: (x86_64, aarch64)
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "setns": (308, 268),
    "unshare": (272, 97),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "syslog": (103, 116),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "fanotify_init": (300, 262),
    "lookup_dcookie": (212, 18),
    "vhangup": (153, 58),
}
"""System calls that fail with EPERM, with their numbers on x86_64 and aarch64."""
ARCHES = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}
"""machine: (AUDIT_ARCH_* value, column of DENY)."""
X32_BIT = 0x40000000
_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_KILL_PROCESS, _ALLOW, _ERRNO_EPERM = 0x80000000, 0x7FFF0000, 0x00050000 | 1


def program(machine: str | None = None) -> bytes | None:
    """The filter as `struct sock_filter` records, or None for a machine without a table."""
    machine = machine or platform.machine()
    if machine not in ARCHES:
        return None
    audit, column = ARCHES[machine]
    numbers = sorted({nrs[column] for nrs in DENY.values()})
    n = len(numbers)
    code = [(_LD_ABS, 0, 0, 4), (_JEQ, 1, 0, audit), (_RET, 0, 0, _KILL_PROCESS), (_LD_ABS, 0, 0, 0)]
    if machine == "x86_64":
        code.append((_JGE, n + 1, 0, X32_BIT))  # an x32 call: to the EPERM return
    code += [(_JEQ, n - j, 0, nr) for j, nr in enumerate(numbers)]  # a match: to the EPERM return
    code += [(_RET, 0, 0, _ALLOW), (_RET, 0, 0, _ERRNO_EPERM)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in code)


def memfd() -> int | None:
    """A new fd (memfd, at offset 0) holding `program()` for bwrap to read, or None."""
    data = program()
    if data is None or not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("shapedce-seccomp", 0)  # not close-on-exec: bwrap inherits it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
