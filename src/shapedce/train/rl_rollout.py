"""Rollouts of the RL stage: the seeded prompt stream and DAPO's dynamic sampling, on one process
or many (torchrun), with the project's counter-based sampler (`shapedce.eval.sample`).

    stream = PromptStream(len(prompts), seed=0)
    batch = collect_batch(model, tokenizer, prompts, reward, stream, cfg, Dist())   # one step's groups

Try it on a CPU: python -m pytest tests/test_rl.py -q -k dynamic

- One stream serves every draw of a step (the batch's first prompts and the refills): seeded
  permutations of the prompt set, epoch after epoch; a prompt already drawn in this step is
  skipped, so prompts never repeat within a step. Its state (epoch, position, draws so far) is
  three integers, saved as JSON in each checkpoint: a resumed run draws exactly what it would have.
- Each draw has a run-wide number; its G samples use the sampler's counter key (seed, draw number,
  sample index), so a group's completions do not depend on which process sampled it, nor on the
  other prompts. Hence one process and N processes see the same groups, bit for bit up to the
  float noise of batch composition.
- A round draws n prompts; process r samples the whole groups j with j % world == r (groups are
  never split); every process then receives every group of the round (all_gather of token ids and
  rewards) and applies the same keep rule, so keep/drop decisions agree on all ranks. Rounds go
  on until `prompts_per_step` groups are kept (then exactly that many, in draw order, are the
  batch) or `max_sampling_rounds` is reached (one-line `DynamicSamplingError` on every rank).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UserError
from ..eval.sample import SamplingConfig, sample
from .dist import Dist, gather_objects
from .grpo import informative


class DynamicSamplingError(UserError):
    """Dynamic sampling hit `max_sampling_rounds` before the batch held enough informative groups."""


class PromptStream:
    """Seeded, resumable order of prompt indices; `take` never repeats an index inside one `used` set."""

    def __init__(self, size: int, seed: int, state: dict[str, int] | None = None):
        self.size, self.seed = size, seed
        state = state or {"epoch": 0, "pos": 0, "drawn": 0}
        self.epoch, self.pos, self.drawn = int(state["epoch"]), int(state["pos"]), int(state["drawn"])
        self._perm = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
        return torch.randperm(self.size, generator=gen).tolist()

    def state(self) -> dict[str, int]:
        """JSON-able: what a checkpoint stores to resume the stream exactly."""
        return {"epoch": self.epoch, "pos": self.pos, "drawn": self.drawn}

    def take(self, n: int, used: set[int]) -> list[tuple[int, int]]:
        """n (prompt index, draw number) pairs, none in `used` (which they join)."""
        if len(used) + n > self.size:
            raise UserError(
                f"train_prompts ({self.size}) is too small: this step needs more than {self.size} "
                f"distinct prompts (dynamic sampling refills); raise train_prompts"
            )
        out = []
        while len(out) < n:
            if self.pos == self.size:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            index = self._perm[self.pos]
            self.pos += 1
            if index in used:
                continue
            used.add(index)
            self.drawn += 1
            out.append((index, self.drawn))
        return out


@dataclass(slots=True)
class Group:
    """One prompt's G completions with their rewards, as every process holds them after a round."""

    index: int
    """The prompt's index in the prompt set."""
    draw: int
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    finished: list[bool]
    rewards: list[float]
    entropy: list[float]
    owner: int = 0
    """The rank that sampled it."""


@dataclass(slots=True)
class Batch:
    groups: list[Group]
    stats: dict[str, float] = field(default_factory=dict)


def _summary(groups: list[Group], suffix: str = "") -> dict[str, float]:
    lengths = [len(c) for g in groups for c in g.completion_ids]
    tokens = max(sum(lengths), 1)
    out = {
        "reward": sum(r for g in groups for r in g.rewards) / len(lengths),
        "response_length": sum(lengths) / len(lengths),
        "frac_truncated": sum(not f for g in groups for f in g.finished) / len(lengths),
    }
    if not suffix:
        out["entropy"] = sum(e * len(c) for g in groups for e, c in zip(g.entropy, g.completion_ids)) / tokens
    return {k + suffix: v for k, v in out.items()}


def _round(
    model,
    tokenizer,
    prompts: list[Any],
    reward: Callable[[Any, str], float],
    picks: list[tuple[int, int]],
    cfg,
    d: Dist,
) -> list[Group]:
    """Sample this rank's share of `picks` (whole groups), score it, and share every group with every rank."""
    mine = [j for j in range(len(picks)) if j % d.world == d.rank]
    local: dict[int, Group] = {}
    if mine:
        scfg = SamplingConfig(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_completion_length,
            samples=cfg.group_size,
            seed=cfg.seed + 1,
            batch_size=cfg.rollout_batch,
        )
        texts = [prompts[picks[j][0]].text for j in mine]
        keys = [picks[j][1] for j in mine]
        outs = sample(model, tokenizer, texts, scfg, backend=cfg.rollout_backend, prompt_keys=keys)
        encoded = tokenizer(texts)["input_ids"]
        for j, ids, comps in zip(mine, encoded, outs):
            index, draw = picks[j]
            local[j] = Group(
                index,
                draw,
                list(ids),
                [c.token_ids for c in comps],
                [c.finished for c in comps],
                [float(reward(prompts[index], c.text)) for c in comps],
                [c.entropy for c in comps],
                d.rank,
            )
    merged: dict[int, Group] = {}
    for part in gather_objects(d, local):
        merged.update(part)
    return [merged[j] for j in range(len(picks))]


def collect_batch(
    model,
    tokenizer,
    prompts: list[Any],
    reward: Callable[[Any, str], float],
    stream: PromptStream,
    cfg,
    d: Dist,
) -> Batch:
    """One generation batch of `cfg.prompts_per_step` groups, dynamic sampling as `cfg` says.

    `prompts[i].text` is what the model continues; `reward(prompts[i], completion_text)` scores it."""
    want, used = cfg.prompts_per_step, set()
    kept, seen, rounds, flat = [], [], 0, 0
    n = want
    while True:
        rounds += 1
        groups = _round(model, tokenizer, prompts, reward, stream.take(n, used), cfg, d)
        seen += groups
        signal = informative(torch.tensor([g.rewards for g in groups], dtype=torch.float64)).tolist()
        flat += signal.count(False)
        keep = signal if cfg.dynamic_sampling else [True] * len(groups)
        kept += [g for g, k in zip(groups, keep) if k]
        if len(kept) >= want:
            break
        if rounds >= cfg.max_sampling_rounds:
            mean = sum(r for g in seen for r in g.rewards) / (len(seen) * cfg.group_size)
            raise DynamicSamplingError(
                f"dynamic sampling: after {rounds} rounds only {len(kept)} of {want} groups had "
                f"non-equal rewards "
                f"(mean reward {mean:.3f}); pick a task at the edge of the model's competence, raise "
                f"max_sampling_rounds, or set dynamic_sampling=false"
            )
        need, rate = want - len(kept), len(kept) / len(seen)
        n = want if rate == 0 else min(want, max(need, math.ceil(need / rate)))
    batch = kept[:want]
    stats = {
        **_summary(batch),
        **_summary(seen, "_all_rounds"),
        "frac_groups_dropped": 1.0 - len(kept) / len(seen),
        "frac_reward_zero_std": flat / len(seen),
        "sampling_rounds": float(rounds),
    }
    return Batch(batch, stats)
