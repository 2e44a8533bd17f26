"""TRL's GRPOTrainer with the project's verifiable task rewards and its Avg@k / Pass@k evaluation.

    python examples/grpo_trainer.py --steps 4                            # tiny local model, CPU, seconds
    python examples/grpo_trainer.py --model runs/ce-mid/final --task arith --steps 200 --report-to trackio

Rewards: `shapedce.tasks.reward_fn(task)`, a TRL reward function `(completions, answer=...) -> [0/1]`
scored by the task's verifier; the dataset rows are `Prompt.row()` (prompt, answer, task, uid).
`PassAtKCallback` samples k completions for held-out TEST-split prompts at the start, every
`--eval-every` steps and at the end, with the project's counter-based sampler (samples do not depend
on batch composition), grades them with the same verifier and logs Avg@k, Cons@k and Pass@1..k
through `trainer.log`, so they reach `state.log_history` and every `report_to` backend.
See docs/guides/huggingface.md; the project's own GRPO loop is `shapedce rl` (docs/guides/rl.md).
"""

from __future__ import annotations

import argparse

import torch
from common import model_and_tokenizer, task_texts
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from shapedce.eval.metrics import summarize
from shapedce.eval.sample import SamplingConfig, sample
from shapedce.tasks import get_task, reward_fn


class PassAtKCallback(TrainerCallback):
    """Avg@k, Cons@k and Pass@k of held-out prompts, logged through the trainer (see the module docstring)."""

    def __init__(self, trainer, task: str, prompts: int = 16, k: int = 4, every: int = 10, max_new_tokens=64):
        self.trainer, self.task, self.every = trainer, get_task(task), every
        self.prompts = self.task.prompts("test", prompts, seed=0)
        self.sampling = SamplingConfig(temperature=1.0, top_p=1.0, samples=k, max_new_tokens=max_new_tokens)

    def evaluate(self) -> dict[str, float]:
        model, tok = self.trainer.model, self.trainer.processing_class
        completions = sample(model, tok, [p.text for p in self.prompts], self.sampling, backend="torch")
        pairs = [(c.text, p) for p, group in zip(self.prompts, completions) for c in group]
        graded, k = self.task.grade_many(pairs), self.sampling.samples
        summary = summarize([graded[i : i + k] for i in range(0, len(graded), k)])
        row = {"heldout/avg_at_k": summary["avg_at_m"], "heldout/cons_at_k": summary["cons_at_m"]}
        row.update({f"heldout/pass_at_{j}": v for j, v in summary["pass_at_k"].items()})
        return row

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.log(self.evaluate())

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.trainer.log(self.evaluate())

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.log(self.evaluate())


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a local causal LM (default: a tiny one, untrained)")
    parser.add_argument("--task", default="arith", help="a shapedce.tasks name (shapedce tasks lists them)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4, help="completions per prompt (GRPO's G)")
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="samples per held-out prompt (Avg@k, Pass@k)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--report-to", default="none", help="none, tensorboard, trackio, wandb")
    parser.add_argument("--out", default="runs/grpo-trainer")
    args = parser.parse_args(argv)

    rows = [p.row() for p in get_task(args.task).prompts("train", 64, seed=0)]
    model, tok = model_and_tokenizer(args.model, task_texts(256))
    config = GRPOConfig(
        output_dir=args.out,
        max_steps=args.steps,
        per_device_train_batch_size=args.group_size * 2,  # two prompts per step
        num_generations=args.group_size,
        max_completion_length=args.max_completion_length,
        learning_rate=args.lr,
        beta=0.0,  # no KL term, as DAPO and the paper
        epsilon_high=0.28,  # clip-higher
        loss_type="dapo",  # token-level aggregation
        logging_steps=1,
        report_to=[] if args.report_to == "none" else args.report_to.split(","),
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn(args.task)],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    every, length = args.eval_every, args.max_completion_length
    trainer.add_callback(PassAtKCallback(trainer, args.task, args.eval_prompts, args.k, every, length))
    trainer.train()
    return trainer.state.log_history


if __name__ == "__main__":
    for row in main():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
