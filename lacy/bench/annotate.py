"""Throughput of the spaCy fact annotation, against the paper's cost and the full spaCy pipeline.

The paper reports 152 CPU-hours per billion tokens for spaCy annotation (≈ 1.8K tokens/s per core,
in its comparison of annotation costs). This benchmark annotates vitalwiki summaries with :class:`~lacy.data.annotate.FactAnnotator`
(trimmed pipeline), tokenises them with a byte-level BPE trained on the same texts and aligns the spans
to the subword tokens: the whole cost of producing fact flags for a corpus, with
``data.annotate_processes`` worker processes (``auto``: one per core). Throughput is per process, in
subword tokens per second. The machine's reference is the untrimmed spaCy pipeline in one process, on
the same texts in the same run (``speedup_vs_full_pipeline``: per-process throughput over it); it
gives nearly the same spans (its parser's sentence boundaries constrain the entity recogniser in rare
cases), reported as ``agreement_with_full_pipeline``.

Run it with ``python -m lacy.bench.annotate [--profile cpu] [--n-docs N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import numpy as np

from lacy.data.annotate import FactAnnotator, align_spans_to_tokens
from lacy.data.tokenizer import encode_with_offsets, train_tokenizer
from lacy.data.vitalwiki import documents
from lacy.profiles import get_profile

PAPER_TOKENS_PER_S = 1e9 / (152 * 3600)  # 152 CPU-hours per billion tokens
TARGET_TOKENS_PER_S = 9000
DEFAULT_DOCS = {"smoke": 30, "cpu": 600, "gpu": 2000}  # cpu: ≈ 20 s for both pipelines on this machine
_WARMUP_DOCS = 8


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (spaCy's ``n_process`` workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _measure(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)``, its wall-clock seconds and its CPU seconds."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = fn(*args)
    return result, time.perf_counter() - wall, _cpu_seconds() - cpu


def _align_all(offsets: list[list[tuple[int, int]]], spans: list[list[tuple[int, int, int]]]) -> np.ndarray:
    """Fact categories of every subword token, texts concatenated."""
    return np.concatenate([align_spans_to_tokens(o, s) for o, s in zip(offsets, spans)])


def _timed_annotation(annotator: FactAnnotator, texts: list[str], offsets: list[list[tuple[int, int]]]) -> dict[str, Any]:
    annotator.annotate(texts[:_WARMUP_DOCS])
    spans, spacy_wall, spacy_cpu = _measure(annotator.annotate, texts)
    categories, align_wall, align_cpu = _measure(_align_all, offsets, spans)
    return {"categories": categories, "spacy": (spacy_wall, spacy_cpu), "align": (align_wall, align_cpu)}


def run(profile: str = "cpu", n_docs: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure fact-annotation throughput on ``n_docs`` vitalwiki summaries (default per profile).

    ``tokens_per_s`` is wall-clock subword tokens per second per process (spaCy + tokenisation +
    alignment); ``tokens_per_cpu_s`` divides by CPU time instead, which is what the paper's CPU-hours
    measure and which stays meaningful when other jobs share the machine.
    """
    prof = get_profile(profile)
    n_docs = DEFAULT_DOCS.get(profile, DEFAULT_DOCS["cpu"]) if n_docs is None else n_docs
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    texts = [doc.text for doc in documents(max_docs=n_docs, seed=seed)]
    tokenizer = train_tokenizer(texts, vocab_size=prof.data.vocab_size)
    (_, offsets), tokenize_wall, tokenize_cpu = _measure(encode_with_offsets, tokenizer, texts)

    settings = dict(model=prof.data.spacy_model or None, batch_size=prof.data.annotate_batch_size)
    annotator = FactAnnotator(**settings, n_process=prof.data.annotate_processes)
    trimmed = _timed_annotation(annotator, texts, offsets)
    full = FactAnnotator(**settings, n_process=1, full_pipeline=True)  # the machine's reference, one process
    baseline = _timed_annotation(full, texts, offsets)

    n_subword = len(trimmed["categories"])
    n_spacy = sum(len(annotator.nlp.tokenizer(text)) for text in texts)
    n_process = annotator.processes_for(len(texts))
    seconds = trimmed["spacy"][0] + trimmed["align"][0] + tokenize_wall
    cpu_seconds = trimmed["spacy"][1] + trimmed["align"][1] + tokenize_cpu
    tokens_per_s = n_subword / seconds / n_process
    baseline_tokens_per_s = n_subword / (baseline["spacy"][0] + baseline["align"][0] + tokenize_wall)
    return {
        "profile": profile,
        "documents": len(texts),
        "subword_tokens": n_subword,
        "spacy_tokens": n_spacy,
        "vocab_size": prof.data.vocab_size,
        "model": annotator.model,
        "components": annotator.components,
        "batch_size": annotator.batch_size,
        "n_process": n_process,
        "seconds": seconds,
        "seconds_spacy": trimmed["spacy"][0],
        "seconds_tokenize": tokenize_wall,
        "seconds_align": trimmed["align"][0],
        "cpu_seconds": cpu_seconds,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_all_processes": tokens_per_s * n_process,
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "tokens_per_cpu_s": n_subword / cpu_seconds,
        "spacy_tokens_per_s": n_spacy / trimmed["spacy"][0] / n_process,
        "ratio_to_paper": tokens_per_s / PAPER_TOKENS_PER_S,
        "baseline_components": full.components,
        "baseline_full_pipeline_tokens_per_s": baseline_tokens_per_s,
        "speedup_vs_full_pipeline": tokens_per_s / baseline_tokens_per_s,
        "agreement_with_full_pipeline": float(np.mean(trimmed["categories"] == baseline["categories"])),
        "fact_token_share": float(np.mean(trimmed["categories"] > 0)),  # the paper: ≈ 25% of tokens are facts (§4)
        "target": TARGET_TOKENS_PER_S,
        "meets_target": tokens_per_s >= TARGET_TOKENS_PER_S,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--n-docs", type=int, default=None, help="summaries to annotate (default: per profile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.profile, args.n_docs, args.seed), indent=2))


if __name__ == "__main__":
    main()
