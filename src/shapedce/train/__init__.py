"""Training stages: `lm` (pre-/mid-training) and, later, `rl` (GRPO)."""
