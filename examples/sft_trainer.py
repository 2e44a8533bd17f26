"""TRL's SFTTrainer with the shaped loss (or DFT), its statistics in the logs, token accuracy intact.

    python examples/sft_trainer.py --loss precision --steps 20          # tiny local model, CPU, seconds
    python examples/sft_trainer.py --loss dft                           # = SFTConfig(loss_type="dft")
    python examples/sft_trainer.py --model Qwen/Qwen3-0.6B --loss tail --report-to wandb

The order matters: build the SFTTrainer first (it installs its own cross-entropy head on the model),
then `patch_causal_lm(trainer.model, ...)`, then `trainer.add_callback(ShapedLossCallback())`. The
patched model answers TRL's fused-head calls with the shaped loss, each token's entropy and whether
its target is the top-1 token, so `mean_token_accuracy` and `entropy` stay TRL's own metrics.
Prompts are masked (completion_only_loss). See docs/guides/huggingface.md.
"""

from __future__ import annotations

import argparse

import torch
from common import model_and_tokenizer, task_texts
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from shapedce.hf import ShapedLossCallback, patch_causal_lm
from shapedce.loss import ShapedLoss
from shapedce.tasks import get_task


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a local or Hub causal LM (default: a tiny one)")
    parser.add_argument("--loss", default="precision", help="a named setting (ce, precision, dft, ...)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--report-to", default="none", help="none, tensorboard, trackio, wandb")
    parser.add_argument("--out", default="runs/sft-trainer")
    args = parser.parse_args(argv)

    problems = get_task("arith").prompts("train", 256, seed=0)
    rows = [{"prompt": p.text, "completion": p.meta["solution"]} for p in problems]
    model, tok = model_and_tokenizer(args.model, task_texts(256))
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=args.out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            logging_steps=1,
            max_length=128,
            completion_only_loss=True,
            report_to=[] if args.report_to == "none" else args.report_to.split(","),
            save_strategy="no",
            use_cpu=not torch.cuda.is_available(),
            bf16=False,
            disable_tqdm=True,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    patch_causal_lm(trainer.model, ShapedLoss.named(args.loss))  # after building the trainer
    trainer.add_callback(ShapedLossCallback())
    trainer.train()
    return trainer.state.log_history


if __name__ == "__main__":
    for row in main():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
