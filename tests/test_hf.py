"""Hugging Face integration on tiny Qwen3 / Qwen3-MoE models: same loss and grads as the
function on the logits, MoE router aux loss kept, no full logits on the fused path."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_qwen3
from shapedce.hf import compute_loss_func, patch_causal_lm, shift_labels_of
from shapedce.loss import ShapedLoss, shaped_cross_entropy

SETTINGS = ["ce", "precision", "tail", "head"]


def batch(vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :3] = -100  # e.g. a prompt that takes no part in the loss
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    labels[1, -2:] = -100
    return ids, labels, mask


def grads_of(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_patched_forward_matches_loss_on_logits(moe, setting):
    ids, labels, mask = batch()
    knobs = ShapedLoss.named(setting, k=5)
    plain = tiny_qwen3(moe)
    out = plain(input_ids=ids, attention_mask=mask)
    want = shaped_cross_entropy(out.logits, shift_labels_of(labels, -100), **knobs.knobs())
    if moe:
        want = want + plain.router_aux_loss_coef * out.aux_loss
    want.backward()

    patched = patch_causal_lm(tiny_qwen3(moe), knobs, return_stats=True)
    got = patched(input_ids=ids, attention_mask=mask, labels=labels)
    assert got.logits is None
    got.loss.backward()
    torch.testing.assert_close(got.loss, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_of(patched), grads_of(plain), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert int(got.loss_stats["tokens"]) == int((shift_labels_of(labels, -100) != -100).sum())
    if moe:
        assert got.aux_loss is not None and got.aux_loss > 0


def test_fused_path_never_calls_the_lm_head():
    model = patch_causal_lm(tiny_qwen3(), "precision")
    seen = []
    model.lm_head.register_forward_hook(lambda *a: seen.append(1))
    ids, labels, mask = batch()
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    assert seen == [] and model.lm_head.weight.grad is not None


def test_generation_and_logits_path_are_untouched():
    ids, _, _ = batch()
    plain, patched = tiny_qwen3(), patch_causal_lm(tiny_qwen3(), "diversity")
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(plain.generate(ids[:1], **kw), patched.generate(ids[:1], **kw))
    torch.testing.assert_close(plain(input_ids=ids).logits, patched(input_ids=ids).logits)


def test_num_items_in_batch_divides_the_sum():
    ids, labels, mask = batch()
    model = patch_causal_lm(tiny_qwen3(), "tail")
    n = int((shift_labels_of(labels, -100) != -100).sum())
    mean = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    summed = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=2 * n).loss
    torch.testing.assert_close(summed, mean / 2)


def test_compute_loss_func_matches_patched_model():
    ids, labels, mask = batch()
    model = tiny_qwen3()
    fn = compute_loss_func("precision")
    want = fn(model(input_ids=ids, attention_mask=mask), labels)
    got = patch_causal_lm(model, "precision")(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_patched_model_saves_and_loads_with_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model = patch_causal_lm(tiny_qwen3(moe=True), "head")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids, _, _ = batch()
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_transformers_trainer_runs_with_compute_loss_func(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    ids, _, _ = batch(seed=3)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    model = tiny_qwen3()
    before = [p.detach().clone() for p in model.parameters()]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, compute_loss_func=compute_loss_func("tail"))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_patch_rejects_models_without_a_linear_head():
    with pytest.raises(ValueError, match="cannot fuse Linear exactly"):
        patch_causal_lm(torch.nn.Linear(2, 2), "ce")


def test_moe_aux_loss_is_weighted_by_the_micro_batch_share():
    """Two micro-batches of half the global batch must add up to one global-batch loss."""
    ids, labels, mask = batch()
    model = patch_causal_lm(tiny_qwen3(moe=True), "precision")
    n = int((shift_labels_of(labels, -100) != -100).sum())
    whole = model(input_ids=ids, attention_mask=mask, labels=labels)
    part = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=2 * n)
    assert whole.aux_loss > 0
    torch.testing.assert_close(part.loss, whole.loss / 2)


def test_moe_flavor_generates_and_its_patched_loss_keeps_the_router_term():
    """Flavors leave config.output_router_logits off (generate() breaks with it on); the loss path adds it."""
    from shapedce.models import build_model

    model = patch_causal_lm(build_model("tiny-moe", seed=0), "ce")
    ids, labels, mask = batch(vocab=2048)
    assert model.generate(ids[:1], max_new_tokens=3, do_sample=False, pad_token_id=0).shape == (1, 15)
    with_aux = model(input_ids=ids, attention_mask=mask, labels=labels)
    without = model(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=False)
    assert with_aux.aux_loss is not None and without.aux_loss is None
    torch.testing.assert_close(with_aux.loss, without.loss + model.router_aux_loss_coef * with_aux.aux_loss)
