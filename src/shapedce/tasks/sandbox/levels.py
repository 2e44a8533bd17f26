"""How a sample is isolated here: the bubblewrap command lines, the per-sample uid, the refusal.

    from shapedce.tasks.sandbox.levels import isolation, require, allow_unisolated
    isolation()          # Isolation(level="full" | "namespaces" | "none", gaps="what is not isolated")
    require()            # UserError (one line) unless level == "full" or the user accepted less
    python -m shapedce.tasks.sandbox     # prints the level and what each guard does here

Levels (docs/guides/trust.md says the same for users):
  full        root and bubblewrap: an outer `bwrap` (run as root, no user namespace) builds the view
              and the PID, network, IPC, UTS and cgroup namespaces; `setpriv` then drops to a fresh
              uid/gid of the sample's own (no groups, no capabilities) and an inner `bwrap` puts it in
              a user namespace of its own with further user namespaces disabled and loads the
              seccomp filter (seccomp.py).
  namespaces  bubblewrap without root (unprivileged user namespaces): the same namespaces and view,
              but the sample runs as your own uid: it can read every file you can read inside the
              view (the Python installation), and its process count shares your uid's limit.
  none        no bubblewrap or no user namespaces: rlimits, a process group and a scrubbed
              environment only; the sample can read and write your files, use the network and
              signal your processes.
Anything below "full" runs only after `allow_unisolated()` (CLI: --allow-unisolated-code; env:
SHAPEDCE_ALLOW_UNISOLATED_CODE=1).

The view: an empty read-only tmpfs root holding read-only binds of /usr, /bin, /sbin, /lib* and the
Python installation (parents created 0755, so a /root that is 0700 hides nothing else), a fresh
/proc (the sample's PID namespace only), a minimal /dev, and private size-capped tmpfs at /tmp,
/var/tmp, /dev/shm, /run/lock and the sample's own directory BOX: the only writable places, all
discarded with the sample. No /home, /root, /etc, /work or run folder is visible.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass

from ...errors import UserError
from . import seccomp

BOX = "/box"
"""The sample's own (writable, private) directory inside the view."""
WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", BOX)
"""Private tmpfs mounts: every place a usual Linux lets anybody write, and the sample's directory."""
ENV_FLAG = "SHAPEDCE_ALLOW_UNISOLATED_CODE"
FLAG = "--allow-unisolated-code"
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_UIDS = range(1_500_000_000, 1_600_000_000)
_used: set[int] = set()
_lock = threading.Lock()
_allowed = False


@dataclass(frozen=True, slots=True)
class Isolation:
    level: str
    """"full", "namespaces" or "none" (see the module docstring)."""
    gaps: str
    """What is not isolated at this level (empty for "full"), one phrase."""


def allow_unisolated(flag: bool = True) -> None:
    """Accept running model-written code below the "full" level (also for child processes)."""
    global _allowed
    _allowed = flag
    if flag:
        os.environ[ENV_FLAG] = "1"
    else:
        os.environ.pop(ENV_FLAG, None)


def allowed() -> bool:
    return _allowed or os.environ.get(ENV_FLAG) == "1"


def python() -> str:
    """The interpreter that runs samples (the real file, not a venv's link)."""
    return os.path.realpath(sys.executable)


def _python_dirs() -> list[str]:
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    dirs.add(os.path.dirname(os.path.dirname(python())))
    out = []
    for d in sorted(dirs):
        if not any(d == s or d.startswith(s + "/") for s in SYSTEM) and not any(
            d.startswith(o + "/") for o in out
        ):
            out.append(d)
    return out


def view(tmpfs_mb: int) -> list[str]:
    """bwrap arguments building the sample's file system (see the module docstring)."""
    args = ["--tmpfs", "/"]
    for path in SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    made: set[str] = set()
    for d in _python_dirs():
        parts = d.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/" + "/".join(parts[:i])
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", d, d]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--dir", "/var"]
    args += ["--perms", "0755", "--dir", "/run"]
    for path in WRITABLE:
        args += ["--size", str(tmpfs_mb << 20), "--perms", "1777", "--tmpfs", path]
    return args + ["--remount-ro", "/", "--chdir", BOX]


def command(
    inner: list[str], level: str, uid: int | None, tmpfs_mb: int, seccomp: int | None = None
) -> list[str]:
    """The command line running `inner` (argv inside the sandbox) at `level`; `seccomp`: an fd
    holding the filter (seccomp.py), loaded by the bwrap that execs `inner`."""
    bwrap = shutil.which("bwrap")
    filt = [] if seccomp is None else ["--seccomp", str(seccomp)]
    if level == "none":
        return inner
    if level == "namespaces" or uid is None:
        flags = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
        return [bwrap, *flags, *view(tmpfs_mb), *filt, "--", *inner]
    outer = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    outer += ["--die-with-parent", "--new-session", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    drop = [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    drop += ["--inh-caps=-all", "--bounding-set=-all"]
    own = ["--unshare-user", "--disable-userns", "--die-with-parent", "--ro-bind", "/", "/"]
    own += ["--dev-bind", "/dev", "/dev"]
    for path in WRITABLE:
        own += ["--bind", path, path]
    own += ["--chdir", BOX, *filt]
    return [bwrap, *outer, *view(tmpfs_mb), "--", *drop, bwrap, *own, "--", *inner]


def new_uid() -> int | None:
    """A uid no other running sample has (root only; None otherwise). Give it back with `free_uid`."""
    if os.geteuid() != 0:
        return None
    with _lock:
        uid = random.choice([u for u in random.sample(_UIDS, 16) if u not in _used])
        _used.add(uid)
        return uid


def free_uid(uid: int | None) -> None:
    with _lock:
        _used.discard(uid)


def _works(level: str) -> bool:
    uid = new_uid() if level == "full" else None
    fd = seccomp.memfd()
    try:
        cmd = command([python(), "-I", "-S", "-c", "import os; os.listdir('.')"], level, uid, 1, fd)
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            pass_fds=() if fd is None else (fd,),
        )
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        free_uid(uid)
        if fd is not None:
            os.close(fd)


@functools.cache
def isolation() -> Isolation:
    """The best level this machine gives, probed once per process."""
    if sys.platform != "linux" or shutil.which("bwrap") is None:
        why = "bubblewrap (bwrap) is not installed" if sys.platform == "linux" else "not Linux"
        return Isolation(
            "none",
            f"{why}: no namespaces, the sample can read and write your files, "
            "use the network and signal your processes",
        )
    if os.geteuid() == 0 and shutil.which("setpriv") and _works("full"):
        return Isolation("full", "")
    if _works("namespaces"):
        return Isolation(
            "namespaces",
            "not root: samples run as your own uid (no uid of their own), "
            "so they can read every file you can inside the sandbox's view",
        )
    return Isolation(
        "none",
        "bwrap cannot create user namespaces here: no namespaces, the sample "
        "can read and write your files, use the network and signal your processes",
    )


def require() -> Isolation:
    """The level to use; a one-line UserError when it is below "full" and the user did not accept it."""
    iso = isolation()
    if iso.level != "full" and not allowed():
        raise UserError(
            f"model-written code cannot be isolated here ({iso.gaps}); pass {FLAG} "
            f"(or {ENV_FLAG}=1) to run it anyway, see docs/guides/trust.md"
        )
    if iso.level != "full" and not getattr(require, "warned", False):
        require.warned = True  # type: ignore[attr-defined]
        print(
            f"shapedce: warning: running model-written code with {iso.level} isolation: {iso.gaps}",
            file=sys.stderr,
        )
    return iso
