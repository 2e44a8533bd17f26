"""Training metrics: token-weighted merging of the loss statistics, and the metrics.jsonl log.

Each line of RUN/metrics.jsonl is one JSON object with at least
    stage, step, tokens, split ("train" | "val"), loss, ce, ppl, entropy, topk_mass, tail_mass
and, for train rows, lr, grad_norm, tokens_per_s (with loss.beta=auto also beta, the value this
step used, and entropy_ema, the controller's smoothed entropy after it). TensorBoard events go to RUN/tb/ when the
`tensorboard` package is installed. Read a run back with `read_metrics(path)`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ..loss import STAT_NAMES


def merge_stats(parts: list[tuple[float, dict]],
                all_sum: Callable[[list[float]], list[float]] | None = None) -> dict[str, float]:
    """Token-weighted mean of (loss, loss_stats) pairs from several micro-batches. `all_sum`
    (element-wise sum over ranks) merges every rank's micro-batches into one row."""
    sums = [sum(loss * int(s["tokens"]) for loss, s in parts)]
    sums += [sum(float(s[name]) * int(s["tokens"]) for _, s in parts) for name in STAT_NAMES]
    sums.append(sum(int(s["tokens"]) for _, s in parts))
    if all_sum is not None:
        sums = all_sum(sums)
    tokens = int(sums[-1])
    denom = max(tokens, 1)
    row: dict[str, float] = {"loss": sums[0] / denom}
    for i, name in enumerate(STAT_NAMES, start=1):
        row[name] = sums[i] / denom
    row["ppl"] = math.exp(min(row["ce"], 50.0))
    row["eval_tokens"] = tokens
    return row


class MetricsLog:
    """Appends rows to RUN/metrics.jsonl; on resume, first drops rows past the checkpoint step."""

    def __init__(self, run_dir: Path, truncate_after: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        if truncate_after is not None and self.path.exists():
            keep = [r for r in read_metrics(self.path) if r["step"] <= truncate_after]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self.file = open(self.path, "a")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
        except ImportError:  # tensorboard is optional
            pass

    def write(self, stage: str, step: int, tokens: int, split: str, values: dict[str, Any]) -> None:
        row = {"stage": stage, "step": step, "tokens": tokens, "split": split, **values}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{split}/{key}", value, tokens)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
