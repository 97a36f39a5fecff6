"""Evaluation orchestration: FactScore of the SLM in cascade and calibrated call-rate sweeps (paper §5).

The SLM generates greedily from a fixed, seeded set of subject prompts; at every step the call policy
decides whether the helper supplies the next word (paper §5: a budget of 22% calls set by a running
quantile of P(``<CALL>``)). Generations are scored with FactScore (exact on synthbio,
reference-based on vitalwiki; :mod:`lacy.evaluate.factscore`).

The sweep follows Co-LLM: thresholds on P(``<CALL>``) are calibrated as quantiles of its
teacher-forced values on held-out (val-split) documents, so a target rate ``r`` maps to
``τ = quantile(P, 1 − r)``; ``r = 0`` is the SLM alone (τ = +∞) and ``r = 1`` the helper alone
(τ = 0: every SLM step calls).

Used by ``lacy generate | evaluate | sweep`` (:mod:`lacy.cli`) and by the book.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lacy.data.corpus import Document
from lacy.profiles import CORPORA, Profile, check_choice

if TYPE_CHECKING:
    from lacy.cascade.decoder import CascadeDecoder, Generation
    from lacy.cascade.helpers import Helper
    from lacy.evaluate.factscore import FactScore, FactScoreResult

FREQUENT_FRACTION = 0.1
"""Share of candidate subjects, by exposure, counted as "frequent" (the top decile); the rest are "rare"."""


@dataclass(frozen=True)
class Subject:
    """One FactScore subject: whom to write about, the prompt, and how often the corpus shows them.

    ``frequency`` is "frequent" (top decile of the corpus's people by exposure) or "rare". Exposure is the
    number of biographies (synthbio) or, on vitalwiki where every person has exactly one article,
    the length of the article's summary in words (more text about the person to learn from).
    ``n_docs`` counts the subject's documents in the corpus (always 1 on vitalwiki).
    """

    name: str
    prompt: str
    frequency: str
    n_docs: int


# --------------------------------------------------------------------------------------------------
# Subjects, reference documents and calibration text
# --------------------------------------------------------------------------------------------------


def _corpus_documents(corpus: str, profile: Profile, seed: int, world: Any = None) -> tuple[list[Document], Any]:
    """All documents of the corpus (both splits) and, for synthbio, its World (reused when given)."""
    check_choice("corpus", corpus, CORPORA)
    if corpus == "synthbio" and world is not None:
        return world.documents(val_fraction=profile.data.val_fraction), world
    from lacy.data.cache import load_documents

    return load_documents(corpus, profile, seed)


def frequency_labels(exposures: Sequence[float]) -> list[str]:
    """"frequent" for the top decile of ``exposures`` (at least one item; ties by position), else "rare"."""
    order = sorted(range(len(exposures)), key=lambda i: (-exposures[i], i))
    n_frequent = max(1, math.ceil(FREQUENT_FRACTION * len(exposures))) if len(exposures) else 0
    labels = ["rare"] * len(exposures)
    for i in order[:n_frequent]:
        labels[i] = "frequent"
    return labels


def _stratified_sample(labels: Sequence[str], eligible: Sequence[bool], n: int, seed: int) -> list[int]:
    """Seeded indices of ``n`` eligible items, half "frequent" and half "rare" (one stratum fills in
    for the other when it runs out); frequent first, each stratum in index order."""
    pools = {label: [i for i, (lab, ok) in enumerate(zip(labels, eligible)) if ok and lab == label] for label in ("frequent", "rare")}
    n = min(n, len(pools["frequent"]) + len(pools["rare"]))
    n_rare = min(len(pools["rare"]), n // 2)
    n_frequent = min(len(pools["frequent"]), n - n_rare)
    n_rare = n - n_frequent
    rng = random.Random(seed)
    return sorted(rng.sample(pools["frequent"], n_frequent)) + sorted(rng.sample(pools["rare"], n_rare))


def person_frequency(world: Any) -> dict[str, str]:
    """synthbio: full name -> "frequent" (top decile of the world's people by biography count) or "rare"."""
    return dict(zip((p.full_name for p in world.people), frequency_labels([p.n_docs for p in world.people])))


def subjects(corpus: str, profile: Profile, seed: int, world: Any = None, *, nlp: Any = None) -> list[Subject]:
    """A fixed, seeded set of ``profile.eval.n_subjects`` FactScore subjects (paper §5).

    Frequency labels come from all candidates of the corpus (:func:`frequency_labels`); subjects are
    drawn, half "frequent" and half "rare", among those with at least one training document (the SLM
    can only have learned those). synthbio: people of the world, prompt = the full name, exposure =
    number of biographies. vitalwiki: People articles, prompt = the summary's opening words up to the
    first verb (:func:`lacy.data.vitalwiki.prompt_for`), exposure = summary length in words.
    ``world`` (synthbio) and ``nlp`` (vitalwiki; default :func:`lacy.data.annotate.load_spacy` with
    ``profile.data.spacy_model``) avoid reloading them.
    """
    if profile.eval.n_subjects < 1:
        raise ValueError(f"eval.n_subjects must be >= 1, got {profile.eval.n_subjects}")
    documents, world = _corpus_documents(corpus, profile, seed, world)
    trained = {d.subject for d in documents if d.split == "train"}
    if corpus == "synthbio":
        people = world.people
        labels = frequency_labels([p.n_docs for p in people])
        picked = _stratified_sample(labels, [p.full_name in trained for p in people], profile.eval.n_subjects, seed)
        return [Subject(people[i].full_name, people[i].full_name, labels[i], people[i].n_docs) for i in picked]

    from lacy.data import vitalwiki

    articles = vitalwiki.people()
    eligible = [a.title in trained for a in articles]
    if not any(eligible):
        raise ValueError("no People article is in the training split of this vitalwiki subset; raise data.vitalwiki_max_docs")
    if nlp is None:
        from lacy.data.annotate import load_spacy

        nlp = load_spacy(profile.data.spacy_model or None)
    labels = frequency_labels([len(a.summary.split()) for a in articles])
    picked = _stratified_sample(labels, eligible, profile.eval.n_subjects, seed)
    return [Subject(articles[i].title, vitalwiki.prompt_for(articles[i], nlp), labels[i], 1) for i in picked]


def reference_documents(corpus: str, profile: Profile, seed: int, world: Any = None) -> dict[str, list[str]]:
    """Subject -> reference texts for the oracle document helper (``doc``; ``retrieval`` searches all of them).

    synthbio: the person's training-split biographies (what the corpus says about them; a person
    whose only biographies are in the val split has none). vitalwiki: the article's summary.
    """
    documents, _ = _corpus_documents(corpus, profile, seed, world)
    if corpus == "vitalwiki":
        from lacy.data import vitalwiki

        return {title: [summary] for title, summary in vitalwiki.summaries().items()}
    references: dict[str, list[str]] = {}
    for doc in documents:
        if doc.split == "train":
            references.setdefault(doc.subject, []).append(doc.text)
    return references


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


# --------------------------------------------------------------------------------------------------
# Loaded model + corpus, shared by generate / evaluate / sweep / leakage
# --------------------------------------------------------------------------------------------------


def model_folder(model_dir: str | Path) -> Path:
    """The exported model folder: ``model_dir`` itself, or ``model_dir/model`` for a training run folder."""
    path = Path(model_dir)
    if not (path / "config.json").exists() and (path / "model" / "config.json").exists():
        return path / "model"
    return path


def run_method(model_dir: str | Path) -> str | None:
    """The training method recorded in the run's ``summary.json`` (next to ``model/``), or None."""
    folder = model_folder(model_dir)
    for summary in (folder / "summary.json", folder.parent / "summary.json"):
        if summary.exists():
            return json.loads(summary.read_text()).get("method")
    return None


def helper_parameter_count(helper: "Helper") -> int | None:
    """Parameters a helper runs per token: 0 for a document lookup (oracle or retrieval), the model's
    count for an LM helper, None when unknown (a remote server)."""
    from lacy.cascade.helpers import DocumentHelper
    from lacy.cascade.retrieval import RetrievalHelper
    from lacy.train.model import count_parameters

    if isinstance(helper, (DocumentHelper, RetrievalHelper)):
        return 0
    model = getattr(helper, "model", None)
    return count_parameters(model) if isinstance(model, torch.nn.Module) else None


@dataclass
class EvaluationContext:
    """An SLM loaded once with the corpus it was trained on; helpers and scorers are built from it.

    ``cache_root`` is the data cache folder of the corpus (the same as for training); documents and
    the synthbio World are regenerated from their seed, so nothing is built there for evaluation.
    """

    corpus: str
    profile: Profile
    seed: int
    model: Any
    tokenizer: Any
    model_dir: Path
    cache_root: str | Path | None = None

    @classmethod
    def load(cls, model_dir: str | Path, corpus: str, profile: Profile, seed: int, cache_root: str | Path | None = None) -> "EvaluationContext":
        check_choice("corpus", corpus, CORPORA)
        from lacy.train.model import load_model

        folder = model_folder(model_dir)
        model, tokenizer = load_model(folder)
        return cls(corpus, profile, seed, model, tokenizer, folder, cache_root)

    @cached_property
    def datamodule(self):
        from lacy.data.datamodule import LacyDataModule

        return LacyDataModule(self.corpus, self.profile, self.seed, self.cache_root)

    @property
    def world(self) -> Any:
        return self.datamodule.world

    @cached_property
    def nlp(self) -> Any:
        from lacy.data.annotate import load_spacy

        return load_spacy(self.profile.data.spacy_model or None)

    @cached_property
    def method(self) -> str | None:
        return run_method(self.model_dir)

    def subjects(self) -> list[Subject]:
        return subjects(self.corpus, self.profile, self.seed, self.world, nlp=self.nlp if self.corpus == "vitalwiki" else None)

    @cached_property
    def calibration(self) -> np.ndarray:
        return calibration_probs(self.model, self.tokenizer, calibration_texts(self.corpus, self.profile, self.seed, self.world))

    def helper(self, spec: str, device: str = "cpu", fallback: bool = False) -> "Helper":
        from lacy.cascade.helpers import build_helper

        lookup = spec in ("doc", "retrieval")  # the oracle's gold documents; retrieval searches all of them
        documents = reference_documents(self.corpus, self.profile, self.seed, self.world) if lookup else None
        return build_helper(spec, documents=documents, device=device, fallback=fallback)

    def factscorer(self) -> "FactScore":
        from lacy.evaluate import factscore

        if self.corpus == "synthbio":
            return factscore.synthbio_factscore(self.world, gamma=self.profile.eval.gamma)
        from lacy.data import vitalwiki

        return factscore.vitalwiki_factscore(vitalwiki.summaries(), self.nlp, gamma=self.profile.eval.gamma)

    @cached_property
    def max_new_tokens(self) -> int:
        """``profile.eval.max_new_tokens``, or when it is 0 ("auto") 1.5× the longest training document
        in tokens (:func:`lacy.evaluate.metrics.generation_cap`): generation then ends at end-of-text."""
        if self.profile.eval.max_new_tokens:
            return self.profile.eval.max_new_tokens
        from lacy.evaluate.metrics import generation_cap

        documents, _ = _corpus_documents(self.corpus, self.profile, self.seed, self.world)
        return generation_cap(self.tokenizer, [d.text for d in documents if d.split == "train"])

    def decoder(self, helper: "Helper | None", policy: Any, *, max_new_tokens: int | None = None,
                call_logit_bias: float | None = None) -> "CascadeDecoder":
        from lacy.cascade.decoder import CascadeDecoder

        return CascadeDecoder(self.model, self.tokenizer, helper, policy,
                              max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                              call_logit_bias=call_logit_bias)

    def policy(self, name: str, *, tau: float | None = None, budget: float | None = None) -> Any:
        """A call policy (:func:`lacy.cascade.policies.build_policy`). ``budget``: the target rate, warmed
        up on the calibration text (default ``profile.eval.budget``); ``threshold``: ``tau``, or τ
        calibrated on held-out text for the target rate ``budget``."""
        from lacy.cascade.policies import build_policy

        if name == "budget":
            budget = self.profile.eval.budget if budget is None else budget
            return build_policy(name, budget=budget, calibration=self.calibration)
        if name == "threshold" and tau is None and budget is not None:
            return build_policy(name, budget=budget, calibration=self.calibration)
        return build_policy(name, tau=tau)


def run_generations(decoder: "CascadeDecoder", chosen: Sequence[Subject], *, progress: bool = False, desc: str = "generate") -> list["Generation"]:
    """Generate once per subject (greedy, deterministic), in order."""
    return [decoder.generate(s.prompt, subject=s.name) for s in tqdm(chosen, desc=desc, disable=not progress)]


def score_generations(scorer: "FactScore", chosen: Sequence[Subject], generations: Sequence["Generation"]) -> tuple["FactScoreResult", dict[str, float | None]]:
    """FactScore over all generations and per frequency group ("frequent", "rare")."""
    items = [(s.name, g.text) for s, g in zip(chosen, generations)]
    result = scorer.score(items)
    by_frequency: dict[str, float | None] = {}
    for label in sorted({s.frequency for s in chosen}):
        group = [item for item, s in zip(items, chosen) if s.frequency == label]
        by_frequency[label] = scorer.score(group).factscore
    return result, by_frequency


def score_summary(ctx: "EvaluationContext", chosen: Sequence[Subject], generations: Sequence["Generation"]) -> tuple["FactScoreResult", dict[str, Any]]:
    """FactScore of ``generations`` and the fields every evaluation reports (factscore, respond_ratio,
    facts_per_response, n_subjects, variant, method, by_frequency), with the metrics of
    :func:`lacy.evaluate.stats.summarize` (precision, recall, supported_per_response,
    factscore_gamma10, call_rate, their ``ci95``, ``by_tier`` and the per-subject counts ``subjects``)."""
    from lacy.evaluate.metrics import subject_counts
    from lacy.evaluate.stats import summarize

    result, by_frequency = score_generations(ctx.factscorer(), chosen, generations)
    counts = subject_counts(result, {"tier": [s.frequency for s in chosen], "n_calls": [g.n_calls for g in generations],
                                     "slm_steps": [len(g.p_call) for g in generations]})
    return result, {
        **summarize(counts.assign(seed=ctx.seed), "tier", seed=ctx.seed),
        "seed": ctx.seed,
        "factscore": result.factscore,
        "respond_ratio": result.respond_ratio,
        "facts_per_response": result.facts_per_response,
        "n_subjects": len(chosen),
        "variant": result.variant,
        "method": ctx.method,
        "by_frequency": by_frequency,
    }


def _generation_totals(generations: Sequence["Generation"]) -> dict[str, Any]:
    steps = sum(len(g.p_call) for g in generations)
    calls = sum(g.n_calls for g in generations)
    return {
        "call_rate": calls / steps if steps else 0.0,
        "n_calls": calls,
        "unresolved_calls": sum(g.unresolved_calls for g in generations),
        "slm_tokens": sum(g.slm_tokens for g in generations),
        "helper_tokens": sum(g.helper_tokens for g in generations),
        "seconds": sum(g.seconds for g in generations),
    }


def generation_frame(chosen: Sequence[Subject], generations: Sequence["Generation"], result: "FactScoreResult") -> pd.DataFrame:
    """One row per generation: the subject, the marked text, call counts and its FactScore row."""
    rows = [
        {"subject": s.name, "frequency": s.frequency, "n_docs": s.n_docs, "prompt": s.prompt, "text": g.text,
         "marked": g.marked(), "n_calls": g.n_calls, "slm_steps": len(g.p_call), "unresolved_calls": g.unresolved_calls,
         "slm_tokens": g.slm_tokens, "helper_tokens": g.helper_tokens, "seconds": g.seconds}
        for s, g in zip(chosen, generations)
    ]
    frame = pd.DataFrame(rows)
    scores = result.to_frame().reset_index(drop=True)
    return pd.concat([frame, scores[[c for c in scores.columns if c not in frame.columns]]], axis=1)


HELPER_SHADE = "#ffd8a8"
"""Background colour of helper-written text in :func:`generations_html`."""


def marked_html(marked: str, open_mark: str = "[[", close_mark: str = "]]") -> str:
    """HTML of a marked generation (:meth:`lacy.cascade.decoder.Generation.marked`): text escaped,
    helper spans shaded with :data:`HELPER_SHADE`."""
    import html

    pattern = re.compile(re.escape(open_mark) + "(.*?)" + re.escape(close_mark), re.DOTALL)
    pieces, end = [], 0
    for match in pattern.finditer(marked):
        pieces.append(html.escape(marked[end:match.start()]))
        pieces.append(f'<span style="background:{HELPER_SHADE}">{html.escape(match.group(1))}</span>')
        end = match.end()
    pieces.append(html.escape(marked[end:]))
    return "".join(pieces)


def generations_html(frame: pd.DataFrame, label_columns: Sequence[str] = ("subject", "frequency")) -> str:
    """An HTML table of generations (rows of :func:`generation_frame`, or any frame with ``prompt`` and
    ``marked``): the ``label_columns``, then the prompt in bold followed by the continuation with helper
    text shaded (paper §5, cascade examples)."""
    import html

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in (*label_columns, "generation (helper text shaded)"))
    rows = [
        "<tr>" + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in label_columns)
        + f'<td style="text-align:left"><b>{html.escape(str(row["prompt"]))}</b>{marked_html(str(row["marked"]))}</td></tr>'
        for _, row in frame.iterrows()
    ]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


# --------------------------------------------------------------------------------------------------
# Public entry points (CLI: lacy generate | evaluate | sweep)
# --------------------------------------------------------------------------------------------------


def generate(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *, helper: str = "doc", policy: str = "budget",
             tau: float | None = None, budget: float | None = None, prompt: str, subject: str | None = None,
             max_new_tokens: int | None = None, cache_root: str | Path | None = None,
             helper_fallback: bool = False) -> "Generation":
    """One cascade generation from ``prompt`` (``subject``, default the prompt, selects the helper's documents).
    ``helper_fallback``: a remote helper that is unavailable answers "no help" instead of failing."""
    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    decoder = ctx.decoder(ctx.helper(helper, fallback=helper_fallback), ctx.policy(policy, tau=tau, budget=budget), max_new_tokens=max_new_tokens)
    return decoder.generate(prompt, subject=subject if subject is not None else prompt)


def evaluate(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *, helper: str = "doc", policy: str = "budget",
             tau: float | None = None, budget: float | None = None, cache_root: str | Path | None = None,
             subjects: Sequence[Subject] | None = None, progress: bool = False, helper_fallback: bool = False,
             return_frame: bool = False) -> dict[str, Any] | tuple[dict[str, Any], pd.DataFrame]:
    """FactScore of the SLM in cascade with ``helper`` under a call ``policy`` (paper §5, Table 2).

    ``helper`` is a spec for :func:`lacy.cascade.helpers.build_helper` (``doc``: the oracle, given the
    gold subject's documents; ``retrieval``: BM25 over the corpus; ``hf:PATH``, ``smollm2``,
    ``http://HOST:PORT``); ``policy`` is ``argmax``, ``threshold`` (``tau``, or τ calibrated on
    held-out text for the rate ``budget``) or ``budget`` (a running-quantile policy for the target call
    rate ``budget``, default ``profile.eval.budget``). ``subjects`` defaults to
    :func:`subjects`. Returns a dict with ``precision, recall, supported_per_response, respond_ratio,
    factscore_gamma10, call_rate`` (calls ÷ generated SLM steps), their ``ci95``, ``by_tier``, the
    per-subject counts ``subjects`` (:func:`lacy.evaluate.stats.summarize`; compare two results with
    :func:`lacy.evaluate.stats.compare`), ``factscore`` (with ``profile.eval.gamma``),
    ``facts_per_response, unresolved_calls, helper, policy, tau, budget, n_subjects, seed, seconds,
    variant, by_frequency`` and token counts; with ``return_frame=True`` also the per-generation frame
    (:func:`generation_frame`).
    """
    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    chosen = list(subjects) if subjects is not None else ctx.subjects()
    if policy == "budget" and budget is None:
        budget = profile.eval.budget
    call_policy = ctx.policy(policy, tau=tau, budget=budget)
    decoder = ctx.decoder(ctx.helper(helper, fallback=helper_fallback), call_policy)
    generations = run_generations(decoder, chosen, progress=progress, desc=f"evaluate {helper}/{policy}")
    result, summary = score_summary(ctx, chosen, generations)
    summary.update({
        **_generation_totals(generations),
        "helper": helper,
        "policy": policy,
        "tau": call_policy.tau if policy == "threshold" else None,
        "budget": budget if policy != "argmax" else None,
    })
    if return_frame:
        return summary, generation_frame(chosen, generations, result)
    return summary


def flops_per_token(tokenizer: Any, generations: Sequence["Generation"], n_slm: int, n_helper: int | None) -> float | None:
    """Estimated forward FLOPs per generated token of a cascade: 2·N per token a model runs on.

    The SLM runs once on every token of prompt + continuation (its KV cache is extended, never
    recomputed). The helper runs on the tokens it generates plus, when it was called at all, the
    text up to its last call (its own KV cache reads it once); that text is counted in SLM tokens,
    a proxy for the helper's own tokenisation. Attention FLOPs are ignored (short contexts).
    None when the helper's size is unknown (a remote server); NaN when nothing was generated.
    """
    from lacy.cascade.helpers import encode_text

    if n_helper is None:
        return None
    generated = slm_forward = helper_forward = 0
    for g in generations:
        generated += len(g.token_ids)
        slm_forward += len(encode_text(tokenizer, g.prompt)) + len(g.token_ids)
        helper_forward += g.helper_tokens
        if g.call_positions:
            helper_forward += len(encode_text(tokenizer, g.prompt + g.text[: max(g.call_positions)]))
    if generated == 0:
        return math.nan
    return (2 * n_slm * slm_forward + 2 * n_helper * helper_forward) / generated


def sweep(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *, helper: str = "doc",
          rates: Sequence[float] | None = None, cache_root: str | Path | None = None,
          subjects: Sequence[Subject] | None = None, progress: bool = False, device: str = "cpu",
          helper_fallback: bool = False) -> pd.DataFrame:
    """FactScore against the calibrated call rate (Co-LLM style; paper §5's 22% → 80% comparison).

    For each target rate (default ``profile.eval.sweep_rates``) the threshold τ comes from
    :func:`thresholds_for_rates` on held-out text and the cascade runs with a fixed-threshold policy.
    One tidy row per rate: ``target_rate, tau, factscore, respond_ratio, facts_per_response,
    call_rate`` (achieved), ``unresolved_calls, helper_tokens, slm_tokens, seconds, flops_per_token``
    (:func:`flops_per_token`), ``method`` (from the run's summary.json) and ``helper``. An LM helper runs
    on ``device``.
    """
    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    chosen = list(subjects) if subjects is not None else ctx.subjects()
    rates = tuple(profile.eval.sweep_rates if rates is None else rates)
    thresholds = thresholds_for_rates(ctx.calibration, rates)
    helper_obj = ctx.helper(helper, device=device, fallback=helper_fallback)
    from lacy.train.model import count_parameters

    n_slm, n_helper = count_parameters(ctx.model), helper_parameter_count(helper_obj)
    scorer = ctx.factscorer()
    rows = []
    for rate in tqdm(rates, desc=f"sweep {helper}", disable=not progress):
        decoder = ctx.decoder(helper_obj, ctx.policy("threshold", tau=thresholds[rate]))
        generations = run_generations(decoder, chosen)
        result = scorer.score([(s.name, g.text) for s, g in zip(chosen, generations)])
        totals = _generation_totals(generations)
        rows.append({
            "target_rate": rate,
            "tau": thresholds[rate],
            "factscore": result.factscore,
            "respond_ratio": result.respond_ratio,
            "facts_per_response": result.facts_per_response,
            "call_rate": totals["call_rate"],
            "unresolved_calls": totals["unresolved_calls"],
            "helper_tokens": totals["helper_tokens"],
            "slm_tokens": totals["slm_tokens"],
            "seconds": totals["seconds"],
            "flops_per_token": flops_per_token(ctx.tokenizer, generations, n_slm, n_helper),
            "method": ctx.method,
            "helper": helper,
        })
    return pd.DataFrame(rows)
