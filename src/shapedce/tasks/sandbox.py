"""Run untrusted model-written Python in a sandbox: `run_python(code)` -> Result(passed, status, ...).

    from shapedce.tasks.sandbox import Limits, run_python, run_many, guards
    run_python("assert 1 + 1 == 2").passed        # True; a hung / crashing / hostile program: False
    run_many(programs, Limits(wall_s=10))         # in parallel (threads each waiting on one process)
    python -m shapedce.tasks.sandbox              # prints what this machine enforces (`guards()`)

A program passes iff it runs to its end: the launcher then prints a random token that is in no file,
argument or variable of the program (it is read from a pipe into the launcher's frame first). Each
program runs as `python -I -c LAUNCHER` in a fresh session (own process group) with cwd = its own temporary
directory (mode 0700), stdin closed, and an environment holding only PATH, HOME=its directory,
LANG and PYTHONHASHSEED=0: no variable of ours reaches it.

Enforced by the OS (always):
  - wall time `wall_s` (the parent kills the process group), CPU time `cpu_s` (RLIMIT_CPU), address
    space `memory_mb` (RLIMIT_AS: a large allocation raises MemoryError), file size `file_mb`
    (RLIMIT_FSIZE), 64 open files, no core dumps; output capped at `file_mb`, last 4 kB kept.
  - on exit or timeout: SIGKILL to the process group.
Enforced by the OS when we run as root (`guards()` says which hold here):
  - `uid`: the program runs as a fresh uid/gid of its own (no groups), so it cannot signal our
    processes, read /proc/<our pid>/environ or write any file that is not world-writable; its
    processes are capped by RLIMIT_NPROC (`nproc`), and after it ends every process of that uid is
    SIGKILLed (a child that left the process group with setsid does not survive either).
  - `netns`: a new network namespace (loopback only, down): no network.
  - `tmpfs`: a private mount namespace with empty tmpfs over /tmp, /var/tmp and /dev/shm (the only
    world-writable places of a usual Linux), discarded at exit: nothing it writes outside its
    directory persists.
  Only the modules in PRELOAD are imported before the uid drop: the new uid may be unable to read
  the Python installation (here /root is 0700), so importing any other module not loaded yet fails.
  The program can still read world-readable files, and use CPU/memory within its limits.
Enforced in Python only (an audit hook a determined program could evade through a C extension
already loaded): no fork/exec/spawn/subprocess, no signals (os.kill...), no sockets, no ctypes
calls, no sys._getframe of the launcher's frame, no file opened for writing / removed / renamed /
created outside its directory.
Without root none of the `uid`/`netns`/`tmpfs` guards hold: wall/CPU/memory limits, the process
group kill, the scrubbed environment and the audit hook remain. A program can fake a pass only by
reading the token out of the launcher's frame (e.g. walking `f_back` from its own frame, which no
audit event covers): the sandbox protects the machine; a score is as honest as the program.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

PRELOAD = (
    "typing",
    "math",
    "cmath",
    "random",
    "copy",
    "string",
    "collections",
    "re",
    "hashlib",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "fractions",
    "decimal",
    "statistics",
    "operator",
    "datetime",
    "json",
    "array",
    "numbers",
    "dataclasses",
    "enum",
    "textwrap",
    "unicodedata",
    "traceback",
)
"""Standard modules importable by sandboxed code whatever the file permissions (HumanEval needs a
handful of these)."""
_UIDS = range(1_500_000_000, 1_600_000_000)
_used: set[int] = set()
_lock = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits of one sandboxed program."""

    wall_s: float = 10.0
    """Wall-clock seconds before the process group is killed."""
    cpu_s: int = 10
    """CPU seconds (RLIMIT_CPU)."""
    memory_mb: int = 1024
    """Address space in MiB (RLIMIT_AS)."""
    file_mb: int = 16
    """Largest file it may write, its output included (RLIMIT_FSIZE), MiB."""
    nproc: int = 16
    """Processes and threads of its uid (RLIMIT_NPROC; only with the `uid` guard)."""


@dataclass(frozen=True, slots=True)
class Result:
    passed: bool
    status: str
    """"passed", "failed" (exit status or exception), "timeout" or "killed" (a signal: CPU, memory...)."""
    returncode: int | None
    output: str
    """The last 4 kB of its stdout and stderr."""
    wall_s: float


LAUNCHER = r"""
import json, os, resource, sys
head = json.loads(sys.stdin.readline()); sys.stdin.close()
def run(head=head, token=head.pop("token")):
    d, lim = head["dir"], head["limits"]
    for name, value in [("AS", lim["memory_mb"] << 20), ("FSIZE", lim["file_mb"] << 20), ("NOFILE", 64),
                        ("CORE", 0), ("CPU", lim["cpu_s"])]:
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value + (name == "CPU")))
    for m in head["preload"]:
        __import__(m)
    os.chdir(d)  # before the tmpfs hides d's path: the cwd keeps the real directory
    code = open("main.py").read()
    if head["uid"] is not None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if head["ns"] and libc.unshare(0x40000000 | 0x00020000) == 0:  # CLONE_NEWNET | CLONE_NEWNS
            libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None)        # MS_REC | MS_PRIVATE: ours only
            for where in (b"/tmp", b"/var/tmp", b"/dev/shm"):
                libc.mount(b"tmpfs", where, b"tmpfs", 0, b"size=16m,mode=1777")
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
        os.setgroups([]); os.setgid(head["uid"]); os.setuid(head["uid"])
        del libc, ctypes
        for m in ("ctypes", "_ctypes", "ctypes._endian"):  # re-importing needs files the uid cannot read
            sys.modules.pop(m, None)
    root = os.path.realpath(d) + os.sep
    def inside(path):
        return isinstance(path, int) or os.path.realpath(os.path.join(d, os.fsdecode(path))).startswith(root)
    deny = {"os.fork", "os.forkpty", "os.exec", "os.spawn", "os.posix_spawn", "os.system", "subprocess.Popen",
            "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
            "ctypes.call_function", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
            "socket.sendto", "os.putenv", "sys.setprofile", "sys.settrace"}
    paths = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
             "os.link", "os.truncate", "shutil.rmtree", "os.utime"}
    write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def hook(event, args):
        if event in deny or (event == "sys._getframe" and args[0].f_code is run.__code__):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and args[0] is not None and not inside(args[0]) and (
                any(c in (args[1] or "") for c in "wax+") or (args[2] or 0) & write):
            raise PermissionError(f"sandbox: writing {args[0]!r} outside the sandbox directory")
        if event in paths and not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, int))):
            raise PermissionError(f"sandbox: {event} outside the sandbox directory")
    sys.addaudithook(hook)
    exec(compile(code, "main.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    sys.stdout.flush()
    sys.stdout.write("\n" + token + "\n")
    sys.stdout.flush()
run()
"""


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def guards() -> dict[str, bool]:
    """Which guards hold on this machine, the OS-level ones checked by probe runs."""

    def probe(check: str) -> bool:
        return _root() and run_python(f"import os\nassert {check}", Limits(wall_s=20)).passed

    ifaces = "[l.split(':')[0].strip() for l in open('/proc/self/net/dev').readlines()[2:]]"
    return {
        "rlimits": True,
        "process_group": True,
        "env_scrub": True,
        "audit_hook": True,
        "uid": probe("os.getuid() != 0 and os.getgroups() == []"),
        "netns": probe(f"{ifaces} == ['lo']"),
        "tmpfs": probe("os.listdir('/tmp') == os.listdir('/dev/shm') == []"),
    }


def _new_uid() -> int | None:
    if not _root():
        return None
    with _lock:
        uid = random.choice([u for u in random.sample(_UIDS, 16) if u not in _used])
        _used.add(uid)
        return uid


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left (it cannot make new ones faster than this)."""
    for _ in range(50):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    line = next(x for x in f if x.startswith("Uid:"))
                if int(line.split()[1]) == uid:
                    found = True
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, StopIteration, ValueError):
                continue
        if not found:
            return
        time.sleep(0.01)


def run_python(code: str, limits: Limits = Limits(), *, namespaces: bool = True) -> Result:
    """Run `code` in the sandbox; passed iff it ran to its end within the limits."""
    uid = _new_uid()
    work = tempfile.mkdtemp(prefix="shapedce-sbx-")
    start = time.monotonic()
    proc = None
    try:
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write(code)
        if uid is not None:
            for path in (work, os.path.join(work, "main.py")):
                os.chown(path, uid, uid)
        token = f"{random.SystemRandom().getrandbits(128):032x}"
        head = {
            "dir": work,
            "uid": uid,
            "ns": namespaces,
            "limits": asdict(limits),
            "preload": PRELOAD,
            "token": token,
        }
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", LAUNCHER],
                cwd=work,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
            proc.stdin.write((json.dumps(head) + "\n").encode())
            proc.stdin.close()
            try:
                rc = proc.wait(timeout=limits.wall_s)
                status = None
            except subprocess.TimeoutExpired:
                rc, status = None, "timeout"
            out.seek(max(0, out.seek(0, 2) - 4096))
            text = out.read().decode("utf-8", "replace")
        passed = rc == 0 and text.rstrip().endswith(token)
        status = status or ("passed" if passed else ("killed" if rc is not None and rc < 0 else "failed"))
        return Result(passed, status, rc, text.replace(token, "").rstrip(), time.monotonic() - start)
    finally:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        if uid is not None:
            _kill_uid(uid)
            with _lock:
                _used.discard(uid)
        shutil.rmtree(work, ignore_errors=True)


def run_many(codes: list[str], limits: Limits = Limits(), workers: int | None = None) -> list[Result]:
    """`run_python` of each program, `workers` at a time (default: the CPU count)."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda c: run_python(c, limits), codes))


if __name__ == "__main__":
    for name, held in guards().items():
        print(f"{name:<14} {'enforced' if held else 'NOT enforced'}")
