"""General text of the built-in world v2: a probabilistic grammar over a Zipfian lexicon of invented
words, with agreement and topic-dependent word choice, so next-token distributions have real entropy.

    import random
    from shapedce.data.world import GeneralText
    gen = GeneralText(seed=0)
    doc = gen.document(random.Random(1))        # one paragraph, < 600 characters
    gen.measure(n_docs=2000)                    # entropy per word, tail mass beyond top-k, Zipf slope

Print examples and the measured statistics (CPU, a few seconds): python -m shapedce.data.world

Lexicon: 2000 nouns, 800 verbs, 600 adjectives, invented from syllables by seed (forms:
noun / noun+s, verb / verb+s / verb+ed, adjective / adjective+ly): 7,600 possible word
forms, 7,268 of them seen in 2,000 paragraphs.
Shorter stems get the frequent ranks (Zipf's law of abbreviation). Word choice within a class
follows p_t = (1 - TOPIC_SHARE) * zipf + TOPIC_SHARE * zipf permuted by topic t, with
zipf(r) ~ 1 / (r + 1): each document has one of TOPICS topics, so earlier words tell which words
are likely later (context helps) without fixing them (it does not determine).

Grammar (weights in SENTENCES): simple clauses, clause + conjunction + clause, "When ..., ...",
"There is / are ...", "NP is / are ADJ", and pronoun continuations "It / They ..." that refer to
the previous subject. Agreement: determiner, noun and verb number (a / these, -s), "a" / "an"
before a vowel, is / are / was / were, and one tense (present or past) per document.

What `measure` reports is exact bookkeeping of the generator, not an estimate from a model: the
entropy of every choice it makes (structure and words) per emitted word, and for every emitted
content word the probability mass outside the k most likely words of the distribution it was drawn
from (the word-level tail an ideal model that knows the topic would leave beyond its top-k).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass, field

from ..errors import UserError, check_int

TOPICS = 16
TOPIC_SHARE = 0.6
"""Weight of the topic's own ranking in every content-word distribution (the rest is shared)."""
CLASS_SIZES = {"noun": 2000, "verb": 800, "adj": 600}
TRANSITIVE_SHARE = 0.65
TAIL_KS = (20, 100)
"""k values for which `measure` reports the word-level tail mass."""
MAX_CHARS = 590

ONSETS = ("", "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "t", "v", "z", "sh", "tr", "br", "pl")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "n", "r", "l", "m", "k")
FUNCTION_WORDS = frozenset(
    "a an the this that these those every one some many two three all in on with near under behind "
    "from for about over at and but because so while when it they is are was were there".split()
)

DET = {True: (("the", 6), ("a", 4), ("this", 1), ("that", 1), ("every", 0.5), ("one", 0.5))}
DET[False] = (("the", 6), ("some", 2), ("these", 1), ("those", 1), ("many", 1), ("two", 1), ("all the", 0.5))
PREPS = (("in", 5), ("on", 3), ("with", 3), ("near", 1.5), ("from", 1.5), ("for", 1.2), ("about", 1))
PREPS += (("under", 0.8), ("behind", 0.6), ("over", 0.6), ("at", 0.5))
CONJ = (("and", 5), ("but", 2), ("because", 1.5), ("so", 1), ("while", 0.8))
SENTENCES = (("simple", 40), ("compound", 18), ("when", 8), ("there", 8), ("predicate", 10), ("pronoun", 16))


@dataclass(frozen=True, slots=True)
class Choice:
    """A categorical distribution with what `measure` needs: its entropy and tail masses."""

    items: tuple
    cum: tuple[float, ...]
    entropy: float
    tail: tuple[float, ...]
    """Mass outside the TAIL_KS[i] most likely items."""

    @classmethod
    def of(cls, pairs) -> Choice:
        items, weights = zip(*pairs)
        total = float(sum(weights))
        probs = [w / total for w in weights]
        ranked = sorted(probs, reverse=True)
        entropy = -sum(p * math.log(p) for p in probs if p > 0)
        tail = tuple(max(0.0, 1.0 - sum(ranked[:k])) for k in TAIL_KS)
        return cls(tuple(items), tuple(itertools.accumulate(probs)), entropy, tail)

    def draw(self, rng: random.Random, acc: Tally):
        acc.nats += self.entropy
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.items[min(i, len(self.items) - 1)]


@dataclass(slots=True)
class Tally:
    """Running totals of one generation: choice entropy (nats), words, content words, tail sums."""

    nats: float = 0.0
    words: int = 0
    content: int = 0
    tail: list[float] = field(default_factory=lambda: [0.0] * len(TAIL_KS))


def _bernoulli(p: float) -> Choice:
    return Choice.of(((True, p), (False, 1 - p)))


def _lexicon(seed: int) -> dict[str, list[str]]:
    """Class -> stems, most frequent first; stems are distinct, not function words, never end in s."""
    rng = random.Random(f"lexicon:{seed}")
    syllables = sorted({o + v + c for o in ONSETS for v in VOWELS for c in CODAS})
    pool: list[str] = []
    for n_syl in (1, 2, 3):
        words = {"".join(rng.choice(syllables) for _ in range(n_syl)) for _ in range(3000 * n_syl)}
        fresh = sorted(w for w in words if w not in FUNCTION_WORDS and len(w) > 1 and w not in pool)
        rng.shuffle(fresh)
        pool += fresh
    seen: set[str] = set()
    pool = [w for w in pool if not (w in seen or seen.add(w))]
    # interleave classes by relative rank, so each class gets short stems at its top ranks
    slots = sorted((r / n, c) for c, n in CLASS_SIZES.items() for r in range(n))
    out: dict[str, list[str]] = {c: [] for c in CLASS_SIZES}
    for (_, c), stem in zip(slots, pool):
        out[c].append(stem)
    if any(len(out[c]) < n for c, n in CLASS_SIZES.items()):
        raise UserError("internal: the syllable pool is too small for the lexicon")
    return out


class GeneralText:
    """The seed's lexicon, topic distributions and grammar; `document(rng)` writes one paragraph."""

    def __init__(self, seed: int = 0):
        check_int("seed", seed)
        self.seed = seed
        self.lexicon = _lexicon(seed)
        rng = random.Random(f"topics:{seed}")
        self.verb_transitive = {v: rng.random() < TRANSITIVE_SHARE for v in self.lexicon["verb"]}
        self.words: dict[tuple[str, int], Choice] = {}
        for cls, stems in self.lexicon.items():
            zipf = [1.0 / (r + 1) for r in range(len(stems))]
            for t in range(TOPICS):
                perm = list(range(len(stems)))
                rng.shuffle(perm)
                weights = [
                    (1 - TOPIC_SHARE) * zipf[r] + TOPIC_SHARE * zipf[perm[r]] for r in range(len(stems))
                ]
                self.words[cls, t] = Choice.of(zip(stems, weights))
        self.topic = Choice.of((t, 1) for t in range(TOPICS))
        self.det = {n: Choice.of(DET[n]) for n in (True, False)}
        self.prep, self.conj = Choice.of(PREPS), Choice.of(CONJ)
        self.sentence = Choice.of(SENTENCES)
        self.p = {
            "singular": _bernoulli(0.6),
            "past": _bernoulli(0.5),
            "adj": _bernoulli(0.35),
            "adj2": _bernoulli(0.1),
            "np_pp": _bernoulli(0.15),
            "vp_pp": _bernoulli(0.35),
            "adverb": _bernoulli(0.15),
        }

    # ------------------------------------------------------------------ pieces (lists of words)
    def _word(self, cls: str, rng: random.Random, acc: Tally, topic: int) -> str:
        choice = self.words[cls, topic]
        acc.content += 1
        for i, t in enumerate(choice.tail):
            acc.tail[i] += t
        return choice.draw(rng, acc)

    def _np(self, singular: bool, rng, acc, topic: int, pp: bool = True) -> list[str]:
        words = self.det[singular].draw(rng, acc).split()
        if self.p["adj"].draw(rng, acc):
            words.append(self._word("adj", rng, acc, topic))
            if self.p["adj2"].draw(rng, acc):
                words.append(self._word("adj", rng, acc, topic))
        noun = self._word("noun", rng, acc, topic)
        words.append(noun if singular else noun + "s")
        if words[0] == "a" and words[1][0] in "aeiou":
            words[0] = "an"
        if pp and self.p["np_pp"].draw(rng, acc):
            words += self._pp(rng, acc, topic)
        return words

    def _pp(self, rng, acc, topic: int) -> list[str]:
        prep = self.prep.draw(rng, acc)
        return [prep, *self._np(self.p["singular"].draw(rng, acc), rng, acc, topic, pp=False)]

    def _vp(self, singular: bool, past: bool, rng, acc, topic: int) -> list[str]:
        stem = self._word("verb", rng, acc, topic)
        verb = stem + ("d" if stem.endswith("e") else "ed") if past else stem + ("s" if singular else "")
        words = [verb]
        if self.verb_transitive[stem]:
            words += self._np(self.p["singular"].draw(rng, acc), rng, acc, topic)
        elif self.p["adverb"].draw(rng, acc):
            words.append(self._word("adj", rng, acc, topic) + "ly")
        if self.p["vp_pp"].draw(rng, acc):
            words += self._pp(rng, acc, topic)
        return words

    def _clause(self, rng, acc, topic: int, past: bool) -> tuple[list[str], bool]:
        singular = self.p["singular"].draw(rng, acc)
        return self._np(singular, rng, acc, topic) + self._vp(singular, past, rng, acc, topic), singular

    def _sentence(self, rng, acc, topic: int, past: bool, prev: bool | None) -> tuple[list[str], bool]:
        kind = self.sentence.draw(rng, acc)
        be = {(True, False): "is", (False, False): "are", (True, True): "was", (False, True): "were"}
        if kind == "pronoun" and prev is not None:
            return ["it" if prev else "they", *self._vp(prev, past, rng, acc, topic)], prev
        if kind == "there":
            singular = self.p["singular"].draw(rng, acc)
            np_ = self._np(singular, rng, acc, topic, pp=False)
            return ["there", be[singular, past], *np_, *self._pp(rng, acc, topic)], singular
        if kind == "predicate":
            singular = self.p["singular"].draw(rng, acc)
            np_ = self._np(singular, rng, acc, topic)
            return [*np_, be[singular, past], self._word("adj", rng, acc, topic)], singular
        first, singular = self._clause(rng, acc, topic, past)
        if kind == "simple" or kind == "pronoun":
            return first, singular
        second, singular2 = self._clause(rng, acc, topic, past)
        if kind == "when":
            return ["when", *first, ",", *second], singular2
        return [*first, ",", self.conj.draw(rng, acc), *second], singular2

    # ------------------------------------------------------------------ documents
    def document(self, rng: random.Random, acc: Tally | None = None) -> str:
        """One paragraph on one topic in one tense, 2 or more sentences, under 600 characters."""
        acc = acc if acc is not None else Tally()
        topic, past = self.topic.draw(rng, acc), self.p["past"].draw(rng, acc)
        target = rng.randint(250, MAX_CHARS)
        sentences: list[str] = []
        prev = None
        while True:
            trial = Tally()
            words, prev = self._sentence(rng, trial, topic, past, prev)
            text = " ".join(words).replace(" ,", ",")
            text = text[0].upper() + text[1:] + "."
            length = sum(len(s) + 1 for s in sentences) + len(text)
            if sentences and length > MAX_CHARS:
                break
            if length <= MAX_CHARS:  # a sentence too long to start a paragraph is drawn again
                sentences.append(text)
                acc.nats, acc.content = acc.nats + trial.nats, acc.content + trial.content
                acc.tail = [a + b for a, b in zip(acc.tail, trial.tail)]
                acc.words += sum(w != "," for w in words) + sum(w.count(" ") for w in words)
            if length >= target and len(sentences) >= 2:
                break
        return " ".join(sentences)

    def measure(self, n_docs: int = 2000, seed: int = 0) -> dict[str, float]:
        """Measured statistics of `n_docs` paragraphs (see the module docstring)."""
        check_int("n_docs", n_docs, 1)
        rng, acc = random.Random(f"measure:{seed}"), Tally()
        docs = [self.document(rng, acc) for _ in range(n_docs)]
        counts = Counter(w.strip(".,").lower() for d in docs for w in d.split())
        out = {
            "nats_per_word": acc.nats / acc.words,
            "words": float(acc.words),
            "word_forms": float(len(counts)),
            "content_share": acc.content / acc.words,
            "zipf_slope": zipf_slope(counts),
        }
        for k, t in zip(TAIL_KS, acc.tail):
            out[f"tail_{k}"] = t / acc.words  # per word: function words have no tail
        return out


def zipf_slope(counts: Counter, lo: int = 10, hi: int = 1000) -> float:
    """Least-squares slope of log frequency on log rank over ranks lo..hi (natural text: about -1)."""
    freqs = sorted(counts.values(), reverse=True)[lo - 1 : hi]
    if len(freqs) < 3:
        raise UserError(f"need more than {lo + 1} distinct words to fit a Zipf slope; got {len(counts)}")
    xs = [math.log(r) for r in range(lo, lo + len(freqs))]
    ys = [math.log(f) for f in freqs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


@functools.lru_cache(maxsize=4)
def general_text(seed: int = 0) -> GeneralText:
    """The seed's generator, built once (its lexicon and topic tables take a fraction of a second)."""
    return GeneralText(seed)


if __name__ == "__main__":
    gen = general_text(0)
    r = random.Random(0)
    print(*(gen.document(r) for _ in range(3)), sep="\n\n")
    print({k: round(v, 4) for k, v in gen.measure(2000).items()})
