"""Metrics from per-subject counts, the paired bootstrap over subjects and `lacy compare`."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lacy.evaluate.metrics as metrics_module
from lacy.cli import main
from lacy.evaluate.metrics import cascade_metrics, generation_cap, metrics_by_group
from lacy.evaluate.stats import ci95, compare, counts_frame, describe, direction, point_estimates, summarize


def make_counts(p: float, n: int = 90, seed: int = 0, rng_seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    stated = rng.integers(0, 8, n)
    supported = rng.binomial(stated, p)
    recalled = np.minimum(supported, 6)
    return pd.DataFrame({"subject": [f"person {i:03d}" for i in range(n)], "stated": stated, "supported": supported,
                         "kb_facts": 6, "recalled": recalled, "tier": np.where(np.arange(n) < n // 3, "famous", "rare"),
                         "seed": seed})


def test_doctests_pass():
    assert doctest.testmod(metrics_module).failed == 0


def test_metrics_by_hand():
    counts = pd.DataFrame({"subject": ["a", "b", "c"], "stated": [4, 0, 2], "supported": [3, 0, 2], "kb_facts": [6, 6, 6],
                           "recalled": [3, 0, 2], "tier": ["x", "y", "x"], "n_calls": [1, 0, 3], "slm_steps": [10, 5, 5]})
    m = cascade_metrics(counts)
    assert m["precision"] == pytest.approx((3 / 4 + 1) / 2)  # mean over the responding generations
    assert m["recall"] == pytest.approx(5 / 18)
    assert m["supported_per_response"] == pytest.approx(2.5)
    assert m["respond_ratio"] == pytest.approx(2 / 3)
    assert m["call_rate"] == pytest.approx(4 / 20)  # pooled calls / steps
    assert m["factscore_gamma10"] == pytest.approx((0.75 * np.exp(1 - 10 / 4) + np.exp(1 - 10 / 2)) / 2)
    groups = metrics_by_group(counts, "tier")
    assert list(groups) == ["x", "y"] and groups["y"]["precision"] is None and groups["y"]["recall"] == 0.0


def test_counts_are_checked():
    with pytest.raises(ValueError, match="lack the columns"):
        cascade_metrics(pd.DataFrame({"subject": ["a"], "stated": [1]}))
    bad = pd.DataFrame({"subject": ["a"], "stated": [1], "supported": [2], "kb_facts": [6], "recalled": [0]})
    with pytest.raises(ValueError, match="supported <= stated"):
        cascade_metrics(bad)
    with pytest.raises(ValueError, match="no column 'tier'"):
        metrics_by_group(bad.assign(supported=1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 6)), min_size=1, max_size=25))
def test_metrics_are_fractions(rows):
    counts = pd.DataFrame({"subject": [str(i) for i in range(len(rows))], "stated": [max(a, b) for a, b, _ in rows],
                           "supported": [min(a, b) for a, b, _ in rows], "kb_facts": 6, "recalled": [r for _, _, r in rows]})
    m = cascade_metrics(counts)
    for key in ("precision", "recall", "respond_ratio", "factscore_gamma10"):
        assert m[key] is None or 0.0 <= m[key] <= 1.0
    assert m["factscore_gamma10"] is None or m["factscore_gamma10"] <= m["precision"] + 1e-12


def test_intervals_cover_the_estimate_and_are_deterministic():
    counts = make_counts(0.6)
    intervals = ci95(counts)
    estimates = point_estimates(counts)
    for metric in ("precision", "recall"):
        lo, hi = intervals[metric]
        assert lo < estimates[metric] < hi
    assert ci95(counts) == intervals
    assert ci95(counts, seed=1) != intervals


def test_seeds_are_averaged():
    seeds = pd.concat([make_counts(0.6, seed=s, rng_seed=s) for s in range(3)])
    per_seed = [cascade_metrics(make_counts(0.6, seed=s, rng_seed=s))["precision"] for s in range(3)]
    assert point_estimates(seeds)["precision"] == pytest.approx(np.mean(per_seed))


def test_compare_is_paired_and_refuses_other_subjects():
    a, b = make_counts(0.8), make_counts(0.4, rng_seed=1)
    result = compare(a, b)
    assert set(result) == {"precision", "recall", "n_subjects"} and result["n_subjects"] == 90
    assert result["precision"]["diff"] == pytest.approx(point_estimates(a)["precision"] - point_estimates(b)["precision"])
    assert direction(result["precision"]) == "ahead" and direction(compare(b, a)["precision"]) == "behind"
    same = compare(a, a)
    assert same["precision"]["diff"] == 0.0 and same["precision"]["ci95"] == [0.0, 0.0]
    assert direction(same["precision"]) == "no significant difference"
    with pytest.raises(ValueError, match="different subjects"):
        compare(a, a.iloc[:-1])
    with pytest.raises(ValueError, match="unknown metrics"):
        compare(a, b, ["accuracy"])


def test_paired_interval_is_narrower_than_unpaired_spread():
    """A shared subject effect cancels in the paired difference."""
    base = make_counts(0.5, n=120)
    shifted = base.assign(supported=np.minimum(base["supported"] + (base["stated"] > base["supported"]), base["stated"]))
    paired = compare(shifted, base)["precision"]["ci95"]
    separate = [ci95(shifted)["precision"], ci95(base)["precision"]]
    assert paired[1] - paired[0] < min(hi - lo for lo, hi in separate)
    assert paired[0] > 0


def test_wording():
    entry = {"precision": {"diff": 0.041, "ci95": [0.012, 0.07]}, "recall": {"diff": 0.01, "ci95": [-0.02, 0.04]}, "n_subjects": 240}
    assert describe(entry, "lacy", "standard") == "lacy is ahead of standard on precision: +4.1 points (95% CI +1.2 to +7.0, 240 subjects)"
    assert describe(entry, "lacy", "standard", "recall").startswith("no significant difference between lacy and standard on recall")
    behind = {"precision": {"diff": -0.063, "ci95": [-0.084, -0.044]}, "n_subjects": 240}
    assert describe(behind, "lacy", "standard").startswith("lacy is behind standard on precision: -6.3 points")
    with pytest.raises(KeyError, match="no metric"):
        describe(entry, metric="f1")


def test_summarize_round_trips_through_json(tmp_path):
    counts = make_counts(0.6)
    report = summarize(counts, "tier")
    assert set(report["by_tier"]) == {"famous", "rare"} and report["n_seeds"] == 1
    assert set(report["ci95"]) >= {"precision", "recall"}
    again = counts_frame(json.loads(json.dumps(report)))
    assert point_estimates(again) == pytest.approx(point_estimates(counts))
    seeds = [summarize(make_counts(0.6, rng_seed=s).drop(columns="seed")) | {"seed": s} for s in range(2)]
    assert counts_frame(seeds)["seed"].nunique() == 2
    with pytest.raises(ValueError, match="per-subject counts under 'subjects'"):
        counts_frame({"precision": 0.5})


def test_cli_compare(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(summarize(make_counts(0.8))))
    b.write_text(json.dumps(summarize(make_counts(0.4, rng_seed=1))))
    assert main(["compare", str(a), str(b), "--n-boot", "500"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_subjects"] == 90 and out["precision"]["ci95"][0] > 0
    b.write_text(json.dumps(summarize(make_counts(0.4, n=80))))
    assert main(["compare", str(a), str(b)]) == 2
    assert "different subjects" in capsys.readouterr().err
    assert main(["compare", str(a), str(tmp_path / "missing.json")]) == 2
    assert "lacy evaluate" in capsys.readouterr().err


class CharTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t) for t in texts]}


def test_generation_cap():
    assert generation_cap(CharTokenizer(), ["abc", "abcdefg"]) == 12  # ceil(1.5 * (7 + end-of-text))
    with pytest.raises(ValueError, match="factor"):
        generation_cap(CharTokenizer(), ["a"], factor=0.5)
    with pytest.raises(ValueError, match="training documents"):
        generation_cap(CharTokenizer(), [])
