"""Where the spaCy fact proxy fails on real biographies (paper §3–4; chapter 6).

The proxy flags entities, proper nouns and numbers. On Wikipedia biographies two failures are
systematic and can be counted without a judge:

- *missed facts*: common nouns of the defining first sentence ("X was an English **mathematician**
  and **writer**") state facts about the subject but are not flagged;
- *flags that are no claim*: the subject's own name (the prompt already says who it is about) and
  counting words ("first", "one") are flagged as facts.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from lacy.data.annotate import FactAnnotator
from lacy.data.vitalwiki import Article
from lacy.data.text import normalize

WORD_COLUMNS = ("subject", "word", "pos", "flagged", "category", "first_sentence", "subject_name")


def proxy_words(annotator: FactAnnotator, articles: Sequence[Article]) -> pd.DataFrame:
    """One row per word (spaCy token, punctuation dropped) of each article's summary.

    Columns: ``subject`` (title), ``word``, ``pos`` (coarse POS), ``flagged`` (the token overlaps a proxy
    fact span of ``annotator``), ``category`` (the proxy category name, or None), ``first_sentence``
    (the word lies before the summary's first ". "), ``subject_name`` (the normalised word is part of
    the normalised title).
    """
    names = {code: name for name, code in annotator.rules.categories().items()}
    texts = [a.summary for a in articles]
    rows = []
    for article, spans, doc in zip(articles, annotator.annotate(texts), annotator.nlp.pipe(texts)):
        first_end = article.summary.find(". ")
        first_end = len(article.summary) if first_end < 0 else first_end
        title_words = set(normalize(article.title).split())
        for token in doc:
            if token.is_punct or token.is_space:
                continue
            start, end = token.idx, token.idx + len(token.text)
            code = next((c for s, e, c in spans if s < end and start < e), None)
            rows.append({
                "subject": article.title, "word": token.text, "pos": token.pos_, "flagged": code is not None,
                "category": names.get(code) if code is not None else None, "first_sentence": start < first_end,
                "subject_name": bool(normalize(token.text)) and normalize(token.text) in title_words,
            })
    return pd.DataFrame(rows, columns=list(WORD_COLUMNS))


def proxy_failures(words: pd.DataFrame, top: int = 12) -> dict[str, pd.DataFrame]:
    """The most frequent words of each failure kind in a :func:`proxy_words` frame.

    ``missed nouns``: unflagged NOUN words of first sentences; ``flagged name``: flagged words that are
    part of the subject's own name; ``flagged counting``: flagged ORDINAL/CARDINAL words spelled in
    letters. Each frame has ``word, count, articles`` (the number of distinct subjects).
    """
    kinds = {
        "missed nouns": words[~words["flagged"] & (words["pos"] == "NOUN") & words["first_sentence"]],
        "flagged name": words[words["flagged"] & words["subject_name"]],
        "flagged counting": words[words["flagged"] & words["category"].isin(["ent:ORDINAL", "ent:CARDINAL", "like_num"])
                                  & words["word"].str.isalpha()],
    }
    out = {}
    for kind, part in kinds.items():
        lowered = part.assign(word=part["word"].str.lower())
        counts = lowered.groupby("word").agg(count=("subject", "size"), articles=("subject", "nunique"))
        out[kind] = counts.sort_values(["count", "articles"], ascending=False).head(top).reset_index()
    return out
