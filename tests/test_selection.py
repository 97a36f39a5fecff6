"""Selection rules: padding never selected, exact and matched counts, deterministic ties, granularity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lacy.profiles import METHODS
from lacy.train.selection import (
    SELECTION_RULES,
    exact_judge,
    greedy_without_call,
    lacy_counts,
    reference_judge,
    select_judge,
    select_lacy,
    select_lacy_adaptive,
    select_random,
    select_rho,
    select_rho_excess,
    top_k_mask,
)

CALL = 4
MATCHED_TO_LACY = ("loss", "rho", "rho_excess", "random")  # exactly lacy's count


def make_batch(seed: int, batch: int = 4, length: int = 16, fact_rate: float = 0.3, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(batch, length, dtype=torch.bool)
    for row in range(batch):  # padding at the end of some rows, as in the last packed window
        pad = int(torch.randint(0, length // 2 + 1, (1,), generator=g))
        if pad:
            valid[row, -pad:] = False
    fact = torch.rand(batch, length, generator=g) < fact_rate
    loss = torch.randint(0, 3, (batch, length), generator=g).float() if ties else torch.rand(batch, length, generator=g) * 5
    loss[~valid] = 100.0  # padding has large garbage losses: it must still never be selected
    ref_loss = torch.rand(batch, length, generator=g) * 5
    unacceptable = torch.rand(batch, length, generator=g) < 0.5
    return dict(loss=loss, valid=valid, fact=fact, ref_loss=ref_loss, unacceptable=unacceptable)


def apply(method: str, b: dict, granularity: str = "batch", fraction: float = 0.6, seed: int = 0):
    return SELECTION_RULES[method](
        b["loss"], b["valid"], b["fact"], fraction=fraction, granularity=granularity,
        ref_loss=b["ref_loss"], unacceptable=b["unacceptable"], generator=torch.Generator().manual_seed(seed),
    )


def per_group(mask: torch.Tensor, granularity: str) -> list[int]:
    return [int(mask.sum())] if granularity == "batch" else mask.sum(1).tolist()


def test_registry_covers_every_method():
    assert set(SELECTION_RULES) == set(METHODS)


@pytest.mark.parametrize("n_fact", range(0, 40))
@pytest.mark.parametrize("fraction", [0.05, 0.15, 0.25, 0.29, 0.5, 0.6, 0.7, 1.0])
def test_lacy_counts_round_half_up(n_fact, fraction):
    valid = torch.ones(1, 40, dtype=torch.bool)
    fact = torch.arange(40).unsqueeze(0) < n_fact
    # The definition in exact rational arithmetic: floor(fraction * n + 1/2).
    from fractions import Fraction
    expected = math.floor(Fraction(str(fraction)) * n_fact + Fraction(1, 2))
    assert int(lacy_counts(valid, fact, fraction)) == expected


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("granularity", ["batch", "sequence"])
def test_masks_disjoint_and_padding_never_selected(method, granularity):
    b = make_batch(1)
    sel = apply(method, b, granularity)
    assert not (sel.call & sel.learn).any()
    assert not (sel.call & ~b["valid"]).any()
    assert not (sel.learn & ~b["valid"]).any()
    assert torch.equal(sel.ignored(b["valid"]) | sel.call | sel.learn, b["valid"])


@pytest.mark.parametrize("granularity", ["batch", "sequence"])
def test_lacy_selects_top_fraction_of_fact_losses(granularity):
    b = make_batch(2)
    sel = select_lacy(b["loss"], b["valid"], b["fact"], granularity=granularity)
    eligible = b["valid"] & b["fact"]
    assert not (sel.call & ~eligible).any()
    assert per_group(sel.call, granularity) == lacy_counts(b["valid"], b["fact"], 0.6, granularity).tolist()
    rows = [slice(None)] if granularity == "batch" else [slice(r, r + 1) for r in range(b["loss"].shape[0])]
    for r in rows:  # every converted fact has a loss >= every learned fact in its group
        called, learned = b["loss"][r][sel.call[r]], b["loss"][r][(eligible & ~sel.call)[r]]
        if called.numel() and learned.numel():
            assert called.min() >= learned.max()


@pytest.mark.parametrize("method", MATCHED_TO_LACY)
@pytest.mark.parametrize("granularity", ["batch", "sequence"])
def test_matched_rules_convert_as_many_as_lacy(method, granularity):
    b = make_batch(3)
    lacy = apply("lacy", b, granularity)
    sel = apply(method, b, granularity)
    assert per_group(sel.call, granularity) == per_group(lacy.call, granularity)


def test_loss_rule_picks_highest_losses_regardless_of_facts():
    b = make_batch(4)
    sel = apply("loss", b)
    called, learned = b["loss"][sel.call], b["loss"][sel.learn]
    assert called.min() >= learned.max()


def test_rho_delegates_facts_the_reference_also_cannot_predict():
    b = make_batch(5)
    sel = apply("rho", b)
    assert not (sel.call & ~(b["valid"] & b["fact"])).any()  # facts only, like lacy
    eligible = b["valid"] & b["fact"]
    assert b["ref_loss"][sel.call].min() >= b["ref_loss"][eligible & ~sel.call].max()
    # the SLM's own loss plays no part: only whose loss ranks the facts differs from lacy
    assert torch.equal(apply("rho", {**b, "loss": b["loss"].flip(-1)}).call, sel.call)
    with pytest.raises(ValueError, match="ref_loss"):
        select_rho(b["loss"], b["valid"], b["fact"])


def test_rho_excess_ablation_ranks_excess_loss():
    b = make_batch(5)
    sel = apply("rho_excess", b)
    excess = b["loss"] - b["ref_loss"]
    assert excess[sel.call].min() >= excess[sel.learn].max()
    with pytest.raises(ValueError, match="ref_loss"):
        select_rho_excess(b["loss"], b["valid"], b["fact"])


@pytest.mark.parametrize("granularity", ["batch", "sequence"])
def test_judge_selects_only_unacceptable_at_most_lacy_count(granularity):
    b = make_batch(6)
    sel = apply("judge", b, granularity)
    eligible = b["valid"] & b["unacceptable"]
    assert not (sel.call & ~eligible).any()
    k = lacy_counts(b["valid"], b["fact"], 0.6, granularity).tolist()
    available = per_group(eligible, granularity)
    assert per_group(sel.call, granularity) == [min(a, c) for a, c in zip(available, k)]
    with pytest.raises(ValueError, match="unacceptable"):
        select_judge(b["loss"], b["valid"], b["fact"])


def test_judge_with_few_unacceptable_selects_all_of_them():
    b = make_batch(7)
    b["unacceptable"] = torch.zeros_like(b["valid"])
    b["unacceptable"][0, 0] = True
    b["unacceptable"][-1, -1] = True  # padding: never eligible
    sel = apply("judge", b)
    assert sel.call.nonzero().tolist() == [[0, 0]]


def test_facts_standard_and_ignore_rules():
    b = make_batch(8)
    valid, fact = b["valid"], b["fact"]
    standard, facts = apply("standard", b), apply("facts", b)
    assert not standard.call.any() and torch.equal(standard.learn, valid)
    assert torch.equal(facts.call, valid & fact) and torch.equal(facts.learn, valid & ~fact)
    for ignore_rule, call_rule in (("ignore", "loss"), ("ignore_facts", "lacy")):
        ignored, called = apply(ignore_rule, b), apply(call_rule, b)
        assert not ignored.call.any()
        assert torch.equal(ignored.ignored(valid), called.call)


def test_lacy_adaptive_delegates_fact_tokens_above_the_threshold():
    loss = torch.tensor([[0.5, 2.0, 2.5, 3.0, 9.0], [4.0, 1.0, 2.1, 0.0, 7.0]])
    fact = torch.tensor([[True, True, True, False, True], [True, True, True, True, False]])
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])  # [0, 4]: padding
    sel = select_lacy_adaptive(loss, valid, fact, threshold=2.0)
    # strictly above 2.0 nats, facts only, never padding: [0, 2], [1, 0], [1, 2]
    assert sel.call.tolist() == [[False, False, True, False, False], [True, False, True, False, False]]
    assert torch.equal(sel.learn, valid & ~sel.call)
    assert int(select_lacy_adaptive(loss, valid, fact, threshold=0.0).call.sum()) == 6  # every fact with loss > 0
    assert not select_lacy_adaptive(loss, valid, fact, threshold=100.0).call.any()
    # the count is not matched to lacy's: it follows the losses, whatever the fraction
    assert torch.equal(select_lacy_adaptive(loss, valid, fact, fraction=0.1, threshold=2.0).call, sel.call)


@pytest.mark.parametrize("granularity", ["batch", "sequence"])
def test_lacy_adaptive_is_per_token_so_data_parallel_selects_what_one_process_does(granularity):
    """No batch statistic: selecting on each rank's rows gives the selection of the whole global batch."""
    b = make_batch(12, batch=6)
    whole = apply("lacy_adaptive", b, granularity)
    halves = [apply("lacy_adaptive", {k: v[rows] for k, v in b.items()}, granularity)
              for rows in (slice(0, 3), slice(3, 6))]
    assert torch.equal(torch.cat([h.call for h in halves]), whole.call)
    assert torch.equal(torch.cat([h.learn for h in halves]), whole.learn)


def test_lacy_adaptive_delegates_nothing_at_an_infinite_threshold():
    """The training module passes ``inf`` during the warm-up (``train.call_warmup``)."""
    b = make_batch(13)
    sel = select_lacy_adaptive(b["loss"], b["valid"], b["fact"], threshold=float("inf"))
    assert not sel.call.any() and torch.equal(sel.learn, b["valid"])


@pytest.mark.parametrize("threshold", [-0.1, float("nan")])
def test_lacy_adaptive_refuses_a_bad_threshold(threshold):
    b = make_batch(13)
    with pytest.raises(ValueError, match="train.call_threshold"):
        select_lacy_adaptive(b["loss"], b["valid"], b["fact"], threshold=threshold)


def test_ties_go_to_the_lower_flat_index():
    valid = torch.ones(2, 5, dtype=torch.bool)
    fact = torch.ones(2, 5, dtype=torch.bool)
    loss = torch.zeros(2, 5)
    sel = select_lacy(loss, valid, fact, fraction=0.5)  # k = floor(0.5 * 10 + 0.5) = 5
    assert sel.call.flatten().tolist() == [True] * 5 + [False] * 5
    per_sequence = select_lacy(loss, valid, fact, fraction=0.4, granularity="sequence")  # k = 2 per row
    assert per_sequence.call.tolist() == [[True, True, False, False, False]] * 2


@pytest.mark.parametrize("method", METHODS)
def test_rules_are_deterministic_with_ties(method):
    b = make_batch(9, ties=True)
    first, second = apply(method, b, seed=3), apply(method, b, seed=3)
    assert torch.equal(first.call, second.call) and torch.equal(first.learn, second.learn)


def test_random_depends_only_on_generator_seed():
    b = make_batch(10, batch=8, length=64)
    a, same, other = apply("random", b, seed=1), apply("random", b, seed=1), apply("random", b, seed=2)
    assert torch.equal(a.call, same.call) and not torch.equal(a.call, other.call)
    generator = torch.Generator().manual_seed(1)
    first = select_random(b["loss"], b["valid"], b["fact"], generator=generator)
    second = select_random(b["loss"], b["valid"], b["fact"], generator=generator)
    assert not torch.equal(first.call, second.call)  # the generator advances between steps


def test_unknown_granularity_and_bad_fraction_are_refused():
    b = make_batch(11)
    with pytest.raises(ValueError, match="granularity"):
        apply("lacy", b, granularity="document")
    with pytest.raises(ValueError, match="fraction"):
        apply("lacy", b, fraction=1.5)


def test_top_k_mask_never_selects_ineligible_even_with_extreme_scores():
    score = torch.tensor([[float("inf"), -float("inf"), 1.0, float("-inf")]])
    eligible = torch.tensor([[False, True, True, True]])
    mask = top_k_mask(score, eligible, torch.tensor([3]))
    assert mask.tolist() == [[False, True, True, True]]


# ---- property tests -----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), batch=st.integers(1, 4), length=st.integers(1, 12),
       fraction=st.floats(0.0, 1.0), granularity=st.sampled_from(["batch", "sequence"]),
       method=st.sampled_from(METHODS), ties=st.booleans())
def test_property_every_rule(seed, batch, length, fraction, granularity, method, ties):
    b = make_batch(seed, batch, length, ties=ties)
    sel = apply(method, b, granularity, fraction)
    valid = b["valid"]
    assert not (sel.call & sel.learn).any()
    assert not ((sel.call | sel.learn) & ~valid).any()
    k = lacy_counts(valid, b["fact"], fraction, granularity).tolist()
    if method in MATCHED_TO_LACY or method == "lacy":
        assert per_group(sel.call, granularity) == k
    if method in ("ignore", "ignore_facts"):
        assert not sel.call.any() and per_group(sel.ignored(valid), granularity) == k
    if method == "judge":
        assert all(c <= kk for c, kk in zip(per_group(sel.call, granularity), k))
    again = apply(method, b, granularity, fraction)
    assert torch.equal(sel.call, again.call) and torch.equal(sel.learn, again.learn)


# ---- judges -------------------------------------------------------------------------------------

def judge_batch():
    # vocab 6; greedy predictions (without <CALL>) per position: 1, 2, 3
    logits = torch.full((1, 3, 6), -5.0)
    logits[0, 0, CALL] = 9.0  # <CALL> is the argmax here but must be excluded
    logits[0, 0, 1] = 3.0
    logits[0, 1, 2] = 3.0
    logits[0, 2, 3] = 3.0
    batch = {
        "targets": torch.tensor([[1, 5, 5]]),
        "valid": torch.tensor([[True, True, True]]),
        "forced": torch.tensor([[True, True, False]]),
        "ref_topk": torch.tensor([[[1, 0], [2, 5], [5, 0]]]),
    }
    return batch, logits


def test_greedy_excludes_call():
    _, logits = judge_batch()
    assert greedy_without_call(logits, CALL).tolist() == [[1, 2, 3]]


def test_exact_judge_marks_forced_mismatches():
    batch, logits = judge_batch()
    # pos 0 matches; pos 1 forced mismatch; pos 2 mismatch but not forced (an acceptable alternative).
    assert exact_judge(batch, logits, CALL).tolist() == [[False, True, False]]


def test_reference_judge_accepts_reference_top_k_alternatives():
    batch, logits = judge_batch()
    # pos 1: prediction 2 is in the reference's top-k -> acceptable; pos 2: 3 is not -> unacceptable.
    assert reference_judge(batch, logits, CALL).tolist() == [[False, False, True]]
    with pytest.raises(ValueError, match="ref_topk"):
        reference_judge({k: v for k, v in batch.items() if k != "ref_topk"}, logits, CALL)
