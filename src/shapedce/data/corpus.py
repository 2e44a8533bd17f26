"""Built-in corpora, generated offline and deterministic by seed: a fact base, arithmetic with
worked solutions, and a held-out partition of problems for RL and evaluation.

    from shapedce.data.corpus import builtin_corpus, knowledge_probes, heldout_problems
    docs = builtin_corpus("pretrain-v2", n_docs=5000, seed=0)  # or "midtrain-v2"
    probes = knowledge_probes(seed=0, n=100, n_docs=5000)       # (prompt, answer): recall of stated facts
    problems = heldout_problems("add", n=200, seed=0)           # never in any corpus

Print examples and the measured reasoning shares (CPU, a second): python -m shapedce.data.corpus

The world is small on purpose (tiny models, minutes of CPU training): invented cities (country,
river, founder, flag color, founding year) and people (home city, job, pet), three paraphrases
per fact, short documents. Every document is one of these kinds:

    kind     content                                                pretrain-v2  midtrain-v2
    general  grammar over a Zipfian lexicon (world.py)                   50 %          6 %
    profile  all facts of one entity (round-robin)                       12 %          5 %
    quiz     "Question: ...\\nAnswer: ..." about 2-3 facts                  6 %          4 %
    story    a short narrative about a person, true to facts              6 %          3 %
    world    two cities compared (country, founding year)                 4 %          2 %
    short    "Problem: ...\\nThe answer is N."                             13 %          -
    worked   "Problem: ...\\nSolution:\\n<steps>The answer is N."           9 %         80 %

Reasoning share (short + worked = documents starting "Problem:"): pretrain-v2 22 %, midtrain-v2 80 %,
exact (largest-remainder quotas, then a seeded shuffle). These are world v2 (`data.corpus=builtin-v2`,
the default; world v1, without general text, was removed): general text whose next-token
distributions carry real entropy, so the loss's knobs have something to act on, and half of
pretrain-v2's problems and all of midtrain-v2's from the `small` family (`SMALL_SHARE`), the default
RL family; midtrain-v2 works every problem out step by step.
The paper's mid-training is ~5 % synthetic and raises the reasoning share;
here all is synthetic and midtrain replays the pretrain kinds.

Knowledge vs reasoning: `knowledge_probes` asks about facts the pretrain corpus states. Corpora
only hold problems outside the held-out 20 % of the problem space (`is_heldout`, a content hash);
RL and evaluation take problems from `heldout_problems` only.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from .problems import PROBLEM_FAMILIES, check_int, generate_problem, heldout_problems, is_heldout
from .world import general_text

# ----------------------------------------------------------------------------- fact base

COUNTRIES = ("Varland", "Osteria", "Kelmar", "Duvania", "Pransk", "Lumeria", "Tarsova", "Zelind")
RIVERS = ("Tamsa", "Orvel", "Lisk", "Brana", "Mure", "Dolva", "Senn", "Karo", "Vela", "Rhun")
COLORS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple")
JOBS = ("baker", "teacher", "farmer", "sailor", "doctor", "painter", "miner", "weaver", "potter", "singer")
PETS = ("cat", "dog", "horse", "goat", "parrot", "rabbit", "turtle", "pony")
FIRST = (
    "Ana",
    "Bela",
    "Cato",
    "Dara",
    "Emil",
    "Fena",
    "Gido",
    "Hana",
    "Ivo",
    "Jana",
    "Kira",
    "Lev",
    "Mila",
    "Nico",
    "Oda",
    "Pavo",
    "Rina",
    "Sami",
    "Tova",
    "Ugo",
    "Vera",
    "Wim",
    "Yara",
    "Zeno",
)
LAST = ("Vell", "Moro", "Tansk", "Brio", "Kade", "Lorn", "Pesk", "Dunn", "Savo", "Rell", "Hirt", "Gaal")
SYL1 = (
    "Bel",
    "Tor",
    "Mar",
    "Kes",
    "Dun",
    "Sol",
    "Var",
    "Lin",
    "Ost",
    "Pel",
    "Ran",
    "Hal",
    "Fen",
    "Gor",
    "Nim",
    "Ul",
)
# everyday scenes in stories: word choices follow a Zipf law (weight 1/rank), so some positions
# have skewed, natural-language-like next-token distributions, where beta's effect shows
SCENE = {
    "verb": ("bought", "saw", "found", "sold", "made", "lost", "painted", "carried", "cleaned", "wanted"),
    "adj": ("small", "old", "new", "big", "red", "quiet", "strange", "heavy", "bright", "round"),
    "noun": ("basket", "boat", "lamp", "book", "coat", "chair", "bell", "cup", "rope", "kite", "drum", "map"),
    "place": (
        "at the market",
        "near the river",
        "in the square",
        "by the gate",
        "on the hill",
        "at the harbor",
    ),
}
SYL2 = ("mora", "vik", "dale", "holm", "bury", "stad", "mere", "wick", "ford", "gate", "lund", "port")

N_ENTITIES = 48
"""Default size of the fact base: half cities (5 facts each), half people (3 facts each)."""
MAX_ENTITIES = len(SYL1) * len(SYL2)

STATEMENTS: dict[str, tuple[str, ...]] = {
    "country": ("{e} is a city in {v}.", "The city of {e} lies in {v}.", "{e} is located in {v}."),
    "river": (
        "The river {v} flows through {e}.",
        "{e} stands on the river {v}.",
        "{e} was built on the river {v}.",
    ),
    "founder": ("{e} was founded by {v}.", "The founder of {e} was {v}.", "{v} founded the city of {e}."),
    "color": ("The flag of {e} is {v}.", "{e} has a {v} flag.", "The people of {e} fly a {v} flag."),
    "year": (
        "{e} was founded in {v}.",
        "The city of {e} dates from {v}.",
        "In {v}, the city of {e} was founded.",
    ),
    "home": ("{e} lives in {v}.", "{e} is from {v}.", "The home of {e} is the city of {v}."),
    "job": ("{e} works as a {v}.", "{e} is a {v}.", "By trade, {e} is a {v}."),
    "pet": ("{e} has a pet {v}.", "{e} keeps a {v} at home.", "The pet of {e} is a {v}."),
}
QUESTIONS: dict[str, str] = {
    "country": "Which country is {e} in?",
    "river": "Which river flows through {e}?",
    "founder": "Who founded {e}?",
    "color": "What color is the flag of {e}?",
    "year": "In which year was {e} founded?",
    "home": "Where does {e} live?",
    "job": "What is the job of {e}?",
    "pet": "What pet does {e} have?",
}


@dataclass(frozen=True, slots=True)
class Fact:
    """One stated fact of the synthetic world: `entity`'s `attribute` is `value`."""

    entity: str
    attribute: str
    """A key of STATEMENTS, e.g. "country"."""
    value: str

    def statement(self, variant: int = 0) -> str:
        """The fact as a sentence; `variant` picks one of the paraphrase templates (cyclic)."""
        return STATEMENTS[self.attribute][variant % 3].format(e=self.entity, v=self.value)

    def question(self) -> str:
        return QUESTIONS[self.attribute].format(e=self.entity)

    def probe(self) -> tuple[str, str]:
        """(prompt, expected answer) in the quiz format the corpora use."""
        return f"Question: {self.question()}\nAnswer:", self.value


@functools.lru_cache(maxsize=8)
def _world(seed: int, n_entities: int) -> tuple[tuple[str, ...], dict[str, dict[str, str]], tuple[Fact, ...]]:
    """(entity order, entity -> {attribute: value}, facts) for one seed."""
    check_int("n_entities", n_entities, 2, MAX_ENTITIES)
    rng = random.Random(f"facts:{seed}")
    n_cities = (n_entities + 1) // 2
    cities = rng.sample([a + b for a in SYL1 for b in SYL2], n_cities)
    names = rng.sample([f"{a} {b}" for a in FIRST for b in LAST], n_entities)  # people + founders
    people, founders = names[: n_entities - n_cities], names[n_entities - n_cities :]
    table: dict[str, dict[str, str]] = {}
    for city, founder in zip(cities, founders):
        table[city] = {
            "country": rng.choice(COUNTRIES),
            "river": rng.choice(RIVERS),
            "founder": founder,
            "color": rng.choice(COLORS),
            "year": str(rng.randint(1100, 1900)),
        }
    for person in people:
        table[person] = {"home": rng.choice(cities), "job": rng.choice(JOBS), "pet": rng.choice(PETS)}
    order = [*cities, *people]
    rng.shuffle(order)
    facts = tuple(Fact(e, a, v) for e in order for a, v in table[e].items())
    return tuple(order), table, facts


def fact_base(seed: int = 0, n_entities: int = N_ENTITIES) -> list[Fact]:
    """All facts of the seed's world, grouped by entity in the order profile documents visit them."""
    return list(_world(seed, n_entities)[2])


# ----------------------------------------------------------------------------- corpora

MIXES: dict[str, dict[str, float]] = {
    # world v2 (data.corpus=builtin-v2): "general" text (shapedce.data.world) beside facts and problems
    "pretrain-v2": {
        "general": 0.50,
        "profile": 0.12,
        "quiz": 0.06,
        "story": 0.06,
        "world": 0.04,
        "short": 0.13,
        "worked": 0.09,
    },
    "midtrain-v2": {
        "general": 0.06,
        "profile": 0.05,
        "quiz": 0.04,
        "story": 0.03,
        "world": 0.02,
        "worked": 0.80,
    },
}
"""Share of each document kind per corpus (see the module docstring)."""
CORPORA = tuple(MIXES)


SMALL_SHARE = {"pretrain-v2": 0.5, "midtrain-v2": 1.0}
"""Share of each v2 corpus's problems drawn from the `small` family (three one-digit numbers, the
default grid's RL family); the rest are the six classic families, evenly. Mid-training concentrates on
it: a ~1M-parameter model learns to read its operands from the prompt (copy them into the worked
steps) only when such documents are dense; diluted among general text it stays at chance for 800
steps (docs/history/2026-11-30-world-v2.md)."""


def is_reasoning_doc(doc: str) -> bool:
    """True for arithmetic documents (short answers or worked solutions)."""
    return doc.startswith("Problem: ")


def _quotas(mix: dict[str, float], n_docs: int) -> dict[str, int]:
    """Largest-remainder rounding of share * n_docs; ties go to the kind listed first."""
    raw = {k: share * n_docs for k, share in mix.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(mix, key=lambda k: counts[k] - raw[k])[: n_docs - sum(counts.values())]:
        counts[k] += 1
    return counts


def builtin_corpus(name: str, n_docs: int, seed: int = 0, split: str = "train") -> list[str]:
    """`n_docs` short documents of the built-in corpus `name` ("pretrain-v2" or "midtrain-v2").

    `seed` fixes the world (the fact base); `split` ("train", "val", ...) draws another sample of
    documents about the same world, e.g. a validation set of the same distribution.
    """
    if name not in MIXES:
        raise UserError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    check_int("n_docs", n_docs, 1)
    order, table, facts = _world(seed, N_ENTITIES)  # the world depends on the seed only
    by_entity = {e: [f for f in facts if f.entity == e] for e in order}
    cities, people = ([e for e in order if attr in table[e]] for attr in ("country", "home"))
    rng = random.Random(f"{name}:{seed}" if split == "train" else f"{name}:{seed}:{split}")
    kinds = [k for k, c in _quotas(MIXES[name], n_docs).items() for _ in range(c)]
    rng.shuffle(kinds)
    profiled = itertools.cycle(order)  # profiles visit entities round-robin: knowledge_probes relies on it

    def profile() -> str:
        return " ".join(f.statement(rng.randrange(3)) for f in by_entity[next(profiled)])

    def quiz() -> str:
        return "\n".join(
            f"Question: {f.question()}\nAnswer: {f.value}." for f in rng.sample(facts, rng.randint(2, 3))
        )

    def story() -> str:
        p = rng.choice(people)
        home, job, pet = table[p]["home"], table[p]["job"], table[p]["pet"]
        c = table[home]
        extra = [
            f"{p} works as a {job} in {home}.",
            f"Every morning, {p} walks along the river {c['river']}.",
            f"{p} has a pet {pet}. The {pet} likes to sleep in the sun.",
            f"On holidays, {p} hangs a {c['color']} flag, the flag of {home}.",
            f"{home} is in {c['country']}, so {p} lives in {c['country']}.",
        ]
        picks = sorted(rng.sample(range(len(extra)), rng.randint(2, 3)))
        w = {k: rng.choices(v, [1 / (i + 1) for i in range(len(v))])[0] for k, v in SCENE.items()}
        scene = (
            f"{p} {w['verb']} {'an' if w['adj'][0] in 'aeiou' else 'a'} {w['adj']} {w['noun']} {w['place']}."
        )
        return " ".join([f"{p} lives in {home}.", *(extra[i] for i in picks), scene])

    def problem(worked: bool) -> str:
        family = "small" if rng.random() < SMALL_SHARE[name] else rng.choice(PROBLEM_FAMILIES)
        while is_heldout((p := generate_problem(family, rng)).prompt):  # held out: never in a corpus
            pass
        return p.doc(worked)

    def world() -> str:
        a, b = rng.sample(cities, 2)
        (ca, ya), (cb, yb) = ((table[x]["country"], table[x]["year"]) for x in (a, b))
        first = (
            f"{a} and {b} are both cities in {ca}." if ca == cb else f"{a} is in {ca}, but {b} is in {cb}."
        )
        if ya == yb:
            return f"{first} Both were founded in {ya}."
        return (
            f"{first} {a} was founded in {ya} and {b} in {yb}, so {a if int(ya) < int(yb) else b} is older."
        )

    writers: dict[str, Callable[[], str]] = {
        "profile": profile,
        "quiz": quiz,
        "story": story,
        "world": world,
        "short": lambda: problem(worked=False),
        "worked": lambda: problem(worked=True),
        "general": lambda: general_text(seed).document(rng),
    }
    return [writers[kind]() for kind in kinds]


def knowledge_probes(
    seed: int = 0, n: int = 100, n_docs: int | None = None, corpus: str = "pretrain-v2"
) -> list[tuple[str, str]]:
    """`n` distinct (prompt, answer) recall probes about facts the seed's pretrain corpus states.

    With `n_docs`, only facts of entities profiled in builtin_corpus(corpus, n_docs, seed)
    (profiles visit entities round-robin); without it, any fact of the base (all are stated once
    n_docs >= N_ENTITIES / 0.20). The answer is the fact's value, e.g. "Varland".
    """
    order, _, facts = _world(seed, N_ENTITIES)
    covered = set(order)
    if n_docs is not None:
        check_int("n_docs", n_docs, 1)
        if corpus not in MIXES:
            raise UserError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
        covered = set(order[: _quotas(MIXES[corpus], n_docs)["profile"]])
    pool = [f for f in facts if f.entity in covered]
    check_int("n (at most the facts the corpus states)", n, 0, len(pool))
    return [f.probe() for f in random.Random(f"probes:{seed}").sample(pool, n)]


if __name__ == "__main__":
    for name in CORPORA:
        docs = builtin_corpus(name, 2000)
        print(
            f"== {name}: reasoning share {sum(map(is_reasoning_doc, docs)) / len(docs):.1%}",
            *docs[:3],
            sep="\n\n",
        )
    print("== probe:", knowledge_probes(0, 1)[0], "held out:", heldout_problems("add", 1)[0].prompt)
