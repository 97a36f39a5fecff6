"""Experiment grids for the book: every method × helper, as tidy frames (paper §5, Figure 3 and Table 2).

A chapter names its trained runs (method → run folder) and its helpers (name → a built helper or a
spec string; an LM helper is built once and shared by every run of the grid) and gets one row per
(helper, method, rate) back. Schemas:

* :func:`sweep_grid`: ``helper, method, target_rate, tau`` and :data:`lacy.evaluate.run.SWEEP_COLUMNS`;
  the helper alone (``method`` = :data:`lacy.plots.HELPER_ALONE`, rate 1: every step calls) once per helper.
* :func:`budget_grid`: :attr:`BudgetGrid.table` (``helper, method``, :data:`BUDGET_COLUMNS`, the 95%
  intervals ``precision_lo, precision_hi, recall_lo, recall_hi`` and ``n_seeds``),
  :attr:`BudgetGrid.by_frequency` (``helper, method, frequency, precision, recall, factscore``), the
  per-generation frames (:meth:`lacy.evaluate.cascade_run.CascadeRun.frame`, first training seed) and
  summaries (pooled over training seeds, with per-subject counts) by ``(helper, method)``, and
  :meth:`BudgetGrid.comparisons` (paired-bootstrap differences pooled over seeds).
* :func:`at_achieved_rates`: a :func:`sweep_grid` frame interpolated at equal *achieved* call rates (point
  estimates); :func:`compare_at_achieved_rates`: the same comparison with 95% intervals, pooled over training
  seeds (``helper, baseline, rate, metric, diff, lo, hi, a, b, n_seeds, verdict, sentence``).

A method given several run folders (one per training seed) is evaluated once per seed on the same
subjects; its numbers are seed averages and its intervals come from the subject bootstrap pooled over
seeds (:mod:`lacy.evaluate.stats`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lacy.evaluate.run import evaluate, sweep, sweep_runs
from lacy.plots import HELPER_ALONE  # the label the plots draw as the helper-alone star
from lacy.profiles import Profile

if TYPE_CHECKING:
    from lacy.cascade.helpers import Helper
    from lacy.evaluate.subjects import Subject

BUDGET_COLUMNS = ("precision", "recall", "supported_per_response", "factscore", "respond_ratio", "facts_per_response",
                  "call_rate", "unresolved_calls")


def sweep_grid(runs: Mapping[str, str | Path], helpers: Mapping[str, "Helper | str"], corpus: str, profile: Profile,
               seed: int, *, rates: Sequence[float], subjects: Sequence["Subject"] | None = None,
               cache_root: str | Path | None = None, device: str = "cpu", alone_run: str | Path | None = None) -> pd.DataFrame:
    """:func:`lacy.evaluate.run.sweep` for every helper × method at ``rates``, plus the helper alone.

    ``runs``: method → run (or model) folder; ``helpers``: name → built helper or spec. The helper
    alone is run at rate 1 (where the SLM only asks) with the SLM of ``alone_run``, default the
    first of ``runs``.
    """
    if alone_run is None and not runs:
        raise ValueError("sweep_grid needs at least one run, or alone_run=... for the helper-alone rows")
    frames = []
    for name, helper in helpers.items():
        for method, run in runs.items():
            table = sweep(run, corpus, profile, seed, helper=helper, rates=rates, subjects=subjects, cache_root=cache_root, device=device)
            frames.append(table.assign(method=method, helper=name))
        first = alone_run if alone_run is not None else next(iter(runs.values()))
        alone = sweep(first, corpus, profile, seed, helper=helper, rates=[1.0], subjects=subjects, cache_root=cache_root, device=device)
        frames.append(alone.assign(method=HELPER_ALONE, helper=name))
    grid = pd.concat(frames, ignore_index=True)
    grid["factscore"] = grid["factscore"].astype(float)  # None (nobody responds) -> NaN
    return grid[["helper", "method", *[c for c in grid.columns if c not in ("helper", "method")]]]


@dataclass
class BudgetGrid:
    """The budget-policy runs of every helper × method (see the module docstring for the schemas)."""

    table: pd.DataFrame
    by_frequency: pd.DataFrame
    frames: dict[tuple[str, str], pd.DataFrame]
    summaries: dict[tuple[str, str], dict[str, Any]]

    def comparisons(self, method: str = "lacy", metrics: Sequence[str] = ("precision", "recall")) -> pd.DataFrame:
        """``method`` − every other method, per helper, with a paired bootstrap over subjects
        (:func:`lacy.evaluate.stats.compare`): ``helper, baseline`` and the rows of :func:`comparison_rows`
        (``metric, diff, lo, hi, a, b, verdict`` and the sentence that says it: "ahead" only when the 95%
        interval of the difference excludes zero)."""
        from lacy.evaluate.stats import compare

        rows = []
        for (helper, other), summary in self.summaries.items():
            if other == method or (helper, method) not in self.summaries:
                continue
            result = compare(self.summaries[helper, method], summary, metrics)
            rows += comparison_rows(result, metrics, method, other, f" (helper `{helper}`)", helper=helper, baseline=other)
        return pd.DataFrame(rows)


def comparison_rows(result: Mapping[str, Any], metrics: Sequence[str], a: str, b: str, where: str, **labels: Any) -> list[dict[str, Any]]:
    """One row per metric of a :func:`lacy.evaluate.stats.compare` result of ``a`` − ``b``: ``labels``, ``metric,
    diff, lo, hi, a, b``, the ``verdict`` and the sentence that says it (:func:`lacy.evaluate.stats.describe`,
    followed by ``where``)."""
    from lacy.evaluate.stats import describe, direction

    rows = []
    for metric in metrics:
        entry = result[metric]
        lo, hi = entry["ci95"] if entry.get("ci95") else (None, None)
        rows.append({**labels, "metric": metric, "diff": entry["diff"], "lo": lo, "hi": hi, "a": entry["a"], "b": entry["b"],
                     "verdict": direction(entry), "sentence": describe(result, f"`{a}`", f"`{b}`", metric) + where})
    return rows


def run_folders(runs: str | Path | Sequence[str | Path]) -> list[Path]:
    """One run folder, or one per training seed, as a list."""
    return [Path(runs)] if isinstance(runs, (str, Path)) else [Path(run) for run in runs]


def training_seed(run: str | Path) -> int:
    """The training seed recorded in a run's ``summary.json`` (a run folder or its ``model`` folder)."""
    folder = Path(run)
    for candidate in (folder / "summary.json", folder.parent / "summary.json"):
        if candidate.is_file():
            return int(json.loads(candidate.read_text())["seed"])
    raise FileNotFoundError(f"no summary.json in {folder} or its parent: pass run folders written by `lacy train`")


def pool_seeds(summaries: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One summary for several training seeds evaluated on the same subjects.

    The headline metrics, their ``ci95`` and ``by_tier`` come from :func:`lacy.evaluate.stats.summarize`
    over the per-subject counts of every seed (seed averages; bootstrap over subjects, pooled over
    seeds); the scalar extras (γ FactScore, facts per response, totals) are seed means;
    ``training_seeds`` lists the seeds.
    """
    from lacy.evaluate.stats import summarize

    if len(summaries) != len(seeds) or not summaries:
        raise ValueError(f"pool_seeds needs one summary per seed, got {len(summaries)} summaries for seeds {list(seeds)}")
    if len(summaries) == 1:
        return {**summaries[0], "n_seeds": 1, "training_seeds": list(seeds)}
    counts = pd.concat([pd.DataFrame(s["subjects"]).assign(seed=seed) for s, seed in zip(summaries, seeds)], ignore_index=True)
    means = {key: _mean([s.get(key) for s in summaries])
             for key in ("factscore", "facts_per_response", "unresolved_calls", "n_calls", "slm_tokens", "helper_tokens", "seconds", "flops_per_token")}
    tiers = {tier for s in summaries for tier in s.get("by_frequency", {})}
    by_frequency = {tier: _mean([s.get("by_frequency", {}).get(tier) for s in summaries]) for tier in sorted(tiers)}
    return {**summaries[0], **means, "by_frequency": by_frequency, **summarize(counts, "tier"), "training_seeds": list(seeds)}


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(present)) if present else None


def budget_grid(runs: Mapping[str, str | Path | Sequence[str | Path]], helpers: Mapping[str, "Helper | str"], corpus: str,
                profile: Profile, seed: int, *, budget: float, subjects: Sequence["Subject"] | None = None,
                cache_root: str | Path | None = None, device: str = "cpu") -> BudgetGrid:
    """:func:`lacy.evaluate.run.evaluate` with the budget policy at ``budget`` for every helper × method.

    ``runs``: method → a run folder, or a list of them (one per training seed; pooled, see the module
    docstring). ``seed`` is the evaluation seed (subjects, calibration text), the same for every run.
    """
    rows: list[dict[str, Any]] = []
    by_frequency: list[dict[str, Any]] = []
    frames: dict[tuple[str, str], pd.DataFrame] = {}
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    for name, helper in helpers.items():
        for method, method_runs in runs.items():
            folders = run_folders(method_runs)
            results = [evaluate(folder, corpus, profile, seed, helper=helper, policy="budget", budget=budget, subjects=subjects,
                                cache_root=cache_root, device=device) for folder in folders]
            summary = pool_seeds([result.summary() for result in results], [training_seed(folder) for folder in folders])
            intervals = {f"{metric}_{end}": (summary["ci95"].get(metric) or [None, None])[i]
                         for metric in ("precision", "recall") for i, end in enumerate(("lo", "hi"))}
            rows.append({"helper": name, "method": method, **{key: summary[key] for key in BUDGET_COLUMNS}, **intervals,
                         "n_seeds": summary["n_seeds"]})
            by_frequency += [{"helper": name, "method": method, "frequency": tier, "precision": values.get("precision"),
                              "recall": values.get("recall"), "factscore": summary["by_frequency"].get(tier)}
                             for tier, values in summary.get("by_tier", {}).items()]
            frames[name, method] = results[0].frame()
            summaries[name, method] = summary
    table = pd.DataFrame(rows).astype({"factscore": float})
    return BudgetGrid(table, pd.DataFrame(by_frequency).astype({"factscore": float, "precision": float, "recall": float}),
                      frames, summaries)


def at_achieved_rates(curve: pd.DataFrame, rates: Sequence[float] = (0.10, 0.22, 0.40),
                      metrics: Sequence[str] = ("precision", "recall")) -> pd.DataFrame:
    """Each (helper, method) of a :func:`sweep_grid` frame read off at equal *achieved* call rates.

    Methods reach different achieved rates at the same calibrated target (their P(<CALL>) on the
    evaluated subjects differs from the held-out text), so comparing them at a target rate compares
    different amounts of help. Here each metric is linearly interpolated against the achieved
    ``call_rate`` of the sweep (rates outside a method's achieved range give NaN, never an
    extrapolation). Point estimates of one training seed. Rows: ``helper, method, rate`` and ``metrics``.
    """
    rows = []
    for (helper, method), part in curve[curve["method"] != HELPER_ALONE].groupby(["helper", "method"], sort=False):
        part = part.dropna(subset=["call_rate"]).sort_values("call_rate")
        achieved = part["call_rate"].to_numpy(float)
        for rate in rates:
            row = {"helper": helper, "method": method, "rate": rate}
            for metric in metrics:
                values = part[metric].astype(float).to_numpy()
                keep = np.isfinite(values)
                inside = keep.sum() >= 2 and achieved[keep].min() <= rate <= achieved[keep].max()
                row[metric] = float(np.interp(rate, achieved[keep], values[keep])) if inside else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


EQUAL_RATE_COLUMNS = ("helper", "baseline", "rate", "metric", "diff", "lo", "hi", "a", "b", "n_seeds", "verdict", "sentence")
"""Columns of :func:`compare_at_achieved_rates` (``a``, ``b``: each side's value; ``diff`` = a − b)."""


def mixture_counts(points: Sequence[pd.DataFrame], rate: float) -> pd.DataFrame | None:
    """Per-subject counts of the operating point whose achieved call rate is exactly ``rate``, or None when
    ``rate`` lies outside the achieved rates of ``points``.

    ``points``: the per-subject counts (with ``n_calls`` and ``slm_steps``) of one SLM at several
    calibrated thresholds. Between the two whose achieved rates (Σ calls / Σ SLM steps) bracket ``rate``,
    the cascade that uses the lower threshold with probability ``1 − w`` and the upper one with ``w``
    has expected counts ``(1 − w)·lower + w·upper``; ``w`` is solved so its achieved rate is ``rate``
    (the convex combination of operating points, as between two points of an ROC curve). The rows of
    both points come back with a ``mix_weight`` column, which :mod:`lacy.evaluate.stats` sums per subject.
    """
    achieved = []
    for i, counts in enumerate(points):
        calls, steps = float(counts["n_calls"].sum()), float(counts["slm_steps"].sum())
        if steps > 0:
            achieved.append((calls / steps, calls, steps, i))
    achieved.sort()
    for (r1, c1, s1, i1), (r2, c2, s2, i2) in zip(achieved, achieved[1:]):
        if r1 <= rate <= r2:  # (c1 + w·(c2 − c1)) / (s1 + w·(s2 − s1)) = rate, linear in w; r1 ≠ r2 keeps it solvable
            w = 0.0 if r1 == r2 else min(1.0, max(0.0, (rate * s1 - c1) / ((c2 - c1) - rate * (s2 - s1))))
            return pd.concat([points[i1].assign(mix_weight=1.0 - w), points[i2].assign(mix_weight=w)], ignore_index=True)
    exact = [i for r, _, _, i in achieved if r == rate]
    return points[exact[0]].assign(mix_weight=1.0) if exact else None


def compare_at_achieved_rates(runs: Mapping[str, str | Path | Sequence[str | Path]], helpers: Mapping[str, "Helper | str"],
                              corpus: str, profile: Profile, seed: int, *, method: str, rates: Sequence[float] = (0.10, 0.22, 0.40),
                              sweep_rates: Sequence[float] | None = None, subjects: Sequence["Subject"] | None = None,
                              cache_root: str | Path | None = None, device: str = "cpu",
                              metrics: Sequence[str] = ("precision", "recall")) -> pd.DataFrame:
    """``method`` − every other method of ``runs`` at equal *achieved* call rates, with a paired bootstrap
    over subjects pooled over training seeds (the research standard for "A beats B").

    Each run folder (one per training seed; a method may have several) is swept over the calibrated
    thresholds of ``sweep_rates`` (default ``profile.eval.sweep_rates`` below 1; thresholds calibrated on
    held-out text, :func:`lacy.evaluate.run.sweep_runs`); at each of ``rates`` its per-subject counts are
    those of the mixture of the two bracketing thresholds that achieves exactly that rate
    (:func:`mixture_counts`), so both sides get the same amount of help. Rows: ``helper, baseline, rate,
    metric, diff, lo, hi, a, b, n_seeds`` (of ``method``), ``verdict`` and ``sentence`` (:data:`EQUAL_RATE_COLUMNS`); a rate outside a
    side's achieved range gives a row with ``verdict`` "out of range" and no numbers.
    """
    from lacy.evaluate.stats import compare

    if method not in runs:
        raise ValueError(f"method {method!r} is not among the runs {list(runs)}")
    sweep_rates = [r for r in (profile.eval.sweep_rates if sweep_rates is None else sweep_rates) if r < 1.0]
    rows = []
    for name, helper in helpers.items():
        mixed: dict[str, dict[float, pd.DataFrame | None]] = {}
        for label, method_runs in runs.items():
            per_seed: dict[float, list[pd.DataFrame] | None] = {rate: [] for rate in rates}
            for folder in run_folders(method_runs):
                points = [pd.DataFrame(run.summary()["subjects"]) for _, _, run in
                          sweep_runs(folder, corpus, profile, seed, helper=helper, rates=sweep_rates, subjects=subjects,
                                     cache_root=cache_root, device=device)]
                for rate in rates:
                    counts = mixture_counts(points, rate)
                    if counts is None or per_seed[rate] is None:
                        per_seed[rate] = None
                    else:
                        per_seed[rate].append(counts.assign(seed=training_seed(folder)))
            mixed[label] = {rate: None if frames is None else pd.concat(frames, ignore_index=True) for rate, frames in per_seed.items()}
        for other in (label for label in runs if label != method):
            for rate in rates:
                a, b = mixed[method][rate], mixed[other][rate]
                base = {"helper": name, "baseline": other, "rate": rate, "n_seeds": len(run_folders(runs[method]))}
                if a is None or b is None:
                    rows += [{**base, "metric": metric, "verdict": "out of range",
                              "sentence": f"{rate:.0%} achieved calls is outside the sweep of `{method if a is None else other}`"}
                             for metric in metrics]
                    continue
                rows += comparison_rows(compare(a, b, metrics), metrics, method, other,
                                        f" at {rate:.0%} achieved calls (helper `{name}`)", **base)
    return pd.DataFrame(rows, columns=list(EQUAL_RATE_COLUMNS))


def factscore_at(frame: pd.DataFrame, rate: float, **labels: str) -> float:
    """Mean FactScore (0–100) of the rows of ``frame`` at ``target_rate == rate`` whose columns match
    ``labels`` (e.g. ``method="lacy", helper="lm"``); NaN when there are none."""
    rows = frame[frame["target_rate"] == rate]
    for column, value in labels.items():
        rows = rows[rows[column] == value]
    return 100 * float(rows["factscore"].astype(float).mean()) if len(rows) else float("nan")


PAPER_TABLE2 = {"helper alone": 34.2, "baseline SLM @ 22% calls": 15.9, "LaCy @ 22% calls": 22.7, "LaCy @ ~80% calls": 25.6}
"""The paper's Table 2 (§5; 334M SLM, Llama 3.2 1B helper, LLM-judged FactScore), the rows :func:`paper_rows` reads."""


def paper_rows(frame: pd.DataFrame, budget: float, high_rate: float | None, baseline: str = "standard") -> dict[str, float]:
    """The rows of :data:`PAPER_TABLE2` read off a :func:`sweep_grid` frame (γ-penalised FactScore, 0–100):
    the helper alone, ``baseline`` and ``lacy`` at ``budget``, ``lacy`` at ``high_rate`` (NaN when None)."""
    return {"helper alone": factscore_at(frame, 1.0, method=HELPER_ALONE),
            "baseline SLM @ 22% calls": factscore_at(frame, budget, method=baseline),
            "LaCy @ 22% calls": factscore_at(frame, budget, method="lacy"),
            "LaCy @ ~80% calls": float("nan") if high_rate is None else factscore_at(frame, high_rate, method="lacy")}


def sweep_gap(curve: pd.DataFrame, a: str, b: str, helper: str, metric: str = "precision") -> pd.Series | None:
    """``metric`` of method ``a`` minus method ``b`` at every calibrated rate strictly between 0 and 1 of a
    :func:`sweep_grid` frame, for one helper (index: target rate); None when either method has no value
    there (e.g. no generation states a fact). Point estimates of one training seed: no interval."""
    rows = curve[(curve["helper"] == helper) & curve["method"].isin((a, b))]
    table = rows.pivot_table(index="target_rate", columns="method", values=metric)
    if a not in table or b not in table:
        return None
    gap = (table[a] - table[b]).dropna()
    gap = gap[(gap.index > 0) & (gap.index < 1)]
    return gap if len(gap) else None
