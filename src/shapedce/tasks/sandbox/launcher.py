"""The program that runs inside the sandbox (`python -I -S -c LAUNCHER RFD WFD`), as a string.

It reads one JSON header line from fd RFD (the program, the entry point, the rlimits), sets the
rlimits (hard = soft: the sample cannot raise them), runs the program, then:
  - no entry point: writes ["done"] to fd WFD (the program ran to its end) and exits 0;
  - an entry point: writes ["ready", callable?] and serves calls: each line from RFD is
    [args, kwargs] in the wire format (wire.py); the reply is ["ok", result] or ["err", text].
The sample shares this process, so it can read and forge anything here: nothing in it is secret,
and every byte it writes is decoded strictly outside (wire.py) and compared there.
"""

LAUNCHER = r"""
import json, os, resource, sys
rin, wout = os.fdopen(int(sys.argv[1]), "rb"), os.fdopen(int(sys.argv[2]), "wb")
head = json.loads(rin.readline())
for name, value in head["rlimits"]:
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value + (name == "CPU")))
if head["dir"]:
    os.chdir(head["dir"])
def send(msg):
    try:
        sys.stdout.flush(), sys.stderr.flush()
    except BaseException:
        pass
    wout.write((json.dumps(msg) + "\n").encode())
    wout.flush()
def enc(x, depth=0):
    t = type(x)
    if depth > 200:
        raise TypeError("nested too deep")
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [enc(v, depth + 1) for v in x]
    if t in (tuple, set):
        return {"t" if t is tuple else "s": [enc(v, depth + 1) for v in x]}
    if t is dict:
        return {"d": [[enc(k, depth + 1), enc(v, depth + 1)] for k, v in x.items()]}
    raise TypeError(t.__name__ + " is not plain data")
def dec(x):
    if type(x) is list:
        return [dec(v) for v in x]
    if type(x) is dict:
        ((kind, items),) = x.items()
        items = [dec(v) for v in items]
        return tuple(items) if kind == "t" else set(items) if kind == "s" else {k: v for k, v in items}
    return x
def why(e):
    try:
        return (type(e).__name__ + ": " + str(e))[:500]
    except BaseException:
        return "an exception"
code, entry = head["code"], head["entry"]
del head
g = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(compile(code, "main.py", "exec"), g)
except BaseException as e:
    send(["err", why(e)])
    sys.exit(1)
if entry is None:
    send(["done"])
    sys.exit(0)
fn = g.get(entry)
send(["ready", callable(fn)])
for line in rin:
    try:
        args, kwargs = dec(json.loads(line))
        send(["ok", enc(fn(*args, **kwargs))])
    except BaseException as e:
        send(["err", why(e)])
"""
