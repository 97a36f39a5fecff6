"""The fact-leakage probe (paper §5.3): with ``<CALL>`` masked, does the SLM still produce the fact?

A model trained to delegate a fact should not also have memorised it: where it would call, the
paper masks the ``<CALL>`` logit (−∞) and measures how often the SLM's own top-1 token is still the
gold fact token (LaCy lowest, ≈ 11%). Low leakage alone is no virtue: a model that learned nothing
leaks nothing. So leakage is always reported next to the knowledge the SLM *keeps*: its accuracy on
the fact tokens it does not delegate. Two definitions, each with its own names:

- teacher-forced (:func:`leakage_probe`, over token windows with synthbio's gold fact tokens):
  ``leakage_teacher_forced`` is the top-1 accuracy (``<CALL>`` masked) at fact positions where the
  model *would call*; ``kept_accuracy_teacher_forced`` the top-1 accuracy at fact positions where it
  would not (what it answers itself); ``fact_accuracy_teacher_forced`` the top-1 accuracy at all fact
  positions, comparable across methods including ``standard`` (which never calls). Reported overall
  and per tier (``by_tier``).
- generated (:func:`leakage_generations`, free generation from the subject prompts with ``<CALL>``
  masked, scored like a cascade): the *generated leakage* is the run summary's ``precision`` (of the
  facts the SLM states on its own: supported ÷ stated, mean over responding generations), saved by the
  chapters as ``leakage_generated``; its ``recall`` is the fraction of the subject's knowledge-base
  facts the SLM still states.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from lacy.data.datamodule import LacyDataModule
from lacy.data.tokenizer import call_token_id
from lacy.evaluate.signals import token_bytes
from lacy.profiles import Profile, check_choice
from lacy.train.objective import without_call

if TYPE_CHECKING:
    from lacy.evaluate.cascade_run import CascadeRun

FACT_FLAGS = ("gold", "fact")


def _windows(datamodule: Any, split: str, max_windows: int | None, seed: int) -> DataLoader:
    """Batches of ``split`` windows in stream order; a seeded sample of ``max_windows`` of them if given."""
    dataset = datamodule.dataset(split)
    indices = list(range(len(dataset)))
    if max_windows is not None and max_windows < len(indices):
        generator = torch.Generator().manual_seed(seed)
        indices = sorted(torch.randperm(len(indices), generator=generator)[:max_windows].tolist())
    return DataLoader(Subset(dataset, indices), batch_size=datamodule.profile.train.batch_size, shuffle=False)


def _doc_labels(datamodule: Any) -> tuple[dict[int, str], dict[int, int], dict[int, str]]:
    """doc_id -> subject, doc_id -> subject's biography count and doc_id -> tier label (synthbio)."""
    from lacy.evaluate.subjects import person_frequency

    world = datamodule.world
    if world is None:
        return {}, {}, {}
    frequency = person_frequency(world)
    docs = world.documents()
    subject = {d.doc_id: d.subject for d in docs}
    n_docs = {d.doc_id: world.person(d.subject).n_docs for d in docs}
    return subject, n_docs, {i: frequency[s] for i, s in subject.items()}


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def leakage_probe(model: Any, tokenizer: Any, data: Any, *, tau: float | None = None, split: str = "val",
                  max_windows: int | None = None, seed: int = 0, fact_flag: str = "gold",
                  attribute_names: Mapping[int, str] | None = None,
                  progress: bool = False) -> tuple[dict[str, Any], pd.DataFrame]:
    """Teacher-forced leakage at fact tokens (paper §5.3).

    ``data`` is a :class:`~lacy.data.datamodule.LacyDataModule` (windows of ``split``, all of them or a
    seeded sample of ``max_windows``; subjects, frequencies and attribute names come from it) or any
    iterable of batches with ``input_ids, targets, valid`` and the ``fact_flag`` mask ("gold": synthbio
    gold fact tokens; "fact": the spaCy proxy, for corpora without gold spans).

    At each position the model *would call* when ``<CALL>`` is its argmax (or, given ``tau``, when
    P(``<CALL>``) ≥ τ); its own prediction is the argmax with ``<CALL>`` masked (logit −∞).
    Returns ``(summary, frame)``: summary keys ``leakage_teacher_forced`` (top-1 accuracy at fact
    positions where the model would call; None when it never does), ``kept_accuracy_teacher_forced``
    (top-1 accuracy at the fact positions where it would not call; None when it always does),
    ``fact_accuracy_teacher_forced`` (top-1 accuracy at all fact positions), ``call_rate_on_facts``,
    ``call_rate_on_nonfacts``, ``n_fact_tokens``, ``n_nonfact_tokens``, ``tau``, ``fact_flag`` and
    ``by_tier`` (the fact-position keys per tier, when subjects are known); the frame has one row per
    fact position (``doc_id, subject, tier, n_docs, attribute, target_id, predicted_id, token,
    predicted`` (texts), ``p_call, would_call, top1_correct``).
    """
    check_choice("fact_flag", fact_flag, FACT_FLAGS)
    call_id = call_token_id(tokenizer)
    subject_of: dict[int, str] = {}
    n_docs_of: dict[int, int] = {}
    tier_of: dict[int, str] = {}
    if isinstance(data, LacyDataModule):
        batches: Iterable[Mapping[str, torch.Tensor]] = _windows(data, split, max_windows, seed)
        subject_of, n_docs_of, tier_of = _doc_labels(data)
        if attribute_names is None and data.summary.get("attribute_codes"):
            attribute_names = {code: name for name, code in data.summary["attribute_codes"].items()}
    else:
        batches = data
    model.eval()
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("doc_id", "attribute", "target_id", "predicted_id", "p_call", "would_call", "top1_correct")}
    n_nonfact = nonfact_calls = 0
    with torch.inference_mode():
        for batch in tqdm(batches, desc="leakage", disable=not progress):
            logits = model(input_ids=batch["input_ids"]).logits.float()
            targets, valid = batch["targets"], batch["valid"].bool()
            p_call = torch.softmax(logits, dim=-1)[..., call_id]
            would_call = logits.argmax(-1).eq(call_id) if tau is None else p_call.ge(tau)
            predicted = without_call(logits, call_id).argmax(-1)
            fact = valid & batch[fact_flag].bool()
            nonfact = valid & ~fact
            n_nonfact += int(nonfact.sum())
            nonfact_calls += int((would_call & nonfact).sum())
            attribute = batch.get("gold_attribute", torch.zeros_like(targets)) if fact_flag == "gold" else batch.get("fact_category", torch.zeros_like(targets))
            for name, values in (("doc_id", batch.get("doc_id", torch.full_like(targets, -1))), ("attribute", attribute),
                                 ("target_id", targets), ("predicted_id", predicted), ("p_call", p_call),
                                 ("would_call", would_call), ("top1_correct", predicted.eq(targets))):
                columns[name].append(values[fact].cpu().numpy())
    flat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in columns.items()}
    pieces = token_bytes(tokenizer)
    frame = pd.DataFrame({
        "doc_id": flat["doc_id"].astype(np.int64),
        "subject": [subject_of.get(int(i)) for i in flat["doc_id"]],
        "tier": [tier_of.get(int(i), "n/a") for i in flat["doc_id"]],
        "n_docs": [n_docs_of.get(int(i)) for i in flat["doc_id"]],
        "attribute": [attribute_names.get(int(a), str(int(a))) if attribute_names else int(a) for a in flat["attribute"]],
        "target_id": flat["target_id"].astype(np.int64),
        "predicted_id": flat["predicted_id"].astype(np.int64),
        "token": [pieces[int(t)].decode("utf-8", errors="replace") for t in flat["target_id"]],
        "predicted": [pieces[int(t)].decode("utf-8", errors="replace") for t in flat["predicted_id"]],
        "p_call": flat["p_call"].astype(np.float64),
        "would_call": flat["would_call"].astype(bool),
        "top1_correct": flat["top1_correct"].astype(bool),
    })
    summary = {**_leakage_rates(frame), "call_rate_on_nonfacts": _rate(nonfact_calls, n_nonfact),
               "n_nonfact_tokens": n_nonfact, "tau": tau, "fact_flag": fact_flag}
    if tier_of:
        summary["by_tier"] = {label: _leakage_rates(group) for label, group in frame.groupby("tier")}
    return summary, frame


def _leakage_rates(frame: pd.DataFrame) -> dict[str, Any]:
    """Leakage next to kept knowledge over the fact positions of ``frame`` (teacher-forced)."""
    calls = frame[frame["would_call"]]
    kept = frame[~frame["would_call"]]
    return {
        "leakage_teacher_forced": _rate(int(calls["top1_correct"].sum()), len(calls)),
        "kept_accuracy_teacher_forced": _rate(int(kept["top1_correct"].sum()), len(kept)),
        "fact_accuracy_teacher_forced": _rate(int(frame["top1_correct"].sum()), len(frame)),
        "call_rate_on_facts": _rate(len(calls), len(frame)),
        "n_fact_tokens": len(frame),
    }


def leakage_generations(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *,
                        cache_root: str | Path | None = None, subjects: Sequence[Any] | None = None) -> "CascadeRun":
    """Generation-based leakage: the SLM alone with ``<CALL>`` masked (logit −∞), scored with FactScore.

    Same subjects and decoding as :func:`lacy.evaluate.run.evaluate`. The run's summary
    (:meth:`~lacy.evaluate.cascade_run.CascadeRun.summary`) gives the *generated* leakage as its
    ``precision`` (supported ÷ stated facts: how often what the SLM states on its own is right) and
    the share of the subject's knowledge base it still states as its ``recall``, with their ``ci95``,
    ``by_tier`` and per-subject counts; its frame has one row per generation.
    """
    from lacy.cascade.policies import ArgmaxPolicy
    from lacy.evaluate.cascade_run import EvaluationContext, run_cascade

    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    return run_cascade(ctx, None, ArgmaxPolicy(), subjects, call_logit_bias=-math.inf)
