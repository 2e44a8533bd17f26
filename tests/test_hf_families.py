"""patch_causal_lm across Hugging Face families: loss and every parameter gradient of the patched
model against `shaped_cross_entropy` on the unpatched model's own logits (float64, tiny random
configs, no downloads). Covers tied / untied heads, a head bias, MoE router losses, Gemma's
final-logit softcap, Granite's and Cohere's logit scales, and the refusals.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m pytest -q tests/test_hf_families.py
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf

from shapedce.errors import UserError
from shapedce.hf import patch_causal_lm, read_head, set_shaped_loss, shift_labels_of
from shapedce.hf.heads import module_at
from shapedce.loss import ShapedLoss, shaped_cross_entropy

V = 97
KNOBS = ShapedLoss(beta=-0.25, lambda_top=0.05, lambda_tail=-0.1, k=5)
DENSE = dict(
    vocab_size=V,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
    max_position_embeddings=64,
    initializer_range=0.2,
)
MOE = dict(
    num_experts_per_tok=2,
    output_router_logits=True,
    router_aux_loss_coef=0.05,
    experts_implementation="eager",
)

FAMILIES = {  # name: (config class, model class, config kwargs)
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(DENSE, tie_word_embeddings=True)),
    "llama-untied": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(DENSE, tie_word_embeddings=False)),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, dict(DENSE, head_dim=8)),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, DENSE),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, dict(DENSE, head_dim=8)),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, dict(DENSE, pad_token_id=0)),
    "phi-bias": (tf.PhiConfig, tf.PhiForCausalLM, DENSE),
    "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, DENSE),
    "mixtral": (tf.MixtralConfig, tf.MixtralForCausalLM, dict(DENSE, **MOE, num_local_experts=4)),
    "qwen3-moe": (
        tf.Qwen3MoeConfig,
        tf.Qwen3MoeForCausalLM,
        dict(DENSE, **MOE, head_dim=8, num_experts=4, moe_intermediate_size=16, decoder_sparse_step=1),
    ),
    "olmoe": (tf.OlmoeConfig, tf.OlmoeForCausalLM, dict(DENSE, **MOE, num_experts=4)),
    "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, dict(DENSE, head_dim=8, final_logit_softcapping=1.5)),
    "gemma3": (
        tf.Gemma3TextConfig,
        tf.Gemma3ForCausalLM,
        dict(DENSE, head_dim=8, final_logit_softcapping=1.5),
    ),
    "granite": (tf.GraniteConfig, tf.GraniteForCausalLM, dict(DENSE, logits_scaling=0.4)),
    "cohere": (tf.CohereConfig, tf.CohereForCausalLM, dict(DENSE, logit_scale=2.5)),
    "falcon-h1": (
        tf.FalconH1Config,
        tf.FalconH1ForCausalLM,  # hybrid attention + Mamba2, head * multiplier
        dict(
            DENSE,
            mamba_d_ssm=32,
            mamba_n_heads=4,
            mamba_d_head=8,
            mamba_d_state=8,
            mamba_chunk_size=4,
            mamba_n_groups=1,
            lm_head_multiplier=0.7,
        ),
    ),
    "minicpm3": (  # hidden states / logits_scaling before the head
        tf.MiniCPM3Config,
        tf.MiniCPM3ForCausalLM,
        dict(
            DENSE,
            num_key_value_heads=4,
            q_lora_rank=16,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=8,
            v_head_dim=8,
            dim_model_base=64,
        ),
    ),
    "gpt-neox": (
        tf.GPTNeoXConfig,
        tf.GPTNeoXForCausalLM,
        dict(
            vocab_size=V,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
            initializer_range=0.2,
            tie_word_embeddings=False,
        ),
    ),
    "gpt2": (
        tf.GPT2Config,
        tf.GPT2LMHeadModel,
        dict(
            vocab_size=V,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            initializer_range=0.2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
}
SPECS = {  # what read_head must find (decoder, head, logit_scale, softcap, moe)
    "gemma2": ("model", "lm_head", 1.0, 1.5, False),
    "granite": ("model", "lm_head", 2.5, None, False),
    "cohere": ("model", "lm_head", 2.5, None, False),
    "gpt-neox": ("gpt_neox", "lm_head", 1.0, None, False),
    "gpt2": ("transformer", "lm_head", 1.0, None, False),
    "olmoe": ("model", "lm_head", 1.0, None, True),
    "falcon-h1": ("model", "lm_head", 0.7, None, False),
    "minicpm3": ("model", "lm_head", 2.0, None, False),
}


def build(name: str, seed: int = 0):
    cfg_cls, model_cls, kwargs = FAMILIES[name]
    cfg = cfg_cls(**kwargs)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return model_cls(cfg).double()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (2, 11), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt outside the loss
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # right padding
    labels[1, -3:] = -100
    return ids, labels, mask


def reference_loss(model, ids, labels, mask, knobs=KNOBS):
    out = model(input_ids=ids, attention_mask=mask)
    loss = shaped_cross_entropy(out.logits, shift_labels_of(labels, -100), **knobs.knobs())
    if getattr(out, "aux_loss", None) is not None:
        loss = loss + model.router_aux_loss_coef * out.aux_loss
    return loss, out.logits


@pytest.mark.parametrize("name", list(FAMILIES))
def test_patched_loss_and_every_gradient_match_the_loss_on_the_models_logits(name):
    plain = build(name)
    patched = patch_causal_lm(copy.deepcopy(plain), KNOBS)
    ids, labels, mask = batch()
    want, logits = reference_loss(plain, ids, labels, mask)
    want.backward()
    got = patched(input_ids=ids, attention_mask=mask, labels=labels)
    assert got.logits is None
    got.loss.backward()
    torch.testing.assert_close(got.loss, want, rtol=1e-10, atol=1e-12)
    named = dict(patched.named_parameters())
    for key, p in plain.named_parameters():
        q = named[key]
        assert (p.grad is None) == (q.grad is None), key
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-8, atol=1e-11, msg=key)
    spec = read_head(patched)
    if name in SPECS:
        assert (spec.decoder, spec.head, spec.logit_scale, spec.softcap, spec.moe) == SPECS[name]
    if spec.moe:
        assert spec.router[:2] == (4, 2) and module_at(patched, spec.router[2]) == 0.05
    if spec.softcap is not None:  # the cap is active here: dropping it changes the loss
        assert logits.abs().max() > 0.5 * spec.softcap
        raw = plain.lm_head(
            module_at(plain, spec.decoder)(input_ids=ids, attention_mask=mask).last_hidden_state
        )
        uncapped = shaped_cross_entropy(raw, shift_labels_of(labels, -100), **KNOBS.knobs())
        assert abs(uncapped.item() - want.item()) > 1e-3


def test_tied_head_is_the_embedding_and_gets_both_gradients():
    model = patch_causal_lm(build("llama"), KNOBS)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids, labels, mask = batch()
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


class ExtraLogitOp(tf.LlamaForCausalLM):
    """A model with a logit post-processing step nobody told the reader about."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(hidden_states)
        logits = logits - logits.mean(-1, keepdim=True)
        loss = None
        return tf.modeling_outputs.CausalLMOutputWithPast(loss=loss, logits=logits)


class ScaledByTensor(tf.LlamaForCausalLM):
    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(hidden_states)
        logits = logits * self.temperature
        loss = None
        return tf.modeling_outputs.CausalLMOutputWithPast(loss=loss, logits=logits)


class ScaledHiddenBiasedHead(tf.LlamaForCausalLM):
    """Scaling the hidden states is a logit scale only without a head bias."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden_states = outputs.last_hidden_state
        hidden_states = hidden_states / self.config.rms_norm_eps
        logits = self.lm_head(hidden_states)
        loss = None
        return tf.modeling_outputs.CausalLMOutputWithPast(loss=loss, logits=logits)


class InputsChangedFirst(tf.LlamaForCausalLM):
    """Work done before the decoder call would be skipped by the patched forward."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        input_ids = input_ids.flip(-1)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(hidden_states)
        loss = None
        return tf.modeling_outputs.CausalLMOutputWithPast(loss=loss, logits=logits)


@pytest.mark.parametrize(
    "cls, match",
    [
        (ExtraLogitOp, "unknown logit post-processing 'logits = logits - logits.mean"),
        (ScaledByTensor, "not a number"),
        (ScaledHiddenBiasedHead, "hidden states are scaled before a head with a bias"),
        (InputsChangedFirst, "unknown statement before the decoder call 'input_ids = input_ids.flip"),
    ],
)
def test_unknown_logit_post_processing_is_refused_in_one_line(cls, match):
    model = cls(tf.LlamaConfig(**DENSE))
    model.lm_head = torch.nn.Linear(32, V, bias=True)
    model.temperature = torch.nn.Parameter(torch.tensor(2.0))
    with pytest.raises(UserError, match=match) as err:
        patch_causal_lm(model, KNOBS)
    assert "\n" not in str(err.value) and cls.__name__ in str(err.value)


def test_a_lora_wrapped_head_is_refused():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(build("qwen3"), peft.LoraConfig(r=2, target_modules=["lm_head", "q_proj"]))
    with pytest.raises(UserError, match="plain torch.nn.Linear"):
        patch_causal_lm(model, KNOBS)


def test_a_head_wrapped_after_patching_is_refused_at_the_next_call():
    peft = pytest.importorskip("peft")
    model = patch_causal_lm(build("qwen3"), KNOBS)
    model = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["lm_head"]))
    ids, labels, mask = batch()
    with pytest.raises(UserError, match="lm_head is now a peft.tuners.lora.*patch after wrapping"):
        model(input_ids=ids, attention_mask=mask, labels=labels)


def test_set_shaped_loss_changes_the_knobs_not_the_forward():
    ids, labels, mask = batch()
    model = patch_causal_lm(build("qwen3"), KNOBS)
    forward = model.forward
    other = ShapedLoss(beta=0.5, lambda_tail=-0.2, k=3)
    set_shaped_loss(model, other)
    assert model.forward is forward
    got = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    want, _ = reference_loss(build("qwen3"), ids, labels, mask, knobs=other)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(UserError, match="patched by patch_causal_lm"):
        set_shaped_loss(build("qwen3"), other)
