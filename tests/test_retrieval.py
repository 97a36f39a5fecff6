"""The retrieval helper: BM25 over the whole corpus, not told the subject, then the oracle's continuation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lacy.cascade.helpers import DocumentHelper
from lacy.cascade.specs import build_helper
from lacy.cascade.retrieval import BM25Index, RetrievalHelper

CORPUS = {
    "Ada Whitworth": ["Ada Whitworth was born in Ashford. She works for Hartley Logistics in Brookhaven.",
                      "Ada Whitworth studied Marine Biology at University of Oakmere."],
    "Hugo Pemberton": ["Hugo Pemberton was born in Elmstead. He works for Sykes Robotics in Glenport."],
    "Iris Calloway": ["Iris Calloway was born in Ashford. She studied Physics at Fernbridge Institute of Technology."],
}
DOCUMENTS = [t for texts in CORPUS.values() for t in texts]


def bm25_by_hand(documents, query, k1=1.5, b=0.75):
    tokenized = [d.lower().replace(".", " ").split() for d in documents]
    avgdl = sum(map(len, tokenized)) / len(tokenized)
    terms = set(query.lower().replace(".", " ").split())
    scores = []
    for doc in tokenized:
        score = 0.0
        for t in terms:
            n_t = sum(t in d for d in tokenized)
            f = doc.count(t)
            idf = math.log(1 + (len(tokenized) - n_t + 0.5) / (n_t + 0.5))
            score += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(doc) / avgdl)) if f else 0.0
        scores.append(score)
    return np.array(scores)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from("ada whitworth ashford born hugo glenport studied physics the of zebra".split()), min_size=1, max_size=6))
def test_bm25_matches_the_formula(words):
    query = " ".join(words)
    np.testing.assert_allclose(BM25Index(DOCUMENTS).scores(query), bm25_by_hand(DOCUMENTS, query), rtol=1e-9, atol=1e-12)


def test_top_documents_rank_by_score_and_skip_zero_scores():
    index = BM25Index(DOCUMENTS)
    assert index.top("Hugo Pemberton", 2) == [2]  # only his document shares a word with the query
    assert index.top("zebra", 3) == []
    first = index.top("Ada Whitworth was born in", 4)
    assert first[:2] in ([0, 1], [1, 0]) and len(first) == 4
    with pytest.raises(ValueError, match="at least one document"):
        BM25Index([])


def test_retrieval_continues_without_being_told_the_subject():
    helper = build_helper("retrieval", documents=CORPUS)
    assert isinstance(helper, RetrievalHelper) and not isinstance(helper, DocumentHelper)
    session = helper.session(subject="somebody else entirely")  # the subject is ignored
    reply = session.continue_text("Hugo Pemberton was born in", max_new_tokens=8, until_word_boundary=True)
    assert reply.text == " Elmstead"
    # the same text with the oracle: the same continuation, but only because it was told the subject
    oracle = build_helper("doc", documents=CORPUS).session("Hugo Pemberton")
    assert oracle.continue_text("Hugo Pemberton was born in", max_new_tokens=8, until_word_boundary=True).text == " Elmstead"


def test_retrieval_uses_the_text_so_far_as_query():
    session = RetrievalHelper(DOCUMENTS, k=1).session()
    # "Iris Calloway" in the text selects her document, whose Ashford continuation differs from Ada's
    assert session.retrieve("Iris Calloway was born in Ashford. She studied") == [DOCUMENTS[3]]
    reply = session.continue_text("Iris Calloway was born in Ashford. She studied", max_new_tokens=8, until_word_boundary=True)
    assert reply.text == " Physics"
    assert session.continue_text("zebra", max_new_tokens=4, until_word_boundary=False).text is None


def test_build_errors():
    with pytest.raises(ValueError, match="retrieval' needs the corpus documents"):
        build_helper("retrieval")
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        RetrievalHelper(DOCUMENTS, k=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), min_size=1, max_size=30), st.integers(1, 6))
def test_top_equals_a_full_stable_sort(scores, k):
    """The partial selection gives what sorting every score would: best first, ties to the lower index,
    zero scores dropped."""
    index = BM25Index(["a b", "c"])
    index.scores = lambda query: np.array(scores)
    full = np.lexsort((np.arange(len(scores)), -np.array(scores)))[:k]
    assert index.top("q", k) == [int(i) for i in full if scores[i] > 0]
