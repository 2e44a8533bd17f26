"""patch_causal_lm with the ecosystem: PEFT LoRA, TRL's SFTTrainer (completion-only and
assistant-only masks) and torch.compile. Tiny local models and a tokenizer built here; no downloads.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_hf_integrations.py
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf

from shapedce.hf import patch_causal_lm, shift_labels_of
from shapedce.loss import ShapedLoss, shaped_cross_entropy

KNOBS = ShapedLoss(beta=-0.25, lambda_tail=-0.1, k=4)
WORDS = "the a cat dog sat ran on mat log what is two plus three four five yes no".split()


def tiny_llama(vocab: int, dtype=torch.float64, seed: int = 0):
    cfg = tf.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
        initializer_range=0.2,
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return tf.LlamaForCausalLM(cfg).to(dtype)


def batch(vocab=61, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (2, 10), generator=g)
    labels = ids.clone()
    labels[0, :3] = -100
    return ids, labels, torch.ones_like(ids)


def reference(model, ids, labels, mask):
    logits = model(input_ids=ids, attention_mask=mask).logits
    return shaped_cross_entropy(logits, shift_labels_of(labels, -100), **KNOBS.knobs())


def grads(model):
    return {k: p.grad for k, p in model.named_parameters() if p.requires_grad}


def test_peft_lora_matches_and_the_frozen_head_gets_no_weight_gradient():
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    plain = peft.get_peft_model(tiny_llama(61), lora)
    patched = patch_causal_lm(copy.deepcopy(plain), KNOBS)
    assert isinstance(patched, peft.PeftModel)
    ids, labels, mask = batch()
    want = reference(plain, ids, labels, mask)
    want.backward()
    got = patched(input_ids=ids, attention_mask=mask, labels=labels)
    assert got.logits is None
    got.loss.backward()
    torch.testing.assert_close(got.loss, want, rtol=1e-10, atol=1e-12)
    g_plain, g_patched = grads(plain), grads(patched)
    assert g_plain.keys() == g_patched.keys() and all("lora_" in k for k in g_plain)
    for key in g_plain:
        torch.testing.assert_close(g_patched[key], g_plain[key], rtol=1e-8, atol=1e-11, msg=key)
    head = patched.get_base_model().lm_head.weight
    assert not head.requires_grad and head.grad is None


def tiny_tokenizer():
    """A word-level tokenizer with a chat template that marks assistant turns for TRL."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<eos>", "<user>", "<assistant>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}<user> {{ m['content'] }} "
        "{% else %}<assistant> {% generation %}{{ m['content'] }} <eos>{% endgeneration %} {% endif %}"
        "{% endfor %}"
    )
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.chat_template = template
    return fast


def sft_data(conversational: bool):
    from datasets import Dataset

    pairs = [
        ("what is two plus three", "five"),
        ("the cat sat on the", "mat yes"),
        ("what is two plus two", "four"),
        ("a dog ran on a", "log no"),
    ]
    if conversational:
        rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": c}] for p, c in pairs]
        return Dataset.from_dict({"messages": rows})
    return Dataset.from_dict({"prompt": [p for p, _ in pairs], "completion": [" " + c for _, c in pairs]})


@pytest.mark.parametrize("mode", ["completion_only", "assistant_only"])
def test_sft_trainer_with_the_patched_model_gives_the_shaped_loss_of_the_unpatched_logits(mode, tmp_path):
    trl = pytest.importorskip("trl")
    tok = tiny_tokenizer()
    plain = tiny_llama(len(tok), dtype=torch.float32)
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
        completion_only_loss=mode == "completion_only",
        assistant_only_loss=mode == "assistant_only",
    )
    trainer = trl.SFTTrainer(
        model=copy.deepcopy(plain),
        args=args,
        train_dataset=sft_data(mode == "assistant_only"),
        processing_class=tok,
    )
    patch_causal_lm(trainer.model, KNOBS)  # after the trainer: it installs its own cross-entropy head
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    labels = inputs["labels"]
    counted = labels != -100
    assert counted.any() and (~counted & (inputs["attention_mask"] == 1)).any()  # prompts are masked
    got = trainer.compute_loss(trainer.model, dict(inputs))
    want = reference(plain, inputs["input_ids"], labels, inputs["attention_mask"])
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-6)
    got.backward()
    want.backward()
    for key, p in plain.named_parameters():
        torch.testing.assert_close(
            dict(trainer.model.named_parameters())[key].grad, p.grad, rtol=1e-3, atol=1e-6
        )
    trainer.model.zero_grad()
    trainer.train()
    assert trainer.state.log_history[0]["loss"] > 0


def test_patching_before_the_sft_trainer_is_refused_not_trained_with_cross_entropy(tmp_path):
    """SFTTrainer wraps the forward with TRL's cross-entropy head; that head must not run silently."""
    trl = pytest.importorskip("trl")
    from shapedce.errors import UserError

    tok = tiny_tokenizer()
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to=[],
        completion_only_loss=True,
    )
    model = patch_causal_lm(tiny_llama(len(tok), dtype=torch.float32), KNOBS)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=sft_data(False), processing_class=tok)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with pytest.raises(UserError, match="build the SFTTrainer first"):
        trainer.compute_loss(trainer.model, dict(inputs))
    patch_causal_lm(trainer.model, KNOBS)  # the documented order works on the same trainer
    assert torch.isfinite(trainer.compute_loss(trainer.model, dict(inputs)))


def test_torch_compile_of_a_patched_model_gives_the_same_loss_and_gradients():
    """backend="aot_eager": inductor's C++ compile is too slow for 2 shared CPU cores; same graphs."""
    eager = patch_causal_lm(tiny_llama(61, dtype=torch.float32), KNOBS)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    ids, labels, mask = batch()
    want = eager(input_ids=ids, attention_mask=mask, labels=labels).loss
    got = compiled(input_ids=ids, attention_mask=mask, labels=labels).loss
    want.backward()
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = dict(compiled_model.named_parameters())
    for key, p in eager.named_parameters():
        torch.testing.assert_close(g[key].grad, p.grad, rtol=1e-4, atol=1e-6, msg=key)
