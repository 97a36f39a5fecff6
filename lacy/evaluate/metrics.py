"""Metrics that measure what they claim: precision, recall and friends from per-subject counts.

FActScore (paper §5) multiplies the supported fraction of a generation's facts by a length penalty
``exp(1 - γ/n)`` for ``n <= γ = 10`` facts. A synthbio person has six attributes, so a perfect
biography scores ≈ 0.51, and below γ stating an extra *false* fact raises the score. The headline
numbers here therefore separate the two things FActScore mixes:

- ``precision``: supported ÷ stated distinct facts of a generation (γ = 0), **averaged over the
  responding generations** (FActScore's own averaging, without the penalty);
- ``recall``: the subject's knowledge-base facts the generation states ÷ all of them (synthbio: of 6
  attributes; vitalwiki: of the entities of the subject's summary), averaged over all subjects
  (a generation that says nothing recalls 0);
- ``supported_per_response``: supported facts per responding generation;
- ``respond_ratio``: the fraction of generations that state at least one fact;
- ``factscore_gamma10``: FActScore with γ = 10, kept only to compare with the paper;
- ``call_rate``: calls ÷ SLM steps, pooled over generations (when the counts carry them).

Every metric is a ratio of per-subject sums (:data:`METRICS`, :func:`subject_terms`), which makes
the bootstrap of :mod:`lacy.evaluate.stats` a pair of weighted sums. All fractions lie in [0, 1].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from lacy.evaluate.factscore import penalised_fraction

if TYPE_CHECKING:
    from lacy.evaluate.factscore import FactScoreResult

COUNT_COLUMNS = ("subject", "stated", "supported", "kb_facts", "recalled")
"""Columns every per-subject counts frame has (a group label such as ``tier``, a ``seed`` and the
call counts ``n_calls`` / ``slm_steps`` are optional)."""

METRICS = ("precision", "recall", "supported_per_response", "respond_ratio", "factscore_gamma10", "call_rate")
"""The reported metrics, in order; ``call_rate`` only when the counts carry ``n_calls`` and ``slm_steps``."""

GAMMA_PAPER = 10
"""FActScore's length-penalty constant, used for ``factscore_gamma10``."""


def subject_counts(result: "FactScoreResult", labels: Mapping[str, Sequence[Any]] | None = None) -> pd.DataFrame:
    """The per-subject counts of a scored run: :data:`COUNT_COLUMNS` plus one column per ``labels``
    entry (e.g. ``{"tier": [...], "n_calls": [...], "slm_steps": [...]}``, one value per generation,
    in the order they were scored)."""
    frame = result.to_frame()[list(COUNT_COLUMNS)].copy()
    for name, values in (labels or {}).items():
        if len(values) != len(frame):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(frame)} scored generations; give one per generation")
        frame[name] = list(values)
    return frame


def check_counts(counts: pd.DataFrame) -> None:
    """Refuse a counts frame without the columns of :data:`COUNT_COLUMNS` or with impossible counts."""
    missing = [c for c in COUNT_COLUMNS if c not in counts.columns]
    if missing:
        raise ValueError(f"per-subject counts lack the columns {missing}; expected at least {list(COUNT_COLUMNS)} "
                         "(a `lacy evaluate` result keeps them under 'subjects')")
    stated, supported = counts["stated"].to_numpy(float), counts["supported"].to_numpy(float)
    if (supported > stated).any() or (supported < 0).any():
        raise ValueError("per-subject counts need 0 <= supported <= stated")
    recalled, kb = counts["recalled"].to_numpy(float), counts["kb_facts"].to_numpy(float)
    if (recalled > kb).any():
        raise ValueError("per-subject counts need recalled <= kb_facts")


def subject_terms(counts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Numerators and denominators ``[n_subjects, n_metrics]`` such that a metric over any (weighted)
    set of subjects is ``Σ w·num / Σ w·den``; returns ``(num, den, metric names)``.

    precision: (supported/stated, 1) for a responding subject, (0, 0) otherwise; recall:
    (recalled/kb_facts, 1) where the subject has knowledge-base facts; supported_per_response:
    (supported, responding); respond_ratio: (responding, 1); factscore_gamma10: (penalised
    fraction, responding); call_rate: (n_calls, slm_steps).
    """
    check_counts(counts)
    stated = counts["stated"].to_numpy(float)
    supported = counts["supported"].to_numpy(float)
    kb = pd.to_numeric(counts["kb_facts"], errors="coerce").to_numpy(float)
    recalled = pd.to_numeric(counts["recalled"], errors="coerce").to_numpy(float)
    responding = (stated > 0).astype(float)
    has_kb = np.nan_to_num(kb) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(stated > 0, supported / np.maximum(stated, 1), 0.0)
        recall = np.where(has_kb, recalled / np.where(has_kb, kb, 1.0), 0.0)
    gamma10 = np.array([penalised_fraction(int(s), int(n), GAMMA_PAPER) or 0.0 for s, n in zip(supported, stated)])
    columns = {
        "precision": (precision, responding),
        "recall": (recall, has_kb.astype(float)),
        "supported_per_response": (supported * responding, responding),
        "respond_ratio": (responding, np.ones_like(stated)),
        "factscore_gamma10": (gamma10, responding),
    }
    if {"n_calls", "slm_steps"} <= set(counts.columns):
        columns["call_rate"] = (counts["n_calls"].to_numpy(float), counts["slm_steps"].to_numpy(float))
    names = tuple(columns)
    num = np.stack([columns[m][0] for m in names], axis=1) if len(counts) else np.zeros((0, len(names)))
    den = np.stack([columns[m][1] for m in names], axis=1) if len(counts) else np.zeros((0, len(names)))
    return num, den, names


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def cascade_metrics(counts: pd.DataFrame) -> dict[str, Any]:
    """The metrics of :data:`METRICS` over all rows of ``counts`` (one training seed), plus
    ``n_subjects``. A metric with nothing to average (nobody responds) is None.

    >>> counts = pd.DataFrame({"subject": ["a", "b"], "stated": [4, 0], "supported": [3, 0],
    ...                        "kb_facts": [6, 6], "recalled": [3, 0]})
    >>> m = cascade_metrics(counts)
    >>> m["precision"], m["recall"], m["respond_ratio"], m["supported_per_response"]
    (0.75, 0.25, 0.5, 3.0)
    """
    num, den, names = subject_terms(counts)
    sums_num, sums_den = num.sum(axis=0), den.sum(axis=0)
    return {**{m: _ratio(sums_num[i], sums_den[i]) for i, m in enumerate(names)}, "n_subjects": int(len(counts))}


def metrics_by_group(counts: pd.DataFrame, column: str = "tier", order: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """:func:`cascade_metrics` per value of ``column`` (e.g. each tier), in ``order`` if given, else sorted."""
    if column not in counts.columns:
        raise ValueError(f"per-subject counts have no column {column!r}; columns: {list(counts.columns)}")
    labels = list(order) if order is not None else sorted(counts[column].dropna().unique(), key=str)
    return {str(label): cascade_metrics(counts[counts[column] == label]) for label in labels}


def generation_cap(tokenizer: Any, texts: Iterable[str], factor: float = 1.5) -> int:
    """Tokens to allow a generation so it can reach the end of a biography: ``ceil(factor × L)`` with
    ``L`` the longest of ``texts`` (the training documents) in tokens, end-of-text included.

    Used when ``eval.max_new_tokens = 0`` ("auto"): the cascade then stops at the SLM's end-of-text
    and is cut only if it runs on ``factor`` times longer than any document it was trained on.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1 (a cap below the longest document cuts biographies short), got {factor}")
    texts = list(texts)
    lengths = [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    if not lengths:
        raise ValueError("generation_cap needs the training documents; got none")
    return math.ceil(factor * max(lengths))
