"""shapedce.tasks: registry, deterministic disjoint splits kept out of the corpora, extraction, rewards.

python -m pytest tests/test_tasks.py -q        # CPU, ~10 s (imports reasoning-gym and math-verify)
"""

from __future__ import annotations

import doctest
import threading

import pytest

import shapedce.tasks.base as tasks_module
from shapedce.data import builtin_corpus, is_heldout, is_reasoning_doc, problem_key
from shapedce.tasks import (
    TASKS,
    ArithTask,
    Prompt,
    RGTask,
    canonical_number,
    get_task,
    get_tasks,
    register_task,
    reward_fn,
    split_of,
)

ARITH = ["arith-add", "arith-sub", "arith-mul", "arith-chain", "arith-linear", "arith-compare", "arith"]
RG = ["rg-basic_arithmetic", "rg-chain_sum", "rg-products", "rg-gcd"]
ALL = [*ARITH, "arith-small", *RG, "math-boxed"]


def one_line(excinfo: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def needs(name: str) -> None:
    if name.startswith("rg-"):
        pytest.importorskip("reasoning_gym")
    if name == "math-boxed":
        pytest.importorskip("math_verify")


def question(p: Prompt) -> str:
    """The problem statement inside the prompt text."""
    return p.text.removeprefix("Problem: ").split("\nSolution:")[0].split(" Put the final answer")[0]


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert set(ALL) <= set(TASKS)
    assert get_task("arith-add") is TASKS["arith-add"]
    assert [t.name for t in get_tasks(" arith-add, rg-gcd ")] == ["arith-add", "rg-gcd"]
    with pytest.raises(ValueError) as excinfo:
        get_task("arith-div")
    one_line(excinfo, "unknown task 'arith-div'", "arith-add", "rg-gcd", "math-boxed")
    with pytest.raises(ValueError) as excinfo:
        get_tasks("arith-add,nope")
    one_line(excinfo, "'nope'")
    with pytest.raises(ValueError) as excinfo:
        get_tasks(" , ")
    one_line(excinfo, "tasks must name")
    with pytest.raises(ValueError) as excinfo:
        register_task(ArithTask("arith-add", ("add",)))
    one_line(excinfo, "already registered")
    with pytest.raises(ValueError) as excinfo:
        ArithTask("arith-x", ("add", "div"))
    one_line(excinfo, "families must be", "compare")
    for task in TASKS.values():
        assert task.description and repr(task)
    knowledge = TASKS["knowledge"]
    assert "pre-training" in knowledge.description and "pre-training" in type(knowledge).__doc__
    for text in (knowledge.description, type(knowledge).__doc__):
        assert "held out" not in text.lower() and "held-out" not in text.lower(), text


def test_adding_a_task_is_one_line():
    pytest.importorskip("reasoning_gym")
    try:
        task = register_task(RGTask("lcm", {"max_value": 50}))
        assert get_task("rg-lcm") is task
        p = task.prompts("test", 3)[0]
        assert task.reward(f"The answer is {p.answer}.", p) == 1.0
    finally:
        TASKS.pop("rg-lcm", None)


@pytest.mark.parametrize(
    "split, n, seed, field",
    [("dev", 1, 0, "split"), ("train", -1, 0, "n"), ("train", 1.0, 0, "n"), ("test", 1, -2, "seed")],
)
def test_prompts_bad_input(split, n, seed, field):
    with pytest.raises(ValueError) as excinfo:
        get_task("arith").prompts(split, n, seed)
    one_line(excinfo, f"{field} must be")


def test_exhausted_space_says_so():
    with pytest.raises(ValueError) as excinfo:
        get_task("arith-linear").prompts("test", 5000)
    one_line(excinfo, "n=5000", "arith-linear")


# ----------------------------------------------------------------------------- prompts and splits


@pytest.mark.parametrize("name", ALL)
def test_prompts_deterministic_distinct_disjoint(name):
    needs(name)
    task = get_task(name)
    train, test = task.prompts("train", 150, seed=0), task.prompts("test", 150, seed=0)
    assert train == task.prompts("train", 150, seed=0)
    assert [p.uid for p in train] == [p.uid for p in task.prompts("train", 150, seed=0)]
    assert train[:10] != task.prompts("train", 10, seed=1)
    for split, prompts in (("train", train), ("test", test)):
        assert len({p.uid for p in prompts}) == len({problem_key(question(p)) for p in prompts}) == 150
        for p in prompts:
            assert p.task == name and p.meta["split"] == split == split_of(question(p))
            assert p.text.startswith("Problem: ") and p.text.endswith("\nSolution:\n") and p.answer
            assert task.reward(f"The answer is {p.answer}.", p) == 1.0 or name == "math-boxed"
    keys = lambda ps: {problem_key(question(p)) for p in ps}  # noqa: E731
    other_seeds = task.prompts("test", 150, seed=1) + task.prompts("test", 50, seed=7)
    assert not keys(train) & keys(test) and not keys(train) & keys(other_seeds)
    assert not keys(task.prompts("train", 150, seed=3)) & keys(test)


def test_arith_prompts():
    mix = get_task("arith").prompts("train", 60)
    assert sorted({p.meta["family"] for p in mix}) == sorted(f.removeprefix("arith-") for f in ARITH[:-1])
    assert sum(p.meta["family"] == "mul" for p in mix) == 10
    p = get_task("arith-add").prompts("test", 1)[0]
    assert p.text == f"Problem: {question(p)}\nSolution:\n"
    assert p.meta["solution"].endswith(f"The answer is {p.answer}.")
    assert get_task("arith-add").reward(p.meta["solution"], p) == 1.0


def test_arith_test_prompts_never_in_the_corpora():
    corpus_keys = {
        problem_key(doc.split("\n")[0].removeprefix("Problem: "))
        for name in ("pretrain-v2", "midtrain-v2")
        for doc in builtin_corpus(name, 2000)
        if is_reasoning_doc(doc)
    }
    assert len(corpus_keys) > 1000
    for name in [*ARITH, "arith-small", "math-boxed"]:
        for split in ("test", "train"):
            for p in get_task(name).prompts(split, 300 if name in ("arith", "math-boxed") else 120):
                assert is_heldout(question(p)) and problem_key(question(p)) not in corpus_keys, (name, p.text)


# ----------------------------------------------------------------------------- extraction and rewards


def test_arith_extraction_and_binary_reward():
    task = get_task("arith-sub")
    p = Prompt("arith-sub", "", "-12", "x")
    assert task.extract("10 - 22 = -12.\nThe answer is -12.") == "-12"
    assert task.reward("The answer is -12.", p) == 1.0
    assert task.reward("The answer is -12", p) == 0.0  # the period is part of the format
    assert task.reward("The answer is 12.", p, partial=True) == 0.0
    assert task.extract("no answer here") is None and task.reward("no answer here", p) == 0.0
    assert task.reward("The answer is -12. Problem: What is 1 + 1?\nThe answer is 2.", p) == 1.0  # first wins
    assert task.grade("The answer is 007.", Prompt("arith-add", "", "7", "x")) == ("7", True)
    assert task.grade("nothing", p) == (None, False)


def test_rg_extraction():
    pytest.importorskip("reasoning_gym")
    task = get_task("rg-chain_sum")
    assert task.extract("The answer is -12.") == "-12"
    assert task.extract("The answer is 1,234.") == "1234"
    assert task.extract("The answer is +5.") == "5"
    assert task.extract("The answer is 3.5.") == "3.5"
    assert task.extract("12 + 30 = 42, then 42 - 1 = 41") == "41"  # fallback: the last number
    assert task.extract("The answer is 5.\nProblem: 2 + 2?\nThe answer is 4.") == "5"
    assert task.extract("I do not know.") is None
    p = task.prompts("test", 1)[0]
    assert task.reward("I do not know.", p) == 0.0 == task.reward("I do not know.", p, partial=True)
    assert task.reward(f"The answer is {p.answer}.", p) == 1.0
    assert canonical_number("+01,000.50") == "1000.5" and canonical_number("-0") == "0"
    assert canonical_number("abc") is None and canonical_number("nan") is None


@pytest.mark.parametrize("name", RG)
def test_rg_reward_binary_vs_partial(name):
    pytest.importorskip("reasoning_gym")
    task = get_task(name)
    p = task.prompts("train", 1, seed=2)[0]
    near_miss = f"The answer is {p.answer}1."  # contains the oracle: reasoning-gym gives partial credit
    partial = task.reward(near_miss, p, partial=True)
    assert 0.0 < partial < 1.0, partial
    assert partial == pytest.approx(len(p.answer) / (len(p.answer) + 1))
    assert task.reward(near_miss, p) == 0.0
    assert task.reward(f"The answer is {p.answer}.", p, partial=True) == 1.0
    wrong = next(d for d in "123456789" if d not in p.answer) * 3  # does not contain the oracle
    assert (
        task.reward(f"The answer is {wrong}.", p)
        == task.reward(f"The answer is {wrong}.", p, partial=True)
        == 0.0
    )


def test_math_boxed():
    pytest.importorskip("math_verify")
    task = get_task("math-boxed")
    p = task.prompts("test", 1)[0]
    assert p.text.endswith("Put the final answer in \\boxed{}.\nSolution:\n")
    assert task.reward(f"So the result is $\\boxed{{{p.answer}}}$.", p) == 1.0
    assert task.reward(f"The answer is {p.answer}.", p) == 0.0  # no box, no credit
    half = Prompt("math-boxed", "", "0.5", "x")
    assert task.extract("first \\boxed{3}, then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert task.extract("\\boxed{\\frac{1}{2}") is None
    for completion in ("\\boxed{\\frac{1}{2}}", "\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{\\dfrac{1}{2}}"):
        assert task.reward(completion, half) == 1.0, completion
    assert task.reward("\\boxed{\\frac{1}{3}}", half) == 0.0
    assert task.reward("\\boxed{8}", Prompt("math-boxed", "", "7", "x")) == 0.0
    assert task.extract("\\boxed{ }") is None
    for same in ("\\frac{1}{2}", "0.5", "1/2", "\\frac12", "x = 0.5", "\\dfrac{3}{6}"):
        assert task.normalize(same) == "1/2", same
    assert task.normalize("7.0") == "7" and task.normalize("2/0") == "2/0"
    assert task.normalize("\\sqrt{2}") == "\\sqrt{2}"
    out: list[float] = []  # verify_math works from threads (tests/test_tasks_math.py)
    thread = threading.Thread(target=lambda: out.append(task.reward("\\boxed{0.5}", half)))
    thread.start()
    thread.join()
    assert out == [1.0]


# ----------------------------------------------------------------------------- TRL adapter


def test_reward_fn_doctest_and_adapter():
    pytest.importorskip("reasoning_gym")
    failures, tried = doctest.testmod(tasks_module, verbose=False)
    assert tried >= 2 and failures == 0
    fn = reward_fn(get_task("arith-add"))
    assert fn.__name__ == "arith_add_reward"
    conversational = [[{"role": "assistant", "content": "The answer is 9."}], []]
    assert fn(conversational, answer=["9", "9"], prompts=["a", "b"], uid=["u", "v"]) == [1.0, 0.0]
    mixed = reward_fn(partial=True)
    rows = [get_task(n).prompts("train", 1)[0].row() for n in ("arith-add", "rg-gcd")]
    completions = [f"The answer is {rows[0]['answer']}.", f"The answer is {rows[1]['answer']}1."]
    got = mixed(completions, answer=[r["answer"] for r in rows], task=[r["task"] for r in rows])
    assert got[0] == 1.0 and 0.0 < got[1] < 1.0
    with pytest.raises(ValueError) as excinfo:
        fn(["The answer is 9."], answer=["9", "9"])
    one_line(excinfo, "answer must be a list")
    with pytest.raises(ValueError) as excinfo:
        reward_fn()(["The answer is 9."], answer=["9"])
    one_line(excinfo, "task must be given")


def test_grade_feeds_summarize():
    from shapedce.eval import summarize

    task = get_task("arith-mul")
    prompts = task.prompts("test", 2)
    wrong = lambda p: f"The answer is {int(p.answer) + 1}."  # noqa: E731
    right = lambda p: f"x\nThe answer is {p.answer}."  # noqa: E731
    samples = [
        [right(prompts[0]), wrong(prompts[0]), "no answer", right(prompts[0])],
        [wrong(prompts[1]), wrong(prompts[1]), right(prompts[1]), "?"],
    ]
    out = summarize([[task.grade(c, p) for c in group] for p, group in zip(prompts, samples)])
    assert (
        out["avg_at_m"] == pytest.approx(3 / 8) and out["cons_at_m"] == 0.5 and out["pass_at_k"]["4"] == 1.0
    )
