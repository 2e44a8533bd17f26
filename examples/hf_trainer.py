"""transformers.Trainer with the fused shaped loss; its statistics land in the Trainer's own logs.

    python examples/hf_trainer.py --loss precision --steps 20          # tiny local model, CPU, seconds
    python examples/hf_trainer.py --loss auto --target-entropy 1.0 --report-to tensorboard
    python examples/hf_trainer.py --model Qwen/Qwen3-0.6B --loss tail --report-to trackio

`patch_causal_lm` makes the model's loss the shaped loss, fused with the lm head (no [B, T, V]
logits); `ShapedLossCallback` puts entropy, top-k / tail mass, w mean / max and grad_shift into every
logging row (so TensorBoard, trackio and wandb get them) and drives beta="auto". See
docs/guides/huggingface.md.
"""

from __future__ import annotations

import argparse

import torch
from common import TokenRows, model_and_tokenizer, task_texts
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from shapedce.hf import ShapedLossCallback, patch_causal_lm
from shapedce.loss import ShapedLoss


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a local or Hub causal LM (default: a tiny one)")
    parser.add_argument("--loss", default="precision", help="a named setting (precision, dft, ...) or auto")
    parser.add_argument("--target-entropy", type=float, default=1.0, help="nats per token, with --loss auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--report-to", default="none", help="none, tensorboard, trackio, wandb")
    parser.add_argument("--out", default="runs/hf-trainer")
    args = parser.parse_args(argv)

    texts = task_texts(256)
    model, tok = model_and_tokenizer(args.model, texts)
    extra = {"target_entropy": args.target_entropy} if args.loss == "auto" else {}
    patch_causal_lm(model, ShapedLoss.named(args.loss, **extra))
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            logging_steps=1,
            report_to=[] if args.report_to == "none" else args.report_to.split(","),
            save_strategy="no",
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        ),
        train_dataset=TokenRows(tok, texts),
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        callbacks=[ShapedLossCallback()],
    )
    trainer.train()
    return trainer.state.log_history


if __name__ == "__main__":
    for row in main():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
