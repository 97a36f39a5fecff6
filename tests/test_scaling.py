"""The delegation scaling law's estimators (chapter 7): model sizes, bits stored, the 50% crossing, the law fit."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lacy.data.synthbio_grammar import ATTRIBUTES
from lacy.evaluate.scaling import (
    attribute_bits, bits_per_parameter, crossing_exposure, fit_log_law, model_ladder, stored_bits,
)
from lacy.evaluate import scaling
from lacy.profiles import ModelConfig


def frame(rows):
    return pd.DataFrame(rows, columns=["attribute", "exposures", "correct"])


def test_stored_bits_of_a_sample_stand_for_the_whole_tier():
    bits = {"major": 7.0}
    sample = pd.DataFrame({"person": ["a", "b", "c"], "tier": ["famous", "obscure", "obscure"], "attribute": "major",
                           "correct": [True, True, False]})
    assert stored_bits(sample, bits) == 14.0
    assert stored_bits(sample, bits, tier_people={"famous": 1, "obscure": 10}) == 7.0 + 7.0 * 10 / 2
    with pytest.raises(ValueError, match="no people count"):
        stored_bits(sample, bits, tier_people={"famous": 1})


def test_attribute_bits_are_log2_of_the_value_sets():
    bits = attribute_bits()
    assert list(bits) == list(ATTRIBUTES)
    assert bits["birth_date"] == pytest.approx(math.log2(21915))  # every day of 1940-1999
    assert bits["birth_city"] == bits["employer_city"]  # both drawn from the towns
    assert all(b > 6 for b in bits.values())


def test_stored_bits_sum_the_values_stated_exactly():
    bits = {"major": 7.0, "employer": 10.0}
    known = frame([("major", 5, True), ("employer", 5, True), ("employer", 1, False), ("major", 1, True)])
    assert stored_bits(known, bits) == 24.0
    assert bits_per_parameter(known, 12, bits) == 2.0
    with pytest.raises(ValueError, match="positive"):
        bits_per_parameter(known, 0, bits)
    with pytest.raises(ValueError, match="no bit count"):
        stored_bits(frame([("shoe_size", 1, True)]), bits)


def test_crossing_exposure_interpolates_in_log_exposure():
    rows = [("major", 1, False)] * 4 + [("major", 4, False)] * 3 + [("major", 4, True)] + [("major", 16, True)] * 3 + [("major", 16, False)]
    assert crossing_exposure(frame(rows)) == pytest.approx(8.0)  # 25% at 4, 75% at 16: halfway in log
    assert crossing_exposure(frame([("major", 3, False), ("major", 30, False)])) is None
    assert crossing_exposure(frame([("major", 2, True), ("major", 30, True)])) == 2.0


def test_fit_log_law_needs_three_sizes():
    fit = fit_log_law([1e4, 1e5, 1e6], [0.8, 0.6, 0.4])
    assert fit["slope"] == pytest.approx(-0.2) and fit["intercept"] == pytest.approx(1.6) and fit["r2"] == pytest.approx(1.0)
    assert fit_log_law([1e4, 1e5], [0.8, 0.6]) is None
    with pytest.raises(ValueError, match="one value per size"):
        fit_log_law([1e4, 1e5, 1e6], [0.8])


def test_model_ladder_spans_ten_times_the_parameters_down_to_the_profile_model():
    base = ModelConfig(d_model=96, n_layer=3, n_head=4, d_ff=384)
    ladder = model_ladder(base)
    assert ladder[-1] == base
    assert [m.d_model for m in ladder] == [24, 48, 72, 96] and [m.n_layer for m in ladder] == [1, 2, 3, 3]
    assert all(m.d_model % m.n_head == 0 and m.d_ff == 4 * m.d_model for m in ladder)
    tiny = model_ladder(ModelConfig(d_model=32, n_layer=1, n_head=2, d_ff=64))
    assert len({m.d_model for m in tiny}) == 4 and all(m.n_layer == 1 for m in tiny)


def test_chapter_jobs_cover_the_ladder_the_sweep_and_the_variants(smoke_profile):
    """Every run chapter 7 trains, keyed as the chapter reads them; LaCy's own fraction is the ladder's run."""
    from lacy.train.run import run_dir

    sized = scaling.sized_profiles(smoke_profile)
    jobs = scaling.chapter_jobs(sized, 0, 2, [0.2, smoke_profile.train.call_fraction], [0, 1], n_variant_seeds=3)
    assert {key for key in jobs if key[0] == "size"} == {("size", *key) for key in scaling.ladder_jobs(sized, 0, 2, n_largest_seeds=3)}
    largest = len(sized) - 1
    assert {key[3] for key in jobs if key[:3] == ("size", largest, "lacy")} == {0, 1, 2}  # the variants' seeds, pooled with LaCy's
    assert {key[3] for key in jobs if key[:3] == ("size", 0, "lacy")} == {0, 1} and {key[3] for key in jobs if key[:3] == ("size", 1, "lacy")} == {0}
    assert {key for key in jobs if key[0] == "fraction"} == {("fraction", i, f, 0) for i in (0, 1) for f in (0.2, smoke_profile.train.call_fraction)}
    folder = {key: run_dir(j.corpus, j.method, j.profile, j.seed) for key, j in jobs.items()}
    assert folder[("fraction", 1, smoke_profile.train.call_fraction, 0)] == folder[("size", 1, "lacy", 0)]
    assert folder[("fraction", 1, 0.2, 0)] != folder[("size", 1, "lacy", 0)]
    assert all(jobs[("lacy_adaptive", s)].method == "lacy_adaptive" and jobs[("gate", s)].profile.model.call_head == "gate"
               and jobs[("gate", s)].seed == s for s in (0, 1, 2))
    assert jobs[("helper",)].profile.model == smoke_profile.helper_model


def test_confirmed_fractions_get_more_training_seeds_and_pool_by_fraction(smoke_profile):
    """A confirmatory re-run: the listed fractions get n_confirm_seeds seeds, the others one; fraction_runs
    gives each fraction's runs (seeds in order) for budget_grid to pool; the rule's seed 1 at the
    smallest size is the ladder's own second seed, not a new run."""
    from lacy.train.run import run_dir

    sized = scaling.sized_profiles(smoke_profile)
    rule = smoke_profile.train.call_fraction
    jobs = scaling.chapter_jobs(sized, 0, 2, [0.2, rule, 0.8], [0, 1], confirm_fractions=[rule, 0.8], n_confirm_seeds=3)
    assert sorted(key[3] for key in jobs if key[:3] == ("fraction", 1, 0.8)) == [0, 1, 2]
    assert [key[3] for key in jobs if key[:3] == ("fraction", 1, 0.2)] == [0]
    folder = {key: run_dir(j.corpus, j.method, j.profile, j.seed) for key, j in jobs.items()}
    assert folder[("fraction", 0, rule, 1)] == folder[("size", 0, "lacy", 1)]
    pooled = scaling.fraction_runs({key: folder[key] for key in jobs}, 1)
    assert list(pooled) == ["0.2", f"{rule:.1f}", "0.8"] and [len(v) for v in pooled.values()] == [1, 3, 3]
    assert pooled["0.8"] == [folder[("fraction", 1, 0.8, s)] for s in (0, 1, 2)]
    with pytest.raises(ValueError, match="not among the swept fractions"):
        scaling.chapter_jobs(sized, 0, 2, [0.2, rule], [0], confirm_fractions=[0.8], n_confirm_seeds=3)
    with pytest.raises(ValueError, match="n_confirm_seeds must be >= 1"):
        scaling.chapter_jobs(sized, 0, 2, [0.2, rule], [0], confirm_fractions=[rule], n_confirm_seeds=0)


def test_chapter_3_trains_the_variants_into_the_folders_chapter_7_reads(smoke_profile):
    """Chapter 3 calls variant_jobs with its own profile; chapter 7 must find those runs, not train new ones."""
    from lacy.train.run import run_dir

    mine = scaling.variant_jobs(smoke_profile, [0, 1, 2])
    theirs = scaling.chapter_jobs(scaling.sized_profiles(smoke_profile), 0, 2, [0.2], [0], n_variant_seeds=3)
    assert set(mine) == {(v, s) for v in ("lacy_adaptive", "gate") for s in (0, 1, 2)}
    for key, job in mine.items():
        other = theirs[key]
        assert run_dir(job.corpus, job.method, job.profile, job.seed) == run_dir(other.corpus, other.method, other.profile, other.seed)


def test_frontier_points_name_each_kind_and_keep_one_slm_alone_per_method_across_helpers():
    from lacy.plots import HELPER_ALONE

    sweep = pd.DataFrame({
        "helper": ["doc", "doc", "doc", "lm", "lm", "lm"],
        "method": ["lacy", "lacy", HELPER_ALONE, "lacy", "lacy", HELPER_ALONE],
        "target_rate": [0.0, 0.22, 1.0, 0.0, 0.22, 1.0],
        "flops_per_token": [1.0, 2.0, 3.0, 1.0, 5.0, 9.0], "precision": [0.1] * 6, "recall": [0.2] * 6})
    one = scaling.frontier_points(sweep[sweep["helper"] == "lm"])
    assert list(one["kind"]) == ["SLM alone", "cascade (22%)", "helper alone"] and list(one["label"]) == ["lacy", "lacy", "helper"]
    many = scaling.frontier_points(sweep, by_helper=True)
    assert list(zip(many["kind"], many["label"])) == [
        ("SLM alone", "lacy"), ("cascade, doc (22%)", "lacy"), ("helper alone", "doc"),
        ("cascade, lm (22%)", "lacy"), ("helper alone", "lm")]


def test_best_fractions_say_when_one_seed_cannot_rank():
    from lacy.evaluate.grid import BudgetGrid

    def summary(supported):
        return {"subjects": [{"subject": f"p{i}", "stated": 4, "supported": s, "kb_facts": 6, "recalled": s, "tier": "t"}
                             for i, s in enumerate(supported)]}

    grid = BudgetGrid(pd.DataFrame({"helper": ["lm", "lm"], "method": ["0.6", "0.8"], "n_seeds": [1, 1]}), pd.DataFrame(), {},
                      {("lm", "0.6"): summary([1, 2, 1, 2]), ("lm", "0.8"): summary([3, 4, 3, 4])})
    delegation = pd.DataFrame({"size": ["58K", "58K"], "method": ["0.6", "0.8"], "call_fraction": [0.6, 0.8],
                               "precision_x_recall": [0.1, 0.3], "call_rate": [0.2, 0.1]})
    best, lines = scaling.best_fractions(delegation, {"58K": grid})
    assert best["method"].tolist() == ["0.8"] and "not a ranking" in lines[0] and "`0.8` is ahead of `0.6`" in lines[0]
    grid.table["n_seeds"] = 3
    assert "not a ranking" not in scaling.best_fractions(delegation, {"58K": grid})[1][0]
    pointer = scaling.best_fractions(delegation, {"58K": grid}, confirmed=[0.6, 0.8])[1][0]
    assert "among the confirmed fractions below" in pointer and "is ahead of" not in pointer  # said once, by confirmed_fractions
    confirmed = scaling.confirmed_fractions(delegation, {"58K": grid}, [0.6, 0.8])
    assert len(confirmed) == 1 and confirmed[0].startswith("**58K**, 0.8 (precision × recall 0.300, achieved call rate 10.0%; 0.6: 0.100, 20.0%)")
    assert "`0.8` is ahead of `0.6`" in confirmed[0] and "not a ranking" not in confirmed[0]
    with pytest.raises(ValueError, match=r"fractions \['0.4'\] were not swept at 58K"):
        scaling.confirmed_fractions(delegation, {"58K": grid}, [0.4])
    assert scaling.confirmed_fractions(delegation.iloc[1:], {"58K": grid}, []) == []  # nothing confirmed: the rule need not be swept
