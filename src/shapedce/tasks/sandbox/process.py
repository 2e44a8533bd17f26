"""One sandboxed sample: start it, call its function with plain data, end it with everything it started.

    from shapedce.tasks.sandbox.process import Sandbox, Limits
    with Sandbox("def f(x):\n    return x + 1", Limits(), entry="f") as box:
        box.call(41)        # 42 (an exact int, decoded outside: wire.py); SampleFailed otherwise
    box.result()            # Result(passed, status, returncode, output, wall_s)

The process is `python -I -S -c LAUNCHER` (launcher.py) wrapped by levels.command for the level
`levels.require()` allows; messages go through two pipes that are not its stdout, which goes,
with stderr, to a file capped by RLIMIT_FSIZE (the last 4 kB are kept). Limits are rlimits set
inside before the program runs: address space, CPU seconds, file size, open files, processes
(RLIMIT_NPROC counts the sample's uid in its own user namespace) and no core dumps; the wall
limit is a deadline on every read. On close the outer process is SIGKILLed: its PID namespace then
ends every process the sample started (at level "none", its process group only).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from . import levels as iso
from . import seccomp
from .launcher import LAUNCHER
from .wire import WireError, dumps, loads


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits of one sandboxed sample."""

    wall_s: float = 10.0
    """Wall-clock seconds, from start to the last reply, before the sample is killed."""
    cpu_s: int = 10
    """CPU seconds per process (RLIMIT_CPU)."""
    memory_mb: int = 1024
    """Address space per process in MiB (RLIMIT_AS: a large allocation raises MemoryError)."""
    file_mb: int = 16
    """Largest file it may write (its output included, RLIMIT_FSIZE), size of each private tmpfs,
    and largest message it may send, MiB."""
    nproc: int = 16
    """Processes and threads (RLIMIT_NPROC)."""
    nofile: int = 64
    """Open files per process (RLIMIT_NOFILE)."""


@dataclass(frozen=True, slots=True)
class Result:
    passed: bool
    status: str
    """"passed", "failed" (an exception, a wrong value, an exit), "timeout" or "killed" (a signal)."""
    returncode: int | None
    output: str
    """The last 4 kB of its stdout and stderr, then the reason it failed."""
    wall_s: float


class SampleFailed(Exception):
    """The sample raised, exited, hung, or sent something that is not plain data."""


class Sandbox:
    """One sample in its own sandbox (see the module docstring); use as a context manager."""

    def __init__(self, code: str, limits: Limits | None = None, *, entry: str | None = None) -> None:
        limits = limits or Limits()
        self.limits, self.entry = limits, entry
        self.level = iso.require().level
        self.uid = iso.new_uid() if self.level == "full" else None
        self.start = time.monotonic()
        self.deadline = self.start + limits.wall_s
        self.failure: str | None = None
        self.status: str | None = None
        self.done = False
        self.output = ""
        """The last 4 kB of its stdout and stderr, once closed."""
        self._buf = bytearray()
        self._work = tempfile.mkdtemp(prefix="shapedce-sbx-") if self.level == "none" else None
        self._out = tempfile.TemporaryFile()
        to_rd, self._to = os.pipe()
        self._from, from_wr = os.pipe()
        inner = [iso.python(), "-I", "-S", "-B", "-c", LAUNCHER, str(to_rd), str(from_wr)]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": self._work or iso.BOX,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
        }
        os.set_blocking(self._to, False)
        filt = seccomp.memfd() if self.level != "none" else None
        try:
            self.proc = subprocess.Popen(
                iso.command(inner, self.level, self.uid, limits.file_mb, filt),
                cwd=self._work or "/",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                pass_fds=(to_rd, from_wr) if filt is None else (to_rd, from_wr, filt),
                start_new_session=True,
            )
        except BaseException:
            for fd in (self._to, self._from):
                os.close(fd)
            self._out.close()
            iso.free_uid(self.uid)
            if self._work is not None:
                shutil.rmtree(self._work, ignore_errors=True)
            raise
        finally:
            for fd in (to_rd, from_wr) if filt is None else (to_rd, from_wr, filt):
                os.close(fd)
        lim = limits
        rlimits = [("AS", lim.memory_mb << 20), ("CPU", lim.cpu_s), ("FSIZE", lim.file_mb << 20)]
        rlimits += [("NOFILE", lim.nofile), ("NPROC", lim.nproc), ("CORE", 0)]
        head = {"code": code, "entry": entry, "rlimits": rlimits, "dir": self._work}
        self._send((json.dumps(head) + "\n").encode())
        if entry is not None:
            self.ready = self._recv() == ["ready", True]
            if not self.ready:
                self._fail(self.failure or f"the program defines no function {entry!r}")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, why: str, status: str = "failed") -> None:
        if self.failure is None:
            self.failure, self.status = why, status

    def _wait(self, fd: int, event: int) -> bool:
        """Whether `fd` is ready for `event` before the deadline (the failure noted otherwise)."""
        left = self.deadline - time.monotonic()
        if left > 0:
            poll = select.poll()
            poll.register(fd, event)
            if poll.poll(left * 1000):
                return True
        self._fail(f"timeout after {self.limits.wall_s:g} s", "timeout")
        return False

    def _send(self, data: bytes) -> None:
        """Write `data` to the sample (non-blocking: a sample that stops reading cannot hang us)."""
        view = memoryview(data)
        try:
            while view and self._wait(self._to, select.POLLOUT):
                try:
                    view = view[os.write(self._to, view[:65536]) :]
                except BlockingIOError:
                    continue
        except OSError:
            self._fail("the sample closed its input")

    def _recv(self) -> list | None:
        """The next message, decoded strictly; None (and the failure noted) on EOF, timeout or junk."""
        cap = self.limits.file_mb << 20
        while b"\n" not in self._buf:
            if not self._wait(self._from, select.POLLIN):
                return None
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                self._fail("the sample exited")
                return None
            self._buf += chunk
            if len(self._buf) > cap:
                self._fail(f"a message over {self.limits.file_mb} MiB")
                return None
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        try:
            msg = loads(line)
        except WireError as err:
            self._fail(str(err))
            return None
        if type(msg) is list and msg[:1] == ["err"] and len(msg) == 2 and type(msg[1]) is str:
            self._fail(msg[1])
        return msg if type(msg) is list and msg else None

    def call(self, *args: object, **kwargs: object) -> object:
        """The sample's entry point applied to plain-data arguments: its plain-data result."""
        if self.failure is not None:
            raise SampleFailed(self.failure)
        try:
            data = dumps((list(args), kwargs))
        except TypeError as err:
            raise SampleFailed(f"an argument is not plain data: {err}") from None
        self._send(data)
        msg = self.failure is None and self._recv()
        if not msg or msg[0] != "ok" or len(msg) != 2:
            self._fail("a reply that is not ['ok', value]")
            raise SampleFailed(self.failure)
        return msg[1]

    def run(self) -> bool:
        """For a program without entry point: True iff it ran to its end and exited 0."""
        ok = self._recv() == ["done"]
        try:
            rc = self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._fail(f"timeout after {self.limits.wall_s:g} s", "timeout")
            return False
        if rc != 0:
            self._fail(f"exit status {rc}", "killed" if self._killed(rc) else "failed")
        return ok and rc == 0

    def _killed(self, rc: int | None) -> bool:
        return rc is not None and (rc < 0 or rc > 128)

    def close(self) -> None:
        """End the sample and every process it started; free its uid and files."""
        if self.done:
            return
        self.done = True
        os.close(self._to)
        try:
            self.proc.wait(timeout=0.2 if self.failure is None else 0)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # at level "none", its process group too
            except OSError:
                self.proc.kill()
        self.proc.wait()
        os.close(self._from)
        iso.free_uid(self.uid)
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
        self._out.seek(max(0, self._out.seek(0, 2) - 4096))
        self.output = self._out.read().decode("utf-8", "replace").rstrip()
        self._out.close()

    def result(self, passed: bool) -> Result:
        """The sample's Result once closed, `passed` being the grader's verdict."""
        self.close()
        rc = self.proc.returncode
        status = "passed" if passed and self.failure is None else (self.status or "failed")
        if status == "failed" and self._killed(rc) and self.failure in (None, "the sample exited"):
            status = "killed"
        reason = "" if status == "passed" else f"\n[sandbox] {self.failure or 'a wrong value'}"
        output = (self.output + reason).strip()
        return Result(status == "passed", status, rc, output, time.monotonic() - self.start)
