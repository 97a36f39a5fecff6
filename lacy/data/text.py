"""Text normalisation and the word-boundary support check shared by the data audit and the metrics.

Reference-based fact checking (FActScore on real biographies, paper §5) decides whether a stated fact
occurs in the subject's reference text. Both sides are normalised the same way (:func:`normalize`),
then the fact must occur on word boundaries (:func:`word_supported`), so "100" is not found in "1000".
"""

from __future__ import annotations

import re
import unicodedata

from lacy.data.synthbio_vocab import MONTHS

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


def word_supported(text: str | None, reference: str, *, normalized_reference: bool = False) -> bool:
    """Whether ``text`` (normalised) occurs on word boundaries in ``reference`` (normalised).

    Text that normalises to nothing (punctuation, articles, ``None``) is never supported. Pass
    ``normalized_reference=True`` when ``reference`` is already :func:`normalize`-d (checking many
    facts against one reference).

    >>> word_supported(" Ulm,", "Einstein was born in Ulm in 1879.")
    True
    >>> word_supported(" March 14", "born on 14 March 1879")
    True
    >>> word_supported("100", "about 1,000 people")
    False
    >>> word_supported(" the", "the theory of relativity")
    False
    """
    needle = normalize(text or "")
    haystack = reference if normalized_reference else normalize(reference)
    return bool(needle) and f" {needle} " in f" {haystack} "
