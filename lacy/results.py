"""The store of chapters' headline results and the summary page's cross-chapter tables.

Each chapter saves its headline numbers once per profile with :func:`lacy.provenance.save_results`,
which captures the run's provenance and calls :func:`write_results`. The summary page
(``book/summary.ipynb``) reads them back with :func:`load_results` and :func:`tidy_results` and
shows :func:`chapter_status` and :func:`headline_tables`.

Schema. One JSON file per chapter and profile, ``{run_root}/results/{profile}/{chapter}.json``::

    {"chapter": "04_cascade",            # the notebook name without extension
     "profile": "cpu", "seed": 0,        # what it ran with (also inside "provenance")
     "kind": "table" | "mapping",
     "results": [...] | {...},           # table: a list of row records; mapping: names -> numbers
     "provenance": {...}}                # lacy.provenance.Provenance.to_dict(): settings, code, machine

NaN and infinities are stored as null. A mapping may nest (keys are joined with ``.`` when tidied).
For the cross-chapter tables, prefer a tidy table with a ``metric`` and a ``value`` column plus the
columns that identify the number: ``corpus``, ``method``, ``helper``, ``budget`` (call budget as a
fraction), ``signal``, ``target``. Metric names the summary tabulates: names containing
``factscore`` (0-100, at a ``budget``; the paper's main budget is 0.22, §5), ``auroc`` (per
``signal``, §3) and ``ratio`` (benchmark ratios).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from lacy.io import atomic_write

# --- the store --------------------------------------------------------------------------------


def results_path(run_root: str | Path, profile: str, chapter: str) -> Path:
    """``{run_root}/results/{profile}/{chapter}.json``."""
    return Path(run_root) / "results" / profile / f"{chapter}.json"


def write_results(run_root: str | Path, chapter: str, results: Mapping[str, Any] | pd.DataFrame,
                  provenance: Mapping[str, Any]) -> Path:
    """Write one chapter's results document (schema in the module docstring); returns its path.

    ``provenance`` is the record of the run (:meth:`lacy.provenance.Provenance.to_dict`); its
    ``profile`` and ``seed`` name the file and head the document. NaN and infinities are stored as null.
    """
    if isinstance(results, pd.DataFrame):
        kind, payload = "table", results.reset_index(drop=not _has_named_index(results)).to_dict(orient="records")
    elif isinstance(results, Mapping):
        kind, payload = "mapping", dict(results)
    else:
        raise TypeError(f"save_results expects a mapping or a pandas DataFrame, got {type(results).__name__}")
    document = {
        "chapter": chapter,
        "profile": provenance["profile"],
        "seed": provenance["seed"],
        "kind": kind,
        "results": payload,
        "provenance": dict(provenance),
    }
    path = results_path(run_root, provenance["profile"], chapter)
    with atomic_write(path) as fh:
        fh.write(json.dumps(_jsonable(document), indent=1, allow_nan=False) + "\n")
    return path


@dataclass(frozen=True)
class ChapterResults:
    """One chapter's saved headline numbers (``results``: a dict or a DataFrame) and provenance."""

    chapter: str
    profile: str
    seed: int | None
    results: dict[str, Any] | pd.DataFrame
    provenance: dict[str, Any]


def load_results(run_root: str | Path, profile: str) -> dict[str, ChapterResults]:
    """Every chapter's results saved under ``run_root`` for ``profile``, keyed by chapter name."""
    out: dict[str, ChapterResults] = {}
    for path in sorted((Path(run_root) / "results" / profile).glob("*.json")):
        document = json.loads(path.read_text())
        results = document["results"]
        if document.get("kind") == "table":
            results = pd.DataFrame.from_records(results)
        out[document["chapter"]] = ChapterResults(
            chapter=document["chapter"],
            profile=document["profile"],
            seed=document.get("seed"),
            results=results,
            provenance=document.get("provenance", {}),
        )
    return out


def tidy_results(results: Mapping[str, ChapterResults]) -> pd.DataFrame:
    """All chapters' numbers as one long table: ``chapter``, ``metric``, ``value`` + identifying columns.

    Mappings are flattened (nested keys joined with ``.``); DataFrames with ``metric``/``value``
    columns are kept as they are; other DataFrames are melted, numeric columns becoming metrics and
    the other columns identifying them.
    """
    frames = []
    for name, chapter in results.items():
        if isinstance(chapter.results, pd.DataFrame):
            frame = _tidy_frame(chapter.results)
        else:
            flat = _flatten(chapter.results)
            frame = pd.DataFrame({"metric": list(flat), "value": list(flat.values())})
        frames.append(frame.assign(chapter=name))
    if not frames:
        return pd.DataFrame(columns=["chapter", "metric", "value"])
    tidy = pd.concat(frames, ignore_index=True)
    first = ["chapter", "metric"]
    return tidy[first + [c for c in tidy.columns if c not in (*first, "value")] + ["value"]]


def chapter_status(results: Mapping[str, ChapterResults], chapters: list[str]) -> pd.DataFrame:
    """One row per expected chapter: ``ran`` or ``not run``, with seed, git commit and wall time."""
    rows = []
    for chapter in chapters:
        found = results.get(chapter)
        if found is None:
            rows.append({"chapter": chapter, "status": "not run", "seed": "", "git": "", "wall time": "", "date": ""})
            continue
        prov = found.provenance
        dirty = "+dirty" if prov.get("git_dirty") else ""
        wall = prov.get("wall_seconds")
        rows.append({
            "chapter": chapter,
            "status": "ran",
            "seed": found.seed,
            "git": f"{prov.get('git_commit', 'unknown')}{dirty}",
            "wall time": "" if wall is None else format_seconds(wall),
            "date": prov.get("date"),
        })
    return pd.DataFrame(rows).set_index("chapter")


def headline_tables(tidy: pd.DataFrame, budget: float = 0.22) -> dict[str, pd.DataFrame]:
    """Cross-chapter tables found in ``tidy``: precision and recall at ``budget`` with their intervals
    (:func:`interval_table`), LaCy's paired differences to each baseline (:func:`comparison_table`), FactScore at ``budget``, signal AUROCs, bench ratios,
    and chapter 7's per-size tables (:data:`SIZE_TABLES`).

    Returns only the tables for which numbers exist, keyed by a caption. FactScore is pivoted to
    method × corpus when both columns are present (the paper's main budget is 22%, §5); AUROC is
    indexed by ``signal`` when present (§3).
    """
    tables: dict[str, pd.DataFrame] = {}
    if tidy.empty:
        return tables
    metric = tidy["metric"].astype(str).str.lower()
    intervals = interval_table(tidy, budget)
    if intervals is not None:
        tables[f"Precision and recall at a {budget:.0%} call budget (95% CI, pooled over training seeds)"] = intervals
    differences = comparison_table(tidy, budget)
    if differences is not None:
        tables[f"LaCy minus each baseline at a {budget:.0%} call budget (points, 95% CI of the difference)"] = differences
    factscore = tidy[metric.str.contains("factscore")]
    if "budget" in factscore.columns:
        at_budget = pd.to_numeric(factscore["budget"], errors="coerce")
        factscore = factscore[np.isclose(at_budget, budget) | at_budget.isna()]
    if not factscore.empty:
        tables[f"FactScore at a {budget:.0%} call budget"] = _pivot(factscore, ["method", "helper"], "corpus")
    auroc = tidy[metric.str.contains("auroc")]
    if not auroc.empty:
        tables["AUROC of the token signals"] = _pivot(auroc, ["signal", "target"], "corpus")
    ratios = tidy[metric.str.contains("ratio")]
    if not ratios.empty:
        tables["Benchmark ratios"] = ratios.dropna(axis=1, how="all").reset_index(drop=True)
    for part, caption in SIZE_TABLES.items():
        rows = tidy[tidy["part"] == part] if {"part", "size", "params"} <= set(tidy.columns) else tidy.iloc[:0]
        if not rows.empty:
            tables[caption.format(budget=budget)] = per_size_table(rows)
    return tables


SIZE_TABLES = {
    "knowledge": "Knowledge per SLM size (chapter 7): exact whole-value recall of the SLM alone per tier, bits stored "
                 "per parameter; mean over the training seeds counted",
    "call_fraction": "Call fraction per SLM size (chapter 7): the cascade with the LM helper at a {budget:.0%} budget, "
                     "pooled over training seeds",
}
"""Chapter 7's per-size results (``part`` of its saved rows) that the summary shows as tables."""


def per_size_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``value`` per (size, method) × metric, smallest SLM first, averaged over training seeds; a
    ``training seeds`` column counts them where the rows are per seed."""
    keys = ["params", "size", "method"]
    table = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")
    if "seed" in rows.columns and rows["seed"].notna().any():
        table["training seeds"] = rows.groupby(keys)["seed"].nunique()
    return table.droplevel("params").rename_axis(columns=None)


def interval_table(tidy: pd.DataFrame, budget: float = 0.22) -> pd.DataFrame | None:
    """Precision and recall at ``budget`` as "value [lo, hi]" (percent) per corpus × helper × method,
    with the achieved call rate and the number of training seeds pooled; None when no chapter saved
    ``precision_at_budget`` with its ``_ci_lo``/``_ci_hi`` bounds (chapter 4 does)."""
    wanted = {f"{m}_at_budget{end}" for m in ("precision", "recall") for end in ("", "_ci_lo", "_ci_hi")}
    rows = tidy[tidy["metric"].isin(wanted | {"call_rate_at_budget", "n_seeds_at_budget"})]
    if "budget" in rows.columns:
        rows = rows[np.isclose(pd.to_numeric(rows["budget"], errors="coerce"), budget)]
    if not {"precision_at_budget_ci_lo", "precision_at_budget"} <= set(rows["metric"]):
        return None
    index = [c for c in ("corpus", "helper", "method") if c in rows.columns]
    wide = rows.pivot_table(index=index, columns="metric", values="value", aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    missing = pd.Series(np.nan, index=wide.index)
    for m in ("precision", "recall"):
        value, lo, hi = (wide[name] if (name := f"{m}_at_budget{end}") in wide else missing for end in ("", "_ci_lo", "_ci_hi"))
        out[f"{m} % (95% CI)"] = [_with_interval(v, a, b) for v, a, b in zip(value, lo, hi)]
    if "call_rate_at_budget" in wide:
        out["achieved call rate %"] = (100 * wide["call_rate_at_budget"]).round(1)
    if "n_seeds_at_budget" in wide:
        out["training seeds"] = wide["n_seeds_at_budget"].astype("Int64")
    return out


def comparison_table(tidy: pd.DataFrame, budget: float = 0.22, prefix: str = "lacy_minus_") -> pd.DataFrame | None:
    """Paired differences saved as ``{prefix}{metric}`` (value: the difference, ``_ci_lo``/``_ci_hi``: its
    95% interval; ``method``: the baseline) at ``budget``, as "diff [lo, hi]" in points per corpus ×
    helper × baseline, with the verdict of :func:`lacy.evaluate.stats.direction` per metric ("not
    compared" where that metric was not compared for that baseline); None when no chapter saved any
    (chapter 4 does)."""
    from lacy.evaluate.stats import direction

    rows = tidy[tidy["metric"].astype(str).str.startswith(prefix)]
    if "budget" in rows.columns:
        rows = rows[np.isclose(pd.to_numeric(rows["budget"], errors="coerce"), budget)]
    if rows.empty:
        return None
    index = [c for c in ("corpus", "helper", "method") if c in rows.columns]
    wide = rows.pivot_table(index=index, columns="metric", values="value", aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    metrics = sorted({name[len(prefix):].removesuffix("_ci_lo").removesuffix("_ci_hi") for name in wide.columns})
    for m in metrics:
        value, lo, hi = (wide.get(f"{prefix}{m}{end}", pd.Series(np.nan, index=wide.index)) for end in ("", "_ci_lo", "_ci_hi"))
        out[f"{m} (points)"] = [_with_interval(v, a, b) for v, a, b in zip(value, lo, hi)]
        out[f"{m}: verdict"] = ["not compared" if pd.isna(v) else direction({"ci95": None if pd.isna(a) or pd.isna(b) else [a, b]})
                                for v, a, b in zip(value, lo, hi)]
    return out.rename_axis(index={"method": "baseline"})


def _with_interval(value: float, lo: float, hi: float) -> str:
    if pd.isna(value):
        return "–"
    if pd.isna(lo) or pd.isna(hi):
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


# --- helpers ---

def _pivot(frame: pd.DataFrame, index: list[str], columns: str) -> pd.DataFrame:
    """Pivot ``value`` to ``index`` (the listed columns that exist) × ``columns`` (else × chapter).

    Every identifying column that exists is kept in the index, so unrelated numbers (say AUROCs for
    different targets) are never averaged together."""
    frame = frame.dropna(axis=1, how="all")
    present = [c for c in index if c in frame.columns]
    if not present:
        return frame.reset_index(drop=True)
    return frame.pivot_table(index=present, columns=columns if columns in frame.columns else "chapter",
                             values="value", aggfunc="mean")

def _tidy_frame(frame: pd.DataFrame) -> pd.DataFrame:
    if {"metric", "value"} <= set(frame.columns):
        return frame.copy()
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and c not in ("budget", "seed")]
    ids = [c for c in frame.columns if c not in numeric]
    return frame.melt(id_vars=ids, value_vars=numeric, var_name="metric", value_name="value")

def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(name is not None for name in frame.index.names)

def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, NaN/inf → None, paths → str."""
    if isinstance(obj, Mapping):
        return {str(key): _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(value) for value in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (Path, pd.Timestamp, dt.datetime, dt.date)):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} {obj!r} in results JSON; use numbers, strings, lists or dicts")


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
