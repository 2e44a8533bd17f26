"""Chat templates rendered with a time and memory bound: a model folder's template cannot hang evaluation.

    from shapedce.tasks.chat import render_conversations
    texts = render_conversations(tokenizer, [[{"role": "user", "content": "2 + 2?"}]], where="runs/x/final")

    python -m pytest -q tests/test_user_files.py -k template

A chat template is Jinja code that comes with the model folder. transformers renders it in Jinja's
sandbox (no file or attribute access), but the sandbox does not bound time or memory: two nested
`range(100000)` loops ran for hours and `'x' * 10**10` allocates 10 GB. So every batch of prompts
is rendered in a forked child process (the tokenizer is already in its memory: nothing is reloaded
or unpickled) with an address-space limit of the parent's size plus `MEMORY_BYTES`, and the parent
waits at most `TIMEOUT_S`; then the child is killed and the template refused with one line. The
texts come back as JSON, at most `MAX_BYTES` in all. Where `os.fork` does not exist, the template
is rendered in-process (unbounded).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time

from ..errors import UserError

TIMEOUT_S = 60.0
"""Longest time one batch of prompts may take to render."""
MEMORY_BYTES = 1 << 30
"""Memory the rendering child may allocate beyond what it shares with its parent."""
MAX_BYTES = 256 << 20
"""Largest total size of the rendered texts of one batch."""


def _render(tokenizer, conversations: list) -> list[str]:
    return [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]


def _limit_memory(extra: int) -> None:
    import resource

    try:
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (size + extra, size + extra))
    except (OSError, ValueError, StopIteration):
        pass


def _child(tokenizer, conversations: list, write_fd: int, memory: int) -> None:
    try:
        _limit_memory(memory)
        try:
            out = {"texts": _render(tokenizer, conversations)}
        except MemoryError:
            out = {"error": f"it needs more than {memory >> 20} MiB of memory"}
        except Exception as err:  # noqa: BLE001 - the template's own error, reported as one line
            text = str(err).strip().splitlines()[0] if str(err).strip() else ""
            out = {"error": f"{type(err).__name__}: {text[:300]}"}
        data = json.dumps(out).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view[: 1 << 16]) :]
    finally:
        os._exit(0)


def render_conversations(
    tokenizer,
    conversations: list,
    where: str = "the model's",
    timeout_s: float = TIMEOUT_S,
    memory: int = MEMORY_BYTES,
    max_bytes: int = MAX_BYTES,
) -> list[str]:
    """`tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)` for each
    conversation, in a forked child bounded in time and memory (module docstring); one UserError line
    naming `where` when the template is too slow, too big or fails."""
    if not conversations:
        return []
    if not hasattr(os, "fork"):
        return _render(tokenizer, conversations)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _child(tokenizer, conversations, write_fd, memory)
    os.close(write_fd)
    chunks, size, deadline = [], 0, time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UserError(
                    f"chat template of {where} took longer than {timeout_s:g} s to render "
                    f"{len(conversations)} prompt(s); refusing it (loops too heavy?)"
                )
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise UserError(f"chat template of {where} renders more than {max_bytes >> 20} MiB of text")
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    try:
        out = json.loads(b"".join(chunks))
    except ValueError:
        raise UserError(f"chat template of {where} could not be rendered (the renderer died)") from None
    if "error" in out:
        raise UserError(f"chat template of {where} failed: {out['error']}")
    return out["texts"]
