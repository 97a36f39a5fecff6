"""FactScore subjects, their reference documents and the held-out calibration text (paper §5).

Subjects are a fixed, seeded sample, half "frequent" and half "rare" people; the document helper
reads the subjects' reference texts; call thresholds are calibrated Co-LLM style as quantiles of the
SLM's teacher-forced P(``<CALL>``) on held-out (val-split) documents, so a target rate ``r`` maps to
``τ = quantile(P, 1 − r)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from lacy.data.corpora import FREQUENT_FRACTION, frequency_labels, get_corpus  # noqa: F401  (re-exported)
from lacy.data.corpus import Document
from lacy.profiles import Profile


@dataclass(frozen=True)
class Subject:
    """One FactScore subject: whom to write about, the prompt, and how often the corpus shows them.

    ``frequency`` is the subject's exposure group: its tier on synthbio (famous … obscure), "frequent"
    (top decile of the People articles by summary length) or "rare" on vitalwiki. Exposure is the
    number of biographies (synthbio) or, on vitalwiki where every person has exactly one article,
    the length of the article's summary in words (more text about the person to learn from).
    ``n_docs`` counts the subject's documents in the corpus (always 1 on vitalwiki).
    """

    name: str
    prompt: str
    frequency: str
    n_docs: int


def _corpus_documents(corpus: str, profile: Profile, seed: int, world: Any = None) -> tuple[list[Document], Any]:
    """All documents of the corpus (both splits) and its World, if it has one (reused when given)."""
    return get_corpus(corpus).documents(profile, seed, world)


def _stratified_sample(labels: Sequence[str], eligible: Sequence[bool], n: int, seed: int,
                       strata: Sequence[str] = ("frequent", "rare")) -> list[int]:
    """Seeded indices of ``n`` eligible items spread evenly over ``strata`` (one item per stratum in
    turn; a stratum that runs out leaves its share to the others); strata in order, each in index order."""
    pools = {label: [i for i, (lab, ok) in enumerate(zip(labels, eligible)) if ok and lab == label] for label in strata}
    counts = dict.fromkeys(strata, 0)
    for _ in range(min(n, sum(len(pool) for pool in pools.values()))):
        label = next(s for s in sorted(strata, key=lambda s: (counts[s], strata.index(s))) if counts[s] < len(pools[s]))
        counts[label] += 1
    rng = random.Random(seed)
    return [i for label in strata for i in sorted(rng.sample(pools[label], counts[label]))]


def person_frequency(world: Any) -> dict[str, str]:
    """synthbio: full name -> the person's exposure tier (``world.tiers``, most exposed first)."""
    return {p.full_name: p.tier for p in world.people}


def subjects(corpus: str, profile: Profile, seed: int, world: Any = None, *, nlp: Any = None) -> list[Subject]:
    """A fixed, seeded set of ``profile.eval.n_subjects`` FactScore subjects (paper §5).

    Subjects are drawn among those with at least one training document (the SLM can only have learned
    those), spread evenly over exposure groups (``Subject.frequency``). synthbio: the world's tiers
    (``world.tiers``: famous … obscure), people of the world, prompt = the full name, exposure =
    number of biographies. vitalwiki: "frequent" (top decile of the summaries by length,
    :func:`frequency_labels`) and "rare" People articles, prompt = the summary's opening words up to the
    first verb (:func:`lacy.data.vitalwiki.prompt_for`), exposure = summary length in words.
    ``world`` (synthbio) and ``nlp`` (vitalwiki; default :func:`lacy.data.annotate.load_spacy` with
    ``profile.data.spacy_model``) avoid reloading them.
    """
    if profile.eval.n_subjects < 1:
        raise ValueError(f"eval.n_subjects must be >= 1, got {profile.eval.n_subjects}")
    adapter = get_corpus(corpus)
    documents, world = adapter.documents(profile, seed, world)
    trained = {d.subject for d in documents if d.split == "train"}
    candidates = adapter.subject_candidates(documents, world)
    labels, strata = adapter.exposure_groups(candidates, world)
    eligible = [c.name in trained for c in candidates]
    if not any(eligible):
        raise ValueError(f"no {corpus} subject has a document in the training split; use a larger corpus "
                         "(world.tier_people / data.vitalwiki_max_docs)")
    if adapter.prompt_needs_nlp and nlp is None:
        from lacy.data.annotate import load_spacy

        nlp = load_spacy(profile.data.spacy_model or None)
    picked = _stratified_sample(labels, eligible, profile.eval.n_subjects, seed, strata=strata)
    return [Subject(candidates[i].name, adapter.subject_prompt(candidates[i].name, nlp), labels[i], candidates[i].n_docs)
            for i in picked]


def reference_documents(corpus: str, profile: Profile, seed: int, world: Any = None) -> dict[str, list[str]]:
    """Subject -> reference texts for the document helper.

    synthbio: the person's training-split biographies (what the corpus says about them; a person
    whose only biographies are in the val split has none). vitalwiki: the article's summary.
    """
    documents, _ = _corpus_documents(corpus, profile, seed, world)
    return get_corpus(corpus).references(documents)


def calibration_texts(corpus: str, profile: Profile, seed: int, world: Any = None) -> list[str]:
    """A seeded sample of ``profile.eval.calibration_docs`` held-out (val-split) documents, in corpus order."""
    documents, _ = _corpus_documents(corpus, profile, seed, world)
    held_out = [d for d in documents if d.split == "val"]
    if not held_out:
        raise ValueError(f"{corpus}: no val-split documents to calibrate on; raise data.val_fraction")
    k = min(profile.eval.calibration_docs, len(held_out))
    chosen = sorted(random.Random(seed).sample(range(len(held_out)), k))
    return [held_out[i].text for i in chosen]


def calibration_probs(model: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Teacher-forced P(``<CALL>``) at every position of ``texts``, flattened (Co-LLM's held-out calibration)."""
    if not texts:
        raise ValueError("calibration_probs needs at least one text")
    from lacy.cascade.decoder import p_call_teacher_forced

    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in p_call_teacher_forced(model, tokenizer, list(texts))])


def thresholds_for_rates(probs: np.ndarray | Sequence[float], rates: Iterable[float]) -> dict[float, float]:
    """Threshold τ on P(``<CALL>``) for each target call rate (a policy calls when P ≥ τ).

    τ = quantile(probs, 1 − r), so a fraction ≈ r of the calibration positions has P ≥ τ; r = 0 gives
    τ = +∞ (never call) and r = 1 gives τ = 0 (always call). τ is non-increasing in r.
    """
    from lacy.cascade.policies import threshold_for_rate

    values = np.asarray(probs, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("thresholds_for_rates needs calibration probabilities (see calibration_probs); got none")
    return {rate: threshold_for_rate(values, rate) for rate in rates}
