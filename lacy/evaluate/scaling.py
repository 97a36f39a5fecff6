"""The delegation scaling law (beyond the paper; chapter 7): what a small model stores, and what it costs.

The paper trains two SLM sizes with one fixed rule (delegate the top 60% of fact-token losses).
Capacity results say a transformer stores about 2 bits of knowledge per parameter (Allen-Zhu & Li,
"Physics of Language Models 3.3"), so how much a model should delegate ought to depend on its size.
The pieces here measure that on synthbio, where every fact is exact:

* :func:`model_ladder`: the SLM sizes, scaled down from the profile's model;
* :func:`attribute_bits`: the information in one attribute value, ``log2`` of the number of values it
  is drawn from (uniformly, :mod:`lacy.data.synthbio`);
* :func:`stored_bits` and :func:`bits_per_parameter`: the estimator of stored knowledge — the sum of
  :func:`attribute_bits` over the (person, attribute) values the SLM alone states exactly
  (:func:`lacy.evaluate.knowledge.knowledge_frame`), divided by the parameters. It counts a value
  guessed by chance as known (at most ``1/134`` of a tier's ``major`` values): an upper bound;
* :func:`crossing_exposure`: the training exposures at which recall crosses 50%;
* :func:`fit_log_law`: a least-squares line of a quantity against ``log10(parameters)``;
* :func:`sized_profiles`, :func:`ladder_jobs`, :func:`ladder_table` and :func:`size_knowledge`: the ladder as
  profiles, its trained runs, and what each size knows;
* :func:`fraction_runs`, :func:`delegation_table`, :func:`best_fractions` and :func:`confirmed_fractions`: the
  call-fraction sweep, its best fraction per size and the fractions trained with several seeds against LaCy's;
* :func:`frontier_points`: the cost frontier's points.

The cost of a cascade per generated token is :func:`lacy.evaluate.cascade_run.flops_per_token`.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd

from lacy.data.synthbio_grammar import ATTRIBUTES
from lacy.profiles import ModelConfig, Profile

if TYPE_CHECKING:
    from lacy.evaluate.grid import BudgetGrid
    from lacy.train.run import TrainJob

LADDER_WIDTHS = (0.25, 0.5, 0.75, 1.0)
LADDER_DEPTHS = (1 / 3, 2 / 3, 1.0, 1.0)
"""The SLM sizes of chapter 7, as fractions of the profile's width and depth: under ``cpu`` 24/1, 48/2,
72/3 and 96/3 (width/layers), 0.06M to 0.64M parameters (11x; the vocabulary embedding sets the floor)."""


def model_ladder(model: ModelConfig, widths: Sequence[float] = LADDER_WIDTHS,
                 depths: Sequence[float] = LADDER_DEPTHS) -> list[ModelConfig]:
    """Smaller versions of ``model``, one per (width, depth) fraction: heads scale with the width (at
    least one), ``d_model`` is the nearest multiple of the heads, ``d_ff`` keeps the ratio to ``d_model``,
    layers scale with the depth (at least one). The fractions (1, 1) give ``model`` itself."""
    if len(widths) != len(depths):
        raise ValueError(f"need one depth per width, got {len(widths)} widths and {len(depths)} depths")
    ladder = []
    for width, depth in zip(widths, depths):
        n_head = max(1, round(model.n_head * width))
        d_model = max(n_head, round(model.d_model * width / n_head) * n_head)
        ladder.append(replace(model, d_model=d_model, n_head=n_head, d_ff=max(1, round(model.d_ff * d_model / model.d_model)),
                              n_layer=max(1, round(model.n_layer * depth))))
    return ladder


def attribute_bits() -> dict[str, float]:
    """Bits of information in one value of each synthbio attribute: ``log2`` of the size of the set it is
    drawn from uniformly (every birth date of the birth years; the towns, universities, majors and employers)."""
    from lacy.data.synthbio_vocab import BIRTH_YEARS, EMPLOYERS, MAJORS, TOWNS, UNIVERSITIES

    days = datetime.date(BIRTH_YEARS[1], 12, 31).toordinal() - datetime.date(BIRTH_YEARS[0], 1, 1).toordinal() + 1
    sizes = {"birth_date": days, "birth_city": len(TOWNS), "university": len(UNIVERSITIES), "major": len(MAJORS),
             "employer": len(EMPLOYERS), "employer_city": len(TOWNS)}
    missing = set(ATTRIBUTES) - set(sizes)
    if missing:
        raise ValueError(f"no value-set size for attributes {sorted(missing)}")
    return {attribute: math.log2(sizes[attribute]) for attribute in ATTRIBUTES}


def stored_bits(frame: pd.DataFrame, bits: Mapping[str, float] | None = None,
                tier_people: Mapping[str, int] | None = None) -> float:
    """Bits of the knowledge base the SLM alone states exactly: the sum of ``bits[attribute]`` over the
    ``correct`` rows of a knowledge frame (one row per person and attribute).

    A frame of a sample of people per tier (``tier`` column) stands for the whole world when
    ``tier_people`` gives each tier's size: a row then counts ``tier_people[tier] / people sampled``.
    """
    bits = attribute_bits() if bits is None else bits
    unknown = set(frame["attribute"]) - set(bits)
    if unknown:
        raise ValueError(f"no bit count for attributes {sorted(unknown)}; known: {sorted(bits)}")
    weight = pd.Series(1.0, index=frame.index)
    if tier_people is not None:
        sampled = frame.groupby("tier")["person"].nunique()
        missing = set(sampled.index) - set(tier_people)
        if missing:
            raise ValueError(f"no people count for tiers {sorted(missing)}; give tier_people for every tier of the frame")
        weight = frame["tier"].map(lambda tier: tier_people[tier] / sampled[tier])
    correct = frame["correct"].astype(bool)
    return float((frame.loc[correct, "attribute"].map(bits) * weight[correct]).sum())


def bits_per_parameter(frame: pd.DataFrame, parameters: int, bits: Mapping[str, float] | None = None,
                       tier_people: Mapping[str, int] | None = None) -> float:
    """:func:`stored_bits` divided by the model's parameter count (embeddings included)."""
    if parameters <= 0:
        raise ValueError(f"parameters must be positive, got {parameters}")
    return stored_bits(frame, bits, tier_people) / parameters


def exposure_bins(exposures: pd.Series) -> pd.Series:
    """The power-of-two bin of each exposure count: 0 → -1, 1 → 0, 2-3 → 1, 4-7 → 2, ..."""
    return np.floor(np.log2(exposures.clip(lower=0.5))).astype(int)


def recall_by_exposure(frame: pd.DataFrame) -> pd.DataFrame:
    """Pooled recall per power-of-two exposure bin (0, 1, 2-3, 4-7, ...): ``exposures`` (the bin's median)
    and ``recall``, by increasing exposure — the black line of :func:`lacy.plots.knowledge_curve`."""
    data = frame.assign(bin=exposure_bins(frame["exposures"]))
    return (data.groupby("bin").agg(exposures=("exposures", "median"), recall=("correct", "mean"))
            .reset_index(drop=True).sort_values("exposures", ignore_index=True))


def crossing_exposure(frame: pd.DataFrame, level: float = 0.5) -> float | None:
    """Training exposures at which pooled recall first reaches ``level``, interpolated linearly in
    ``log(exposures)`` between the two bins of :func:`recall_by_exposure` that straddle it.

    None when recall never reaches ``level``; the lowest bin's exposures when it starts above it.
    """
    curve = recall_by_exposure(frame)
    above = np.flatnonzero(curve["recall"].to_numpy() >= level)
    if not len(above):
        return None
    i = int(above[0])
    if i == 0:
        return float(curve["exposures"].iloc[0])
    (x0, y0), (x1, y1) = curve[["exposures", "recall"]].iloc[i - 1], curve[["exposures", "recall"]].iloc[i]
    x0 = max(float(x0), 0.5)  # the 0-exposure bin sits at 0.5 on the log axis
    return float(math.exp(math.log(x0) + (level - y0) / (y1 - y0) * (math.log(x1) - math.log(x0))))


def fit_log_law(parameters: Sequence[float], values: Sequence[float]) -> dict[str, float] | None:
    """Least squares ``value = intercept + slope * log10(parameters)``: ``slope, intercept, r2, n``.

    None below three points: two points always lie on a line, which is no evidence of a law.
    """
    x, y = np.log10(np.asarray(parameters, dtype=float)), np.asarray(values, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"need one value per size, got {len(x)} sizes and {len(y)} values")
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n": int(len(x))}


def sized_profiles(profile: Profile) -> list[Profile]:
    """``profile`` with each SLM of :func:`model_ladder`, smallest first; the last is ``profile`` itself,
    so its runs are the ones the other chapters train."""
    return [replace(profile, model=model) for model in model_ladder(profile.model)]


def size_knowledge(runs: Mapping[tuple, Path], profile: Profile, *, per_tier: int = 0, seed: int = 0,
                   labels: Sequence[str] = ("size", "method", "seed")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What each run's SLM alone knows (:func:`lacy.evaluate.knowledge.knowledge`), as two frames.

    ``runs``: a key tuple (named by ``labels``) → run folder. Returns one row per run with the labels,
    ``params``, the recall of each tier, ``crossing_exposure`` (50%), ``stored_bits`` and
    ``bits_per_param`` (whole world: a ``per_tier`` sample is weighted by the tier sizes), and the
    pooled recall curves (:func:`recall_by_exposure`) with the labels and ``params``.
    """
    from lacy.evaluate.knowledge import knowledge

    tier_people = dict(zip(profile.world.tiers, profile.world.tier_people))
    rows, curves = [], []
    for key, run in runs.items():
        named = dict(zip(labels, key))
        params = int(json.loads((Path(run) / "summary.json").read_text())["params"])
        frame, summary = knowledge(Path(run) / "model", profile, per_tier=per_tier, seed=seed)
        bits = stored_bits(frame, tier_people=tier_people if per_tier else None)
        rows.append({**named, "params": params,
                     **{f"recall_{tier}": summary["by_tier"][tier]["recall"] for tier in summary["tiers"]},
                     "crossing_exposure": _or_nan(crossing_exposure(frame)), "stored_bits": bits, "bits_per_param": bits / params})
        curves.append(recall_by_exposure(frame).assign(**named, params=params))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def ladder_jobs(sized: Sequence[Profile], seed: int, n_end_seeds: int, methods: Sequence[str] = ("standard", "lacy"),
                n_largest_seeds: int | None = None) -> dict[tuple[int, str, int], "TrainJob"]:
    """The runs of the size ladder: ``methods`` at every size of ``sized``, ``n_end_seeds`` training seeds
    from ``seed`` for the smallest and the largest size (``n_largest_seeds`` for the largest when given),
    one for the others. Keys: ``(size index, method, seed)``; train them with
    :func:`lacy.train.run.get_or_train_many`."""
    from lacy.train.run import TrainJob

    largest = len(sized) - 1
    counts = {i: 1 for i in range(len(sized))} | {0: n_end_seeds, largest: n_end_seeds if n_largest_seeds is None else n_largest_seeds}
    return {(i, method, s): TrainJob("synthbio", method, sized[i], s) for i in range(len(sized)) for method in methods
            for s in range(seed, seed + counts[i])}


def variant_jobs(profile: Profile, seeds: Sequence[int]) -> dict[tuple, "TrainJob"]:
    """Chapter 7's two variants of LaCy at ``profile``'s own SLM, one run per training seed:
    ``lacy_adaptive`` (key ``("lacy_adaptive", seed)``) and the Co-LLM-style deferral gate
    (``("gate", seed)``: the ``lacy`` rule with ``model.call_head=gate``). Chapter 3 trains them beside
    LaCy and ``standard`` at the same seeds, so chapter 7 finds them trained; either chapter trains
    whichever is missing."""
    from lacy.train.run import TrainJob

    return {**{("lacy_adaptive", s): TrainJob("synthbio", "lacy_adaptive", profile, s) for s in seeds},
            **{("gate", s): TrainJob("synthbio", "lacy", profile.override({"model.call_head": "gate"}), s) for s in seeds}}


def chapter_jobs(sized: Sequence[Profile], seed: int, n_end_seeds: int, fractions: Sequence[float],
                 fraction_sizes: Sequence[int], n_variant_seeds: int = 1, confirm_fractions: Sequence[float] = (),
                 n_confirm_seeds: int = 1) -> dict[tuple, "TrainJob"]:
    """Every run chapter 7 needs, to train at once with :func:`lacy.train.run.get_or_train_many`:
    the ladder (keys ``("size", i, method, seed)``, :func:`ladder_jobs`), LaCy at each call fraction at
    the sizes ``fraction_sizes`` (``("fraction", i, f, seed)``: one training seed per fraction, except the
    ``confirm_fractions``, which get ``n_confirm_seeds``), the :func:`variant_jobs` at the profile's own SLM
    with ``n_variant_seeds`` training seeds (the ladder's largest size gets at least as many, so both
    variants are compared with LaCy and ``standard`` pooled over the same seeds) and the LM helper
    (``("helper",)``)."""
    from lacy.train.run import TrainJob

    if n_confirm_seeds < 1:
        raise ValueError(f"n_confirm_seeds must be >= 1 (training seeds of each confirmed fraction), got {n_confirm_seeds}")
    unswept = [f for f in confirm_fractions if f not in fractions]
    if unswept:
        raise ValueError(f"confirm_fractions {unswept} are not among the swept fractions {list(fractions)}; add them to fractions")
    profile = sized[-1]
    ladder = ladder_jobs(sized, seed, n_end_seeds, n_largest_seeds=max(n_end_seeds, n_variant_seeds))
    return {**{("size", *key): job for key, job in ladder.items()},
            **{("fraction", i, f, s): TrainJob("synthbio", "lacy", sized[i].override({"train.call_fraction": f}), s)
               for i in fraction_sizes for f in fractions
               for s in range(seed, seed + (n_confirm_seeds if f in confirm_fractions else 1))},
            **variant_jobs(profile, range(seed, seed + n_variant_seeds)),
            ("helper",): TrainJob("synthbio", "standard", profile.as_helper(), seed)}


def ladder_table(sized: Sequence[Profile], runs: Mapping[tuple[int, str, int], Path]) -> pd.DataFrame:
    """One row per size: ``params`` (from the first run's summary), width, layers, heads, training seeds."""
    rows = []
    for i, profile in enumerate(sized):
        mine = [run for key, run in runs.items() if key[0] == i]
        summary = json.loads((Path(mine[0]) / "summary.json").read_text())
        rows.append({"params": int(summary["params"]), "d_model": profile.model.d_model, "layers": profile.model.n_layer,
                     "heads": profile.model.n_head, "training seeds": len({key[2] for key in runs if key[0] == i})})
    return pd.DataFrame(rows)


def fraction_runs(runs: Mapping[tuple, Path], size: int) -> dict[str, list[Path]]:
    """The call-fraction runs of one ladder ``size`` from :func:`chapter_jobs`' runs, as
    :func:`lacy.evaluate.grid.budget_grid` takes them: fraction as text (``"0.6"``) → its runs, one per
    training seed, so the grid pools the seeds."""
    pooled: dict[str, list[Path]] = {}
    for (_, _, fraction, _), run in sorted((key, run) for key, run in runs.items() if key[0] == "fraction" and key[1] == size):
        pooled.setdefault(f"{fraction:.1f}", []).append(run)
    return pooled


def delegation_table(grids: Mapping[str, "BudgetGrid"], params: Mapping[str, int]) -> pd.DataFrame:
    """The call-fraction sweep: every budget-grid row of each size (``grids``: size label → a grid whose
    methods are call fractions as text, ``"0.0"`` for ``standard``) with ``size, params, call_fraction``
    and ``precision_x_recall`` (0 where nothing was stated, so precision is undefined)."""
    table = pd.concat([grid.table.assign(size=size, params=params[size]) for size, grid in grids.items()], ignore_index=True)
    table["call_fraction"] = table["method"].astype(float)
    table["precision_x_recall"] = table["precision"].astype(float).fillna(0.0) * table["recall"].astype(float)
    return table


def fraction_comparison(grid: "BudgetGrid", fraction: str, rule: str = "0.6") -> str:
    """``fraction`` against LaCy's ``rule`` fraction in one budget grid: the sentences of the paired
    bootstrap (:meth:`BudgetGrid.comparisons`), empty when the two are the same. With fewer than
    :data:`lacy.evaluate.stats.RANKING_SEEDS` training seeds on either side it says the intervals cover
    the subjects only, so the comparison is not a ranking."""
    from lacy.evaluate.stats import RANKING_SEEDS

    versus = grid.comparisons(method=fraction)
    at_rule = versus[versus["baseline"] == rule]
    if at_rule.empty:
        return ""
    seeds = int(grid.table.loc[grid.table["method"].isin([fraction, rule]), "n_seeds"].min())
    caveat = "" if seeds >= RANKING_SEEDS else (f" ({seeds} training seed{'s' * (seeds > 1)} per fraction: the intervals cover "
                                                f"the subjects only, so this is not a ranking)")
    return f"against LaCy's {rule}{caveat}: " + "; ".join(at_rule["sentence"])


def best_fractions(delegation: pd.DataFrame, grids: Mapping[str, "BudgetGrid"], rule: str = "0.6",
                   confirmed: Sequence[float] = ()) -> tuple[pd.DataFrame, list[str]]:
    """The call fraction with the highest precision × recall per size, and one sentence per size that
    compares it with LaCy's ``rule`` fraction (:func:`fraction_comparison`). A best fraction among
    ``confirmed`` gets its comparison from :func:`confirmed_fractions`, so the sentence only points there."""
    best = delegation.loc[delegation.groupby("size", sort=False)["precision_x_recall"].idxmax()]
    lines = []
    for _, row in best.iterrows():
        if row["method"] in {f"{f:.1f}" for f in confirmed} and row["method"] != rule:
            versus = f"its comparison with LaCy's {rule} is among the confirmed fractions below"
        else:
            versus = fraction_comparison(grids[row["size"]], row["method"], rule)
        lines.append(f"**{row['size']}**: best call fraction **{row['call_fraction']:.1f}** (precision × recall "
                     f"{row['precision_x_recall']:.3f}, achieved call rate {row['call_rate']:.1%})" + (f"; {versus}" if versus else ""))
    return best, lines


def confirmed_fractions(delegation: pd.DataFrame, grids: Mapping[str, "BudgetGrid"], fractions: Sequence[float],
                        rule: str = "0.6") -> list[str]:
    """One sentence per size and fraction of ``fractions`` (other than ``rule``): its precision × recall and
    achieved call rate beside the rule's, and :func:`fraction_comparison` against the rule."""
    lines: list[str] = []
    if not fractions:
        return lines
    for size, grid in grids.items():
        rows = delegation[delegation["size"] == size].set_index("method")
        missing = [name for name in (rule, *(f"{f:.1f}" for f in fractions)) if name not in rows.index]
        if missing:
            raise ValueError(f"fractions {missing} were not swept at {size} (swept: {list(rows.index)}); "
                             "add them to the sweep, LaCy's rule included")
        for fraction in (f"{f:.1f}" for f in fractions if f"{f:.1f}" != rule):
            lines.append(f"**{size}**, {fraction} (precision × recall {rows.loc[fraction, 'precision_x_recall']:.3f}, achieved call rate "
                         f"{rows.loc[fraction, 'call_rate']:.1%}; {rule}: {rows.loc[rule, 'precision_x_recall']:.3f}, "
                         f"{rows.loc[rule, 'call_rate']:.1%}) {fraction_comparison(grid, fraction, rule)}")
    return lines


def frontier_points(sweep: pd.DataFrame, by_helper: bool = False) -> pd.DataFrame:
    """A :func:`lacy.evaluate.grid.sweep_grid` frame at rates 0 and a budget as cost-frontier points:
    ``label`` (the size or method, or ``helper``) and ``kind`` (SLM alone, cascade at the budget, helper alone).

    ``by_helper``: the frame holds several helpers (chapter 6): cascades are told apart by helper in
    ``kind``, each helper alone is labelled with its name, and each SLM alone (the same run whatever the
    helper) is kept once."""
    from lacy.plots import HELPER_ALONE

    alone = sweep["method"] == HELPER_ALONE
    cascade = [f"cascade, {helper} ({rate:.0%})" if by_helper else f"cascade ({rate:.0%})"
               for helper, rate in zip(sweep["helper"], sweep["target_rate"])]
    kind = np.where(alone, "helper alone", np.where(sweep["target_rate"] == 0, "SLM alone", cascade))
    points = sweep.assign(kind=kind, label=sweep["method"].where(~alone, sweep["helper"] if by_helper else "helper"))
    return points.drop_duplicates(["kind", "label"], ignore_index=True) if by_helper else points
