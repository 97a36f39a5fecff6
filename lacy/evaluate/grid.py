"""Experiment grids for the book: every method × helper, as tidy frames (paper §5, Figure 3 and Table 2).

A chapter names its trained runs (method → run folder) and its helpers (name → a built helper or a
spec string; an LM helper is built once and shared by every run of the grid) and gets one row per
(helper, method, rate) back. Schemas:

* :func:`sweep_grid`: ``helper, method, target_rate, tau`` and :data:`lacy.evaluate.run.SWEEP_COLUMNS`;
  the helper alone (``method`` = :data:`lacy.plots.HELPER_ALONE`, rate 1: every step calls) once per helper.
* :func:`budget_grid`: :attr:`BudgetGrid.table` (``helper, method`` and :data:`BUDGET_COLUMNS`),
  :attr:`BudgetGrid.by_frequency` (``helper, method, frequency, factscore``) and the per-generation
  frames (:meth:`lacy.evaluate.cascade_run.CascadeRun.frame`) by ``(helper, method)``.
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

BUDGET_COLUMNS = ("factscore", "respond_ratio", "facts_per_response", "call_rate", "unresolved_calls")


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


def budget_grid(runs: Mapping[str, str | Path], helpers: Mapping[str, "Helper | str"], corpus: str, profile: Profile,
                seed: int, *, budget: float, subjects: Sequence["Subject"] | None = None,
                cache_root: str | Path | None = None, device: str = "cpu") -> BudgetGrid:
    """:func:`lacy.evaluate.run.evaluate` with the budget policy at ``budget`` for every helper × method."""
    rows: list[dict[str, Any]] = []
    by_frequency: list[dict[str, Any]] = []
    frames: dict[tuple[str, str], pd.DataFrame] = {}
    for name, helper in helpers.items():
        for method, run in runs.items():
            result = evaluate(run, corpus, profile, seed, helper=helper, policy="budget", budget=budget, subjects=subjects,
                              cache_root=cache_root, device=device)
            summary = result.summary()
            rows.append({"helper": name, "method": method, **{key: summary[key] for key in BUDGET_COLUMNS}})
            by_frequency += [{"helper": name, "method": method, "frequency": group, "factscore": score}
                             for group, score in summary["by_frequency"].items()]
            frames[name, method] = result.frame()
    table = pd.DataFrame(rows).astype({"factscore": float})
    return BudgetGrid(table, pd.DataFrame(by_frequency).astype({"factscore": float}), frames)


def factscore_at(frame: pd.DataFrame, rate: float, **labels: str) -> float:
    """Mean FactScore (0–100) of the rows of ``frame`` at ``target_rate == rate`` whose columns match
    ``labels`` (e.g. ``method="lacy", helper="lm"``); NaN when there are none."""
    rows = frame[frame["target_rate"] == rate]
    for column, value in labels.items():
        rows = rows[rows[column] == value]
    return 100 * float(rows["factscore"].astype(float).mean()) if len(rows) else float("nan")
