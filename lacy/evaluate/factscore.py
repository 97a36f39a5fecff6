"""FActScore, offline: decompose a generation into atomic facts, retrieve knowledge, verify each fact.

The paper evaluates cascades by FActScore on biographies (§5): the score of a generation is the
fraction of its atomic facts supported by a knowledge source, times a length penalty
``exp(1 - gamma / n)`` when it states ``n <= gamma`` facts (gamma = 10, as in the FActScore code:
``penalty = 1.0 if len(facts) > gamma else np.exp(1 - gamma / len(facts))``); the corpus score is
the mean over *responding* generations (those with at least one fact), reported with the respond
ratio. The original needs paid LLM APIs for the decomposition and the verification; here the
stages are swappable objects:

* ``exact-synthbio``: claims read out of the text with the world's templates and vocabularies,
  checked against the world's knowledge base, exactly;
* ``reference-vitalwiki``: named entities and numbers found by spaCy, supported when they occur
  (normalised) in the subject's reference summary — a deterministic, cheap stand-in for the
  retrieval + LLM verification of the original.

A claim is counted once per generation (:func:`distinct_facts`): repeating "her alma mater is Y"
raises neither the number of stated facts nor the precision. With only six attributes per person the
γ = 10 penalty caps a perfect synthbio biography at ≈ 0.51 and rewards extra false facts below γ, so
each generation also gets the counts behind precision and recall (a fourth stage,
:class:`KnowledgeRecall`: how many of the subject's knowledge-base facts it states);
:mod:`lacy.evaluate.metrics` turns those counts into the reported metrics.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, runtime_checkable

import pandas as pd

from lacy.data.synthbio import World
from lacy.data.text import normalize, word_supported

__all__ = [
    "AtomicFact", "AttributeRecall", "Decomposer", "EntityDecomposer", "EntityRecall", "ExactVerifier", "FactScore",
    "FactScoreResult", "KnowledgeRecall", "KnowledgeSource", "ReferenceKnowledge", "ReferenceVerifier",
    "SynthbioDecomposer", "SynthbioKnowledge", "Verdict", "Verifier", "distinct_facts", "factscore_of", "normalize",
    "penalised_fraction", "synthbio_factscore", "vitalwiki_factscore",
]

FACT_ENTITY_LABELS: tuple[str, ...] = (
    "PERSON", "GPE", "LOC", "ORG", "DATE", "CARDINAL", "NORP", "EVENT", "WORK_OF_ART", "FAC", "LAW",
    "LANGUAGE", "QUANTITY", "PERCENT", "MONEY", "ORDINAL",
)  # fmt: skip


def penalised_fraction(supported: int, stated: int, gamma: int = 10) -> float | None:
    """``supported / stated`` times the FActScore length penalty ``exp(1 - gamma / stated)`` when
    ``stated <= gamma``; ``None`` when nothing is stated; ``gamma = 0`` disables the penalty.

    >>> penalised_fraction(3, 4, gamma=0)
    0.75
    >>> round(penalised_fraction(5, 5), 4)  # exp(1 - 10/5) = exp(-1)
    0.3679
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0 (0 disables the length penalty), got {gamma}")
    if not 0 <= supported <= stated:
        raise ValueError(f"need 0 <= supported <= stated, got supported={supported}, stated={stated}")
    if stated == 0:
        return None
    penalty = math.exp(1 - gamma / stated) if gamma and stated <= gamma else 1.0
    return supported / stated * penalty


def factscore_of(supported: list[bool], gamma: int = 10) -> float | None:
    """The FActScore of one generation from the verdicts on its atomic facts.

    ``None`` when there are no facts (the generation does not respond). With ``n`` facts the
    supported fraction is multiplied by ``exp(1 - gamma / n)`` when ``n <= gamma`` (1 at ``n ==
    gamma``); ``gamma = 0`` disables the penalty.

    >>> factscore_of([True, True, False, True], gamma=0)
    0.75
    >>> factscore_of([True] * 10)
    1.0
    >>> round(factscore_of([True] * 5), 4)  # exp(1 - 10/5) = exp(-1)
    0.3679
    >>> factscore_of([]) is None
    True
    """
    return penalised_fraction(sum(map(bool, supported)), len(supported), gamma)


# --- the stages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AtomicFact:
    """One checkable statement of a generation: ``generation[start:end] == text``.

    ``attribute`` is the synthbio attribute (or ``"city"``), the spaCy label for reference-based
    scoring, or None when unknown.
    """

    text: str
    attribute: str | None
    start: int
    end: int


@dataclass(frozen=True)
class Verdict:
    fact: AtomicFact
    supported: bool


@runtime_checkable
class Decomposer(Protocol):
    def decompose(self, subject: str, generation: str) -> list[AtomicFact]: ...


@runtime_checkable
class KnowledgeSource(Protocol):
    def retrieve(self, subject: str) -> Any: ...


@runtime_checkable
class Verifier(Protocol):
    def verify(self, subject: str, fact: AtomicFact, knowledge: Any) -> bool: ...


@runtime_checkable
class KnowledgeRecall(Protocol):
    """How much of the subject's knowledge a generation states: ``(recalled, kb_facts)``.

    ``kb_facts`` is the number of facts the knowledge source holds about the subject and
    ``recalled <= kb_facts`` how many of them the generation states (recall = recalled / kb_facts).
    """

    def recall(self, subject: str, knowledge: Any, generation: str, verdicts: list["Verdict"]) -> tuple[int, int]: ...


def distinct_facts(facts: Iterable[AtomicFact]) -> list[AtomicFact]:
    """The first occurrence of each claim: one fact per ``(attribute, normalised text)``, in order.

    A generation that repeats a claim states it once (FActScore counts *distinct* atomic facts;
    counting repeats would let repetition raise both the number of facts and the precision).

    >>> facts = [AtomicFact("Ashford", "birth_city", 0, 7), AtomicFact("ashford", "birth_city", 30, 37),
    ...          AtomicFact("Ashford", "employer_city", 50, 57)]
    >>> [(f.attribute, f.start) for f in distinct_facts(facts)]
    [('birth_city', 0), ('employer_city', 50)]
    """
    seen: set[tuple[str | None, str]] = set()
    out = []
    for fact in facts:
        key = (fact.attribute, normalize(fact.text) or fact.text)
        if key not in seen:
            seen.add(key)
            out.append(fact)
    return out


# --- synthbio: exact ------------------------------------------------------------------------------


class SynthbioDecomposer:
    """Atomic facts = the attribute values ``World.extract_claims`` finds in the generation."""

    def __init__(self, world: World) -> None:
        self.world = world

    def decompose(self, subject: str, generation: str) -> list[AtomicFact]:
        return [AtomicFact(c.value, c.attribute, c.start, c.end) for c in self.world.extract_claims(generation)]


class SynthbioKnowledge:
    """The subject's row of the world's knowledge base: ``{attribute: value}``."""

    def __init__(self, world: World) -> None:
        self.world = world

    def retrieve(self, subject: str) -> dict[str, str]:
        return self.world.kb[self.world.person(subject).full_name]


class ExactVerifier:
    """Supported iff the claimed value equals the subject's value of that attribute.

    A town of unknown role (``"city"``) is supported by the birth or the employer city; a fact
    without an attribute by any of the subject's values.
    """

    def verify(self, subject: str, fact: AtomicFact, knowledge: dict[str, str]) -> bool:
        if fact.attribute == "city":
            return fact.text in (knowledge["birth_city"], knowledge["employer_city"])
        if fact.attribute is None:
            return fact.text in knowledge.values()
        return knowledge.get(fact.attribute) == fact.text


class AttributeRecall:
    """synthbio: the subject has one fact per attribute (six); an attribute is recalled when a
    supported claim states its value (a town of unknown role recalls the attribute(s) it matches)."""

    def recall(self, subject: str, knowledge: dict[str, str], generation: str, verdicts: list[Verdict]) -> tuple[int, int]:
        recalled = set()
        for verdict in verdicts:
            if not verdict.supported:
                continue
            fact = verdict.fact
            if fact.attribute in knowledge:
                recalled.add(fact.attribute)
            else:  # "city" or unknown: every attribute whose value it is
                roles = ("birth_city", "employer_city") if fact.attribute == "city" else tuple(knowledge)
                recalled.update(a for a in roles if knowledge.get(a) == fact.text)
        return len(recalled), len(knowledge)


# --- vitalwiki: reference-based -------------------------------------------------------------------

class EntityDecomposer:
    """Atomic facts = the named entities (``FACT_ENTITY_LABELS``) and numbers spaCy finds.

    The subject's own name, or any part of it, is not a fact about the subject. Facts that
    normalise to nothing are dropped. ``nlp`` is a loaded spaCy pipeline with NER and a tagger.
    """

    def __init__(self, nlp: Any, labels: tuple[str, ...] = FACT_ENTITY_LABELS) -> None:
        self.nlp = nlp
        self.labels = frozenset(labels)

    def decompose(self, subject: str, generation: str) -> list[AtomicFact]:
        doc = self.nlp(generation)
        name_parts = set(normalize(subject).split())
        facts: list[AtomicFact] = []
        for ent in doc.ents:
            if ent.label_ not in self.labels:
                continue
            words = normalize(re.sub(r"['\u2019]s$", "", ent.text)).split()
            if words and not set(words) <= name_parts:
                facts.append(AtomicFact(ent.text, ent.label_, ent.start_char, ent.end_char))
        for token in doc:
            inside = any(f.start <= token.idx < f.end for f in facts)
            if token.pos_ == "NUM" and not inside and normalize(token.text):
                facts.append(AtomicFact(token.text, "NUM", token.idx, token.idx + len(token.text)))
        return sorted(facts, key=lambda f: f.start)


class ReferenceKnowledge:
    """The subject's reference text (for vitalwiki: the article's own lead summary)."""

    def __init__(self, summaries: dict[str, str]) -> None:
        self.summaries = summaries

    def retrieve(self, subject: str) -> str:
        try:
            return self.summaries[subject]
        except KeyError:
            raise KeyError(
                f"no reference summary for subject {subject!r} ({len(self.summaries)} subjects known); "
                "score only subjects that have a summary"
            ) from None


class ReferenceVerifier:
    """Supported iff the normalised fact occurs, on word boundaries, in the normalised reference."""

    def verify(self, subject: str, fact: AtomicFact, knowledge: str) -> bool:
        return word_supported(fact.text, knowledge)


class EntityRecall:
    """vitalwiki: the subject's knowledge-base facts are the distinct entities and numbers that
    ``decomposer`` (an :class:`EntityDecomposer`) finds in the reference summary; one is recalled when
    it occurs (normalised, on word boundaries) in the generation. Summaries are decomposed once."""

    def __init__(self, decomposer: Decomposer) -> None:
        self.decomposer = decomposer
        self._kb: dict[tuple[str, str], tuple[str, ...]] = {}

    def kb_facts(self, subject: str, knowledge: str) -> tuple[str, ...]:
        """The normalised texts of the subject's distinct reference facts."""
        key = (subject, knowledge)
        if key not in self._kb:
            texts = dict.fromkeys(normalize(f.text) for f in self.decomposer.decompose(subject, knowledge))
            self._kb[key] = tuple(t for t in texts if t)
        return self._kb[key]

    def recall(self, subject: str, knowledge: str, generation: str, verdicts: list[Verdict]) -> tuple[int, int]:
        facts = self.kb_facts(subject, knowledge)
        stated = normalize(generation)
        return sum(word_supported(f, stated, normalized_reference=True) for f in facts), len(facts)


# --- composition ----------------------------------------------------------------------------------


ROW_COLUMNS = ("subject", "stated", "supported", "kb_facts", "recalled", "score")
"""Per-generation counts: distinct facts ``stated``, how many are ``supported``, the subject's number of
knowledge-base facts ``kb_facts`` and how many of them the generation states (``recalled``; both None
without a recall stage), and the FActScore ``score`` with the scorer's gamma (None: not responding)."""


@dataclass
class FactScoreResult:
    """Corpus-level FActScore with one row per generation (:data:`ROW_COLUMNS`)."""

    factscore: float | None  # mean score over responding generations; None if none responds
    respond_ratio: float  # fraction of generations with at least one atomic fact
    facts_per_response: float | None  # mean number of distinct facts of the responding generations
    n: int
    variant: str
    gamma: int
    rows: list[dict] = field(default_factory=list)
    verdicts: list[list[Verdict]] = field(default_factory=list, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per generation; ``score`` is NaN for a generation that does not respond."""
        return pd.DataFrame(self.rows, columns=list(ROW_COLUMNS))

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "factscore": self.factscore,
            "respond_ratio": self.respond_ratio,
            "facts_per_response": self.facts_per_response,
            "n": self.n,
            "gamma": self.gamma,
        }


class FactScore:
    """FActScore from swappable stages: ``decomposer``, ``knowledge`` and ``verifier``, plus an optional
    ``recall`` stage counting the knowledge-base facts a generation states."""

    def __init__(
        self,
        decomposer: Decomposer,
        knowledge: KnowledgeSource,
        verifier: Verifier,
        gamma: int = 10,
        variant: str = "custom",
        recall: KnowledgeRecall | None = None,
    ) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0 (0 disables the length penalty), got {gamma}")
        self.decomposer, self.knowledge, self.verifier, self.recall = decomposer, knowledge, verifier, recall
        self.gamma = gamma
        self.variant = variant

    def verdicts(self, subject: str, generation: str) -> list[Verdict]:
        """Decompose one generation, keep each claim once (:func:`distinct_facts`) and verify it
        against the subject's knowledge."""
        facts = distinct_facts(self.decomposer.decompose(subject, generation))
        knowledge = self.knowledge.retrieve(subject)
        return [Verdict(f, bool(self.verifier.verify(subject, f, knowledge))) for f in facts]

    def score(self, items: Iterable[tuple[str, str]]) -> FactScoreResult:
        """Score ``(subject, generation)`` pairs."""
        rows, all_verdicts = [], []
        for subject, generation in items:
            verdicts = self.verdicts(subject, generation)
            supported = [v.supported for v in verdicts]
            recalled = kb_facts = None
            if self.recall is not None:
                recalled, kb_facts = self.recall.recall(subject, self.knowledge.retrieve(subject), generation, verdicts)
            rows.append({
                "subject": subject,
                "stated": len(verdicts),
                "supported": sum(supported),
                "kb_facts": kb_facts,
                "recalled": recalled,
                "score": factscore_of(supported, self.gamma),
            })
            all_verdicts.append(verdicts)
        if not rows:
            raise ValueError("FactScore.score needs at least one (subject, generation) pair")
        responding = [r for r in rows if r["score"] is not None]
        return FactScoreResult(
            factscore=sum(r["score"] for r in responding) / len(responding) if responding else None,
            respond_ratio=len(responding) / len(rows),
            facts_per_response=sum(r["stated"] for r in responding) / len(responding) if responding else None,
            n=len(rows),
            variant=self.variant,
            gamma=self.gamma,
            rows=rows,
            verdicts=all_verdicts,
        )


def synthbio_factscore(world: World, gamma: int = 10) -> FactScore:
    """Exact FActScore on a synthetic biography world; recall against the subject's six attributes."""
    return FactScore(SynthbioDecomposer(world), SynthbioKnowledge(world), ExactVerifier(), gamma, "exact-synthbio",
                     recall=AttributeRecall())


def vitalwiki_factscore(summaries: dict[str, str], nlp: Any, gamma: int = 10) -> FactScore:
    """Reference-based FActScore: spaCy entities checked against each subject's summary; recall against
    the entities of that summary."""
    decomposer = EntityDecomposer(nlp)
    return FactScore(decomposer, ReferenceKnowledge(summaries), ReferenceVerifier(), gamma, "reference-vitalwiki",
                     recall=EntityRecall(decomposer))
