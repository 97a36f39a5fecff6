"""The synthetic biography world: people in exposure tiers, their facts, and seeded paraphrased biographies.

This is lacy's exact stand-in for the paper's Wikipedia biographies. Each person has six attributes;
a biography states all six, one sentence each, mixed with a few remarks that assert nothing
checkable, in a shuffled order with a randomly chosen paraphrase template per sentence
(:mod:`lacy.data.synthbio_grammar`). Because the generator's grammar is known, three questions the
paper answers with proxies or an LLM judge are decidable exactly here:

* which continuations are *acceptable* (§3: a mismatch with the ground truth is harmless when the
  predicted word still leads to a valid biography) — ``is_valid_prefix``, ``next_word_options``,
  ``forced_word_spans``;
* which tokens are *facts* — every document carries gold ``FactSpan``s;
* whether a generated claim is *true* (§5, FactScore) — the world is its own knowledge base
  (``kb``), and ``extract_claims`` reads the claims back out of generated text
  (:mod:`lacy.data.synthbio_claims`).

Exposure follows a tiered law (``ExposureLaw``): a few famous people have hundreds of biographies,
many obscure people have one or two, so a small model learns the facts of the famous and should
delegate the rest — the learn-vs-delegate question of the paper. People are listed in order of
fame: ``people[0]`` is the most exposed.

Same seed, same corpus, byte for byte: all randomness comes from ``random.Random`` instances seeded
with strings (SHA-512 based, platform independent), and nothing iterates over a set or uses ``hash``.
This module must not import torch.
"""

from __future__ import annotations

import datetime
import random
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Sequence

from lacy.data.corpus import Document, FactSpan
from lacy.data.synthbio_claims import BIRTH_CUES, DATE_RE, WORK_CUES, Claim, ClaimExtractor
from lacy.data.synthbio_grammar import (
    ATTRIBUTES,
    FACT_TEMPLATES,
    GENDERS,
    REMARK_TEMPLATES,
    REMARK_TOPICS,
    REMARKS,
    TEMPLATES,
    WORD_RE,
    Grammar,
    forced_word_spans,
    next_word_options,
    prefix_states,
)
from lacy.data.synthbio_vocab import BIRTH_YEARS, FEMALE_FIRST_NAMES, MALE_FIRST_NAMES, MONTHS, SURNAMES, TOWNS, UNIVERSITIES, MAJORS, EMPLOYERS

if TYPE_CHECKING:
    from lacy.profiles import WorldConfig

__all__ = [
    "ATTRIBUTES", "BIRTH_CUES", "DATE_RE", "GENDERS", "REMARKS", "TEMPLATES", "WORD_RE", "WORK_CUES",
    "Claim", "ExposureLaw", "Person", "Tier", "World",
]  # fmt: skip


@dataclass(frozen=True)
class Person:
    """One member of the world. ``n_docs`` is how many biographies of them the corpus contains and
    ``tier`` the exposure tier they belong to ("" for hand-made people outside any law)."""

    pid: int
    first_name: str
    last_name: str
    gender: str
    birth_date: str
    birth_city: str
    university: str
    major: str
    employer: str
    employer_city: str
    n_docs: int
    tier: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def pronoun(self) -> str:
        """The subject pronoun as it opens a sentence: "She" or "He"."""
        return "She" if self.gender == "female" else "He"

    @property
    def possessive(self) -> str:
        """The possessive determiner as it opens a sentence: "Her" or "His"."""
        return "Her" if self.gender == "female" else "His"

    def value(self, attribute: str) -> str:
        """The value of one of ``ATTRIBUTES``."""
        if attribute not in ATTRIBUTES:
            raise KeyError(f"unknown attribute {attribute!r}; valid attributes: {', '.join(ATTRIBUTES)}")
        return getattr(self, attribute)


@dataclass(frozen=True)
class Tier:
    """``n_people`` people whose biography counts fall geometrically from ``max_docs`` to ``min_docs``."""

    name: str
    n_people: int
    max_docs: int
    min_docs: int

    def __post_init__(self) -> None:
        if not self.name or self.n_people < 1 or not 1 <= self.min_docs <= self.max_docs:
            raise ValueError(
                f"tier {self.name!r}: need a name, n_people >= 1 and 1 <= min_docs <= max_docs, "
                f"got n_people={self.n_people}, min_docs={self.min_docs}, max_docs={self.max_docs}"
            )

    def n_docs(self, i: int) -> int:
        """Biographies of the tier's ``i``-th person: ``round(max_docs * (min_docs/max_docs) ** (i/(n-1)))``."""
        if self.n_people == 1:
            return self.max_docs
        return int(self.max_docs * (self.min_docs / self.max_docs) ** (i / (self.n_people - 1)) + 0.5)


@dataclass(frozen=True)
class ExposureLaw:
    """Biographies per person from named tiers, most exposed first (a discrete, heavy-tailed law).

    Within a tier, counts fall geometrically from the tier's ``max_docs`` to its ``min_docs``, so the
    knowledge curve (recall against exposures) is sampled densely, not at a few points only. The tiers
    of the ``cpu`` profile and the measurements behind them are documented on
    ``lacy.profiles.WorldConfig``.
    """

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tiers]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"an exposure law needs at least one tier and distinct tier names, got {names}")
        for upper, lower in zip(self.tiers, self.tiers[1:]):
            if lower.max_docs > upper.min_docs:
                raise ValueError(
                    f"tiers must be listed most exposed first: tier {lower.name!r} (max_docs={lower.max_docs}) "
                    f"follows {upper.name!r} (min_docs={upper.min_docs})"
                )

    @classmethod
    def from_config(cls, cfg: "WorldConfig") -> "ExposureLaw":
        """The law of a ``lacy.profiles.WorldConfig`` (one entry per tier in each ``tier_*`` tuple)."""
        lengths = {len(cfg.tiers), len(cfg.tier_people), len(cfg.tier_max_docs), len(cfg.tier_min_docs)}
        if len(lengths) != 1:
            raise ValueError(
                "world.tiers, world.tier_people, world.tier_max_docs and world.tier_min_docs need one entry per "
                f"tier each, got {len(cfg.tiers)}, {len(cfg.tier_people)}, {len(cfg.tier_max_docs)}, {len(cfg.tier_min_docs)}"
            )
        return cls(tuple(Tier(*t) for t in zip(cfg.tiers, cfg.tier_people, cfg.tier_max_docs, cfg.tier_min_docs)))

    @property
    def n_people(self) -> int:
        return sum(t.n_people for t in self.tiers)

    def assign(self) -> list[tuple[str, int]]:
        """(tier name, biographies) of every person, most exposed first."""
        return [(t.name, t.n_docs(i)) for t in self.tiers for i in range(t.n_people)]

    def describe(self) -> str:
        return "; ".join(f"{t.name}: {t.n_people} people x {t.max_docs}..{t.min_docs} biographies" for t in self.tiers)


class World:
    """A synthetic biography world: people (in order of fame), their biographies and the KB.

    Build one with ``World.generate`` (or ``World.from_config``); the constructor takes explicit
    people, which is how tests build hand-made worlds.
    """

    _GRAMMAR_CACHE_SIZE = 4096

    def __init__(self, people: Sequence[Person], seed: int = 0, exposure: ExposureLaw | None = None,
                 remarks_per_doc: int = 3, name_repeat: float = 0.0) -> None:
        if not 0 <= remarks_per_doc <= len(REMARK_TOPICS):
            raise ValueError(f"remarks_per_doc must be in 0..{len(REMARK_TOPICS)} (one per topic), got {remarks_per_doc}")
        if not 0.0 <= name_repeat <= 1.0:
            raise ValueError(f"name_repeat must be a probability in [0, 1], got {name_repeat}")
        self.people: list[Person] = list(people)
        self.seed = seed
        self.exposure = exposure
        self.remarks_per_doc = remarks_per_doc
        self.name_repeat = name_repeat
        self._by_name: dict[str, Person] = {}
        for person in self.people:
            if person.full_name in self._by_name:
                raise ValueError(f"two people are named {person.full_name!r}; full names must be unique in a world")
            if person.gender not in GENDERS:
                raise ValueError(f"{person.full_name}: gender must be one of {GENDERS}, got {person.gender!r}")
            self._by_name[person.full_name] = person
        self._grammars: OrderedDict[str, Grammar] = OrderedDict()

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def generate(cls, exposure: ExposureLaw, seed: int = 0, remarks_per_doc: int = 3, name_repeat: float = 0.0) -> "World":
        """Draw ``exposure.n_people`` people with unique names and uniform random attributes.

        Person ``pid`` gets the tier and biography count of position ``pid`` in ``exposure.assign()``.
        Each biography has ``remarks_per_doc`` remarks; a fact sentence after the first names the person
        in full with probability ``name_repeat`` (else a pronoun).
        """
        n_people = exposure.n_people
        capacity = (len(FEMALE_FIRST_NAMES) + len(MALE_FIRST_NAMES)) * len(SURNAMES) // 2
        if n_people > capacity:
            raise ValueError(
                f"n_people must be between 1 and {capacity} (half the distinct first-name x surname pairs, "
                f"so names stay unique), got {n_people}"
            )
        rng = random.Random(f"synthbio/people/{seed}")
        first_day = datetime.date(BIRTH_YEARS[0], 1, 1).toordinal()
        n_days = datetime.date(BIRTH_YEARS[1], 12, 31).toordinal() - first_day + 1
        first_names = {"female": FEMALE_FIRST_NAMES, "male": MALE_FIRST_NAMES}
        taken: set[tuple[str, str]] = set()
        people = []
        for pid, (tier, n_docs) in enumerate(exposure.assign()):
            gender = rng.choice(GENDERS)
            while True:
                name = (rng.choice(first_names[gender]), rng.choice(SURNAMES))
                if name not in taken:
                    taken.add(name)
                    break
            born = datetime.date.fromordinal(first_day + rng.randrange(n_days))
            people.append(
                Person(
                    pid=pid, first_name=name[0], last_name=name[1], gender=gender,
                    birth_date=f"{MONTHS[born.month - 1]} {born.day}, {born.year}",
                    birth_city=rng.choice(TOWNS), university=rng.choice(UNIVERSITIES), major=rng.choice(MAJORS),
                    employer=rng.choice(EMPLOYERS), employer_city=rng.choice(TOWNS), n_docs=n_docs, tier=tier,
                )
            )  # fmt: skip
        return cls(people, seed=seed, exposure=exposure, remarks_per_doc=remarks_per_doc, name_repeat=name_repeat)

    @classmethod
    def from_config(cls, world_cfg: "WorldConfig") -> "World":
        """Generate from a ``lacy.profiles.WorldConfig``; the world's seed is ``world_cfg.seed`` (the
        training seed never changes the world, so runs with different seeds share one corpus).

        One world per configuration and process: a world is a pure function of its configuration, and
        its biographies take seconds to write, which every evaluation of a grid would otherwise repeat.
        """
        return _world_of(cls, world_cfg)

    # -- knowledge base and tiers ------------------------------------------------------------------

    def person(self, name: str) -> Person:
        """The person with this full name; KeyError naming the problem otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no person named {name!r} in this world of {len(self.people)} people; "
                "subjects are full names as in World.people[i].full_name"
            ) from None

    @cached_property
    def kb(self) -> dict[str, dict[str, str]]:
        """``{full name: {attribute: value}}`` for every person."""
        return {p.full_name: {a: p.value(a) for a in ATTRIBUTES} for p in self.people}

    @property
    def tiers(self) -> list[str]:
        """Tier names, most exposed first (in the order people first appear)."""
        return list(dict.fromkeys(p.tier for p in self.people))

    def tier(self, name: str) -> list[Person]:
        """The people of one tier, most exposed first; KeyError listing the tiers otherwise."""
        people = [p for p in self.people if p.tier == name]
        if not people:
            raise KeyError(f"no tier named {name!r}; tiers of this world: {', '.join(self.tiers)}")
        return people

    # -- corpus ------------------------------------------------------------------------------------

    def _grammar(self, subject: str) -> Grammar:
        grammar = self._grammars.get(subject)
        if grammar is None:
            person = self.person(subject)
            grammar = Grammar(person.full_name, person.gender, tuple(map(person.value, ATTRIBUTES)))
            self._grammars[subject] = grammar
            if len(self._grammars) > self._GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
        else:
            self._grammars.move_to_end(subject)
        return grammar

    @cached_property
    def _biographies(self) -> list[tuple[str, str, tuple[FactSpan, ...]]]:
        """(subject, text, facts) of every biography, in corpus order (people interleaved)."""
        rng = random.Random(f"synthbio/documents/{self.seed}")
        n_attributes = len(ATTRIBUTES)
        biographies = []
        for person in self.people:
            # one pass per person here, so kept out of the LRU cache
            grammar = Grammar(person.full_name, person.gender, tuple(map(person.value, ATTRIBUTES)))
            value_lengths = [len(person.value(a)) for a in ATTRIBUTES]
            for _ in range(person.n_docs):
                facts_order = list(range(n_attributes))
                rng.shuffle(facts_order)
                rest = facts_order[1:] + [n_attributes + t for t in rng.sample(range(len(REMARK_TOPICS)), self.remarks_per_doc)]
                rng.shuffle(rest)
                sentences, facts, position = [], [], 0
                for k, kind in enumerate([facts_order[0], *rest]):
                    if kind >= n_attributes:
                        topic = kind - n_attributes
                        n_choices = len(REMARKS[REMARK_TOPICS[topic]][1])
                        sentence = grammar.remark(topic, rng.randrange(len(REMARK_TEMPLATES[topic])), rng.randrange(n_choices))
                    else:  # the opening sentence names the person in full
                        full_name = k == 0 or rng.random() < self.name_repeat
                        sentence = grammar.sentence(kind, rng.randrange(len(FACT_TEMPLATES[kind])), full_name)
                        start = position + sentence.value_start
                        facts.append(FactSpan(start, start + value_lengths[kind], ATTRIBUTES[kind]))
                    sentences.append(sentence.text)
                    position += len(sentence.text) + 1
                biographies.append((person.full_name, " ".join(sentences), tuple(facts)))
        rng.shuffle(biographies)
        return biographies

    def documents(self, val_fraction: float = 0.05) -> list[Document]:
        """All biographies as ``Document``s with doc ids 0..N-1 in a fixed, people-interleaved order.

        ``facts`` holds one gold span per attribute (``text[start:end] == person.value(attribute)``),
        in text order. Exactly ``round(val_fraction * N)`` documents, drawn with a seeded RNG, get
        ``split="val"``; a person with few biographies may therefore appear only in validation.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        biographies = self._biographies
        n_val = round(val_fraction * len(biographies))
        val_ids = set(random.Random(f"synthbio/split/{self.seed}").sample(range(len(biographies)), n_val))
        return [
            Document(doc_id=i, text=text, subject=subject, facts=facts, split="val" if i in val_ids else "train")
            for i, (subject, text, facts) in enumerate(biographies)
        ]

    # -- acceptability (paper §3, decided exactly by the grammar) ----------------------------------

    def is_valid_prefix(self, subject: str, text: str) -> bool:
        """Whether ``text`` begins some biography of ``subject`` the generator could write.

        Character level, so the last word may be partial. Any sentence order, template, subject form
        and remark counts: this is the exact acceptability judge of the paper's §3 analysis.
        """
        return bool(prefix_states(self._grammar(subject), text))

    def next_word_options(self, subject: str, text: str) -> set[str]:
        """The words (``WORD_RE`` tokens) that may follow ``text`` in a biography of ``subject``.

        ``text`` must end at a word boundary; ``""`` stands for the end of the biography (allowed once
        all six facts are stated). An empty set means ``text`` is not a valid prefix (or ends inside a word).
        """
        return next_word_options(self._grammar(subject), text)

    def forced_word_spans(self, doc: Document) -> list[tuple[int, int, bool]]:
        """``(start, end, forced)`` for every word of a biography of this world.

        ``forced`` is True when the document's word was the only acceptable next word given the
        text before it, so predicting anything else there is an unacceptable mismatch (§3).
        """
        return forced_word_spans(self._grammar(doc.subject), doc)

    # -- claims (paper §5, FactScore's atomic facts) -----------------------------------------------

    @cached_property
    def _claims(self) -> ClaimExtractor:
        values = {
            "university": [p.university for p in self.people],
            "employer": [p.employer for p in self.people],
            "major": [p.major for p in self.people],
            "town": [v for p in self.people for v in (p.birth_city, p.employer_city)],
        }
        return ClaimExtractor((p.last_name for p in self.people), values)

    def extract_claims(self, text: str) -> list[Claim]:
        """The attribute values stated in ``text`` (which may be garbled, truncated or mix people).

        First every fact template is matched as a regex with the value slot captured (so a wrong or
        invented value is still a claim); then, outside those matches, known values, dates and
        anything shaped like a university or employer ("University of X", "{Surname} Logistics"),
        leftmost first and longest on ties. A bare town gets its role from the nearest cue word
        before it in its sentence ("born in X" -> birth_city, "works in X" -> employer_city), else
        the nearest cue after it, else ``"city"``. Remarks state no claims.
        Claims are sorted by position and never overlap.
        """
        return self._claims.extract(text)

    # -- dataset card ------------------------------------------------------------------------------

    def card(self) -> dict:
        """A dataset card: sizes, vocabularies, templates, remarks and the exposure law per tier."""
        from lacy.data.synthbio_card import world_card

        return world_card(self)

    def card_markdown(self) -> str:
        """The dataset card as Markdown (a short description and tables)."""
        from lacy.data.synthbio_card import card_markdown

        return card_markdown(self.card())


@lru_cache(maxsize=4)
def _world_of(cls: type[World], world_cfg: "WorldConfig") -> World:
    return cls.generate(ExposureLaw.from_config(world_cfg), seed=world_cfg.seed,
                        remarks_per_doc=world_cfg.remarks_per_doc, name_repeat=world_cfg.name_repeat)
