"""The settings of `shapedce eval` (a light module: the command line builds its flags from it).

from shapedce.eval.settings import EvalSettings
EvalSettings(tasks="arith", samples=16).validate()
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError, check_int

DTYPES = ("auto", "bf16", "fp32")
"""Allowed `dtype` values of the evaluation's weights."""
SPLITS = ("test", "val")
"""Prompt splits an evaluation may score (train is RL's)."""


def weights_bf16(dtype: str, device_type: str) -> bool:
    """True when evaluation holds the weights in bf16: dtype "bf16", or "auto" on CUDA."""
    return dtype == "bf16" or (dtype == "auto" and device_type == "cuda")


@dataclass(kw_only=True)
class EvalSettings:
    """What `shapedce eval` measures; its flags are generated from these fields (`shapedce.flags`)."""

    tasks: str = "arith"
    """Comma-separated task names (`shapedce tasks` lists them)."""
    samples: int = 128
    """Samples per prompt, m of Avg@m / Cons@m (paper: 128)."""
    problems: int = 100
    """Held-out prompts per task (at most the task's size in the split)."""
    split: str = "test"
    """Which prompts are scored: test (the evaluation's) or val (for tuning and pilots, so the test
    prompts stay untouched; `shapedce.tasks.splits`)."""
    temperature: float = 0.7
    """Sampling temperature (paper: 0.7)."""
    top_p: float = 0.95
    """Nucleus sampling threshold (paper: 0.95)."""
    max_new_tokens: int = 256
    """Length cap per sample in tokens."""
    seed: int = 0
    """Seed of the held-out prompts and of the counter-based sampling noise."""
    batch_size: int = 64
    """Sequences per forward pass (bounds memory, never changes the samples)."""
    text: str = "builtin-v2"
    """Held-out text for perplexity and entropy: builtin-v2 (the built-in world's validation sample)
    or a local text / jsonl / parquet path."""
    text_tokens: int = 20000
    """Held-out text tokens scored."""
    pass_k: str = ""
    """Comma-separated k of the Pass@k curve, e.g. 1,8,64; "" = 1, 2, 4, ..., samples."""
    dtype: str = "auto"
    """Weights' dtype while evaluating: "auto" (bf16 on CUDA, float32 on CPU), "bf16" or "fp32". bf16
    halves the weights and the KV cache (`shapedce plan` counts both); the text head scores in float32."""

    def validate(self) -> EvalSettings:
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.split not in SPLITS:
            raise UserError(f"--split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if not self.text.strip():
            raise UserError("--text must be builtin-v2 or a local text / jsonl / parquet path; got ''")
        for key in ("samples", "problems", "text_tokens", "batch_size", "max_new_tokens"):
            check_int(f"--{key.replace('_', '-')}", getattr(self, key), 1)
        for k in self.ks() or ():
            if not 1 <= k <= self.samples:
                raise UserError(
                    f"--pass-k {k} is outside [1, --samples={self.samples}]: Pass@k needs k <= samples"
                )
        return self

    def ks(self) -> list[int] | None:
        if not self.pass_k:
            return None
        try:
            return [int(k) for k in self.pass_k.split(",") if k.strip()]
        except ValueError:
            raise UserError(
                f"--pass-k must be comma-separated integers, e.g. 1,8,64; got {self.pass_k!r}"
            ) from None
