"""FActScore, offline: decompose a generation into atomic facts, retrieve knowledge, verify each fact.

The paper evaluates cascades by FActScore on biographies (§5): the score of a generation is the
fraction of its atomic facts supported by a knowledge source, times a length penalty
``exp(1 - gamma / n)`` when it states ``n <= gamma`` facts (gamma = 10, as in the FActScore code:
``penalty = 1.0 if len(facts) > gamma else np.exp(1 - gamma / len(facts))``); the corpus score is
the mean over *responding* generations (those with at least one fact), reported with the respond
ratio. The original needs paid LLM APIs for the decomposition and the verification; here the three
stages are swappable objects:

* ``exact-synthbio``: claims read out of the text with the world's templates and vocabularies,
  checked against the world's knowledge base, exactly;
* ``reference-vitalwiki``: named entities and numbers found by spaCy, supported when they occur
  (normalised) in the subject's reference summary — a deterministic, cheap stand-in for the
  retrieval + LLM verification of the original.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, runtime_checkable

import pandas as pd

from lacy.data.synthbio import World
from lacy.data.synthbio_vocab import MONTHS

FACT_ENTITY_LABELS: tuple[str, ...] = (
    "PERSON", "GPE", "LOC", "ORG", "DATE", "CARDINAL", "NORP", "EVENT", "WORK_OF_ART", "FAC", "LAW",
    "LANGUAGE", "QUANTITY", "PERCENT", "MONEY", "ORDINAL",
)  # fmt: skip


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
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0 (0 disables the length penalty), got {gamma}")
    n = len(supported)
    if n == 0:
        return None
    penalty = math.exp(1 - gamma / n) if gamma and n <= gamma else 1.0
    return sum(map(bool, supported)) / n * penalty


# --- the three stages ----------------------------------------------------------------------------


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


# --- vitalwiki: reference-based -------------------------------------------------------------------

_MONTH_RE = "|".join(m.lower() for m in MONTHS)


def normalize(text: str) -> str:
    """Normalise text for matching a fact against a reference.

    Unicode folded (NFKD, accents dropped) and lower-cased; thousands separators removed ("1,000"
    -> "1000"); ordinal suffixes dropped ("19th" -> "19"); dates put day-first ("March 5, 1972" and
    "5 March 1972" -> "5 march 1972"); apostrophes removed, other punctuation turned into spaces;
    articles removed; whitespace collapsed.

    >>> normalize("Born on March 5, 1972 in Zürich.")
    'born on 5 march 1972 in zurich'
    >>> normalize("5th of March 1972") == normalize("the 5 March, 1972")
    True
    >>> normalize("A population of 1,234,567 in the 19th century")
    'population of 1234567 in 19 century'
    >>> normalize("Newton's  laws — an   overview")
    'newtons laws overview'
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", r"\1", text)
    text = re.sub(rf"\b({_MONTH_RE}) (\d{{1,2}})\b,?", r"\2 \1", text)
    text = re.sub(rf"\b(\d{{1,2}}) of ({_MONTH_RE})\b", r"\1 \2", text)
    text = re.sub(r"['\u2019`]", "", text)
    text = re.sub(r"[^\w\s]|_", " ", text)
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    return " ".join(text.split())


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
        needle = normalize(fact.text)
        return bool(needle) and f" {needle} " in f" {normalize(knowledge)} "


# --- composition ----------------------------------------------------------------------------------


@dataclass
class FactScoreResult:
    """Corpus-level FActScore with one row per generation (subject, n_facts, n_supported, score)."""

    factscore: float | None  # mean score over responding generations; None if none responds
    respond_ratio: float  # fraction of generations with at least one atomic fact
    facts_per_response: float | None  # mean number of facts of the responding generations
    n: int
    variant: str
    gamma: int
    rows: list[dict] = field(default_factory=list)
    verdicts: list[list[Verdict]] = field(default_factory=list, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per generation; ``score`` is NaN for a generation that does not respond."""
        return pd.DataFrame(self.rows, columns=["subject", "n_facts", "n_supported", "score"])

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
    """FActScore from three swappable stages: ``decomposer``, ``knowledge`` and ``verifier``."""

    def __init__(
        self,
        decomposer: Decomposer,
        knowledge: KnowledgeSource,
        verifier: Verifier,
        gamma: int = 10,
        variant: str = "custom",
    ) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0 (0 disables the length penalty), got {gamma}")
        self.decomposer, self.knowledge, self.verifier = decomposer, knowledge, verifier
        self.gamma = gamma
        self.variant = variant

    def verdicts(self, subject: str, generation: str) -> list[Verdict]:
        """Decompose one generation and verify each atomic fact against the subject's knowledge."""
        facts = self.decomposer.decompose(subject, generation)
        knowledge = self.knowledge.retrieve(subject)
        return [Verdict(f, bool(self.verifier.verify(subject, f, knowledge))) for f in facts]

    def score(self, items: Iterable[tuple[str, str]]) -> FactScoreResult:
        """Score ``(subject, generation)`` pairs."""
        rows, all_verdicts = [], []
        for subject, generation in items:
            verdicts = self.verdicts(subject, generation)
            supported = [v.supported for v in verdicts]
            rows.append(
                {
                    "subject": subject,
                    "n_facts": len(verdicts),
                    "n_supported": sum(supported),
                    "score": factscore_of(supported, self.gamma),
                }
            )
            all_verdicts.append(verdicts)
        if not rows:
            raise ValueError("FactScore.score needs at least one (subject, generation) pair")
        responding = [r for r in rows if r["score"] is not None]
        return FactScoreResult(
            factscore=sum(r["score"] for r in responding) / len(responding) if responding else None,
            respond_ratio=len(responding) / len(rows),
            facts_per_response=sum(r["n_facts"] for r in responding) / len(responding) if responding else None,
            n=len(rows),
            variant=self.variant,
            gamma=self.gamma,
            rows=rows,
            verdicts=all_verdicts,
        )


def synthbio_factscore(world: World, gamma: int = 10) -> FactScore:
    """Exact FActScore on a synthetic biography world."""
    return FactScore(SynthbioDecomposer(world), SynthbioKnowledge(world), ExactVerifier(), gamma, "exact-synthbio")


def vitalwiki_factscore(summaries: dict[str, str], nlp: Any, gamma: int = 10) -> FactScore:
    """Reference-based FActScore: spaCy entities checked against each subject's summary."""
    return FactScore(
        EntityDecomposer(nlp), ReferenceKnowledge(summaries), ReferenceVerifier(), gamma, "reference-vitalwiki"
    )
