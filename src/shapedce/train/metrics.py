"""Training metrics: merging of the loss statistics over micro-batches and ranks, and the metrics.jsonl log.

Each line of RUN/metrics.jsonl is one JSON object with at least
    stage, step, tokens, split ("train" | "val"), loss, ce, ppl, entropy, topk_mass, tail_mass,
    target_in_topk, w_mean, w_max, grad_shift, grad_diff_sq, grad_ce_sq
and, for train rows, lr, grad_norm, tokens_per_s (with loss.beta=auto also beta, the value this
step used, and entropy_ema, the controller's smoothed entropy after it). w_mean / w_max: mean and
maximum of the ground-truth weight w over the step's tokens; grad_shift = ||G_shaped - G_ce||_F /
||G_ce||_F, how much the shaping changes the logit gradient of the step's tokens (0 for CE;
definition in `shapedce.loss.rows.grad_shift_rows`). The same numbers go to the `report_to` backends
(`train.report_to` / RL's `report_to`, like Hugging Face's): TensorBoard events in RUN/tb/ (the
default when installed; x axis: tokens), trackio, wandb (x axis: step; keys split/name). Each
backend is imported only when named. Read a run back with `read_metrics(path)`.

    python -m pytest -q tests/test_loss_stats.py      # merge_stats against one unsplit batch
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import report_backends
from ..loss import MAX_STAT_NAMES, STAT_NAMES
from ..rundir import StageDir


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def merge_stats(
    parts: list[tuple[float, dict]],
    all_sum: Callable[[list[float]], list[float]] | None = None,
    *,
    rank_world: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Merge (loss, loss_stats) pairs of several micro-batches into one row: token-weighted means of
    the loss and STAT_NAMES, maxima of MAX_STAT_NAMES, and grad_shift = sqrt(summed grad_diff_sq /
    summed grad_ce_sq) (a ratio of summed squares, not a mean of ratios).

    `all_sum` (element-wise sum over ranks) merges every rank's micro-batches into one row, in one
    call: each rank's maxima ride in its own slots of the same vector (rank and world size from
    torch.distributed, or `rank_world`), so the max over ranks is exact.
    """
    tokens_of = [int(s["tokens"]) for _, s in parts]
    sums = [sum(loss * n for (loss, _), n in zip(parts, tokens_of))]
    sums += [sum(float(s[name]) * n for (_, s), n in zip(parts, tokens_of)) for name in STAT_NAMES]
    sums.append(sum(tokens_of))
    maxima = [
        max([float(s[name]) for (_, s), n in zip(parts, tokens_of) if n > 0], default=0.0)
        for name in MAX_STAT_NAMES
    ]
    if all_sum is not None:
        rank, world = rank_world or _rank_world()
        slots = [0.0] * (world * len(maxima))
        slots[rank * len(maxima) : (rank + 1) * len(maxima)] = maxima
        merged = all_sum(sums + slots)
        sums, slots = merged[: len(sums)], merged[len(sums) :]
        maxima = [max(slots[i :: len(maxima)]) for i in range(len(maxima))]
    tokens = int(sums[-1])
    denom = max(tokens, 1)
    row: dict[str, float] = {"loss": sums[0] / denom}
    for i, name in enumerate(STAT_NAMES, start=1):
        row[name] = sums[i] / denom
    row.update(zip(MAX_STAT_NAMES, maxima))
    diff, ce = row["grad_diff_sq"], row["grad_ce_sq"]
    row["grad_shift"] = math.sqrt(diff / ce) if ce > 0 else 0.0
    row["ppl"] = math.exp(min(row["ce"], 50.0))
    row["eval_tokens"] = tokens
    return row


class _TensorBoard:
    def __init__(self, run_dir: Path, name: str, config: dict | None, resume: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, split: str, step: int, tokens: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{split}/{key}", value, tokens)

    def close(self) -> None:
        self.writer.close()


class _Trackio:
    """trackio (local SQLite under $TRACKIO_DIR, no server, no network unless a Space is configured)."""

    def __init__(self, run_dir: Path, name: str, config: dict | None, resume: bool):
        import trackio

        self.trackio = trackio
        project = os.environ.get("TRACKIO_PROJECT", "shapedce")
        trackio.init(project=project, name=name, config=config, resume="allow" if resume else "never")

    def log(self, split: str, step: int, tokens: int, values: dict[str, float]) -> None:
        self.trackio.log({f"{split}/{k}": v for k, v in values.items()} | {"tokens": tokens}, step=step)

    def close(self) -> None:
        self.trackio.finish()


class _Wandb:
    def __init__(self, run_dir: Path, name: str, config: dict | None, resume: bool):
        import wandb

        self.wandb = wandb
        project = os.environ.get("WANDB_PROJECT", "shapedce")
        self.run = wandb.init(project=project, name=name, dir=str(run_dir), config=config, resume="allow")

    def log(self, split: str, step: int, tokens: int, values: dict[str, float]) -> None:
        self.run.log({f"{split}/{k}": v for k, v in values.items()} | {"tokens": tokens}, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": _TensorBoard, "trackio": _Trackio, "wandb": _Wandb}
"""The `report_to` backends; each is imported only when named (`shapedce.config.report_backends`)."""


class MetricsLog:
    """Appends rows to RUN/metrics.jsonl and hands their numbers to the `report_to` backends; on resume,
    first drops rows past the checkpoint step.

    `report_to` as the configs' field ("auto" = tensorboard when installed; "none"; or a comma-separated
    subset of tensorboard, trackio, wandb); `key` names that field in errors. trackio and wandb runs
    are named after the run folder (project: $TRACKIO_PROJECT / $WANDB_PROJECT, default "shapedce")
    and get `config` (the resolved run config) as their config; their x axis is the step."""

    def __init__(
        self,
        run_dir: Path,
        truncate_after: int | None = None,
        *,
        report_to: str = "auto",
        key: str = "report_to",
        config: dict | None = None,
    ):
        self.path = StageDir(run_dir).metrics
        if truncate_after is not None and self.path.exists():
            keep = [r for r in read_metrics(self.path) if r["step"] <= truncate_after]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        names = report_backends(report_to, key)  # before any file is opened: a missing one fails first
        self.file = open(self.path, "a")
        name = Path(run_dir).resolve().name
        self.backends = [BACKENDS[n](Path(run_dir), name, config, truncate_after is not None) for n in names]

    def write(self, stage: str, step: int, tokens: int, split: str, values: dict[str, Any]) -> None:
        row = {"stage": stage, "step": step, "tokens": tokens, "split": split, **values}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for backend in self.backends:
            backend.log(split, step, tokens, numbers)

    def close(self) -> None:
        self.file.close()
        for backend in self.backends:
            backend.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):
            continue
    return rows
