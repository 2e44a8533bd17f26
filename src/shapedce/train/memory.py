"""Memory settings shared by the training stages: activation checkpointing.

    from shapedce.train.memory import set_activation_checkpointing
    set_activation_checkpointing(model, True)      # before DDP / FSDP2 wrapping

Uses the model's own Hugging Face activation (gradient) checkpointing with `use_reentrant=False`: each decoder
layer keeps only its input and recomputes the rest in the backward pass. The non-reentrant form is
the one FSDP2 supports (its all-gathers re-run inside the recomputation) and gives the same
gradients as no checkpointing. Tested in tests/test_memory.py (same loss curve with and without).
"""

from __future__ import annotations

from ..errors import UserError


def set_activation_checkpointing(model, on: bool) -> None:
    """Turn the model's gradient checkpointing on or off (a no-op for off on a model without it)."""
    new_api = hasattr(model, "activation_checkpointing_enable")  # transformers >= 5.2x; the old names warn
    if not on:
        if not any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
            return  # never turned on: leave the model exactly as it is
        if new_api:
            model.activation_checkpointing_disable()
        elif hasattr(model, "gradient_checkpointing_disable"):
            model.gradient_checkpointing_disable()
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(
            f"activation_checkpointing=true: {type(model).__name__} does not support gradient checkpointing"
        )
    kwargs = {"use_reentrant": False}
    if new_api:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
