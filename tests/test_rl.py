"""RL stage (shapedce.train.rl): TRL's "dapo" GRPO loss against SPEC section 3, dynamic sampling,
a seeded run whose reward rises, bad inputs, and the metrics file. CPU, tiny models.

    python -m pytest tests/test_rl.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from shapedce.cli import main
from shapedce.train.rl import DynamicSamplingError, DynamicSamplingGRPOTrainer, grpo_args, run_rl
from shapedce.train.rl_config import load_rl_config

pytestmark = pytest.mark.filterwarnings("ignore")
G = 2  # group size of the unit tests


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from shapedce.data.corpus import builtin_corpus
    from shapedce.data.tokenizer import train_tokenizer
    from shapedce.models import build_model

    path = tmp_path_factory.mktemp("rl-model")
    tok = train_tokenizer(builtin_corpus("pretrain", 120), vocab_size=320)
    build_model("tiny", vocab_size=len(tok), seed=0, max_position_embeddings=256).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def pattern_reward(completions, answer, **kwargs):
    """Reward fixed by the row's `answer`: "one" -> 1, "zero" -> 0, "mixed" -> 0, 1, 0, 1 ... in the group."""
    return [{"one": 1.0, "zero": 0.0}.get(a, float(i % 2)) for i, a in enumerate(answer)]


def make_trainer(model_dir, tmp_path, answers, reward=pattern_reward, *, prompts_per_step=4, group_size=G,
                 dynamic=True, rounds=3, steps=1, lr=1e-4, completion=4, seed=0, mask_truncated=True):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from shapedce.data.tokenizer import load_tokenizer
    from shapedce.train.rl_config import RLConfig

    cfg = RLConfig(task="arith-add", prompts_per_step=prompts_per_step, group_size=group_size,
                   micro_batch=prompts_per_step * group_size, steps=steps, lr=lr, max_completion_length=completion,
                   seed=seed, save_steps=10_000).validate()
    args = grpo_args(cfg, tmp_path / "ckpt", cpu=True)
    args.mask_truncated_completions = mask_truncated
    rows = [{"prompt": f"Problem: {i} + {i}?\nSolution:\n", "answer": a} for i, a in enumerate(answers)]
    torch.manual_seed(seed)
    return DynamicSamplingGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=reward, args=args,
        train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(model_dir),
        dynamic_sampling=dynamic, max_sampling_rounds=rounds)


def batch_inputs(trainer, answers):
    rows = [{"prompt": f"Problem: {i} + {i}?\nSolution:\n", "answer": a} for i, a in enumerate(answers)]
    return [dict(r) for r in rows for _ in range(trainer.num_generations)]


# ----------------------------------------------------------------------------- (a) the loss

def completion_logps(model, prompt_ids, completion_ids, mask):
    ids = torch.cat([prompt_ids, completion_ids], 1)
    att = torch.cat([torch.ones_like(prompt_ids), mask], 1)
    logits = model(input_ids=ids, attention_mask=att).logits[:, prompt_ids.shape[1] - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, completion_ids[..., None]).squeeze(-1)


def spec_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, keep=None):
    """SPEC section 3: -(1 / sum|o|) sum_i sum_t min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)."""
    rho = torch.exp(logp - old)
    terms = torch.minimum(rho * adv[:, None], rho.clamp(1 - eps_low, 1 + eps_high) * adv[:, None])
    weight = mask if keep is None else mask * keep
    return -(terms * weight).sum() / mask.sum()


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_dapo_loss_matches_spec_value_gradients_and_clipping(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, ["mixed"] * 4)
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; one accumulation step here
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(3, 300, (4, 3), generator=g)
    completion_ids = torch.randint(3, 300, (4, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0])
    target = torch.tensor([[0.5, 0.9, 1.0, 1.5, 1.2]] * 4)  # ratios pi / pi_old, both sides of both bounds
    with torch.no_grad():
        old = completion_logps(model, prompt_ids, completion_ids, mask) - target.log()
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": mask, "advantages": adv, "old_per_token_logps": old,
              "num_items_in_batch": mask.sum()}
    trl_loss = trainer._compute_loss(model, inputs)
    trl_grads = grads(model, trl_loss)
    ref = spec_loss(completion_logps(model, prompt_ids, completion_ids, mask), old, adv, mask)
    assert trl_loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    for a, b in zip(trl_grads, grads(model, ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # clipped tokens (rho < 0.8 with A < 0, rho > 1.28 with A > 0) contribute no gradient
    low = (target < 0.8) & (adv[:, None] < 0) & mask.bool()
    high = (target > 1.28) & (adv[:, None] > 0) & mask.bool()
    assert low.any() and high.any()
    unclipped = spec_loss(completion_logps(model, prompt_ids, completion_ids, mask), old, adv, mask,
                          keep=(~(low | high)).float())
    for a, b in zip(trl_grads, grads(model, unclipped)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    metrics = trainer._metrics["train"]
    assert metrics["clip_ratio/low_mean"][-1] == pytest.approx(low.sum().item() / mask.sum().item(), abs=1e-6)
    assert metrics["clip_ratio/high_mean"][-1] == pytest.approx(high.sum().item() / mask.sum().item(), abs=1e-6)


def test_zero_variance_groups_get_zero_advantage_and_no_gradient(model_dir, tmp_path):
    answers = ["one", "mixed", "zero", "mixed"]
    trainer = make_trainer(model_dir, tmp_path, answers, dynamic=False, group_size=4, mask_truncated=False)
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch_inputs(trainer, answers))
    adv = out["advantages"].view(4, 4)
    assert torch.equal(adv[0], torch.zeros(4)) and torch.equal(adv[2], torch.zeros(4))
    r = torch.tensor([0.0, 1.0, 0.0, 1.0])  # TRL: (r - mean) / (std (Bessel) + 1e-4)
    torch.testing.assert_close(adv[1], (r - r.mean()) / (r.std() + 1e-4))
    # a batch of only the constant groups: loss 0, every gradient 0
    trainer.current_gradient_accumulation_steps = trainer.args.steps_per_generation
    const = {k: (v[torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])] if isinstance(v, torch.Tensor) and v.ndim else v)
             for k, v in out.items()}
    loss = trainer._compute_loss(trainer.model, const)
    assert loss.item() == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in grads(trainer.model, loss))


# ----------------------------------------------------------------------------- (b) dynamic sampling

def test_dynamic_sampling_fills_the_batch_with_informative_groups(model_dir, tmp_path):
    answers = ["mixed", "zero", "one", "mixed", "zero", "mixed", "one", "mixed"]
    trainer = make_trainer(model_dir, tmp_path, answers, rounds=20)
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch_inputs(trainer, answers[:4]))  # 2 of 4 groups informative
    n = 4 * G
    assert all(len(v) == n for v in out.values() if isinstance(v, torch.Tensor) and v.ndim)
    adv = out["advantages"].view(4, G)
    assert (adv.abs().sum(1) > 0).all()  # every kept group has signal
    for group in out["prompt_ids"].view(4, G, -1):  # groups stay contiguous: one prompt per group
        assert all(torch.equal(group[0], row) for row in group)
    mask = out["completion_mask"]
    assert int(out["num_items_in_batch"]) == int(mask.sum())
    dropped = trainer._metrics["train"]["frac_groups_dropped"]
    assert len(dropped) == 1 and 0.0 < dropped[0] < 1.0
    assert trainer._metrics["train"]["sampling_rounds"][-1] >= 2


def test_dynamic_sampling_stops_at_its_cap_with_a_clear_error(model_dir, tmp_path):
    answers = ["one", "zero"] * 4
    trainer = make_trainer(model_dir, tmp_path, answers, rounds=3)
    trainer.model.train()
    with pytest.raises(DynamicSamplingError, match=r"^dynamic sampling: after 3 rounds only 0 of 4 groups had "
                                                    r"non-equal rewards; the task is too easy or too hard"):
        trainer._generate_and_score_completions(batch_inputs(trainer, answers[:4]))


# ----------------------------------------------------------------------------- (c) it learns

def test_seeded_run_raises_a_toy_reward(model_dir, tmp_path):
    """Toy reward: share of completion tokens with an even id (about 0.5 at the start)."""
    def even_share(completions, completion_ids, **kwargs):
        return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]

    trainer = make_trainer(model_dir, tmp_path, ["x"] * 64, reward=even_share, prompts_per_step=8, group_size=4,
                           steps=20, lr=3e-3, completion=8, mask_truncated=False, rounds=4)
    trainer.train()
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    assert len(rewards) == 20
    start, end = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert end > start + 0.1, rewards


# ----------------------------------------------------------------------------- (d) bad inputs, (e) metrics

@pytest.mark.parametrize("args, message", [
    (["--from", "MISSING"], "is not a model directory"),
    (["group_size=1"], "group_size must be >= 2"),
    (["micro_batch=3"], "micro_batch values that fit: 1, 2, 4, 8"),
    (["task=nope"], "unknown task 'nope'"),
    (["--resume"], "no RL run config"),
])
def test_bad_inputs_fail_with_one_line(model_dir, tmp_path, capsys, args, message):
    argv = ["rl", "--from", str(model_dir), "--out", str(tmp_path / "run"), "--preset", "smoke"]
    if args[0] == "--from":
        argv[2] = str(tmp_path / "missing")
        args = []
    assert main(argv + args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_metrics_file_holds_every_field_and_resume_continues(model_dir, tmp_path):
    out = tmp_path / "run"
    final = run_rl(load_rl_config("smoke", ["steps=2"]), model_dir, out)
    assert (final / "config.json").is_file() and (final / "tokenizer.json").is_file()
    with pytest.raises(ValueError, match="already holds a run"):
        run_rl(load_rl_config("smoke"), model_dir, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train] == [1, 2] and [r["step"] for r in val] == [0, 2]
    for r in rows:
        assert r["stage"] == "rl" and {"step", "tokens"} <= set(r)
    for r in train:
        for key in ("reward", "frac_groups_dropped", "entropy", "response_length", "clip_frac"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), key
    for r in val:
        for key in ("avg_at_k", "cons_at_k", "pass_at_k"):
            assert 0.0 <= r[key] <= 1.0, key
    run_rl(load_rl_config("smoke", ["steps=3"]), model_dir, out, resume=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]


def test_presets_load_and_paper_matches_spec():
    from shapedce.train.rl_config import rl_preset_names

    assert set(rl_preset_names()) >= {"smoke", "tiny", "long", "paper"}
    for name in rl_preset_names():
        load_rl_config(name)
    p = load_rl_config("paper")
    assert (p.prompts_per_step, p.group_size, p.temperature, p.lr, p.warmup_steps) == (128, 16, 1.0, 1e-6, 0)
    assert (p.epsilon_low, p.epsilon_high, p.max_completion_length, p.dynamic_sampling) == (0.2, 0.28, 8192, True)
    args = grpo_args(p, Path("unused"), cpu=True)
    assert (args.beta, args.loss_type, args.mask_truncated_completions, args.generation_batch_size) == (0.0, "dapo", True, 2048)
    assert args.lr_scheduler_type == "constant_with_warmup" and args.epsilon_high == 0.28
