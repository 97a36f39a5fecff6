"""The synthetic biography world: people, their facts, and seeded paraphrased biographies.

This is lacy's exact stand-in for the paper's Wikipedia biographies (design §4). Each person has six
attributes; a biography states all six, one sentence each, in a shuffled order, with a randomly
chosen paraphrase template per sentence. Because the generator's grammar is known, three questions
the paper answers with proxies or an LLM judge are decidable exactly here:

* which continuations are *acceptable* (§3: a mismatch with the ground truth is harmless when the
  predicted word still leads to a valid biography) — ``is_valid_prefix``, ``next_word_options``,
  ``forced_word_spans``;
* which tokens are *facts* — every document carries gold ``FactSpan``s;
* whether a generated claim is *true* (§5, FactScore) — the world is its own knowledge base
  (``kb``), and ``extract_claims`` reads the claims back out of generated text.

Exposure is heavy-tailed (a Zipf law of the person's fame rank, ``ExposureLaw``): a few people have
hundreds of biographies and most have one, so a small model can learn the facts of the famous and
should delegate the rest — the learn-vs-delegate question of the paper. People are listed in order
of fame: ``people[0]`` has rank 1.

Same seed, same corpus, byte for byte: all randomness comes from ``random.Random`` instances seeded
with strings (SHA-512 based, platform independent), and nothing iterates over a set or uses ``hash``.
This module must not import torch.
"""

from __future__ import annotations

import datetime
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from string import Formatter
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from lacy.data.corpus import Document, FactSpan
from lacy.data.synthbio_vocab import (
    BIRTH_YEARS,
    EMPLOYERS,
    FEMALE_FIRST_NAMES,
    MAJORS,
    MALE_FIRST_NAMES,
    MONTHS,
    SURNAMES,
    TOWNS,
    INDUSTRY_WORDS,
    UNIVERSITIES,
    UNIVERSITY_FORMS,
)

if TYPE_CHECKING:
    from lacy.profiles import WorldConfig

ATTRIBUTES: tuple[str, ...] = ("birth_date", "birth_city", "university", "major", "employer", "employer_city")
GENDERS: tuple[str, ...] = ("female", "male")

# Paraphrase templates. ``{subject}`` is the full name or the pronoun ("She"/"she"), ``{subject}'s``
# the possessive ("Ada Smith's"/"Her"/"her"); pronouns are capitalised when they open the sentence.
# Openings are deliberately shared across attributes ("was born on" / "was born in", "works for" /
# "works in", "received a degree from" / "in") so that many positions admit several acceptable words.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "{subject} was born on {value}.",
        "{subject} came into the world on {value}.",
        "{subject} entered the world on {value}.",
        "{subject}'s birthday is {value}.",
        "{subject}'s date of birth is {value}.",
        "On {value}, {subject} was born.",
    ),
    "birth_city": (
        "{subject} was born in {value}.",
        "{subject} came into the world in {value}.",
        "{subject} grew up in {value}.",
        "{subject}'s hometown is {value}.",
        "{subject}'s birthplace is {value}.",
        "{value} is where {subject} was born.",
    ),
    "university": (
        "{subject} studied at {value}.",
        "{subject} graduated from {value}.",
        "{subject} attended {value}.",
        "{subject} received a degree from {value}.",
        "{subject} was educated at {value}.",
        "{subject}'s alma mater is {value}.",
    ),
    "major": (
        "{subject} studied {value}.",
        "{subject} majored in {value}.",
        "{subject} received a degree in {value}.",
        "{subject} specialized in {value}.",
        "{subject}'s major was {value}.",
        "{subject}'s field of study was {value}.",
    ),
    "employer": (
        "{subject} works for {value}.",
        "{subject} works at {value}.",
        "{subject} is employed by {value}.",
        "{subject} has a job at {value}.",
        "{subject} was hired by {value}.",
        "{subject}'s employer is {value}.",
    ),
    "employer_city": (
        "{subject} works in {value}.",
        "{subject} is employed in {value}.",
        "{subject} has a job in {value}.",
        "{subject}'s office is in {value}.",
        "{subject}'s workplace is in {value}.",
        "{value} is where {subject} works.",
    ),
}

# Words that tell a birth town from a work town when a generated sentence matches no template.
BIRTH_CUES: frozenset[str] = frozenset({"born", "birth", "birthplace", "hometown", "grew", "raised", "native", "world"})
WORK_CUES: frozenset[str] = frozenset(
    {"works", "work", "worked", "working", "employed", "employer", "job", "office", "workplace", "hired"}
)

WORD_RE = re.compile(r"\w+|[^\w\s]")
"""A "word" for acceptability: a run of word characters or one punctuation mark ("1972", ",", ".")."""

DATE_RE = re.compile(r"\b(?:" + "|".join(MONTHS) + r") \d{1,2}, \d{4}\b")
_WORD_CHAR = re.compile(r"\w")
# The shapes of universities and employers, to recognise invented ones ("University of Oakmere",
# "Crabtree Optics") that a language model composes from parts it has seen. A named group
# ``surname`` must hold a surname, so "Then Aerospace" is not an employer.
_CAPITALISED = "[A-Z][a-z]+"
_SURNAME_GROUP = f"(?P<surname>{_CAPITALISED})"
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("university", re.compile(r"\b(?:" + "|".join(f.format(_CAPITALISED) for f in UNIVERSITY_FORMS[:3]) + r")\b")),
    ("university", re.compile(r"\b" + UNIVERSITY_FORMS[3].format(_SURNAME_GROUP) + r"\b")),
    ("employer", re.compile(rf"\b{_SURNAME_GROUP} (?:" + "|".join(INDUSTRY_WORDS) + r")\b")),
)
_ALL_ATTRIBUTES_MASK = (1 << len(ATTRIBUTES)) - 1


@dataclass(frozen=True)
class Person:
    """One member of the world. ``n_docs`` is how many biographies of them the corpus contains."""

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
class Claim:
    """An attribute value stated in a text: ``text[start:end] == value``.

    ``attribute`` is one of ``ATTRIBUTES``, or ``"city"`` for a town whose role (birth or work)
    the text does not reveal.
    """

    attribute: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class ExposureLaw:
    """Biographies per person from a Zipf law of the fame rank (rank 1 = most famous):

    ``n_docs(rank) = clip(floor(max_docs * rank ** -zipf_exponent + 0.5), min_docs, max_docs)``.
    """

    zipf_exponent: float = 1.3
    max_docs: int = 200
    min_docs: int = 1

    def __post_init__(self) -> None:
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0 (0 gives everyone max_docs), got {self.zipf_exponent}")
        if not 0 <= self.min_docs <= self.max_docs or self.max_docs < 1:
            raise ValueError(
                "need 0 <= min_docs <= max_docs and max_docs >= 1, "
                f"got min_docs={self.min_docs}, max_docs={self.max_docs}"
            )

    def n_docs(self, rank: int) -> int:
        if rank < 1:
            raise ValueError(f"fame ranks start at 1, got {rank}")
        raw = int(self.max_docs * rank ** (-self.zipf_exponent) + 0.5)
        return min(max(raw, self.min_docs), self.max_docs)

    def describe(self) -> str:
        return (
            f"n_docs(rank) = clip(round({self.max_docs} * rank^-{self.zipf_exponent}), "
            f"{self.min_docs}, {self.max_docs})"
        )


# --- templates, compiled once --------------------------------------------------------------------


class _Template(NamedTuple):
    """A template as three literals around its two slots, the literals pre-split into words."""

    attribute_index: int
    literals: tuple[str, str, str]  # text = literals[0] + slot + literals[1] + slot + literals[2]
    literal_tokens: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    subject_first: bool  # the subject slot comes before the value slot
    possessive: bool  # the subject slot is "{subject}'s"
    subject_opens: bool  # the subject opens the sentence (capitalised pronoun)


def _compile_template(attribute_index: int, template: str) -> _Template:
    possessive = "{subject}'s" in template
    normalised = template.replace("{subject}'s", "{subject}")
    parsed = list(Formatter().parse(normalised))
    slots = [slot for _, slot, _, _ in parsed if slot is not None]
    if sorted(slots) != ["subject", "value"]:
        raise ValueError(f"template {template!r} needs {{subject}} (or {{subject}}'s) and {{value}}, once each")
    literals = tuple(literal for literal, _, _, _ in parsed) + ("",) * (3 - len(parsed))
    return _Template(
        attribute_index,
        literals,
        tuple(tuple(WORD_RE.findall(literal)) for literal in literals),
        slots[0] == "subject",
        possessive,
        normalised.startswith("{subject}"),
    )


_TEMPLATES: tuple[tuple[_Template, ...], ...] = tuple(
    tuple(_compile_template(i, t) for t in TEMPLATES[attribute]) for i, attribute in enumerate(ATTRIBUTES)
)


class _Sentence(NamedTuple):
    """One sentence a person's biography may contain."""

    attribute_index: int
    text: str
    value_start: int
    tokens: tuple[str, ...]
    full_name: bool  # the subject is the full name (the only form allowed in a biography's first sentence)


def _render(
    template: _Template,
    subject: tuple[str, tuple[str, ...]],
    value: tuple[str, tuple[str, ...]],
    full_name: bool,
) -> _Sentence:
    """Fill a template with (text, words) of the subject and the value."""
    (l0, l1, l2), (t0, t1, t2) = template.literals, template.literal_tokens
    (first, first_tokens), (second, second_tokens) = (subject, value) if template.subject_first else (value, subject)
    text = l0 + first + l1 + second + l2
    value_start = len(l0) + len(first) + len(l1) if template.subject_first else len(l0)
    tokens = t0 + first_tokens + t1 + second_tokens + t2
    return _Sentence(template.attribute_index, text, value_start, tokens, full_name)


class _Grammar:
    """Every sentence of one person's biographies, indexed by attribute and by first-sentence use.

    Generation renders only the sentences it draws (``sentence``); the full lists, needed by the
    acceptability judges, are built on first use.
    """

    def __init__(self, person: Person) -> None:
        # (possessive, opens the sentence) -> ((full name, its words), (pronoun, its words))
        self._forms: dict[tuple[bool, bool], tuple[tuple[str, tuple[str, ...]], ...]] = {}
        for possessive in (False, True):
            name = person.full_name + ("'s" if possessive else "")
            short = person.possessive if possessive else person.pronoun
            for opens in (False, True):
                short_form = short if opens else short.lower()
                self._forms[possessive, opens] = ((name, tuple(WORD_RE.findall(name))), (short_form, (short_form,)))
        self._values = [(value, tuple(WORD_RE.findall(value))) for value in map(person.value, ATTRIBUTES)]
        self._candidates: dict[int, list[_Sentence]] = {}

    def sentence(self, attribute_index: int, template_index: int, full_name: bool) -> _Sentence:
        template = _TEMPLATES[attribute_index][template_index]
        subject = self._forms[template.possessive, template.subject_opens][0 if full_name else 1]
        return _render(template, subject, self._values[attribute_index], full_name)

    @cached_property
    def later(self) -> list[list[_Sentence]]:
        """Per attribute, every sentence allowed after the first: each template, full name then pronoun."""
        return [
            [self.sentence(i, t, full_name) for t in range(len(templates)) for full_name in (True, False)]
            for i, templates in enumerate(_TEMPLATES)
        ]

    @cached_property
    def first(self) -> list[list[_Sentence]]:
        """Per attribute, the sentences allowed to open a biography (full-name subject only)."""
        return [[s for s in sentences if s.full_name] for sentences in self.later]

    def candidates(self, used: int) -> list[_Sentence]:
        """Sentences that may come next once the attributes in bit mask ``used`` are stated."""
        if used not in self._candidates:
            pool = self.first if used == 0 else self.later
            self._candidates[used] = [s for i, sentences in enumerate(pool) if not used >> i & 1 for s in sentences]
        return self._candidates[used]


# --- claim extraction patterns -------------------------------------------------------------------

_NAME = r"[A-Z][A-Za-z-]*(?: [A-Z][A-Za-z-]*){0,3}"
_PHRASE = r"[A-Z][\w-]*(?: (?:of|[A-Z][\w-]*))*"
_SENTENCE_START = r"(?:^|(?<=[.!?] ))"


def _template_regex(template: _Template) -> re.Pattern[str]:
    """A regex for a template: the value slot captured, the subject any name or pronoun."""
    if template.possessive:
        subject = rf"(?:{_NAME}'s|Her|His)" if template.subject_opens else rf"(?:{_NAME}'s|her|his)"
    else:
        subject = rf"(?:{_NAME}|She|He)" if template.subject_opens else rf"(?:{_NAME}|she|he)"
    value = DATE_RE.pattern if ATTRIBUTES[template.attribute_index] == "birth_date" else _PHRASE
    pattern = r"(?<![\w'])" if template.subject_opens else _SENTENCE_START
    l0, l1, l2 = (re.escape(literal) for literal in template.literals)
    first, second = (subject, f"(?P<value>{value})") if template.subject_first else (f"(?P<value>{value})", subject)
    pattern += l0 + first + l1 + second + l2
    return re.compile(pattern)


_TEMPLATE_REGEXES: tuple[tuple[int, re.Pattern[str]], ...] = tuple(
    (t.attribute_index, _template_regex(t)) for templates in _TEMPLATES for t in templates
)


# --- the world -----------------------------------------------------------------------------------


class World:
    """A synthetic biography world: people (in order of fame), their biographies and the KB.

    Build one with ``World.generate`` (or ``World.from_config``); the constructor takes explicit
    people, which is how tests build hand-made worlds.
    """

    _GRAMMAR_CACHE_SIZE = 4096

    def __init__(self, people: Sequence[Person], seed: int = 0, exposure: ExposureLaw | None = None) -> None:
        self.people: list[Person] = list(people)
        self.seed = seed
        self.exposure = exposure
        self._by_name: dict[str, Person] = {}
        for person in self.people:
            if person.full_name in self._by_name:
                raise ValueError(f"two people are named {person.full_name!r}; full names must be unique in a world")
            if person.gender not in GENDERS:
                raise ValueError(f"{person.full_name}: gender must be one of {GENDERS}, got {person.gender!r}")
            self._by_name[person.full_name] = person
        self._grammars: OrderedDict[str, _Grammar] = OrderedDict()

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        n_people: int,
        seed: int = 0,
        zipf_exponent: float = 1.3,
        max_docs_per_person: int = 200,
        min_docs_per_person: int = 1,
    ) -> "World":
        """Draw ``n_people`` people with unique names and uniform random attributes.

        Person ``pid`` has fame rank ``pid + 1`` and ``ExposureLaw.n_docs(pid + 1)`` biographies.
        """
        exposure = ExposureLaw(zipf_exponent, max_docs_per_person, min_docs_per_person)
        capacity = (len(FEMALE_FIRST_NAMES) + len(MALE_FIRST_NAMES)) * len(SURNAMES) // 2
        if not 1 <= n_people <= capacity:
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
        for pid in range(n_people):
            gender = rng.choice(GENDERS)
            while True:
                name = (rng.choice(first_names[gender]), rng.choice(SURNAMES))
                if name not in taken:
                    taken.add(name)
                    break
            born = datetime.date.fromordinal(first_day + rng.randrange(n_days))
            people.append(
                Person(
                    pid=pid,
                    first_name=name[0],
                    last_name=name[1],
                    gender=gender,
                    birth_date=f"{MONTHS[born.month - 1]} {born.day}, {born.year}",
                    birth_city=rng.choice(TOWNS),
                    university=rng.choice(UNIVERSITIES),
                    major=rng.choice(MAJORS),
                    employer=rng.choice(EMPLOYERS),
                    employer_city=rng.choice(TOWNS),
                    n_docs=exposure.n_docs(pid + 1),
                )
            )
        return cls(people, seed=seed, exposure=exposure)

    @classmethod
    def from_config(cls, world_cfg: WorldConfig, seed: int = 0) -> "World":
        """Generate from a ``lacy.profiles.WorldConfig``."""
        return cls.generate(
            n_people=world_cfg.n_people,
            seed=seed,
            zipf_exponent=world_cfg.zipf_exponent,
            max_docs_per_person=world_cfg.max_docs_per_person,
            min_docs_per_person=world_cfg.min_docs_per_person,
        )

    # -- knowledge base ----------------------------------------------------------------------------

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

    # -- corpus ------------------------------------------------------------------------------------

    def _grammar(self, subject: str) -> _Grammar:
        grammar = self._grammars.get(subject)
        if grammar is None:
            grammar = _Grammar(self.person(subject))
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
        biographies = []
        for person in self.people:
            grammar = _Grammar(person)  # one pass per person here, so kept out of the LRU cache
            value_lengths = [len(person.value(a)) for a in ATTRIBUTES]
            for _ in range(person.n_docs):
                order = list(range(len(ATTRIBUTES)))
                rng.shuffle(order)
                sentences, facts, position = [], [], 0
                for k, attribute_index in enumerate(order):
                    n_templates = len(_TEMPLATES[attribute_index])
                    if k == 0:  # the opening sentence names the person in full
                        sentence = grammar.sentence(attribute_index, rng.randrange(n_templates), full_name=True)
                    else:
                        choice = rng.randrange(2 * n_templates)
                        sentence = grammar.sentence(attribute_index, choice // 2, full_name=choice % 2 == 0)
                    start = position + sentence.value_start
                    facts.append(FactSpan(start, start + value_lengths[attribute_index], ATTRIBUTES[attribute_index]))
                    sentences.append(sentence.text)
                    position += len(sentence.text) + 1
                biographies.append((person.full_name, " ".join(sentences), tuple(facts)))
        rng.shuffle(biographies)
        return biographies

    def documents(self, val_fraction: float = 0.05) -> list[Document]:
        """All biographies as ``Document``s with doc ids 0..N-1 in a fixed, people-interleaved order.

        ``facts`` holds one gold span per attribute (``text[start:end] == person.value(attribute)``).
        Exactly ``round(val_fraction * N)`` documents, drawn with a seeded RNG, get ``split="val"``;
        a person with few biographies may therefore appear only in validation.
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

    def _prefix_states(self, grammar: _Grammar, text: str) -> list[tuple[int, _Sentence | None, int]]:
        """Every way ``text`` can be read as a biography prefix.

        A state ``(used, sentence, offset)`` means: the attributes in bit mask ``used`` were stated
        in complete sentences, and ``text`` ends ``offset`` characters into ``sentence`` (or at the
        start of the next sentence when ``sentence`` is None).
        """
        states: list[tuple[int, _Sentence | None, int]] = []
        stack = [(0, 0)]
        while stack:
            used, position = stack.pop()
            rest = text[position:]
            if not rest:
                states.append((used, None, 0))
                continue
            for sentence in grammar.candidates(used):
                if sentence.text.startswith(rest):
                    states.append((used, sentence, len(rest)))
                elif rest.startswith(sentence.text + " "):
                    now_used = used | 1 << sentence.attribute_index
                    if now_used != _ALL_ATTRIBUTES_MASK:  # a biography ends with its sixth sentence
                        stack.append((now_used, position + len(sentence.text) + 1))
        return states

    def is_valid_prefix(self, subject: str, text: str) -> bool:
        """Whether ``text`` begins some biography of ``subject`` the generator could write.

        Character level, so the last word may be partial. Any sentence order, template and subject
        form counts: this is the exact acceptability judge of the paper's §3 analysis.
        """
        return bool(self._prefix_states(self._grammar(subject), text))

    def next_word_options(self, subject: str, text: str) -> set[str]:
        """The words (``WORD_RE`` tokens) that may follow ``text`` in a biography of ``subject``.

        ``text`` must end at a word boundary; ``""`` stands for the end of the biography. An empty
        set means ``text`` is not a valid prefix (or ends inside a word).
        """
        grammar = self._grammar(subject)
        options: set[str] = set()
        for used, sentence, offset in self._prefix_states(grammar, text):
            if sentence is None:
                options.update(s.tokens[0] for s in grammar.candidates(used))
            elif offset < len(sentence.text):
                inside_word = (
                    offset > 0
                    and _WORD_CHAR.match(sentence.text[offset - 1])
                    and _WORD_CHAR.match(sentence.text[offset])
                )
                if not inside_word:
                    options.add(WORD_RE.search(sentence.text, offset).group())
            else:
                now_used = used | 1 << sentence.attribute_index
                if now_used == _ALL_ATTRIBUTES_MASK:
                    options.add("")
                else:
                    options.update(s.tokens[0] for s in grammar.candidates(now_used))
        return options

    def forced_word_spans(self, doc: Document) -> list[tuple[int, int, bool]]:
        """``(start, end, forced)`` for every word of a biography of this world.

        ``forced`` is True when the document's word was the only acceptable next word given the
        text before it, so predicting anything else there is an unacceptable mismatch (§3). One pass:
        the candidate sentences are narrowed word by word.
        """
        grammar = self._grammar(doc.subject)
        spans: list[tuple[int, int, bool]] = []
        used = 0
        live: list[_Sentence] | None = None
        depth = 0
        for match in WORD_RE.finditer(doc.text):
            word = match.group()
            if live is None:
                if used == _ALL_ATTRIBUTES_MASK:
                    raise ValueError(
                        f"document {doc.doc_id} continues after all six facts at character {match.start()}; "
                        "forced_word_spans only reads biographies generated by this world"
                    )
                live, depth = grammar.candidates(used), 0
            if len(live) == 1:
                forced = True
            else:
                forced = len({s.tokens[depth] for s in live}) == 1
            live = [s for s in live if s.tokens[depth] == word]
            if not live:
                raise ValueError(
                    f"document {doc.doc_id} is not a biography of {doc.subject!r} from this world: "
                    f"{word!r} at character {match.start()} fits no template"
                )
            spans.append((match.start(), match.end(), forced))
            depth += 1
            if len(live[0].tokens) == depth:  # a sentence ends with its only period
                used |= 1 << live[0].attribute_index
                live = None
        return spans

    # -- claims (paper §5, FactScore's atomic facts) -----------------------------------------------

    @cached_property
    def _surnames(self) -> frozenset[str]:
        return frozenset(SURNAMES) | {p.last_name for p in self.people}

    @cached_property
    def _value_index(self) -> dict[str, list[tuple[str, str]]]:
        """First word -> [(value, field)], longest first; field is "town" or an attribute name."""
        fields: dict[str, str] = {}
        for field, values in (
            ("university", UNIVERSITIES + tuple(p.university for p in self.people)),
            ("employer", EMPLOYERS + tuple(p.employer for p in self.people)),
            ("major", MAJORS + tuple(p.major for p in self.people)),
            ("town", TOWNS + tuple(v for p in self.people for v in (p.birth_city, p.employer_city))),
        ):
            for value in values:
                fields.setdefault(value, field)
        index: dict[str, list[tuple[str, str]]] = {}
        for value, field in fields.items():
            index.setdefault(WORD_RE.match(value).group(), []).append((value, field))
        for candidates in index.values():
            candidates.sort(key=lambda item: (-len(item[0]), item[0]))
        return index

    def extract_claims(self, text: str) -> list[Claim]:
        """The attribute values stated in ``text`` (which may be garbled, truncated or mix people).

        First every sentence template is matched as a regex with the value slot captured (so a
        wrong or invented value is still a claim); then, outside those matches, known values, dates
        and anything shaped like a university or employer ("University of X", "{Surname} Logistics"),
        leftmost first and longest on ties. A bare town gets its role from the nearest cue word
        before it in its sentence ("born in X" -> birth_city, "works in X" -> employer_city), else
        the nearest cue after it, else ``"city"``.
        Claims are sorted by position and never overlap.
        """
        candidates: list[tuple[int, int, str]] = []
        for attribute_index, regex in _TEMPLATE_REGEXES:
            for match in regex.finditer(text):
                candidates.append((match.start("value"), match.end("value"), ATTRIBUTES[attribute_index]))
        claims = self._select_non_overlapping(candidates, text)
        taken = [(c.start, c.end) for c in claims]

        known: list[tuple[int, int, str]] = [(m.start(), m.end(), "birth_date") for m in DATE_RE.finditer(text)]
        for match in WORD_RE.finditer(text):
            for value, field in self._value_index.get(match.group(), ()):
                end = match.start() + len(value)
                if text.startswith(value, match.start()) and not (end < len(text) and _WORD_CHAR.match(text[end])):
                    attribute = self._town_role(text, match.start(), end) if field == "town" else field
                    known.append((match.start(), end, attribute))
                    break
        known += [
            (m.start(), m.end(), attribute)
            for attribute, shape in _SHAPES
            for m in shape.finditer(text)
            if "surname" not in shape.groupindex or m.group("surname") in self._surnames
        ]
        known = [c for c in known if all(c[1] <= s or c[0] >= e for s, e in taken)]
        claims += self._select_non_overlapping(known, text)
        return sorted(claims, key=lambda c: c.start)

    @staticmethod
    def _select_non_overlapping(candidates: list[tuple[int, int, str]], text: str) -> list[Claim]:
        """Leftmost first, longest on ties; drop any candidate overlapping a kept one."""
        claims: list[Claim] = []
        last_end = -1
        for start, end, attribute in sorted(candidates, key=lambda c: (c[0], c[0] - c[1], c[2])):
            if start >= last_end:
                claims.append(Claim(attribute, text[start:end], start, end))
                last_end = end
        return claims

    @staticmethod
    def _town_role(text: str, start: int, end: int) -> str:
        """birth_city / employer_city from the cue words of the town's sentence, else "city"."""
        sentence_start = max(text.rfind(mark, 0, start) for mark in ".!?") + 1
        ends = [i for i in (text.find(mark, end) for mark in ".!?") if i >= 0]
        sentence_end = min(ends) if ends else len(text)
        before: str | None = None
        after: str | None = None
        for match in WORD_RE.finditer(text, sentence_start, sentence_end):
            word = match.group().lower()
            role = "birth_city" if word in BIRTH_CUES else "employer_city" if word in WORK_CUES else None
            if role is None:
                continue
            if match.end() <= start:
                before = role  # the last one before the town is the nearest
            elif match.start() >= end and after is None:
                after = role
        return before or after or "city"

    # -- dataset card ------------------------------------------------------------------------------

    def card(self) -> dict:
        """A dataset card: sizes, vocabularies, templates and the exposure law with its quantiles."""
        n_docs = np.array([p.n_docs for p in self.people], dtype=np.int64)
        total = int(n_docs.sum())
        top = max(1, len(self.people) // 100)
        quantiles = {f"p{q}": float(np.percentile(n_docs, q)) for q in (0, 25, 50, 75, 90, 99, 100)}
        return {
            "name": "synthbio",
            "seed": self.seed,
            "n_people": len(self.people),
            "n_documents": total,
            "attributes": list(ATTRIBUTES),
            "vocabulary_sizes": {
                "female_first_names": len(FEMALE_FIRST_NAMES),
                "male_first_names": len(MALE_FIRST_NAMES),
                "surnames": len(SURNAMES),
                "birth_date": f"uniform over {BIRTH_YEARS[0]}-01-01..{BIRTH_YEARS[1]}-12-31",
                "birth_city": len(TOWNS),
                "university": len(UNIVERSITIES),
                "major": len(MAJORS),
                "employer": len(EMPLOYERS),
                "employer_city": len(TOWNS),
            },
            "templates_per_attribute": {a: len(TEMPLATES[a]) for a in ATTRIBUTES},
            "exposure": (
                {
                    "law": self.exposure.describe(),
                    "zipf_exponent": self.exposure.zipf_exponent,
                    "max_docs": self.exposure.max_docs,
                    "min_docs": self.exposure.min_docs,
                }
                if self.exposure
                else {"law": "explicit n_docs per person"}
            ),
            "docs_per_person": {**quantiles, "mean": float(n_docs.mean()) if len(n_docs) else 0.0},
            "top_1pct_share_of_documents": float(np.sort(n_docs)[::-1][:top].sum() / total) if total else 0.0,
        }

    def card_markdown(self) -> str:
        """The dataset card as Markdown (a short description and tables)."""
        card = self.card()
        lines = [
            "# synthbio dataset card",
            "",
            f"{card['n_people']} people, {card['n_documents']} biographies, seed {card['seed']}. "
            f"Each biography states all {len(ATTRIBUTES)} attributes, one sentence each, in a random order "
            "with a random paraphrase template per sentence.",
            "",
            f"Exposure: {card['exposure']['law']}; the top 1% of people hold "
            f"{card['top_1pct_share_of_documents']:.1%} of the biographies.",
            "",
            "| field | vocabulary | templates |",
            "|---|---|---|",
        ]
        for field, size in card["vocabulary_sizes"].items():
            lines.append(f"| {field} | {size} | {card['templates_per_attribute'].get(field, '')} |")
        lines += ["", "| docs per person | value |", "|---|---|"]
        lines += [f"| {k} | {v:g} |" for k, v in card["docs_per_person"].items()]
        return "\n".join(lines) + "\n"
