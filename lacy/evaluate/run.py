"""Evaluation entry points: FactScore of the SLM in cascade and calibrated call-rate sweeps (paper §5).

The SLM generates greedily from a fixed, seeded set of subject prompts; at every step the call policy
decides whether the helper supplies the next word (paper §5: a budget of 22% calls set by a running
quantile of P(``<CALL>``)). Generations are scored with FactScore (exact on synthbio,
reference-based on vitalwiki; :mod:`lacy.evaluate.factscore`).

The sweep follows Co-LLM: thresholds on P(``<CALL>``) are calibrated as quantiles of its
teacher-forced values on held-out (val-split) documents (:mod:`lacy.evaluate.subjects`); ``r = 0`` is
the SLM alone (τ = +∞) and ``r = 1`` the helper alone (τ = 0: every SLM step calls). Every entry
point runs :func:`lacy.evaluate.cascade_run.run_cascade`.

Used by ``lacy generate | evaluate | sweep`` (:mod:`lacy.cli`) and by the book.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from lacy.evaluate.cascade_run import (  # noqa: F401  (re-exported: the evaluation API in one import)
    CascadeRun,
    EvaluationContext,
    flops_per_token,
    helper_parameter_count,
    model_folder,
    run_cascade,
    run_method,
    score_generations,
)
from lacy.evaluate.subjects import (  # noqa: F401
    FREQUENT_FRACTION,
    Subject,
    calibration_probs,
    calibration_texts,
    frequency_labels,
    person_frequency,
    reference_documents,
    subjects,
    thresholds_for_rates,
)
from lacy.profiles import Profile

if TYPE_CHECKING:
    from lacy.cascade.decoder import Generation
    from lacy.cascade.helpers import Helper

SWEEP_COLUMNS = ("precision", "recall", "supported_per_response", "factscore_gamma10", "factscore", "respond_ratio", "facts_per_response", "call_rate", "unresolved_calls", "helper_tokens",
                 "slm_tokens", "seconds", "flops_per_token", "method", "call_head", "helper")
"""Columns of a :func:`sweep` row after ``target_rate`` and ``tau`` (keys of :meth:`CascadeRun.summary`)."""


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


def generate(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *, helper: "Helper | str" = "doc",
             policy: str = "budget", tau: float | None = None, budget: float | None = None, prompt: str,
             subject: str | None = None, max_new_tokens: int | None = None, cache_root: str | Path | None = None,
             helper_fallback: bool = False) -> "Generation":
    """One cascade generation from ``prompt`` (``subject``, default the prompt, selects the helper's documents).
    ``helper_fallback``: a remote helper that is unavailable answers "no help" instead of failing."""
    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    one = Subject(subject if subject is not None else prompt, prompt, "n/a", 0)
    run = run_cascade(ctx, helper, ctx.policy(policy, tau=tau, budget=budget), [one], max_new_tokens=max_new_tokens,
                      helper_fallback=helper_fallback)
    return run.generations[0]


def evaluate(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *, helper: "Helper | str" = "doc",
             policy: str = "budget", tau: float | None = None, budget: float | None = None,
             cache_root: str | Path | None = None, subjects: Sequence[Subject] | None = None,
             device: str = "cpu", helper_fallback: bool = False) -> CascadeRun:
    """The SLM in cascade with ``helper`` under a call ``policy`` on the FactScore subjects (paper §5, Table 2).

    ``helper`` is a built helper or a spec for :func:`lacy.cascade.specs.build_helper` (``doc``: the
    oracle, handed the gold subject's documents; ``retrieval``: BM25 over the corpus; ``hf:PATH``, ``smollm2``, ``http://HOST:PORT``; an LM is loaded on ``device``); ``policy`` is
    ``argmax``, ``threshold`` (``tau``, or τ calibrated on held-out text for the rate ``budget``) or
    ``budget`` (a running-quantile policy for the target call rate ``budget``, default
    ``profile.eval.budget``). ``subjects`` defaults to :func:`subjects`. The returned run gives the
    summary (:meth:`CascadeRun.summary`) and the per-generation frame (:meth:`CascadeRun.frame`).
    """
    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    target = budget if policy == "threshold" and tau is None else None
    return run_cascade(ctx, helper, ctx.policy(policy, tau=tau, budget=budget), subjects, target_rate=target, device=device,
                       helper_fallback=helper_fallback)


def sweep(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *, helper: "Helper | str" = "doc",
          rates: Sequence[float] | None = None, cache_root: str | Path | None = None,
          subjects: Sequence[Subject] | None = None, device: str = "cpu", helper_fallback: bool = False) -> pd.DataFrame:
    """FactScore against the calibrated call rate (Co-LLM style; paper §5's 22% → 80% comparison).

    For each target rate (default ``profile.eval.sweep_rates``) the threshold τ comes from
    :func:`thresholds_for_rates` on held-out text and the cascade runs with a fixed-threshold policy.
    One tidy row per rate: ``target_rate, tau`` and :data:`SWEEP_COLUMNS` (``call_rate`` is the
    achieved rate, ``method`` comes from the run's summary.json). ``helper`` is built once (on
    ``device``) for all rates; pass a built helper to share it across sweeps.
    """
    rows = []
    for rate, tau, run in sweep_runs(model_dir, corpus, profile, seed, helper=helper, rates=rates, cache_root=cache_root,
                                     subjects=subjects, device=device, helper_fallback=helper_fallback):
        summary = {**run.summary(), "helper": helper if isinstance(helper, str) else run.helper_name}
        rows.append({"target_rate": rate, "tau": tau, **{key: summary[key] for key in SWEEP_COLUMNS}})
    return pd.DataFrame(rows)


def sweep_runs(model_dir: str | Path, corpus: str, profile: Profile, seed: int, *, helper: "Helper | str" = "doc",
               rates: Sequence[float] | None = None, cache_root: str | Path | None = None,
               subjects: Sequence[Subject] | None = None, device: str = "cpu",
               helper_fallback: bool = False) -> list[tuple[float, float, CascadeRun]]:
    """The cascade runs behind :func:`sweep`, as ``(target rate, τ, run)``: for callers that need more than
    its table, e.g. the per-subject counts of :func:`lacy.evaluate.grid.compare_at_achieved_rates`."""
    ctx = EvaluationContext.load(model_dir, corpus, profile, seed, cache_root)
    chosen = list(subjects) if subjects is not None else ctx.subjects()
    rates = tuple(profile.eval.sweep_rates if rates is None else rates)
    thresholds = thresholds_for_rates(ctx.calibration, rates)
    built = ctx.helper(helper, device=device, fallback=helper_fallback)
    return [(rate, thresholds[rate], run_cascade(ctx, built, ctx.policy("threshold", tau=thresholds[rate]), chosen, target_rate=rate))
            for rate in rates]
