"""The settings of `shapedce readiness` (a light module: the command line builds its flags from it).

from shapedce.readiness.settings import ReadinessSettings
ReadinessSettings(tasks="knowledge,arith-small", samples=16).validate()
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SEED_RANGE, TEMPERATURE_MIN, UserError, seed_ok, temperature_ok


@dataclass(kw_only=True)
class ReadinessSettings:
    """What `shapedce readiness` measures; its flags are generated from these fields (`shapedce.flags`)."""

    tasks: str = "knowledge,arith-small"
    """Comma-separated held-out tasks (`shapedce tasks`); with --reference, the reference grid's
    evaluated tasks unless given; else the default grid's."""
    problems: int = 32
    """Held-out test prompts per task."""
    samples: int = 8
    """Completions per prompt (m of the Pass@k curve)."""
    temperature: float = 1.0
    """Sampling temperature: RL's (docs/method/pipeline.md), so Pass@k measures RL's exploration space."""
    max_new_tokens: int = 64
    """Length cap per sample in tokens."""
    text: str = "builtin-v2"
    """Held-out text for the entropy distribution: builtin-v2 (the built-in world's validation
    sample) or a local text / jsonl / parquet path."""
    text_tokens: int = 5000
    """Held-out text tokens for the entropy distribution."""
    seed: int = 0
    """Seed of the held-out prompts and of the sampling noise."""

    def validate(self) -> ReadinessSettings:
        for key, ok, allowed in [
            ("problems", self.problems >= 1, ">= 1"),
            ("samples", self.samples >= 1, ">= 1"),
            ("temperature", temperature_ok(self.temperature), f"a finite number >= {TEMPERATURE_MIN}"),
            ("seed", seed_ok(self.seed), SEED_RANGE),
            ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
            ("text_tokens", self.text_tokens >= 1, ">= 1"),
        ]:
            if not ok:
                raise UserError(f"--{key.replace('_', '-')} must be {allowed}; got {getattr(self, key)}")
        from ..tasks import get_tasks

        get_tasks(self.tasks)  # unknown task names fail here, before any model is loaded
        return self
