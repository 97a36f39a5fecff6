"""Confidence intervals and paired comparisons: a paired bootstrap over subjects, pooled over seeds.

A method's number on 80–240 subjects has a standard error of a point or two, and training seeds
move it further. Every reported number therefore carries a 95% interval from a bootstrap that
resamples *subjects* (the unit the evaluation samples) and, for each resample, averages the metric
over the training seeds (the seeds are a fixed design, not resampled). Two methods evaluated on the
same subjects are compared with the *same* resamples (paired), which cancels the variation between
subjects that both share. The wording helper says "ahead" or "behind" only when the interval of the
difference excludes zero, and "no significant difference" otherwise, whichever way the result goes.

Inputs are per-subject counts (:mod:`lacy.evaluate.metrics`): a DataFrame, a ``lacy evaluate``
result (its ``subjects`` records) or a list of them, one per training seed. A frame may carry a
``mix_weight`` column: a subject's rows are then summed with those weights, the expected counts of a
randomised mixture of operating points (:func:`lacy.evaluate.grid.mixture_counts`). Everything is seeded.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from lacy.evaluate.metrics import subject_terms

N_BOOTSTRAP = 2000
"""Bootstrap resamples per interval (Monte-Carlo error of a 95% bound ≈ 0.5 percentile points)."""

HEADLINE = ("precision", "recall")

RANKING_SEEDS = 3
"""Training seeds each side needs before a difference may rank two methods (the book's research standard):
with fewer, an interval covers the subjects only, not the variation between training runs."""

Counts = Union[pd.DataFrame, Mapping[str, Any], Sequence[Mapping[str, Any]]]
"""Per-subject counts: a frame (optionally with a ``seed`` column), a result dict with ``subjects``
records, or a list of result dicts (one per training seed)."""


def counts_frame(results: Counts) -> pd.DataFrame:
    """Per-subject counts as one frame with a ``seed`` column (0 when the input has a single seed).

    A result dict contributes its ``subjects`` records under its own ``seed`` (or its position in the
    list). Refuses inputs without per-subject counts.
    """
    if isinstance(results, pd.DataFrame):
        frame = results.copy()
        if "seed" not in frame.columns:
            frame["seed"] = 0
        return frame
    items = [results] if isinstance(results, Mapping) else list(results)
    if not items:
        raise ValueError("no results given; pass a `lacy evaluate` result (or a list of them, one per seed)")
    frames = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("subjects"), list):
            raise ValueError("a result must keep its per-subject counts under 'subjects' (a list of records with "
                             "subject, stated, supported, kb_facts, recalled); re-run `lacy evaluate` with this version")
        frame = pd.DataFrame(item["subjects"])
        if "seed" not in frame.columns:  # records of a single-seed result
            frame["seed"] = item.get("seed", i) if len(items) > 1 or "seed" in item else 0
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if len(items) > 1 and frame.groupby("seed").ngroups < len(items):
        raise ValueError("several results share the same 'seed'; give one result per training seed")
    return frame


def _seed_terms(counts: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, tuple[str, ...]]:
    """(subjects, num [S, n, M], den [S, n, M], metric names), every seed on the same subjects in one order."""
    subjects: list[str] | None = None
    nums, dens, names = [], [], ()
    mixed = "mix_weight" in counts.columns
    for seed, part in counts.groupby("seed", sort=True):
        if not mixed and part["subject"].duplicated().any():
            dup = part.loc[part["subject"].duplicated(), "subject"].iloc[0]
            raise ValueError(f"subject {dup!r} appears twice for seed {seed}; give one row per subject and seed")
        part = part.sort_values("subject", kind="stable")
        num, den, names = subject_terms(part)
        if mixed:
            order, num, den = _mixed_terms(part, num, den)
        else:
            order = part["subject"].astype(str).tolist()
        if subjects is None:
            subjects = order
        elif order != subjects:
            raise ValueError(f"seed {seed} was evaluated on other subjects than seed {counts['seed'].min()}; "
                             "every seed must be evaluated on the same subjects")
        nums.append(num)
        dens.append(den)
    if not subjects:
        raise ValueError("no per-subject counts to bootstrap")
    return subjects, np.stack(nums), np.stack(dens), names


def _mixed_terms(part: pd.DataFrame, num: np.ndarray, den: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each subject's terms summed over its rows, weighted by ``mix_weight`` (weights of a subject sum to 1)."""
    weight = part["mix_weight"].to_numpy(float)
    order, index = np.unique(part["subject"].astype(str).to_numpy(), return_inverse=True)
    totals = np.bincount(index, weights=weight, minlength=len(order))
    if (weight < 0).any() or not np.allclose(totals, 1.0):
        raise ValueError("mix_weight must be non-negative and sum to 1 over each subject's rows")
    mixed_num, mixed_den = np.zeros((len(order), num.shape[1])), np.zeros((len(order), den.shape[1]))
    np.add.at(mixed_num, index, num * weight[:, None])
    np.add.at(mixed_den, index, den * weight[:, None])
    return order.tolist(), mixed_num, mixed_den


def _weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` multiplicities of a subject bootstrap (each row sums to ``n``)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    return np.stack([np.bincount(row, minlength=n) for row in draws]).astype(np.float64)


def _seed_mean(weights: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``[n_boot, M]``: each metric under each weighting, averaged over seeds (NaN where undefined)."""
    top = np.einsum("bn,snm->bsm", weights, num)
    bottom = np.einsum("bn,snm->bsm", weights, den)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)
    defined = np.isfinite(values)
    n_defined = defined.sum(axis=1)
    total = np.where(defined, values, 0.0).sum(axis=1)
    return np.where(n_defined > 0, total / np.maximum(n_defined, 1), np.nan)


def _interval(samples: np.ndarray) -> list[float] | None:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return [float(lo), float(hi)]


def point_estimates(results: Counts) -> dict[str, float | None]:
    """Each metric averaged over seeds (all subjects, no resampling)."""
    _, num, den, names = _seed_terms(counts_frame(results))
    values = _seed_mean(np.ones((1, num.shape[1])), num, den)[0]
    return {m: (float(v) if np.isfinite(v) else None) for m, v in zip(names, values)}


def ci95(results: Counts, metrics: Sequence[str] | None = None, *, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, list[float] | None]:
    """95% percentile intervals ``{metric: [lo, hi]}`` of the seed-averaged metrics, from a bootstrap
    over subjects (default: every metric the counts define). None where a metric is undefined."""
    _, num, den, names = _seed_terms(counts_frame(results))
    wanted = _check_metrics(metrics, names)
    samples = _seed_mean(_weights(num.shape[1], n_boot, seed), num, den)
    return {m: _interval(samples[:, names.index(m)]) for m in wanted}


def _check_metrics(metrics: Sequence[str] | None, names: tuple[str, ...]) -> list[str]:
    wanted = list(names if metrics is None else metrics)
    unknown = [m for m in wanted if m not in names]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; these counts define: {', '.join(names)}")
    return wanted


def compare(a: Counts, b: Counts, metrics: Sequence[str] = HEADLINE, *, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """A − B with a paired bootstrap: ``{metric: {"diff": d, "ci95": [lo, hi], "a": va, "b": vb}, ...,
    "n_subjects": n}``.

    Both sides must be evaluated on the same subjects (each side may pool any number of seeds);
    one resample of subjects weights both sides, and each side is averaged over its seeds.
    """
    subjects_a, num_a, den_a, names_a = _seed_terms(counts_frame(a))
    subjects_b, num_b, den_b, names_b = _seed_terms(counts_frame(b))
    if subjects_a != subjects_b:
        only_a = sorted(set(subjects_a) - set(subjects_b))
        only_b = sorted(set(subjects_b) - set(subjects_a))
        raise ValueError(f"the results were evaluated on different subjects ({len(subjects_a)} vs {len(subjects_b)}; "
                         f"only in A: {only_a[:3]}, only in B: {only_b[:3]}); compare results of the same subjects "
                         "(same corpus, profile, world and eval.n_subjects)")
    wanted = _check_metrics(metrics, tuple(m for m in names_a if m in names_b))
    weights = _weights(len(subjects_a), n_boot, seed)
    ones = np.ones((1, len(subjects_a)))
    out: dict[str, Any] = {}
    for metric in wanted:
        ia, ib = names_a.index(metric), names_b.index(metric)
        pa = _seed_mean(ones, num_a[..., ia:ia + 1], den_a[..., ia:ia + 1])[0, 0]
        pb = _seed_mean(ones, num_b[..., ib:ib + 1], den_b[..., ib:ib + 1])[0, 0]
        diffs = (_seed_mean(weights, num_a[..., ia:ia + 1], den_a[..., ia:ia + 1])
                 - _seed_mean(weights, num_b[..., ib:ib + 1], den_b[..., ib:ib + 1]))[:, 0]
        finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
        out[metric] = {"diff": finite(pa - pb), "ci95": _interval(diffs), "a": finite(pa), "b": finite(pb)}
    out["n_subjects"] = len(subjects_a)
    return out


def direction(entry: Mapping[str, Any]) -> str:
    """"ahead" when the interval of A − B lies above zero, "behind" when below, else
    "no significant difference" (also when the interval is undefined)."""
    interval = entry.get("ci95")
    if not interval:
        return "no significant difference"
    lo, hi = interval
    if lo > 0:
        return "ahead"
    if hi < 0:
        return "behind"
    return "no significant difference"


def describe(comparison: Mapping[str, Any], a: str = "A", b: str = "B", metric: str = "precision", *, percent: bool = True) -> str:
    """One sentence for one metric of :func:`compare`: "A is ahead of B on precision: +4.1 points
    (95% CI +1.2 to +7.0)", "A is behind B on ..." or "no significant difference between A and B on
    recall: ..."."""
    if metric not in comparison:
        raise KeyError(f"the comparison has no metric {metric!r}; it has {[k for k in comparison if k != 'n_subjects']}")
    entry = comparison[metric]
    scale, unit = (100.0, " points") if percent else (1.0, "")
    word = direction(entry)
    diff = entry.get("diff")
    detail = "undefined" if diff is None else f"{scale * diff:+.1f}{unit}"
    if entry.get("ci95"):
        lo, hi = entry["ci95"]
        detail += f" (95% CI {scale * lo:+.1f} to {scale * hi:+.1f}, {comparison.get('n_subjects', '?')} subjects)"
    if word == "no significant difference":
        return f"no significant difference between {a} and {b} on {metric}: {detail}"
    relation = "ahead of" if word == "ahead" else "behind"
    return f"{a} is {relation} {b} on {metric}: {detail}"


def summarize(results: Counts, group_column: str | None = "tier", *, n_boot: int = N_BOOTSTRAP, seed: int = 0,
              keep_counts: bool = True) -> dict[str, Any]:
    """Everything an evaluation reports: each metric (seed-averaged), ``n_subjects``, ``n_seeds``,
    ``ci95`` for every metric, ``by_<group_column>`` (the same metrics per group, with their own
    ``ci95``) and, with ``keep_counts``, the per-subject records under ``subjects`` (so results can
    be compared later with :func:`compare`)."""
    counts = counts_frame(results)
    subjects, _, _, _ = _seed_terms(counts)
    out: dict[str, Any] = {**point_estimates(counts), "n_subjects": len(subjects), "n_seeds": int(counts["seed"].nunique())}
    out["ci95"] = ci95(counts, n_boot=n_boot, seed=seed)
    if group_column is not None and group_column in counts.columns:
        groups = {}
        for label in sorted(counts[group_column].dropna().unique(), key=str):
            part = counts[counts[group_column] == label]
            groups[str(label)] = {**point_estimates(part), "n_subjects": int(part["subject"].nunique()),
                                  "ci95": ci95(part, n_boot=n_boot, seed=seed)}
        out[f"by_{group_column}"] = groups
    if keep_counts:
        out["subjects"] = counts.drop(columns=["seed"]).to_dict(orient="records") if out["n_seeds"] == 1 else counts.to_dict(orient="records")
    return out

