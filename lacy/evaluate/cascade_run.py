"""One cascade run: an SLM loaded once with its corpus, a helper, a call policy, subjects (paper §5).

:func:`run_cascade` is the one path from a loaded model to scored generations, shared by ``lacy
generate | evaluate | sweep``, the call-value analysis (:mod:`lacy.evaluate.calls`) and the
generation-based leakage probe (:mod:`lacy.evaluate.leakage`). Its :class:`CascadeRun` scores the
generations once and reports them as a summary dict (:meth:`CascadeRun.summary`) or one row per
generation (:meth:`CascadeRun.frame`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from lacy.data.corpora import get_corpus
from lacy.evaluate.subjects import Subject, calibration_probs, calibration_texts, reference_documents, subjects
from lacy.profiles import CORPORA, Profile, check_choice

if TYPE_CHECKING:
    from lacy.cascade.decoder import CascadeDecoder, Generation
    from lacy.cascade.helpers import Helper
    from lacy.cascade.policies import CallPolicy
    from lacy.evaluate.factscore import FactScore, FactScoreResult

_GENERATION_CAPS: dict[tuple, int] = {}  # EvaluationContext.max_new_tokens, per corpus, world, data and tokenizer


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
    """Parameters a helper runs per token: 0 for the document lookup, the model's count for an LM helper,
    None when unknown (a remote server)."""
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

    @property
    def call_head(self) -> str:
        """How the SLM defers (``model.call_head``): ``"gate"`` for a deferral gate, else ``"token"``."""
        from lacy.train.model import call_gate

        return "token" if call_gate(self.model) is None else "gate"

    def subjects(self) -> list[Subject]:
        return subjects(self.corpus, self.profile, self.seed, self.world, nlp=self.nlp if get_corpus(self.corpus).prompt_needs_nlp else None)

    @cached_property
    def calibration(self) -> np.ndarray:
        return calibration_probs(self.model, self.tokenizer, calibration_texts(self.corpus, self.profile, self.seed, self.world))

    def helper(self, helper: "Helper | str", device: str = "cpu", fallback: bool = False) -> "Helper":
        """``helper`` itself when already built (an LM helper is loaded once and reused across runs),
        else the helper of a spec string (:func:`lacy.cascade.specs.build_helper`; ``doc`` reads
        this corpus's reference documents)."""
        from lacy.cascade.helpers import Helper
        from lacy.cascade.specs import build_helper

        if isinstance(helper, Helper):
            return helper
        lookup = helper in ("doc", "retrieval")  # the oracle's gold documents; retrieval searches all of them
        documents = reference_documents(self.corpus, self.profile, self.seed, self.world) if lookup else None
        return build_helper(helper, documents=documents, device=device, fallback=fallback)

    @cached_property
    def max_new_tokens(self) -> int:
        """``profile.eval.max_new_tokens``, or when it is 0 ("auto") 1.5× the longest training document
        in tokens (:func:`lacy.evaluate.metrics.generation_cap`): generation then ends at end-of-text."""
        if self.profile.eval.max_new_tokens:
            return self.profile.eval.max_new_tokens
        from lacy.data.corpora import get_corpus
        from lacy.evaluate.metrics import generation_cap

        corpus = get_corpus(self.corpus)
        key = (self.corpus, self.profile.world, self.profile.data, self.seed if corpus.seed_draws_split else None,
               self.tokenizer.backend_tokenizer.to_str())
        if key not in _GENERATION_CAPS:  # one per corpus and tokenizer: a grid evaluates many runs of one world
            documents, _ = corpus.documents(self.profile, self.seed, self.world)
            _GENERATION_CAPS[key] = generation_cap(self.tokenizer, [d.text for d in documents if d.split == "train"])
        return _GENERATION_CAPS[key]

    @cached_property
    def scorer(self) -> "FactScore":
        """The corpus's FactScore (exact on synthbio, reference-based on vitalwiki), built once."""
        from lacy.evaluate import factscore

        if get_corpus(self.corpus).factscore == "exact":
            return factscore.synthbio_factscore(self.world, gamma=self.profile.eval.gamma)
        from lacy.data import vitalwiki

        return factscore.vitalwiki_factscore(vitalwiki.summaries(), self.nlp, gamma=self.profile.eval.gamma)

    def decoder(self, helper: "Helper | None", policy: Any, *, max_new_tokens: int | None = None,
                call_logit_bias: float | None = None) -> "CascadeDecoder":
        from lacy.cascade.decoder import CascadeDecoder

        return CascadeDecoder(self.model, self.tokenizer, helper, policy,
                              max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                              call_logit_bias=call_logit_bias, batch_size=self.profile.eval.batch_size)

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


def flops_per_token(tokenizer: Any, generations: Sequence["Generation"], n_slm: int, n_helper: int | None, *,
                    slm_reads: bool = True) -> float | None:
    """Estimated forward FLOPs per generated token of a cascade: 2·N per token a model runs on.

    With KV caches each model runs once on every token it reads. The SLM reads prompt + continuation
    (``slm_reads=False`` for the helper alone, where no SLM is needed). The helper, when it was called
    at all, reads the text up to the end of its last call or reply, once: the tokens it generated
    earlier are part of that text, so they are not counted again. Text is counted in SLM tokens, a
    proxy for the helper's own tokenisation. Attention FLOPs are ignored (short contexts). A helper
    that must read the whole text to continue it therefore costs about as much per token as the
    helper alone, and a cascade adds the SLM's reading to that. None when the helper's size is
    unknown (a remote server); NaN when nothing was generated.
    """
    from lacy.cascade.helpers import encode_text

    if n_helper is None:
        return None
    generated = slm_forward = helper_forward = 0
    for g in generations:
        generated += len(g.token_ids)
        if slm_reads:
            slm_forward += len(encode_text(tokenizer, g.prompt)) + len(g.token_ids)
        read_until = max([*g.call_positions, *(end for _, end, source in g.spans if source == "helper")], default=None)
        if read_until is not None:
            helper_forward += len(encode_text(tokenizer, g.prompt + g.text[:read_until]))
    if generated == 0:
        return math.nan
    return (2 * n_slm * slm_forward + 2 * n_helper * helper_forward) / generated


def score_generations(scorer: "FactScore", chosen: Sequence[Subject], generations: Sequence["Generation"]) -> tuple["FactScoreResult", dict[str, float | None]]:
    """FactScore over all generations and per frequency group ("frequent", "rare")."""
    items = [(s.name, g.text) for s, g in zip(chosen, generations)]
    result = scorer.score(items)
    by_frequency: dict[str, float | None] = {}
    for label in sorted({s.frequency for s in chosen}):
        group = [item for item, s in zip(items, chosen) if s.frequency == label]
        by_frequency[label] = scorer.score(group).factscore
    return result, by_frequency


@dataclass
class CascadeRun:
    """The generations of one cascade run, scored once.

    ``helper_name`` labels the helper in summaries (the spec string, or the built helper's name);
    ``target_rate`` is the call rate a threshold was calibrated for (None otherwise).
    """

    context: EvaluationContext
    subjects: list[Subject]
    generations: list["Generation"]
    helper: "Helper | None"
    helper_name: str
    policy: "CallPolicy"
    target_rate: float | None = None

    @cached_property
    def scores(self) -> tuple["FactScoreResult", dict[str, float | None]]:
        return score_generations(self.context.scorer, self.subjects, self.generations)

    def totals(self) -> dict[str, Any]:
        """Calls (per generated SLM step), unresolved calls, tokens written by each model, seconds."""
        steps = sum(len(g.p_call) for g in self.generations)
        calls = sum(g.n_calls for g in self.generations)
        return {
            "call_rate": calls / steps if steps else 0.0,
            "n_calls": calls,
            "unresolved_calls": sum(g.unresolved_calls for g in self.generations),
            "slm_tokens": sum(g.slm_tokens for g in self.generations),
            "helper_tokens": sum(g.helper_tokens for g in self.generations),
            "seconds": sum(g.seconds for g in self.generations),
        }

    def summary(self) -> dict[str, Any]:
        """The metrics of :func:`lacy.evaluate.stats.summarize` (``precision, recall,
        supported_per_response, factscore_gamma10, call_rate``, their ``ci95``, ``by_tier`` and the
        per-subject counts ``subjects``), ``seed, factscore`` (γ = ``profile.eval.gamma``),
        ``respond_ratio, facts_per_response, n_subjects, variant, method, by_frequency``, the :meth:`totals`, ``helper, policy, tau``
        (thresholds only), ``budget`` (the budget policy's rate or the calibrated target rate) and
        ``flops_per_token`` (:func:`flops_per_token`)."""
        from lacy.cascade.policies import BudgetPolicy, ThresholdPolicy
        from lacy.train.model import count_parameters

        from lacy.evaluate.metrics import subject_counts
        from lacy.evaluate.stats import summarize

        result, by_frequency = self.scores
        counts = subject_counts(result, {"tier": [s.frequency for s in self.subjects],
                                         "n_calls": [g.n_calls for g in self.generations],
                                         "slm_steps": [len(g.p_call) for g in self.generations]})
        n_helper = helper_parameter_count(self.helper) if self.helper is not None else 0
        return {
            **summarize(counts.assign(seed=self.context.seed), "tier", seed=self.context.seed),
            "seed": self.context.seed,
            "factscore": result.factscore,
            "respond_ratio": result.respond_ratio,
            "facts_per_response": result.facts_per_response,
            "n_subjects": len(self.subjects),
            "variant": result.variant,
            "method": self.context.method,
            "call_head": self.context.call_head,
            "by_frequency": by_frequency,
            **self.totals(),
            "helper": self.helper_name,
            "policy": self.policy.name,
            "tau": self.policy.tau if isinstance(self.policy, ThresholdPolicy) else None,
            "budget": self.policy.rate if isinstance(self.policy, BudgetPolicy) else self.target_rate,
            "flops_per_token": flops_per_token(self.context.tokenizer, self.generations, count_parameters(self.context.model), n_helper,
                                               slm_reads=not (isinstance(self.policy, ThresholdPolicy) and self.policy.tau == 0)),
        }

    def frame(self) -> pd.DataFrame:
        """One row per generation: the subject, the marked text, call counts and its FactScore row."""
        rows = [
            {"subject": s.name, "frequency": s.frequency, "n_docs": s.n_docs, "prompt": s.prompt, "text": g.text,
             "marked": g.marked(), "n_calls": g.n_calls, "slm_steps": len(g.p_call), "unresolved_calls": g.unresolved_calls,
             "slm_tokens": g.slm_tokens, "helper_tokens": g.helper_tokens, "seconds": g.seconds}
            for s, g in zip(self.subjects, self.generations)
        ]
        frame = pd.DataFrame(rows)
        scores = self.scores[0].to_frame().reset_index(drop=True)
        return pd.concat([frame, scores[[c for c in scores.columns if c not in frame.columns]]], axis=1)


def run_cascade(context: EvaluationContext, helper: "Helper | str | None", policy: "CallPolicy",
                chosen: Sequence[Subject] | None = None, *, target_rate: float | None = None, device: str = "cpu",
                call_logit_bias: float | None = None, max_new_tokens: int | None = None,
                helper_fallback: bool = False) -> CascadeRun:
    """Generate once per subject (default :meth:`EvaluationContext.subjects`) with the SLM in cascade.

    ``helper``: a built :class:`~lacy.cascade.helpers.Helper`, a spec string (built on ``device``),
    or None (every call unresolved); ``helper_fallback``: a remote helper that is unavailable answers
    "no help" instead of failing. Prompts are decoded ``profile.eval.batch_size`` at a time; each
    generation is the one it gets alone (greedy), so the batch size changes only the time spent.
    Generations already decoded with the same SLM, helper, policy and options for the same subjects are
    read back from ``context.cache_root`` (:mod:`lacy.evaluate.generation_cache`).
    """
    chosen = list(chosen) if chosen is not None else context.subjects()
    built = context.helper(helper, device=device, fallback=helper_fallback) if helper is not None else None
    name = helper if isinstance(helper, str) else getattr(built, "name", "none")
    decoder = context.decoder(built, policy, max_new_tokens=max_new_tokens, call_logit_bias=call_logit_bias)
    from lacy.evaluate.generation_cache import generate_cached

    generations = generate_cached(decoder, [s.prompt for s in chosen], [s.name for s in chosen], context.cache_root)
    return CascadeRun(context, chosen, generations, built, name, policy, target_rate)
