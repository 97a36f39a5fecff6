"""Experiment grids: budget runs pooled over training seeds, sweeps read off at equal achieved call rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lacy.evaluate import stats
from lacy.evaluate.grid import at_achieved_rates, budget_grid, compare_at_achieved_rates, mixture_counts, pool_seeds, training_seed
from lacy.plots import HELPER_ALONE


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, smoke_profile, cache_root):
    """Two smoke ``lacy`` runs that differ only in the training seed, and one ``standard`` run."""
    from lacy.train.run import get_or_train_seeds

    root = tmp_path_factory.mktemp("runs")
    runs = get_or_train_seeds("synthbio", ["lacy"], smoke_profile, [0, 1], root=root, cache_root=cache_root, log=None)
    runs.update(get_or_train_seeds("synthbio", ["standard"], smoke_profile, [0], root=root, cache_root=cache_root, log=None))
    return runs


def test_get_or_train_seeds_refuses_bad_seeds(smoke_profile):
    from lacy.train.run import get_or_train_seeds

    with pytest.raises(ValueError, match="at least one"):
        get_or_train_seeds("synthbio", ["lacy"], smoke_profile, [])
    with pytest.raises(ValueError, match="distinct"):
        get_or_train_seeds("synthbio", ["lacy"], smoke_profile, [1, 1])


def test_seed_spread_has_one_row_per_method(seed_runs):
    from lacy.train.inspect import seed_spread

    table = seed_spread(seed_runs)
    assert table.loc["lacy", "n_seeds"] == 2 and table.loc["standard", "n_seeds"] == 1
    lo, mean, hi = (table.loc["lacy", ("val_loss_fact", k)] for k in ("min", "mean", "max"))
    assert lo <= mean <= hi


def test_budget_grid_pools_training_seeds(seed_runs, smoke_profile, cache_root):
    assert [training_seed(run) for run in seed_runs["lacy"]] == [0, 1]
    grid = budget_grid(seed_runs, {"doc": "doc"}, "synthbio", smoke_profile, 0, budget=0.22, cache_root=cache_root)
    table = grid.table.set_index("method")
    assert table.loc["lacy", "n_seeds"] == 2 and table.loc["standard", "n_seeds"] == 1
    pooled = grid.summaries["doc", "lacy"]
    assert pooled["training_seeds"] == [0, 1]
    counts = stats.counts_frame(pooled)
    assert sorted(counts["seed"].unique()) == [0, 1]
    assert len(counts) == 2 * pooled["n_subjects"]
    # the pooled precision is the mean of the two seeds' own precisions
    per_seed = [stats.point_estimates(counts[counts["seed"] == s])["precision"] for s in (0, 1)]
    defined = [p for p in per_seed if p is not None]
    if defined:
        assert pooled["precision"] == pytest.approx(np.mean(defined))
        lo, hi = table.loc["lacy", ["precision_lo", "precision_hi"]]
        assert lo <= pooled["precision"] + 1e-12 and pooled["precision"] <= hi + 1e-12
    assert set(grid.by_frequency["frequency"]) == set(smoke_profile.world.tiers) & set(counts["tier"])
    comparisons = grid.comparisons("lacy")
    assert set(comparisons["baseline"]) == {"standard"}
    assert all(v in ("ahead", "behind", "no significant difference") for v in comparisons["verdict"])


def test_pool_seeds_refuses_a_count_mismatch():
    with pytest.raises(ValueError, match="one summary per seed"):
        pool_seeds([{"subjects": []}], [0, 1])


def test_at_achieved_rates_interpolates_and_never_extrapolates():
    curve = pd.DataFrame([
        {"helper": "doc", "method": "a", "target_rate": t, "call_rate": c, "precision": p, "recall": r}
        for t, c, p, r in [(0.0, 0.0, 0.2, 0.1), (0.1, 0.05, 0.3, 0.2), (0.22, 0.15, 0.5, 0.4), (0.4, 0.30, 0.7, 0.6)]
    ] + [{"helper": "doc", "method": HELPER_ALONE, "target_rate": 1.0, "call_rate": 1.0, "precision": 0.9, "recall": 0.9}])
    table = at_achieved_rates(curve, rates=(0.10, 0.22, 0.40)).set_index("rate")
    assert table.loc[0.10, "precision"] == pytest.approx(0.4)  # halfway between 0.05 and 0.15
    assert table.loc[0.22, "recall"] == pytest.approx(0.4 + (0.07 / 0.15) * 0.2)
    assert math.isnan(table.loc[0.40, "precision"])  # beyond the highest achieved rate: no extrapolation
    assert set(table["method"]) == {"a"}


def _point(calls, steps, stated, supported):
    """Per-subject counts of one operating point: two subjects, each with 6 knowledge-base facts."""
    return pd.DataFrame({"subject": ["a", "b"], "stated": stated, "supported": supported, "kb_facts": [6, 6],
                         "recalled": supported, "n_calls": calls, "slm_steps": steps, "tier": ["t", "t"]})


def test_mixture_counts_reach_the_rate_exactly_and_mix_the_metrics():
    low = _point([0, 2], [10, 10], [4, 2], [1, 1])    # achieved 2/20 = 10%
    high = _point([6, 6], [10, 10], [2, 2], [2, 2])   # achieved 12/20 = 60%
    mixed = mixture_counts([high, low], 0.35)         # any order
    assert set(mixed["mix_weight"]) == {0.5}          # (2 + w·10) / 20 = 0.35 -> w = 0.5
    assert stats.point_estimates(mixed)["call_rate"] == pytest.approx(0.35)
    # per subject the mixture's terms are the average of the two points' terms
    expected = np.mean([(0.25 + 1.0) / 2, (0.5 + 1.0) / 2])
    assert stats.point_estimates(mixed)["precision"] == pytest.approx(expected)
    assert mixture_counts([low, high], 0.6)["mix_weight"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert mixture_counts([low, high], 0.05) is None and mixture_counts([low, high], 0.7) is None  # never extrapolated
    assert mixture_counts([low], 0.1)["mix_weight"].tolist() == [1.0, 1.0]


def test_mixed_counts_must_weigh_each_subject_to_one():
    bad = _point([0, 2], [10, 10], [4, 2], [1, 1]).assign(mix_weight=0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        stats.point_estimates(bad)


def test_compare_at_achieved_rates_pools_seeds_and_names_out_of_range(seed_runs, smoke_profile, cache_root):
    table = compare_at_achieved_rates(seed_runs, {"doc": "doc"}, "synthbio", smoke_profile, 0, method="lacy",
                                      rates=(0.0, 0.99), sweep_rates=(0.0, 0.22, 0.6), cache_root=cache_root)
    assert set(table["baseline"]) == {"standard"} and set(table["metric"]) == {"precision", "recall"}
    assert (table["n_seeds"] == 2).all()
    assert set(table.loc[table["rate"] == 0.99, "verdict"]) == {"out of range"}  # no threshold calls 99% of steps
    in_range = table[table["rate"] == 0.0]
    assert set(in_range["verdict"]) <= {"ahead", "behind", "no significant difference"}
    # at 0% calls both cascades are their SLMs alone: the difference is that of the SLMs' own counts
    for _, row in in_range.dropna(subset=["diff"]).iterrows():
        assert row["diff"] == pytest.approx(row["a"] - row["b"]) and row["lo"] <= row["diff"] <= row["hi"]


def test_interval_table_formats_values_with_their_bounds():
    from lacy.results import headline_tables, interval_table

    rows = [{"corpus": "synthbio", "helper": "lm", "method": "lacy", "budget": 0.22, "metric": m, "value": v}
            for m, v in [("precision_at_budget", 0.5), ("precision_at_budget_ci_lo", 0.4), ("precision_at_budget_ci_hi", 0.6),
                         ("recall_at_budget", 0.25), ("call_rate_at_budget", 0.2), ("n_seeds_at_budget", 3)]]
    tidy = pd.DataFrame(rows)
    table = interval_table(tidy, 0.22)
    row = table.loc[("synthbio", "lm", "lacy")]
    assert row["precision % (95% CI)"] == "50.0 [40.0, 60.0]"
    assert row["recall % (95% CI)"] == "25.0"  # no bounds saved: the value alone
    assert row["achieved call rate %"] == 20.0 and row["training seeds"] == 3
    assert next(iter(headline_tables(tidy, 0.22))).startswith("Precision and recall")
    assert interval_table(tidy[~tidy["metric"].str.contains("ci_lo")], 0.22) is None


def test_run_folders_ignore_evaluation_settings(smoke_profile):
    from lacy.train.run import run_dir

    evaluated_differently = smoke_profile.override({"eval.n_subjects": "7", "eval.max_new_tokens": "0"})
    trained_differently = smoke_profile.override({"train.max_steps": "7"})
    assert run_dir("synthbio", "lacy", evaluated_differently, 0) == run_dir("synthbio", "lacy", smoke_profile, 0)
    assert run_dir("synthbio", "lacy", trained_differently, 0) != run_dir("synthbio", "lacy", smoke_profile, 0)


def test_settings_added_later_keep_earlier_run_folders_at_their_implicit_value(smoke_profile):
    """``train.call_threshold`` (only ``lacy_adaptive`` reads it) at its default leaves every earlier
    folder name as it was; another value names a folder of its own."""
    from lacy.train.run import run_dir
    from lacy.train.run_folder import ADDED_SETTINGS, training_config

    config = training_config(smoke_profile)
    assert not any(name in config[section] for section, added in ADDED_SETTINGS.items() for name in added)
    other = smoke_profile.override({"train.call_threshold": "1.5"})
    assert training_config(other)["train"]["call_threshold"] == 1.5
    assert run_dir("synthbio", "lacy_adaptive", other, 0) != run_dir("synthbio", "lacy_adaptive", smoke_profile, 0)
    no_warmup = smoke_profile.override({"train.call_warmup": "0"})
    assert training_config(no_warmup)["train"]["call_warmup"] == 0.0
    assert run_dir("synthbio", "lacy_adaptive", no_warmup, 0) != run_dir("synthbio", "lacy_adaptive", smoke_profile, 0)


def test_comparison_table_states_the_verdict_from_the_interval():
    from lacy.results import comparison_table

    rows = [{"corpus": "synthbio", "helper": "lm", "method": base, "budget": 0.22, "metric": f"lacy_minus_precision{end}", "value": v}
            for base, values in {"standard": (0.05, 0.01, 0.09), "loss": (0.02, -0.01, 0.05)}.items()
            for end, v in zip(("", "_ci_lo", "_ci_hi"), values)]
    table = comparison_table(pd.DataFrame(rows), 0.22)
    assert table.loc[("synthbio", "lm", "standard"), "precision (points)"] == "5.0 [1.0, 9.0]"
    assert table.loc[("synthbio", "lm", "standard"), "precision: verdict"] == "ahead"
    assert table.loc[("synthbio", "lm", "loss"), "precision: verdict"] == "no significant difference"
    recall_for_standard_only = [{**rows[0], "metric": "lacy_minus_recall"}]
    table = comparison_table(pd.DataFrame(rows + recall_for_standard_only), 0.22)
    assert table.loc[("synthbio", "lm", "loss"), "recall: verdict"] == "not compared"
    assert table.loc[("synthbio", "lm", "loss"), "recall (points)"] == "–"
    assert comparison_table(pd.DataFrame(rows).assign(budget=0.4), 0.22) is None
