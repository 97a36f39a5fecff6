"""A realistic document helper: retrieve from the whole corpus, without being told the subject.

The ``doc`` helper (:class:`lacy.cascade.helpers.DocumentHelper`) is an *oracle*: it is handed the
gold subject's own documents, an upper bound on what looking things up can give. A deployed cascade
does not know whom a text is about; it has to find the right documents from the text itself. The
``retrieval`` helper does that: at every call it ranks all documents of the corpus by BM25 with the
text so far (prompt + generation) as the query, and continues from the top ``k`` of them exactly as
the oracle continues from the gold ones (longest matching word-aligned suffix).

BM25 (Okapi, Robertson & Zaragoza 2009) is computed with scikit-learn's sparse term counts:
``score(d, q) = Σ_{t ∈ q} idf(t) · f(t, d) (k1 + 1) / (f(t, d) + k1 (1 − b + b |d| / avgdl))`` with
the non-negative idf ``ln(1 + (N − n_t + 0.5) / (n_t + 0.5))`` (Lucene's), each distinct query word
counted once, ``k1 = 1.5``, ``b = 0.75``. The document-side weights are precomputed into one sparse
matrix, so a query is one sparse matrix–vector product over the corpus.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from lacy.cascade.helpers import DocumentSession, Helper, HelperReply, HelperSession
from lacy.data.cache import content_key

TOKEN_PATTERN = r"(?u)\b\w+\b"
"""Words for retrieval: runs of word characters, lower-cased (digits and one-letter words kept)."""


class BM25Index:
    """Okapi BM25 over a fixed list of documents (see the module docstring for the formula)."""

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        if not documents:
            raise ValueError("BM25Index needs at least one document to retrieve from")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.documents = list(documents)
        self.k1, self.b = k1, b
        self.vectorizer = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True, dtype=np.float64)
        counts = sparse.csr_matrix(self.vectorizer.fit_transform(self.documents))
        n_docs = counts.shape[0]
        length = np.asarray(counts.sum(axis=1)).ravel()
        document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
        self.idf = np.log1p((n_docs - document_frequency + 0.5) / (document_frequency + 0.5))
        norm = k1 * (1.0 - b + b * length / max(length.mean(), 1e-12))
        weights = counts.copy()
        rows = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
        weights.data = self.idf[counts.indices] * counts.data * (k1 + 1.0) / (counts.data + norm[rows])
        self.term_weights = sparse.csr_matrix(weights.T)  # [vocabulary, documents]: one row per word
        self.analyzer = self.vectorizer.build_analyzer()

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (0 where no query word occurs)."""
        vocabulary = self.vectorizer.vocabulary_
        terms = sorted({vocabulary[w] for w in self.analyzer(query) if w in vocabulary})  # each distinct word once
        if not terms:
            return np.zeros(self.term_weights.shape[1])
        return np.asarray(self.term_weights[terms].sum(axis=0)).ravel()

    def top(self, query: str, k: int) -> list[int]:
        """Indices of the ``k`` best documents with a positive score, best first (ties: lower index)."""
        scores = self.scores(query)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:  # keep the k best and their ties, then sort only those
            kth_best = np.partition(scores[candidates], -k)[-k]
            candidates = candidates[scores[candidates] >= kth_best]
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        return [int(i) for i in order]


class RetrievalHelper(Helper):
    """Continue from the ``k`` corpus documents BM25 ranks highest for the text so far.

    Not told the subject: ``session(subject)`` ignores it. No help (``None``) when no document shares
    a word with the text or nothing in the retrieved documents continues it.
    """

    name = "retrieval"

    def __init__(self, documents: Sequence[str], k: int = 4) -> None:
        if k < 1:
            raise ValueError(f"k (documents retrieved per call) must be >= 1, got {k}")
        self.index = BM25Index(documents)
        self.k = k

    @classmethod
    def from_corpus(cls, documents: Mapping[str, Sequence[str]], k: int = 4) -> "RetrievalHelper":
        """From the oracle's ``subject -> texts`` mapping, flattened: every document of every subject."""
        return cls([text for texts in documents.values() for text in texts], k=k)

    def session(self, subject: str | None = None) -> "RetrievalSession":
        return RetrievalSession(self)

    def _fingerprint(self) -> str:
        index = self.index
        return "retrieval:" + content_key({"documents": index.documents, "k": self.k, "k1": index.k1, "b": index.b})


class RetrievalSession(HelperSession):
    def __init__(self, helper: RetrievalHelper) -> None:
        self.helper = helper

    def retrieve(self, text: str) -> list[str]:
        """The retrieved documents for ``text``, best first."""
        index = self.helper.index
        return [index.documents[i] for i in index.top(text, self.helper.k)]

    def continue_text(self, text: str, *, max_new_tokens: int, until_word_boundary: bool) -> HelperReply:
        if max_new_tokens < 1:
            return HelperReply(None, 0)
        return DocumentSession(self.retrieve(text)).continue_text(
            text, max_new_tokens=max_new_tokens, until_word_boundary=until_word_boundary)
