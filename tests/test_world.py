"""The built-in world v2 (data.corpus=builtin-v2): general text statistics, agreement, context,
held-out problems (the `small` family of the default RL), the tiny preset and model.vocab_size.

python -m pytest tests/test_world.py -q        # CPU, ~30 s
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import pytest

from shapedce.config import load_config
from shapedce.data import builtin_corpus, is_heldout, is_reasoning_doc, knowledge_probes
from shapedce.data.corpus import MIXES, SMALL_SHARE
from shapedce.data.problems import generate_problem, problem_key
from shapedce.data.world import CLASS_SIZES, TOPICS, GeneralText, general_text, zipf_slope
from shapedce.errors import UserError


@pytest.fixture(scope="module")
def gen() -> GeneralText:
    return general_text(0)


@pytest.fixture(scope="module")
def stats(gen) -> dict[str, float]:
    return gen.measure(n_docs=1500)


def test_general_text_has_natural_language_statistics(stats):
    # measured at seed 0 (2000 docs): 4.57 nats/word, slope -0.91, 7,300 forms, tail_100 0.21 per word
    assert stats["nats_per_word"] > 3.5
    assert -1.2 < stats["zipf_slope"] < -0.7
    assert stats["word_forms"] > 5000
    assert 0.4 < stats["content_share"] < 0.7
    # an ideal model that knows the topic still leaves this mass beyond its top-100 words
    assert stats["tail_100"] > 0.1 and stats["tail_20"] > stats["tail_100"]


def test_zipf_slope_recovers_a_known_law():
    counts = {f"w{r}": round(1e6 / r) for r in range(1, 2001)}
    assert zipf_slope(Counter(counts)) == pytest.approx(-1.0, abs=0.01)
    with pytest.raises(UserError, match="need more than 11 distinct words"):
        zipf_slope(Counter({"a": 3, "b": 1}))


def test_topic_helps_but_does_not_determine(gen):
    for cls, size in CLASS_SIZES.items():
        tables = [gen.words[cls, t] for t in range(TOPICS)]
        probs = [[b - a for a, b in zip((0.0, *c.cum[:-1]), c.cum)] for c in tables]
        stems = tables[0].items
        assert all(c.items == stems for c in tables) and len(stems) == size
        marginal = [sum(p[i] for p in probs) / TOPICS for i in range(size)]
        h_marginal = -sum(p * math.log(p) for p in marginal)
        h_topic = sum(c.entropy for c in tables) / TOPICS
        assert h_marginal - h_topic > 0.3, cls  # knowing the topic removes real uncertainty (MI)
        assert h_topic > 3.0, cls  # and leaves most of it


def test_agreement(gen):
    rng = random.Random(5)
    docs = [gen.document(rng) for _ in range(400)]
    words = [w.strip(".,").lower() for d in docs for w in d.split()]
    pairs = list(zip(words, words[1:]))
    assert all(not b.endswith("s") for a, b in pairs if a == "they")
    assert all(b.endswith(("s", "ed", "d")) for a, b in pairs if a == "it")
    assert all(b[0] in "aeiou" for a, b in pairs if a == "an")
    assert all(b[0] not in "aeiou" for a, b in pairs if a == "a")
    there = [(b, c) for a, b, c in zip(words, words[1:], words[2:]) if a == "there"]
    singular, plural = {"the", "a", "an", "this", "that", "every", "one"}, {"the", "some", "these"}
    plural |= {"those", "many", "two", "all"}
    assert there and all(c in (singular if b in ("is", "was") else plural) for b, c in there)
    for d in docs:  # one tense per document
        tenses = {w for w in re.findall(r"\b(is|are|was|were)\b", d.lower())}
        assert not (tenses & {"is", "are"} and tenses & {"was", "were"}), d
    assert all(len(d) < 600 and d.count(".") >= 2 for d in docs)


def test_deterministic_by_seed():
    a, b = GeneralText(1), GeneralText(1)
    assert a.lexicon == b.lexicon != GeneralText(2).lexicon
    assert a.document(random.Random(3)) == b.document(random.Random(3))
    stems = [w for ws in a.lexicon.values() for w in ws]
    assert len(set(stems)) == len(stems) and not any(w.endswith("s") for w in stems)
    with pytest.raises(UserError, match="n_docs must be an integer >= 1"):
        a.measure(0)


def test_v2_corpora_mix_and_heldout():
    for name in ("pretrain-v2", "midtrain-v2"):
        assert sum(MIXES[name].values()) == pytest.approx(1.0)
        docs = builtin_corpus(name, 800, seed=0)
        assert docs == builtin_corpus(name, 800, seed=0) != builtin_corpus(name, 800, seed=0, split="val")
        share = sum(map(is_reasoning_doc, docs)) / len(docs)
        assert share == pytest.approx(MIXES[name].get("short", 0) + MIXES[name]["worked"])
        prompts = [d.split("\n", 1)[0][len("Problem: ") :] for d in docs if is_reasoning_doc(d)]
        assert len(prompts) > 150 and not any(is_heldout(p) for p in prompts)
        # the facts are kept beside the general text
        assert any(d.startswith("Question: ") for d in docs)
    probes = knowledge_probes(0, 10, n_docs=400, corpus="pretrain-v2")
    assert len(probes) == 10
    with pytest.raises(UserError, match="unknown corpus 'x'"):
        knowledge_probes(0, 10, n_docs=400, corpus="x")


def test_small_family_reads_at_fixed_offsets_and_keeps_every_step_nonnegative():
    rng = random.Random(0)
    for _ in range(300):
        p = generate_problem("small", rng)
        m = re.fullmatch(r"What is (\d) ([+-]) (\d) ([+-]) (\d)\?", p.prompt)
        assert m, p.prompt  # one-digit operands: every operand sits at the same offset in every prompt
        a, o1, b, o2, c = m.groups()
        s = int(a) + int(b) if o1 == "+" else int(a) - int(b)
        t = s + int(c) if o2 == "+" else s - int(c)
        assert s >= 0 and t >= 0 and p.answer == str(t)
        assert p.solution == f"{a} {o1} {b} = {s}.\n{s} {o2} {c} = {t}.\nThe answer is {t}."


def test_heldout_small_problems_never_appear_in_either_v2_corpus():
    from shapedce.tasks import get_task

    small_re = r"What is \d [+-] \d [+-] \d\?"
    docs = []
    for name in ("pretrain-v2", "midtrain-v2"):
        corpus = builtin_corpus(name, 3000)
        prompts = [d.split("\n", 1)[0][len("Problem: ") :] for d in corpus if is_reasoning_doc(d)]
        share = sum(bool(re.fullmatch(small_re, p)) for p in prompts) / len(prompts)
        assert abs(share - SMALL_SHARE[name]) < 0.05  # the rest are the six classic families
        docs += corpus
    prompts = [d.split("\n", 1)[0][len("Problem: ") :] for d in docs if is_reasoning_doc(d)]
    corpus_keys = {problem_key(p) for p in prompts}
    task = get_task("arith-small")
    rl, val, test = task.prompts("train", 198), task.prompts("val", 95), task.prompts("test", 180)
    keys = [problem_key(p.text.split("\n", 1)[0][len("Problem: ") :]) for p in rl + val + test]
    assert len(set(keys)) == 473 and not corpus_keys & set(keys)  # RL, tuning, eval prompts: in no corpus
    assert all(is_heldout(p.text.split("\n", 1)[0][len("Problem: ") :]) for p in rl + val + test)
    # ... while the corpora's worked solutions show nearly every one-digit step their solutions take
    seen = {m for d in docs for m in re.findall(r"^\d+ [+-] \d = \d+\.$", d, re.M)}
    steps = [line for p in test for line in p.meta["solution"].split("\n")[:2]]
    assert sum(line in seen for line in steps) / len(steps) > 0.95


def test_midtrain_v2_works_every_problem_out_and_all_are_small():
    docs = [d for d in builtin_corpus("midtrain-v2", 600, seed=0) if is_reasoning_doc(d)]
    assert len(docs) == 480  # 80% worked, no short answers
    for d in docs:
        assert re.fullmatch(
            r"Problem: What is \d [+-] \d [+-] \d\?\nSolution:\n(.+\n){2}The answer is \d+\.", d
        ), d


def test_tiny_preset_is_the_world_v2_of_the_default_grid():
    from shapedce.reproduce.grid import load_grid
    from shapedce.train.rl_config import load_rl_config

    tiny = load_config("tiny")
    assert tiny.model.vocab_size == 8192 and tiny.data.corpus == tiny.midtrain.corpus == "builtin-v2"
    assert load_config("tiny", ["loss=tail"]).loss.k == 100  # the paper's k needs no override
    grid = load_grid("tiny")  # the default grid pre-trains with exactly `shapedce pretrain --preset tiny`
    assert grid.pretrain == tiny and grid.rl == load_rl_config("tiny")
    with pytest.raises(UserError, match=r"model.vocab_size must be in \[0, 4194304\]"):
        load_config("tiny", ["model.vocab_size=-1"])


def test_prepare_data_uses_vocab_size_and_v2(tmp_path):
    from shapedce.train.lm_data import corpus_texts, prepare_data

    cfg = load_config("smoke", ["data.corpus=builtin-v2", "model.vocab_size=700", "data.n_docs=200"])
    train, val = corpus_texts(cfg)
    assert len(train) == 200 and len(val) == cfg.data.val_docs
    assert sum(not is_reasoning_doc(d) and "Question:" not in d for d in train) > 100
    tok, train_seqs, val_seqs, vocab = prepare_data(cfg, tmp_path)
    assert vocab == 700 and len(tok) <= 700 and len(train_seqs) > 0 and len(val_seqs) > 0


def test_bpe_at_v8192_keeps_general_words_whole(gen):
    # why the tiny preset takes V = 8192: the tail beyond the top-100 tokens is then made of whole words
    from shapedce.data import train_tokenizer

    tok = train_tokenizer(builtin_corpus("pretrain-v2", 3000, seed=0), 8192)
    rng = random.Random(9)
    words = Counter(w.strip(".,").lower() for _ in range(150) for w in gen.document(rng).split())
    single = sum(n for w, n in words.items() if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1)
    assert single / sum(words.values()) > 0.85
    small = train_tokenizer(builtin_corpus("pretrain-v2", 3000, seed=0), 2048)
    single = sum(
        n for w, n in words.items() if len(small(" " + w, add_special_tokens=False)["input_ids"]) == 1
    )
    assert single / sum(words.values()) < 0.8


def test_small_space_is_finite_and_tasks_report_their_size():
    """Regression: the default grid asked knowledge for 128 test prompts; it has 92, and eval failed."""
    from shapedce.data.problems import small_prompts
    from shapedce.tasks import get_task

    rng = random.Random(1)
    drawn = {generate_problem("small", rng).prompt for _ in range(60_000)}
    assert drawn == set(small_prompts()) and len(drawn) == 2605
    for name, size in (("arith-small", 180), ("knowledge", 92)):
        task = get_task(name)
        assert task.size == size and len(task.prompts("test", size)) == size
        with pytest.raises(UserError, match=f"more test prompts than task '{name}' yields"):
            task.prompts("test", size + 1)
    assert get_task("arith-add").size is None
