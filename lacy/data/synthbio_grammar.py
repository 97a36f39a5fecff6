"""The grammar of synthbio biographies: fact templates, free remarks, and the exact acceptability judge.

A biography is a sequence of sentences. Each of the six *fact* sentences states one attribute of the
person with one of several paraphrase templates; the first sentence is a fact sentence that names the
person in full, later ones use the full name or a pronoun. *Remark* sentences (at most one per topic)
assert nothing checkable: their one free word ("She was known for her patience" → any trait) is
drawn independently of the person, so every choice is an acceptable continuation. Remarks give the
corpus the paper's fact density (gold facts ≈ 20–30% of tokens, §4) and many high-loss yet acceptable
tokens (§3). A biography may end once all six facts are stated.

Because the grammar is known, three questions are decided exactly here (paper §3): whether a text is
a valid biography prefix, which words may come next, and which words of a biography were forced.
This module must not import torch.
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from string import Formatter
from typing import NamedTuple

from lacy.data.corpus import Document

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

# Remarks: per topic, templates whose ``{choice}`` is any word of the topic's list, whoever the person
# is. The subject is always a pronoun (remarks never repeat the name), and every word is lower case and
# digit-free, so the spaCy fact proxy has nothing to flag. Openings overlap with each other and with
# the fact templates ("was known for" / "was known as", "was born" / "was a"), adding acceptable forks.
REMARKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "character": (
        (
            "{subject} was known for {choice}.",
            "{subject} was admired for {choice}.",
            "{subject} was respected for {choice}.",
            "{subject}'s {choice} was widely admired.",
            "{subject}'s {choice} impressed everyone.",
        ),
        tuple("patience kindness humour curiosity honesty generosity modesty optimism diligence warmth wit courage".split()),
    ),
    "pastime": (
        (
            "{subject} enjoyed {choice}.",
            "{subject} liked {choice}.",
            "{subject} took up {choice}.",
            "For fun, {subject} enjoyed {choice}.",
            "{subject}'s favourite pastime was {choice}.",
            "{subject}'s hobby was {choice}.",
        ),
        tuple("gardening reading painting cooking hiking fishing cycling baking sailing knitting swimming chess".split()),
    ),
    "interest": (
        (
            "{subject} had a keen interest in {choice}.",
            "{subject} was fascinated by {choice}.",
            "{subject} read widely about {choice}.",
            "{subject} cared deeply about {choice}.",
            "{subject}'s great passion was {choice}.",
        ),
        tuple("history nature science art music travel architecture astronomy poetry philosophy film wildlife".split()),
    ),
    "manner": (
        (
            "{subject} approached every task with {choice}.",
            "{subject} did everything with {choice}.",
            "{subject} always acted with {choice}.",
            "{subject} spoke with {choice}.",
            "{subject} met every challenge with {choice}.",
        ),
        tuple("care energy calm confidence precision enthusiasm grace humility determination focus charm tact".split()),
    ),
    "temperament": (
        (
            "{subject} was a {choice} person.",
            "{subject} was {choice} by nature.",
            "{subject} was always {choice}.",
            "{subject} was known as a {choice} friend.",
            "{subject} was a {choice} neighbour.",
        ),
        tuple("cheerful quiet thoughtful friendly generous reliable modest careful lively gentle patient witty".split()),
    ),
}
REMARK_TOPICS: tuple[str, ...] = tuple(REMARKS)
SENTENCE_KINDS: tuple[str, ...] = ATTRIBUTES + REMARK_TOPICS
"""What a sentence is about: an attribute (kinds 0-5) or a remark topic (kinds 6-)."""

FACT_MASK = (1 << len(ATTRIBUTES)) - 1
"""Bit mask of the fact kinds: a biography may end once ``used & FACT_MASK == FACT_MASK``."""
ALL_KINDS_MASK = (1 << len(SENTENCE_KINDS)) - 1

WORD_RE = re.compile(r"\w+|[^\w\s]")
"""A "word" for acceptability: a run of word characters or one punctuation mark ("1972", ",", ".")."""
_WORD_CHAR = re.compile(r"\w")


class Template(NamedTuple):
    """A template as three literals around its two slots, the literals pre-split into words."""

    kind: int  # index into SENTENCE_KINDS
    literals: tuple[str, str, str]  # text = literals[0] + slot + literals[1] + slot + literals[2]
    literal_tokens: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    subject_first: bool  # the subject slot comes before the value slot
    possessive: bool  # the subject slot is "{subject}'s"
    subject_opens: bool  # the subject opens the sentence (capitalised pronoun)


def _compile_template(kind: int, template: str) -> Template:
    possessive = "{subject}'s" in template
    normalised = template.replace("{subject}'s", "{subject}").replace("{choice}", "{value}")
    parsed = list(Formatter().parse(normalised))
    slots = [slot for _, slot, _, _ in parsed if slot is not None]
    if sorted(slots) != ["subject", "value"]:
        raise ValueError(f"template {template!r} needs {{subject}} (or {{subject}}'s) and {{value}}/{{choice}}, once each")
    literals = tuple(literal for literal, _, _, _ in parsed) + ("",) * (3 - len(parsed))
    return Template(
        kind,
        literals,
        tuple(tuple(WORD_RE.findall(literal)) for literal in literals),
        slots[0] == "subject",
        possessive,
        normalised.startswith("{subject}"),
    )


FACT_TEMPLATES: tuple[tuple[Template, ...], ...] = tuple(
    tuple(_compile_template(i, t) for t in TEMPLATES[attribute]) for i, attribute in enumerate(ATTRIBUTES)
)
REMARK_TEMPLATES: tuple[tuple[Template, ...], ...] = tuple(
    tuple(_compile_template(len(ATTRIBUTES) + i, t) for t in REMARKS[topic][0]) for i, topic in enumerate(REMARK_TOPICS)
)


class Sentence(NamedTuple):
    """One sentence a person's biography may contain."""

    kind: int  # index into SENTENCE_KINDS
    text: str
    value_start: int
    tokens: tuple[str, ...]
    full_name: bool  # the subject is the full name (the only form allowed in a biography's first sentence)


def _render(template: Template, subject: tuple[str, tuple[str, ...]], value: tuple[str, tuple[str, ...]],
            full_name: bool) -> Sentence:
    """Fill a template with (text, words) of the subject and the value."""
    (l0, l1, l2), (t0, t1, t2) = template.literals, template.literal_tokens
    (first, first_tokens), (second, second_tokens) = (subject, value) if template.subject_first else (value, subject)
    text = l0 + first + l1 + second + l2
    value_start = len(l0) + len(first) + len(l1) if template.subject_first else len(l0)
    return Sentence(template.kind, text, value_start, t0 + first_tokens + t1 + second_tokens + t2, full_name)


def _pronoun(gender: str, possessive: bool, opens: bool) -> tuple[str, tuple[str, ...]]:
    word = ("Her" if possessive else "She") if gender == "female" else ("His" if possessive else "He")
    word = word if opens else word.lower()
    return word, (word,)


class _Remarks:
    """Every remark sentence for one gender (remarks never name the person, so people share them)."""

    def __init__(self, gender: str) -> None:
        self.by_topic: list[list[Sentence]] = []
        for templates, (_, choices) in zip(REMARK_TEMPLATES, REMARKS.values()):
            self.by_topic.append([
                _render(t, _pronoun(gender, t.possessive, t.subject_opens), (c, (c,)), False)
                for t in templates for c in choices
            ])  # fmt: skip
        self._candidates: dict[int, list[Sentence]] = {}
        self._by_first: dict[int, dict[str, list[Sentence]]] = {}
        self.by_text = {s.text: s for sentences in self.by_topic for s in sentences}

    def candidates(self, used_topics: int) -> list[Sentence]:
        if used_topics not in self._candidates:
            self._candidates[used_topics] = [
                s for i, sentences in enumerate(self.by_topic) if not used_topics >> i & 1 for s in sentences
            ]
        return self._candidates[used_topics]

    def by_first_word(self, used_topics: int) -> dict[str, list[Sentence]]:
        if used_topics not in self._by_first:
            self._by_first[used_topics] = _index_by_first_word(self.candidates(used_topics))
        return self._by_first[used_topics]


def _index_by_first_word(sentences: list[Sentence]) -> dict[str, list[Sentence]]:
    index: dict[str, list[Sentence]] = {}
    for sentence in sentences:
        index.setdefault(sentence.tokens[0], []).append(sentence)
    return index


@lru_cache(maxsize=None)
def _remarks(gender: str) -> _Remarks:
    return _Remarks(gender)


class Grammar:
    """Every sentence of one person's biographies, indexed by kind and by first-sentence use.

    Generation renders only the sentences it draws (``sentence``, ``remark``); the full lists, needed
    by the acceptability judges, are built on first use.
    """

    def __init__(self, full_name: str, gender: str, values: tuple[str, ...]) -> None:
        # (possessive, opens the sentence) -> ((full name, its words), (pronoun, its words))
        self._forms: dict[tuple[bool, bool], tuple[tuple[str, tuple[str, ...]], ...]] = {}
        for possessive in (False, True):
            name = full_name + ("'s" if possessive else "")
            for opens in (False, True):
                self._forms[possessive, opens] = ((name, tuple(WORD_RE.findall(name))), _pronoun(gender, possessive, opens))
        self._values = [(value, tuple(WORD_RE.findall(value))) for value in values]
        self._gender = gender
        self._facts: dict[int, list[Sentence]] = {}
        self._facts_index: dict[int, dict[str, list[Sentence]]] = {}

    def sentence(self, attribute_index: int, template_index: int, full_name: bool) -> Sentence:
        """The fact sentence of one attribute with one template and subject form."""
        template = FACT_TEMPLATES[attribute_index][template_index]
        subject = self._forms[template.possessive, template.subject_opens][0 if full_name else 1]
        return _render(template, subject, self._values[attribute_index], full_name)

    def remark(self, topic_index: int, template_index: int, choice_index: int) -> Sentence:
        """The remark of one topic with one template and free word."""
        n_choices = len(REMARKS[REMARK_TOPICS[topic_index]][1])
        return _remarks(self._gender).by_topic[topic_index][template_index * n_choices + choice_index]

    @cached_property
    def later(self) -> list[list[Sentence]]:
        """Per attribute, every fact sentence allowed after the first: each template, full name then pronoun."""
        return [
            [self.sentence(i, t, full_name) for t in range(len(templates)) for full_name in (True, False)]
            for i, templates in enumerate(FACT_TEMPLATES)
        ]

    @cached_property
    def first(self) -> list[Sentence]:
        """The sentences allowed to open a biography: fact sentences with the full-name subject."""
        return [s for sentences in self.later for s in sentences if s.full_name]

    def candidates(self, used: int) -> list[Sentence]:
        """Sentences that may come next once the kinds in bit mask ``used`` are stated."""
        if used == 0:
            return self.first
        return self._fact_candidates(used & FACT_MASK) + _remarks(self._gender).candidates(used >> len(ATTRIBUTES))

    def _fact_candidates(self, facts: int) -> list[Sentence]:
        if facts not in self._facts:
            self._facts[facts] = [s for i, sentences in enumerate(self.later) if not facts >> i & 1 for s in sentences]
        return self._facts[facts]

    def candidates_reading(self, used: int, text: str) -> list[Sentence]:
        """The candidates after ``used`` whose text could begin ``text`` (or be begun by it), found
        through an index on the first word; ``text`` is non-empty and starts a sentence."""
        match = WORD_RE.match(text)
        if match is None:
            return []
        word = match.group()
        if used == 0:
            tables = [self._first_index]
        else:
            facts = used & FACT_MASK
            if facts not in self._facts_index:
                self._facts_index[facts] = _index_by_first_word(self._fact_candidates(facts))
            tables = [self._facts_index[facts], _remarks(self._gender).by_first_word(used >> len(ATTRIBUTES))]
        if match.end() < len(text):  # the first word is complete
            return [s for table in tables for s in table.get(word, ())]
        return [s for table in tables for token, sentences in table.items() if token.startswith(word) for s in sentences]

    @cached_property
    def _first_index(self) -> dict[str, list[Sentence]]:
        return _index_by_first_word(self.first)

    @cached_property
    def _fact_by_text(self) -> dict[str, Sentence]:
        return {s.text: s for sentences in self.later for s in sentences}

    def complete_sentence(self, used: int, text: str) -> Sentence | None:
        """The sentence whose text is ``text`` if it may come after the kinds in ``used``, else None."""
        sentence = self._fact_by_text.get(text) or _remarks(self._gender).by_text.get(text)
        if sentence is None or used >> sentence.kind & 1 or (used == 0 and not sentence.full_name):
            return None
        return sentence


def _may_end(used: int) -> bool:
    return used & FACT_MASK == FACT_MASK


def prefix_states(grammar: Grammar, text: str) -> list[tuple[int, Sentence | None, int]]:
    """Every way ``text`` can be read as a biography prefix.

    A state ``(used, sentence, offset)`` means: the kinds in bit mask ``used`` were stated in complete
    sentences, and ``text`` ends ``offset`` characters into ``sentence`` (or at the start of the next
    sentence when ``sentence`` is None). Sentences hold exactly one period, at their end, and are
    joined by one space, so the complete sentences of ``text`` are read off one by one and only the
    last, possibly partial, sentence can have several readings.
    """
    used, position = 0, 0
    while True:
        rest = text[position:]
        if not rest:
            return [(used, None, 0)]
        end = rest.find(". ")
        if end < 0:
            return [(used, s, len(rest)) for s in grammar.candidates_reading(used, rest) if s.text.startswith(rest)]
        sentence = grammar.complete_sentence(used, rest[: end + 1])
        if sentence is None:
            return []
        used |= 1 << sentence.kind
        if used == ALL_KINDS_MASK:  # with every kind stated, the biography is over
            return []
        position += end + 2


def next_word_options(grammar: Grammar, text: str) -> set[str]:
    """The words that may follow ``text`` (ending at a word boundary); ``""`` = the biography may end."""
    options: set[str] = set()

    def sentence_start(used: int) -> None:
        if used != ALL_KINDS_MASK:
            options.update(s.tokens[0] for s in grammar.candidates(used))
        if _may_end(used):
            options.add("")

    for used, sentence, offset in prefix_states(grammar, text):
        if sentence is None:
            sentence_start(used)
        elif offset < len(sentence.text):
            inside_word = offset > 0 and _WORD_CHAR.match(sentence.text[offset - 1]) and _WORD_CHAR.match(sentence.text[offset])
            if not inside_word:
                options.add(WORD_RE.search(sentence.text, offset).group())
        else:
            sentence_start(used | 1 << sentence.kind)
    return options


def forced_word_spans(grammar: Grammar, doc: Document) -> list[tuple[int, int, bool]]:
    """``(start, end, forced)`` for every word of a biography (see ``World.forced_word_spans``).

    One pass: the candidate sentences are narrowed word by word. A sentence start is never forced
    once the facts are complete, since ending the biography there was acceptable too.
    """
    spans: list[tuple[int, int, bool]] = []
    used = 0
    live: list[Sentence] | None = None
    depth = 0
    for match in WORD_RE.finditer(doc.text):
        word = match.group()
        may_end = False
        if live is None:
            if used == ALL_KINDS_MASK:
                raise ValueError(
                    f"document {doc.doc_id} continues after every fact and remark at character {match.start()}; "
                    "forced_word_spans only reads biographies generated by this world"
                )
            live, depth, may_end = grammar.candidates(used), 0, _may_end(used)
        forced = not may_end and (len(live) == 1 or len({s.tokens[depth] for s in live}) == 1)
        live = [s for s in live if s.tokens[depth] == word]
        if not live:
            raise ValueError(
                f"document {doc.doc_id} is not a biography of {doc.subject!r} from this world: "
                f"{word!r} at character {match.start()} fits no template"
            )
        spans.append((match.start(), match.end(), forced))
        depth += 1
        if len(live[0].tokens) == depth:  # a sentence ends with its only period
            used |= 1 << live[0].kind
            live = None
    return spans
