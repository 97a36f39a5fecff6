"""Is a call worth it? The helper's answer at each call against the SLM's own best guess (paper §5).

The cascade pays for every ``<CALL>`` with a forward pass of the bigger helper. The call is worth it
when the helper's words are right where the SLM's would have been wrong. With a reference text per
subject (vitalwiki: the article's own summary) both can be checked cheaply at every call of a trace:

- the helper's word is the text the helper wrote at that call (the word hand-off writes one word);
- the SLM's word is what the SLM would have written instead: its best non-``<CALL>`` token at the
  same position, continued greedily (still without ``<CALL>``) to the end of that word;
- a word is *supported* when, normalised (:func:`lacy.data.text.normalize`: case, accents,
  numbers, dates), it occurs on word boundaries in the subject's reference. Words that normalise to
  nothing (punctuation, articles) are never supported.

This is a token-level companion of the reference-based FactScore, not a replacement: a supported
word can still be part of a false sentence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from lacy.cascade.helpers import cut_at_word_boundary, encode_text
from lacy.data.tokenizer import call_token_id
from lacy.data.text import normalize, word_supported

if TYPE_CHECKING:
    from lacy.cascade.decoder import Generation

CALL_COLUMNS = ("subject", "call", "position", "context", "helper_word", "slm_word",
                "helper_supported", "slm_supported", "same_word")


def helper_texts(generation: "Generation") -> list[str | None]:
    """The helper's text at each call of ``generation``, in order; ``None`` for an unresolved call.

    Adjacent helper spans are merged in ``Generation.spans``, so a call's text runs from its
    position to the next call or to the end of the helper span, whichever comes first.
    """
    texts: list[str | None] = []
    positions = generation.call_positions
    for i, position in enumerate(positions):
        span = next(((s, e) for s, e, source in generation.spans if source == "helper" and s <= position < e), None)
        if span is None:
            texts.append(None)
            continue
        end = span[1]
        if i + 1 < len(positions) and positions[i + 1] < end:
            end = positions[i + 1]
        texts.append(generation.text[position:end] if end > position else None)
    return texts


@torch.inference_mode()
def slm_word(model: Any, tokenizer: Any, text: str, max_tokens: int = 8) -> str:
    """The word the SLM writes after ``text`` with ``<CALL>`` and special tokens banned (greedy).

    Tokens are added until the decoded continuation crosses a word boundary after at least one word
    character (:func:`lacy.cascade.helpers.cut_at_word_boundary`), at most ``max_tokens`` of them.
    """
    call_id = call_token_id(tokenizer)
    banned = [i for i in {*tokenizer.all_special_ids, call_id} if i is not None]
    ids = encode_text(tokenizer, text)
    new: list[int] = []
    for _ in range(max_tokens):
        logits = model(input_ids=torch.tensor([ids + new], device=model.device)).logits[0, -1].float()
        logits[banned] = float("-inf")
        new.append(int(logits.argmax()))
        decoded = tokenizer.decode(new, clean_up_tokenization_spaces=False)
        word = cut_at_word_boundary(decoded)
        if len(word) < len(decoded):
            return word
    return cut_at_word_boundary(tokenizer.decode(new, clean_up_tokenization_spaces=False))


def call_outcomes(model: Any, tokenizer: Any, subjects: Sequence[str], generations: Sequence["Generation"],
                  references: Mapping[str, str]) -> pd.DataFrame:
    """One row per call of the traces: the helper's word and the SLM's own word there, each checked
    against the subject's reference text (:func:`word_supported`).

    ``subjects[i]`` is the subject of ``generations[i]`` (a key of ``references``); ``model`` and
    ``tokenizer`` are the SLM that produced the traces. Columns: :data:`CALL_COLUMNS` (``call`` is the
    index of the call within its generation, ``position`` its character offset in the continuation,
    ``context`` the text before it; ``helper_word`` is None for an unresolved call).
    """
    if len(subjects) != len(generations):
        raise ValueError(f"need one subject per generation, got {len(subjects)} subjects for {len(generations)} generations")
    missing = sorted({s for s in subjects if s not in references})
    if missing:
        raise KeyError(f"no reference text for subjects {missing[:5]}; pass references for every subject")
    model.eval()
    rows = []
    for subject, generation in zip(subjects, generations):
        reference = references[subject]
        for i, (position, helper_text) in enumerate(zip(generation.call_positions, helper_texts(generation))):
            context = generation.prompt + generation.text[:position]
            own = slm_word(model, tokenizer, context)
            helper_word = cut_at_word_boundary(helper_text) if helper_text is not None else None
            rows.append({
                "subject": subject, "call": i, "position": position, "context": context,
                "helper_word": helper_word, "slm_word": own,
                "helper_supported": word_supported(helper_word, reference),
                "slm_supported": word_supported(own, reference),
                "same_word": helper_word is not None and normalize(helper_word) == normalize(own),
            })
    return pd.DataFrame(rows, columns=list(CALL_COLUMNS))


def call_value(outcomes: pd.DataFrame) -> dict[str, float | int]:
    """Summary of :func:`call_outcomes`: how often each side is supported, and where they differ.

    ``helper_only``: calls where the helper's word is supported and the SLM's is not (the call
    helped); ``slm_only``: the reverse (the call hurt); ``both`` / ``neither``; rates are fractions of
    all calls (NaN without calls).
    """
    n = len(outcomes)
    helper = outcomes["helper_supported"].to_numpy(bool)
    slm = outcomes["slm_supported"].to_numpy(bool)

    def rate(mask: np.ndarray) -> float:
        return float(mask.mean()) if n else float("nan")

    return {
        "calls": n,
        "helper_supported": rate(helper),
        "slm_supported": rate(slm),
        "helper_only": rate(helper & ~slm),
        "slm_only": rate(slm & ~helper),
        "both": rate(helper & slm),
        "neither": rate(~helper & ~slm),
        "same_word": rate(outcomes["same_word"].to_numpy(bool)),
        "unresolved": rate(outcomes["helper_word"].isna().to_numpy()),
    }


def evaluate_calls(model_dir: Any, corpus: str, profile: Any, seed: int, *, helper: Any, budget: float,
                   subjects: Sequence[Any] | None = None, cache_root: Any = None,
                   device: str = "cpu") -> tuple[dict[str, Any], pd.DataFrame]:
    """One cascade run at a calibrated call rate, scored twice: FactScore of the generations and the
    value of each call (:func:`call_outcomes` against the subjects' reference documents).

    The threshold on P(``<CALL>``) is calibrated on held-out text for the target rate ``budget``
    (as in :func:`lacy.evaluate.run.sweep`); ``helper`` is a built helper or a
    :func:`~lacy.cascade.specs.build_helper` spec run on ``device``. Returns ``(summary, outcomes)``:
    the summary has ``precision, recall, ci95`` (over subjects), ``factscore, respond_ratio, facts_per_response, call_rate, target_rate, helper,
    method, n_subjects, flops_per_token`` and every key of :func:`call_value`.
    """
    from lacy.evaluate.cascade_run import EvaluationContext, run_cascade
    from lacy.evaluate.subjects import reference_documents

    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    run = run_cascade(ctx, helper, ctx.policy("threshold", budget=budget), subjects, target_rate=budget, device=device)
    references = {s: "\n".join(texts) for s, texts in reference_documents(corpus, profile, seed, ctx.world).items()}
    outcomes = call_outcomes(ctx.model, ctx.tokenizer, [s.name for s in run.subjects], run.generations, references)
    full = run.summary()
    summary = {key: full[key] for key in ("precision", "recall", "ci95", "factscore", "respond_ratio", "facts_per_response", "call_rate",
                                          "helper", "method", "n_subjects", "flops_per_token")}
    return {**summary, "target_rate": budget, **call_value(outcomes)}, outcomes
