"""Experiment grids for the book: every method × helper, as tidy frames (paper §5, Figure 3 and Table 2).

A chapter names its trained runs (method → run folder) and its helpers (name → a built helper or a
spec string; an LM helper is built once and shared by every run of the grid) and gets one row per
(helper, method, rate) back. Schemas:

* :func:`sweep_grid`: ``helper, method, target_rate, tau`` and :data:`lacy.evaluate.run.SWEEP_COLUMNS`;
  the helper alone (``method`` = :data:`lacy.plots.HELPER_ALONE`, rate 1: every step calls) once per helper.
* :func:`budget_grid`: :attr:`BudgetGrid.table` (``helper, method`` and :data:`BUDGET_COLUMNS`),
  :attr:`BudgetGrid.by_frequency` (``helper, method, frequency, factscore``), the per-generation
  frames (:meth:`lacy.evaluate.cascade_run.CascadeRun.frame`) and summaries (with per-subject counts) by
  ``(helper, method)``, and :meth:`BudgetGrid.comparisons` (paired-bootstrap differences).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd

from lacy.evaluate.run import evaluate, sweep
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
        (:func:`lacy.evaluate.stats.compare`): ``helper, baseline, metric, diff, lo, hi, verdict`` and the
        sentence that says it (:func:`lacy.evaluate.stats.describe`: "ahead" only when the 95% interval
        of the difference excludes zero)."""
        from lacy.evaluate.stats import compare, describe, direction

        rows = []
        for (helper, other), summary in self.summaries.items():
            if other == method or (helper, method) not in self.summaries:
                continue
            result = compare(self.summaries[helper, method], summary, metrics)
            for metric in metrics:
                entry = result[metric]
                lo, hi = entry["ci95"] if entry.get("ci95") else (None, None)
                rows.append({"helper": helper, "baseline": other, "metric": metric, "diff": entry["diff"], "lo": lo, "hi": hi,
                             "verdict": direction(entry),
                             "sentence": describe(result, f"`{method}`", f"`{other}`", metric) + f" (helper `{helper}`)"})
        return pd.DataFrame(rows)


def budget_grid(runs: Mapping[str, str | Path], helpers: Mapping[str, "Helper | str"], corpus: str, profile: Profile,
                seed: int, *, budget: float, subjects: Sequence["Subject"] | None = None,
                cache_root: str | Path | None = None, device: str = "cpu") -> BudgetGrid:
    """:func:`lacy.evaluate.run.evaluate` with the budget policy at ``budget`` for every helper × method."""
    rows: list[dict[str, Any]] = []
    by_frequency: list[dict[str, Any]] = []
    frames: dict[tuple[str, str], pd.DataFrame] = {}
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    for name, helper in helpers.items():
        for method, run in runs.items():
            result = evaluate(run, corpus, profile, seed, helper=helper, policy="budget", budget=budget, subjects=subjects,
                              cache_root=cache_root, device=device)
            summary = result.summary()
            rows.append({"helper": name, "method": method, **{key: summary[key] for key in BUDGET_COLUMNS}})
            by_frequency += [{"helper": name, "method": method, "frequency": group, "factscore": score}
                             for group, score in summary["by_frequency"].items()]
            frames[name, method] = result.frame()
            summaries[name, method] = summary
    table = pd.DataFrame(rows).astype({"factscore": float})
    return BudgetGrid(table, pd.DataFrame(by_frequency).astype({"factscore": float}), frames, summaries)


def factscore_at(frame: pd.DataFrame, rate: float, **labels: str) -> float:
    """Mean FactScore (0–100) of the rows of ``frame`` at ``target_rate == rate`` whose columns match
    ``labels`` (e.g. ``method="lacy", helper="lm"``); NaN when there are none."""
    rows = frame[frame["target_rate"] == rate]
    for column, value in labels.items():
        rows = rows[rows[column] == value]
    return 100 * float(rows["factscore"].astype(float).mean()) if len(rows) else float("nan")


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
