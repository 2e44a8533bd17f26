"""Several optimizer steps per generation batch (`RLTrainer.train_step`): pi_old is the sampling policy,
the logged clip fractions equal a plain recount of the clipped tokens of each mini-batch, and each
side of the clip follows its own epsilon (low: A < 0 and rho < 1 - eps_low; high: A > 0 and
rho > 1 + eps_high). A tiny model, a hand-made batch, CPU.

    python -m pytest tests/test_rl_clip.py -q
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from conftest import untrained_model_dir
from shapedce.rundir import StageDir
from shapedce.train.dist import Dist
from shapedce.train.grpo import token_logps
from shapedce.train.rl_config import RLConfig
from shapedce.train.rl_rollout import Batch, Group
from shapedce.train.rl_trainer import RLTrainer, _rows

pytestmark = pytest.mark.filterwarnings("ignore")
LR = 0.05
"""Large enough that one AdamW step moves the next mini-batch's ratios past both clip bounds."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return untrained_model_dir(tmp_path_factory.mktemp("clip-model"), vocab_size=300, max_positions=128)


def config(**kw) -> RLConfig:
    base = dict(
        task="arith-add",
        train_prompts=4,
        prompts_per_step=4,
        group_size=4,
        micro_batch=2,
        mini_batches=2,
        steps=2,
        lr=LR,
        warmup_steps=0,
        device="cpu",
        report_to="none",
    )
    return RLConfig(**{**base, **kw}).validate()


def trainer(model_dir: Path, tmp_path: Path, **kw) -> RLTrainer:
    stage, cpu = StageDir(tmp_path / "rl"), torch.device("cpu")
    return RLTrainer(config(**kw), stage, model_dir, Dist(), cpu, "ddp", None, None, [])


def hand_batch(vocab: int) -> Batch:
    """4 groups of 4 completions (3-7 tokens), rewards mixed in every group, so every A is +-0.87."""
    rng = random.Random(0)
    groups = []
    for i in range(4):
        prompt = [rng.randrange(4, vocab) for _ in range(3 + i)]
        comps = [[rng.randrange(4, vocab) for _ in range(rng.randint(3, 7))] for _ in range(4)]
        rewards = [1.0, 0.0, 0.0, 1.0] if i % 2 else [0.0, 1.0, 1.0, 0.0]
        groups.append(Group(i, i + 1, prompt, comps, [True] * 4, rewards, [0.0] * 4))
    return Batch(groups)


def recount(ratio_model, old_model, batch: Batch, cfg: RLConfig, eps: tuple[float, float]) -> dict:
    """Clip fractions of mini-batch 1 from scratch: rho = pi_new / pi_sampling on its rows, per
    micro-batch as the trainer forms them (same padding, so the same floats)."""
    rows = _rows(batch)
    mini = rows[len(rows) // 2 :]
    low = high = tokens = 0.0
    for i in range(0, len(mini), cfg.micro_batch):
        chunk = mini[i : i + cfg.micro_batch]
        args = ([r[0] for r in chunk], [r[1] for r in chunk], 0, cfg.temperature)
        with torch.no_grad():
            new, mask = token_logps(ratio_model, *args)
            old, _ = token_logps(old_model, *args)
        rho, adv = torch.exp(new - old), torch.tensor([r[2] for r in chunk])[:, None]
        low += float((((adv < 0) & (rho < 1 - eps[0])) * mask).sum())
        high += float((((adv > 0) & (rho > 1 + eps[1])) * mask).sum())
        tokens += float(mask.sum())
    return {"clip_frac_low": low / tokens, "clip_frac_high": high / tokens}


def test_clip_fractions_match_a_recount_and_each_side_follows_its_epsilon(model_dir, tmp_path):
    import copy

    ref = trainer(model_dir, tmp_path / "ref")
    batch = hand_batch(ref.model.config.vocab_size)
    sampling = copy.deepcopy(ref.model).eval()  # the policy that sampled: pi_old of every mini-batch
    assert len(ref.train_step(batch, [LR])) == 1 and ref.step == 1  # the first update alone
    ref.model.eval()
    settings = {"dapo": (0.2, 0.28), "no_high": (0.2, 9.0), "tight_low": (0.02, 0.28)}
    logged = {}
    for name, eps in settings.items():
        t = trainer(model_dir, tmp_path / name, epsilon_low=eps[0], epsilon_high=eps[1])
        first, second = t.train_step(batch, [LR, LR])
        assert first["clip_frac"] == 0  # mini-batch 0: the policy is still the sampling one, ratio 1
        assert second["clip_frac"] == pytest.approx(second["clip_frac_low"] + second["clip_frac_high"])
        want = recount(ref.model, sampling, batch, t.cfg, eps)
        assert second["clip_frac_low"] == pytest.approx(want["clip_frac_low"], abs=1e-12)
        assert second["clip_frac_high"] == pytest.approx(want["clip_frac_high"], abs=1e-12)
        logged[name] = second
    dapo, no_high, tight_low = logged["dapo"], logged["no_high"], logged["tight_low"]
    assert dapo["clip_frac_low"] > 0 and dapo["clip_frac_high"] > 0
    # eps_high moves only the high side, eps_low only the low side
    assert no_high["clip_frac_high"] == 0 and no_high["clip_frac_low"] == dapo["clip_frac_low"]
    assert tight_low["clip_frac_low"] > dapo["clip_frac_low"]
    assert tight_low["clip_frac_high"] == dapo["clip_frac_high"]


def test_one_step_per_batch_is_on_policy_and_never_clips(model_dir, tmp_path):
    t = trainer(model_dir, tmp_path, mini_batches=1, micro_batch=4, steps=1)
    stats = t.train_step(hand_batch(t.model.config.vocab_size), [LR])
    assert len(stats) == 1 and stats[0]["clip_frac"] == 0 and stats[0]["grad_norm"] > 0
