"""Reading claims back out of text about synthbio people (paper §5: FactScore's atomic facts).

:class:`ClaimExtractor` finds every attribute value a text states, whether the text is a real
biography, a garbled generation, or mixes people. ``World.extract_claims`` is the public entry point.
Remark sentences (``synthbio_grammar.REMARKS``) hold only lower-case free words, so they never yield a
claim. This module must not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from lacy.data.synthbio_grammar import ATTRIBUTES, FACT_TEMPLATES, WORD_RE, Template
from lacy.data.synthbio_vocab import EMPLOYERS, INDUSTRY_WORDS, MAJORS, MONTHS, SURNAMES, TOWNS, UNIVERSITIES, UNIVERSITY_FORMS

# Words that tell a birth town from a work town when a generated sentence matches no template.
BIRTH_CUES: frozenset[str] = frozenset({"born", "birth", "birthplace", "hometown", "grew", "raised", "native", "world"})
WORK_CUES: frozenset[str] = frozenset(
    {"works", "work", "worked", "working", "employed", "employer", "job", "office", "workplace", "hired"}
)

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

_NAME = r"[A-Z][A-Za-z-]*(?: [A-Z][A-Za-z-]*){0,3}"
_PHRASE = r"[A-Z][\w-]*(?: (?:of|[A-Z][\w-]*))*"
_SENTENCE_START = r"(?:^|(?<=[.!?] ))"


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


def _template_regex(template: Template) -> re.Pattern[str]:
    """A regex for a fact template: the value slot captured, the subject any name or pronoun."""
    if template.possessive:
        subject = rf"(?:{_NAME}'s|Her|His)" if template.subject_opens else rf"(?:{_NAME}'s|her|his)"
    else:
        subject = rf"(?:{_NAME}|She|He)" if template.subject_opens else rf"(?:{_NAME}|she|he)"
    value = DATE_RE.pattern if ATTRIBUTES[template.kind] == "birth_date" else _PHRASE
    pattern = r"(?<![\w'])" if template.subject_opens else _SENTENCE_START
    l0, l1, l2 = (re.escape(literal) for literal in template.literals)
    first, second = (subject, f"(?P<value>{value})") if template.subject_first else (f"(?P<value>{value})", subject)
    pattern += l0 + first + l1 + second + l2
    return re.compile(pattern)


_TEMPLATE_REGEXES: tuple[tuple[int, re.Pattern[str]], ...] = tuple(
    (t.kind, _template_regex(t)) for templates in FACT_TEMPLATES for t in templates
)


class ClaimExtractor:
    """Claims in text, knowing the vocabularies plus the values and surnames of one world's people."""

    def __init__(self, surnames: Iterable[str], values: dict[str, Iterable[str]]) -> None:
        """``values``: extra values per field ("university", "employer", "major", "town")."""
        self._surnames = frozenset(SURNAMES) | frozenset(surnames)
        fields: dict[str, str] = {}
        for field, vocabulary in (("university", UNIVERSITIES), ("employer", EMPLOYERS), ("major", MAJORS), ("town", TOWNS)):
            for value in (*vocabulary, *values.get(field, ())):
                fields.setdefault(value, field)
        index: dict[str, list[tuple[str, str]]] = {}
        for value, field in fields.items():
            index.setdefault(WORD_RE.match(value).group(), []).append((value, field))
        for candidates in index.values():
            candidates.sort(key=lambda item: (-len(item[0]), item[0]))
        self._value_index = index  # first word -> [(value, field)], longest first

    def extract(self, text: str) -> list[Claim]:
        """See ``World.extract_claims``."""
        candidates: list[tuple[int, int, str]] = []
        for kind, regex in _TEMPLATE_REGEXES:
            for match in regex.finditer(text):
                candidates.append((match.start("value"), match.end("value"), ATTRIBUTES[kind]))
        claims = _select_non_overlapping(candidates, text)
        taken = [(c.start, c.end) for c in claims]

        known: list[tuple[int, int, str]] = [(m.start(), m.end(), "birth_date") for m in DATE_RE.finditer(text)]
        for match in WORD_RE.finditer(text):
            for value, field in self._value_index.get(match.group(), ()):
                end = match.start() + len(value)
                if text.startswith(value, match.start()) and not (end < len(text) and _WORD_CHAR.match(text[end])):
                    attribute = _town_role(text, match.start(), end) if field == "town" else field
                    known.append((match.start(), end, attribute))
                    break
        known += [
            (m.start(), m.end(), attribute)
            for attribute, shape in _SHAPES
            for m in shape.finditer(text)
            if "surname" not in shape.groupindex or m.group("surname") in self._surnames
        ]
        known = [c for c in known if all(c[1] <= s or c[0] >= e for s, e in taken)]
        claims += _select_non_overlapping(known, text)
        return sorted(claims, key=lambda c: c.start)


def _select_non_overlapping(candidates: list[tuple[int, int, str]], text: str) -> list[Claim]:
    """Leftmost first, longest on ties; drop any candidate overlapping a kept one."""
    claims: list[Claim] = []
    last_end = -1
    for start, end, attribute in sorted(candidates, key=lambda c: (c[0], c[0] - c[1], c[2])):
        if start >= last_end:
            claims.append(Claim(attribute, text[start:end], start, end))
            last_end = end
    return claims


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
