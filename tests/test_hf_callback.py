"""ShapedLossCallback in transformers.Trainer and TRL's SFTTrainer; token weights and DFT on the HF path.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_hf_callback.py

Tiny local models, no downloads. The logged statistics are checked against the fused pass run by
hand on the same batch; a callback ahead of ours in the list stands for a `report_to` backend.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers as tf

from conftest import tiny_qwen3
from shapedce.errors import UserError
from shapedce.hf import ShapedLossCallback, patch_causal_lm, shift_labels_of
from shapedce.loss import PRESETS, EntropyController, ShapedLoss, shaped_cross_entropy

KNOBS = ShapedLoss(beta=-0.25, lambda_tail=-0.1, k=4)
VOCAB = 61


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=8, length=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        labels = self.ids[i].clone()
        labels[:3] = -100
        return {"input_ids": self.ids[i], "labels": labels, "attention_mask": torch.ones_like(self.ids[i])}


class Recorder(tf.TrainerCallback):
    """Stands for a report_to backend: the Trainer puts those ahead of user callbacks."""

    def __init__(self):
        self.rows = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.rows.append(dict(logs))


def trainer_for(model, tmp_path, callbacks, steps=1, batch=8, accumulation=1):
    args = tf.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        dataloader_drop_last=True,
        seed=0,
    )
    return tf.Trainer(model=model, args=args, train_dataset=Rows(), callbacks=callbacks)


def fused_stats(model, data):
    batch = {k: torch.stack([data[i][k] for i in range(len(data))]) for k in ("input_ids", "labels")}
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], labels=batch["labels"], return_loss_stats=True)
    return out.loss_stats


def test_trainer_logs_the_statistics_of_the_step_into_log_history_and_every_backend(tmp_path):
    model = patch_causal_lm(tiny_qwen3(vocab=VOCAB), KNOBS)
    want = fused_stats(copy.deepcopy(model), Rows())  # the one step's batch, before the update
    recorder = Recorder()
    trainer = trainer_for(model, tmp_path, [recorder, ShapedLossCallback()])
    trainer.train()
    row = next(r for r in trainer.state.log_history if "loss" in r)
    for name in ("entropy", "topk_mass", "tail_mass", "w_mean", "w_max", "grad_shift", "ce"):
        assert math.isclose(row[f"shaped/{name}"], float(want[name]), rel_tol=1e-5, abs_tol=1e-7), name
    assert row["shaped/w_mean"] > 1 and row["shaped/grad_shift"] > 0  # precision + tail: both act
    assert math.isclose(row["shaped/ppl"], math.exp(float(want["ce"])), rel_tol=1e-5)
    seen = next(r for r in recorder.rows if "loss" in r)
    assert seen["shaped/entropy"] == row["shaped/entropy"]  # the backend got the same row


def test_accumulated_micro_batches_merge_token_weighted(tmp_path):
    model = patch_causal_lm(tiny_qwen3(vocab=VOCAB), KNOBS)
    want = fused_stats(copy.deepcopy(model), Rows())
    trainer = trainer_for(model, tmp_path, [ShapedLossCallback()], batch=2, accumulation=4)
    trainer.train()
    row = next(r for r in trainer.state.log_history if "loss" in r)
    for name in ("entropy", "w_mean", "w_max", "grad_shift", "topk_mass"):
        assert math.isclose(row[f"shaped/{name}"], float(want[name]), rel_tol=1e-5, abs_tol=1e-7), name


def test_callback_refuses_an_unpatched_model(tmp_path):
    trainer = trainer_for(tiny_qwen3(vocab=VOCAB), tmp_path, [ShapedLossCallback()])
    with pytest.raises(UserError, match="patch_causal_lm"):
        trainer.train()


def test_auto_beta_needs_the_callback_and_follows_the_controller_law(tmp_path):
    auto = ShapedLoss(beta="auto", target_entropy=1.0, beta_lr=0.2)
    model = patch_causal_lm(tiny_qwen3(vocab=VOCAB), auto)
    ids = Rows()[0]["input_ids"][None]
    with pytest.raises(UserError, match="ShapedLossCallback"):
        model(input_ids=ids, labels=ids)
    trainer = trainer_for(model, tmp_path, [ShapedLossCallback()], steps=3)
    trainer.train()
    rows = [r for r in trainer.state.log_history if "loss" in r]
    replay = EntropyController.from_loss(auto)
    for r in rows:  # one log row per step: its entropy was measured at the beta the row's step used
        replay.update(r["shaped/entropy"])
        assert math.isclose(r["shaped/beta"], replay.beta, abs_tol=1e-12)
    assert rows[-1]["shaped/beta"] < 0  # entropy ~ ln 61 >> 1 nat: beta walks down (sharper)
    assert model._shaped_step_loss.beta == rows[-1]["shaped/beta"]


def test_token_weights_reach_the_patched_loss_shifted_with_the_labels():
    model = patch_causal_lm(tiny_qwen3(vocab=VOCAB).double(), KNOBS)
    data = Rows(n=2)
    ids = torch.stack([data[i]["input_ids"] for i in range(2)])
    labels = torch.stack([data[i]["labels"] for i in range(2)])
    tw = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = model(input_ids=ids, labels=labels, token_weights=tw).loss
    logits = model(input_ids=ids).logits
    targets = shift_labels_of(labels, -100)
    rows = shaped_cross_entropy(logits, targets, reduction="none", **KNOBS.knobs())
    want = (rows * shift_labels_of(tw, 0)).sum() / (targets != -100).sum()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def sft_trainer(tmp_path, model, tok, **config):
    trl = pytest.importorskip("trl")
    from test_hf_integrations import sft_data

    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        completion_only_loss=True,
        seed=0,
        **config,
    )
    return trl.SFTTrainer(model=model, args=args, train_dataset=sft_data(False), processing_class=tok)


def test_sft_trainer_token_accuracy_and_entropy_equal_the_unpatched_run(tmp_path):
    pytest.importorskip("trl")
    from test_hf_integrations import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    base = tiny_llama(len(tok), dtype=torch.float32)
    plain = sft_trainer(tmp_path / "plain", copy.deepcopy(base), tok)
    plain.train()
    shaped = sft_trainer(tmp_path / "shaped", copy.deepcopy(base), tok)
    patch_causal_lm(shaped.model, KNOBS)
    shaped.add_callback(ShapedLossCallback())
    shaped.train()
    want, got = plain.state.log_history[0], shaped.state.log_history[0]
    assert math.isfinite(got["mean_token_accuracy"])
    assert math.isclose(got["mean_token_accuracy"], want["mean_token_accuracy"], rel_tol=1e-6)
    assert math.isclose(got["entropy"], want["entropy"], rel_tol=1e-4)
    assert math.isclose(got["shaped/entropy"], want["entropy"], rel_tol=1e-4)  # both: counted tokens
    assert got["shaped/w_mean"] > 1 and got["loss"] != want["loss"]


def test_dft_preset_equals_trl_loss_type_dft(tmp_path):
    pytest.importorskip("trl")
    from test_hf_integrations import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    base = tiny_llama(len(tok), dtype=torch.float32)
    trl_dft = sft_trainer(tmp_path / "trl", copy.deepcopy(base), tok, loss_type="dft")
    ours = sft_trainer(tmp_path / "ours", copy.deepcopy(base), tok)
    patch_causal_lm(ours.model, PRESETS["dft"])
    inputs = trl_dft.data_collator([trl_dft.train_dataset[i] for i in range(4)])
    want = trl_dft.compute_loss(trl_dft.model, dict(inputs))
    got = ours.compute_loss(ours.model, dict(inputs))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    want.backward()
    got.backward()
    theirs = dict(trl_dft.model.named_parameters())
    for key, p in ours.model.named_parameters():
        torch.testing.assert_close(p.grad, theirs[key].grad, rtol=1e-3, atol=1e-6, msg=key)


def test_importing_shapedce_hf_loads_no_trainer_or_logging_backend():
    import subprocess
    import sys

    code = (
        "import sys, shapedce.hf\n"
        "heavy = {'trl', 'datasets', 'tensorboard', 'trackio', 'wandb', 'peft', 'accelerate'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
