"""Exact speed paths of docs/guides/performance.md (issue 30, second pass) against plain references:
the same numbers bit for bit, and the skipped work really skipped.

PYTHONPATH=src python -m pytest tests/test_perf_exact.py -q
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from safetensors.torch import load_file

from shapedce.cli import main
from shapedce.eval import sample_step
from shapedce.eval.sample import SamplingConfig
from shapedce.hf import patch_causal_lm
from shapedce.loss import ShapedLoss, chunks, fused_linear_shaped_cross_entropy, token_head
from shapedce.models import build_model
from shapedce.rundir import StageDir
from shapedce.train.dist import Dist
from shapedce.train.lm_trainer import LMTrainer, NonFiniteError
from shapedce.train.metrics import read_metrics

token_head_mod = importlib.import_module("shapedce.loss.token_head")  # the package's name is the function


def _head_case(n: int, hidden: int, vocab: int, dtype, ignore_every: int = 5):
    g = torch.Generator().manual_seed(11)
    h = torch.randn(n, hidden, generator=g, dtype=dtype) * 2
    w = torch.randn(vocab, hidden, generator=g, dtype=dtype) * 0.5
    x = torch.randint(0, vocab, (n,), generator=g)
    x[::ignore_every] = -100  # ignored positions
    return h, w, x


KNOBS = [
    {},  # cross-entropy
    {"beta": -0.25, "lambda_tail": -0.1, "k": 7},  # tail suppression: the top-k enters the gradient
    {"beta": 0.5, "lambda_top": 0.1, "k": 7},  # head reward
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("knobs", KNOBS)
@pytest.mark.parametrize("extra", [{}, {"softcap": 3.0, "logit_scale": 0.7}])
def test_fused_loss_without_grad_mode_gives_the_same_values_and_stats(dtype, knobs, extra):
    h, w, x = _head_case(37, 9, 53, dtype)  # odd shapes, 3 chunks of 16 rows
    h.requires_grad_(True)
    w.requires_grad_(True)
    kw = dict(knobs, **extra, return_stats=True, chunk_size=16, token_stats=True)
    ref_loss, ref_stats = fused_linear_shaped_cross_entropy(h, w, x, **kw)  # grad mode: gradients made
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            loss, stats = fused_linear_shaped_cross_entropy(h, w, x, **kw)
        assert torch.equal(loss, ref_loss.detach())
        assert stats.keys() == ref_stats.keys()
        for key, ref in ref_stats.items():
            got = stats[key]
            assert torch.equal(got, ref) if isinstance(ref, torch.Tensor) else got == ref, key


def test_fused_loss_without_grad_mode_runs_no_gradient_gemm(monkeypatch):
    calls: list[int] = []
    inner = chunks.head_grads
    monkeypatch.setattr(chunks, "head_grads", lambda g, *a: calls.append(g.shape[0]) or inner(g, *a))
    h, w, x = _head_case(40, 8, 31, torch.float32)
    w.requires_grad_(True)
    with torch.no_grad():
        fused_linear_shaped_cross_entropy(h, w, x, return_stats=True, chunk_size=16)
    assert calls == []  # before: the gradient GEMMs of every chunk ran under no_grad (validation)
    loss = fused_linear_shaped_cross_entropy(h, w, x, return_stats=True, chunk_size=16)[0]
    assert calls == [16, 16] and loss.requires_grad  # 32 of 40 rows kept; with grad mode they still run
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_head_entropy_equals_the_one_shot_xlogy(dtype, monkeypatch):
    h, w, x = _head_case(45, 7, 301, dtype)
    h[3] *= 80  # a peaked row: exp underflows to 0 there (xlogy(0, 0) = 0)
    assert bool(((h[3] @ w.t()) - (h[3] @ w.t()).max() < -110).any())
    with torch.no_grad():
        out = token_head(h, w, x, tail_k=10, chunk_size=16)
        monkeypatch.setattr(token_head_mod, "xlogx_row_sums", lambda e: torch.special.xlogy(e, e).sum(1))
        ref = token_head(h, w, x, tail_k=10, chunk_size=16)  # the expression before, same chunks
    assert torch.equal(out.entropy, ref.entropy) and torch.equal(out.logp, ref.logp)
    assert torch.equal(out.tail_mass, ref.tail_mass)


def _sampling_logits(rows: int, vocab: int, dtype=torch.float32) -> torch.Tensor:
    """Rows of every nucleus width: peaked (1-3 tokens), medium (tens), flat (thousands), and rows with
    exact ties of the top values (a tie at the nucleus' edge, and a tie across the top-32 boundary)."""
    g = torch.Generator().manual_seed(5)
    scale = torch.tensor([(12.0, 4.0, 1.5, 0.1)[i % 4] for i in range(rows)], dtype=torch.float64)[:, None]
    z = (torch.randn(rows, vocab, generator=g, dtype=torch.float64) * scale).to(dtype)
    for r in range(0, rows, 5):  # tie the 2nd and 3rd largest, and the 32nd and 33rd, of some rows
        order = z[r].argsort(descending=True)
        z[r, order[2]] = z[r, order[1]]
        z[r, order[32]] = z[r, order[31]]
    return z


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("guess", [256, 40])
def test_nucleus_first_try_equals_the_plain_nucleus(dtype, top_p, guess):
    z = _sampling_logits(23, 1031, dtype)  # odd shapes
    ref_ids, ref_scores = sample_step._nucleus(z, top_p, guess)
    ids, scores = sample_step._nucleus_first_try(z, top_p, guess)
    assert ids.shape == ref_ids.shape  # the same width K: the next step's guess is the same
    kept = [
        {(int(i), float(s)) for i, s in zip(r_ids, r_scores) if s != -torch.inf}
        for r_ids, r_scores in zip(ids, scores)
    ]
    ref_kept = [
        {(int(i), float(s)) for i, s in zip(r_ids, r_scores) if s != -torch.inf}
        for r_ids, r_scores in zip(ref_ids, ref_scores)
    ]
    assert kept == ref_kept  # the same (id, score) pairs; tied values may sit in another order
    assert {len(k) for k in kept} != {1}  # wide and narrow rows both there


def test_pick_tokens_with_the_first_try_sample_the_same_tokens():
    z = _sampling_logits(64, 4096)
    keys = torch.arange(64) * 104729
    for temperature, top_p in ((0.7, 0.95), (1.0, 0.9), (0.3, 0.5)):
        cfg = SamplingConfig(temperature=temperature, top_p=top_p)
        guess = sample_step.NUCLEUS_GUESS
        for step in range(8):
            ref = sample_step.pick_tokens(z, cfg, keys, step, guess, first=False)
            got = sample_step.pick_tokens(z, cfg, keys, step, guess)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]) and got[2] == ref[2]
            guess = max(sample_step.NUCLEUS_GUESS, 2 * ref[2])


@pytest.mark.parametrize("loss", ["ce", "tail"])
def test_a_step_without_stats_makes_the_same_update(loss, monkeypatch):
    """The patched model's loss with return_loss_stats=False (a step that writes no log row) gives the
    same loss and gradients bit for bit: the statistics are a side computation, and cross-entropy
    then runs no top-k at all."""
    knobs = {"ce": "ce", "tail": ShapedLoss(beta=-0.25, lambda_tail=-0.1, k=20)}[loss]
    calls: list[bool] = []
    inner = chunks.top_k
    monkeypatch.setattr(chunks, "top_k", lambda z, k: calls.append(True) or inner(z, k))
    grads = []
    for stats in (True, False):
        calls.clear()
        model = patch_causal_lm(build_model("tiny", vocab_size=257, seed=0), knobs, return_stats=True)
        ids = torch.randint(0, 257, (3, 41), generator=torch.Generator().manual_seed(2))
        x, y = ids[:, :-1], ids[:, 1:]
        out = model(input_ids=x, shift_labels=y, num_items_in_batch=120, return_loss_stats=stats)
        assert (out.loss_stats is not None) == stats
        assert bool(calls) == (stats or loss == "tail")
        out.loss.backward()
        grads.append([out.loss.detach()] + [p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@pytest.mark.slow
def test_log_every_changes_only_which_rows_are_written(tmp_path):
    """Steps without a log row compute no statistics: the rows that are written, the validation rows
    and the final weights are those of log_every=1."""
    runs = {}
    for every in (1, 3):
        out = tmp_path / f"every{every}"
        args = ["pretrain", "--preset", "smoke", "--out", str(out), "train.steps=6", "train.val_every=3"]
        assert main(args + [f"train.log_every={every}", "train.report_to=none"]) == 0
        metrics = read_metrics(out / "metrics.jsonl")
        rows = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in metrics]
        weights = load_file(str(out / "final" / "model.safetensors"))
        runs[every] = rows, weights
    (all_rows, w1), (rows3, w3) = runs[1], runs[3]
    assert [r["step"] for r in rows3 if r["split"] == "train"] == [3, 6]
    assert rows3 == [r for r in all_rows if r["split"] != "train" or r["step"] in (3, 6)]
    assert w1.keys() == w3.keys() and all(torch.equal(w1[k], w3[k]) for k in w1)


def test_a_non_finite_step_without_stats_still_stops_with_one_line(tmp_path):
    """A step that wrote no log row has no statistics: the stop message takes the mean of its parts."""
    trainer = object.__new__(LMTrainer)
    trainer.d, trainer.step, trainer.stage = Dist(), 7, StageDir(tmp_path)
    with pytest.raises(NonFiniteError, match=r"step 7: non-finite gradient norm \(loss 2, grad norm nan\)"):
        trainer._stop_non_finite([(1.0, None), (3.0, None)], math.nan, None)
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(loss nan"):
        trainer._stop_non_finite([(1.0, None), (math.inf, None)], 1.0, None)
