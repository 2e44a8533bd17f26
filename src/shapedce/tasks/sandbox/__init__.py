"""Run untrusted model-written Python in an OS-level sandbox, and grade it from outside.

    from shapedce.tasks.sandbox import Limits, grade, run_python, run_many, guards
    grade("def f(x):\n    return x * 2", "f", check)   # Result: check(candidate) ran outside, passed?
    run_python("assert 1 + 1 == 2").passed        # True: ran to its end (NOT a grade: see below)
    run_many(programs, Limits(wall_s=10))         # in parallel (threads, each waiting on one sample)
    python -m shapedce.tasks.sandbox              # the isolation level here and what each guard does

Isolation (levels.py, docs/guides/trust.md): every sample runs under bubblewrap in its own user,
PID, mount, IPC, UTS, cgroup and network namespaces, with a fresh uid of its own when we are root,
no capabilities, no new privileges, no further user namespaces and a seccomp deny list
(seccomp.py); it sees a read-only system
(/usr, /lib*, the Python installation: nothing of /home, /root, /etc or /work) with private
size-capped tmpfs at /tmp, /var/tmp, /dev/shm, /run/lock and its directory /box; rlimits cap its
memory, CPU, file size, open files and processes (process.py). Its PID namespace ends every process
it started when it ends. Without root or without bubblewrap, `levels.require` refuses to run
anything unless the user accepted less (--allow-unisolated-code), and says what is not isolated.

Grading (`grade`): the sample's function is called through `Sandbox.call` by a trusted `check`
that runs here, outside: the arguments go in and the results come out as plain data (wire.py:
exact builtin types, decoded strictly), and every comparison happens in this process. An object
whose `__eq__` is always true cannot cross; walking frames or the garbage collector inside the
sandbox finds no expected value, because none is there. `run_python` only says a program ran to its
end: a program can forge that (it shares the launcher's process), so no score relies on it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import levels, seccomp
from .levels import FLAG, Isolation, allow_unisolated, allowed, isolation, require
from .process import Limits, Result, SampleFailed, Sandbox
from .wire import WireError

DEFAULT = Limits()

__all__ = [
    "FLAG",
    "Isolation",
    "Limits",
    "Result",
    "SampleFailed",
    "Sandbox",
    "WireError",
    "allow_unisolated",
    "allowed",
    "grade",
    "guards",
    "isolation",
    "levels",
    "require",
    "run_many",
    "run_python",
]


def run_python(code: str, limits: Limits = DEFAULT) -> Result:
    """Run `code` in the sandbox; passed iff it ran to its end and exited 0 within the limits."""
    with Sandbox(code, limits) as box:
        ok = box.run()
    return box.result(ok)


def grade(code: str, entry: str, check: Callable[[Callable], object], limits: Limits = DEFAULT) -> Result:
    """Passed iff the trusted `check(candidate)` returns, `candidate` calling `entry` of `code` in
    the sandbox (plain data in and out; any exception, wrong value or sample failure: not passed)."""
    with Sandbox(code, limits, entry=entry) as box:
        passed = False
        if box.failure is None:
            try:
                check(box.call)
                passed = box.failure is None
            except Exception as err:  # noqa: BLE001 - a failed test, whatever it raised
                box._fail(f"{type(err).__name__}: {str(err)[:300]}")
    return box.result(passed)


def run_many(codes: list[str], limits: Limits = DEFAULT, workers: int | None = None) -> list[Result]:
    """`run_python` of each program, `workers` at a time (default: the CPU count)."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda c: run_python(c, limits), codes))


_PTRACE = seccomp.DENY["ptrace"][seccomp.ARCHES.get(platform.machine(), (0, 0))[1]]
PROBES = {
    "fresh_uid": "1_500_000_000 <= os.getuid() < 1_600_000_000 and os.getgroups() == []",
    "user_ns": "open('/proc/self/uid_map').read().split()[1:] != ['0', '4294967295']",
    "pid_ns": "sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[0] == 1",
    "net_ns": "[l.split(':')[0].strip() for l in open('/proc/self/net/dev').readlines()[2:]] == ['lo']",
    "read_only_view": "not any(map(os.path.exists, ('/home', '/etc', '/work', '/root/.ssh')))"
    " and not os.access('/', os.W_OK)",
    "private_tmp": "all(os.listdir(d) == [] for d in ('/tmp', '/var/tmp', '/dev/shm', '/run/lock'))",
    "no_new_privs": "'NoNewPrivs:\\t1' in open('/proc/self/status').read()",
    "no_capabilities": "'CapEff:\\t0000000000000000' in open('/proc/self/status').read()",
    "seccomp": "'Seccomp:\\t2' in open('/proc/self/status').read() and "
    f"__import__('ctypes').CDLL(None).syscall({_PTRACE}, 0, 0, 0, 0) == -1",  # PTRACE_TRACEME refused
    "rlimits": "__import__('resource').getrlimit(__import__('resource').RLIMIT_NPROC)[1] == 16",
}
"""What each guard means, as a check run inside the sandbox."""


def guards() -> dict[str, bool]:
    """Which guards hold here, each checked by a probe run in the sandbox."""
    return {
        name: run_python(f"import os\nassert {check}", Limits(wall_s=20)).passed
        for name, check in PROBES.items()
    }
