"""Batched cascade decoding: every row of a batch is the generation it gets alone (greedy), for every
policy, both hand-off modes and every kind of helper; budget policies keep no state across subjects."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lacy.cascade.decoder import CascadeDecoder, naive_generate
from lacy.cascade.helpers import DocumentHelper, LMHelper, encode_text
from lacy.cascade.hf import BatchedLM
from lacy.cascade.policies import POLICIES, build_policy
from lacy.data.tokenizer import train_tokenizer
from test_helpers import DOCUMENTS, SENTENCES, foreign_llama, foreign_tokenizer, tiny_llama

# Prompts of different lengths (left padding) about subjects the document helper knows, or not.
PROMPTS = ["Alice Martin was born in", "Chen Wei studied law at the University of", "Dana", "Bruno Keller works as a",
           "Alice Martin studied", "Chen Wei was born in Oslo in 1935, studied"]
SUBJECTS = ["Alice Martin", "Chen Wei", None, "Bruno Keller", "Alice Martin", "Chen Wei"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SENTENCES, 400)


@pytest.fixture(scope="module")
def slm(tokenizer):
    return tiny_llama(tokenizer, d_model=32, seed=0)


@pytest.fixture(scope="module")
def helpers(tokenizer):
    tok = foreign_tokenizer()
    return {
        "shared": LMHelper(tiny_llama(tokenizer, d_model=48, n_layer=2, seed=1), tokenizer, name="shared"),
        "foreign": LMHelper(foreign_llama(tok), tok, name="foreign"),
        "doc": DocumentHelper(DOCUMENTS),
    }


@pytest.fixture(scope="module")
def calibration(slm, tokenizer):
    """P(<CALL>) of the SLM alone on the prompts: the warm start of budget and threshold policies."""
    alone = CascadeDecoder(slm, tokenizer, None, build_policy("threshold", tau=float("inf")), max_new_tokens=24)
    return np.concatenate([g.p_call for g in alone.generate_many(PROMPTS)])


@pytest.fixture(scope="module")
def argmax_bias(slm, tokenizer, calibration):
    """A <CALL> logit bias with which the random SLM's <CALL> is the argmax at about half of its steps."""
    alone = CascadeDecoder(slm, tokenizer, None, build_policy("argmax"), max_new_tokens=24, call_logit_bias=0.0)
    with torch.inference_mode():
        margins = [float((logits.max() - logits[alone.call_id]))
                   for g in alone.generate_many(PROMPTS)
                   for logits in slm(input_ids=torch.tensor([encode_text(tokenizer, g.prompt) + g.token_ids])).logits[0]]
    return float(np.median(margins))


def policy(name: str, calibration: np.ndarray):
    return build_policy(name, budget=0.3, calibration=calibration)


def decode(slm, tokenizer, helper, name, calibration, batch_size, handoff, prompts=PROMPTS, subjects=SUBJECTS, bias=None):
    decoder = CascadeDecoder(slm, tokenizer, helper, policy(name, calibration), max_new_tokens=14, handoff=handoff,
                             batch_size=batch_size, call_logit_bias=bias)
    return decoder.generate_many(prompts, subjects)


def outputs(generations):
    return [(g.token_ids, g.text, g.spans, g.call_positions, g.n_calls, g.unresolved_calls, g.slm_tokens, g.helper_tokens)
            for g in generations]


@pytest.mark.parametrize("handoff", ["word", "token"])
@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("helper_name", ["shared", "foreign", "doc"])
def test_batched_generations_equal_batch_of_one(slm, tokenizer, helpers, calibration, argmax_bias, helper_name, name, handoff):
    bias = argmax_bias if name == "argmax" else None  # so that the random SLM's <CALL> is sometimes its top token
    one = decode(slm, tokenizer, helpers[helper_name], name, calibration, 1, handoff, bias=bias)
    many = decode(slm, tokenizer, helpers[helper_name], name, calibration, 4, handoff, bias=bias)  # a full and a partial batch
    assert outputs(many) == outputs(one)
    for a, b in zip(many, one):
        np.testing.assert_allclose(a.p_call, b.p_call, rtol=1e-5, atol=1e-7)
    assert 0 < sum(g.n_calls for g in one) < sum(len(g.p_call) for g in one)


@pytest.mark.parametrize("n_rows", [1, 3, 8])  # 8 rows: the 2-3 that move are gathered, not read with the idle ones
def test_each_row_of_the_cache_holds_what_its_ids_alone_give(slm, n_rows):
    """Rows that grow unevenly, forget their tail and idle: after each step, every moving row's logits and
    every row's cached keys and values are those of a fresh one-row forward over the row's ids."""
    rng = random.Random(n_rows)
    lm = BatchedLM(slm, n_rows)
    vocab = slm.config.vocab_size
    with torch.inference_mode():
        for step in range(12):
            moving = rng.sample(range(n_rows), max(1, min(n_rows, rng.choice([1, 2, 3, n_rows]))))
            for row in moving:
                if lm.ids[row] and step % 3 == 2:
                    lm.forget(row, rng.randrange(len(lm.ids[row])))
            new = [[rng.randrange(4, vocab) for _ in range(rng.choice([1, 1, 2, 7]))] if row in moving else []
                   for row in range(n_rows)]
            logits = lm.extend(new)
            for row in moving:
                alone = slm(input_ids=torch.tensor([lm.ids[row]]), use_cache=True)
                torch.testing.assert_close(logits[row], alone.logits[0, -1].float(), rtol=1e-4, atol=1e-5)
                for mine, fresh in zip(lm.cache.layers, alone.past_key_values.layers):
                    for buffer, tensor in zip(mine.buffers, (fresh.keys, fresh.values)):
                        torch.testing.assert_close(buffer[row, :, : len(lm.ids[row])], tensor[0], rtol=1e-4, atol=1e-5)


def test_batched_cascade_matches_the_naive_loop(slm, tokenizer, helpers, calibration):
    batched = decode(slm, tokenizer, helpers["foreign"], "budget", calibration, len(PROMPTS), "word")
    naive = [naive_generate(slm, tokenizer, helpers["foreign"], policy("budget", calibration), p, s, max_new_tokens=14)
             for p, s in zip(PROMPTS, SUBJECTS)]
    assert outputs(batched) == outputs(naive)


def test_sampling_rows_use_their_own_seeded_generator(slm, tokenizer, helpers, calibration):
    options = dict(max_new_tokens=16, temperature=1.0, seed=3)
    one = CascadeDecoder(slm, tokenizer, helpers["shared"], policy("budget", calibration), batch_size=1, **options)
    many = CascadeDecoder(slm, tokenizer, helpers["shared"], policy("budget", calibration), batch_size=3, **options)
    assert outputs(many.generate_many(PROMPTS)) == outputs(one.generate_many(PROMPTS))


@pytest.mark.parametrize("batch_size", [1, 4])
def test_budget_policy_gives_the_same_generation_in_any_subject_order(slm, tokenizer, helpers, calibration, batch_size):
    order = list(range(len(PROMPTS)))
    random.Random(0).shuffle(order)
    forward = decode(slm, tokenizer, helpers["shared"], "budget", calibration, batch_size, "word")
    shuffled = decode(slm, tokenizer, helpers["shared"], "budget", calibration, batch_size, "word",
                      [PROMPTS[i] for i in order], [SUBJECTS[i] for i in order])
    assert order != sorted(order)
    assert outputs([shuffled[order.index(i)] for i in range(len(PROMPTS))]) == outputs(forward)


def test_budget_policy_starts_every_generation_from_its_warm_state(calibration):
    recipe = build_policy("budget", budget=0.3, calibration=calibration)
    first = recipe.start()
    decisions = [first.decide(p, False) for p in (0.9, 0.8, 0.7)]
    second = recipe.start()
    assert second.observed == sorted(calibration.tolist()) and second.n_decisions == 0
    assert [second.decide(p, False) for p in (0.9, 0.8, 0.7)] == decisions
    assert recipe.n_decisions == 0  # the recipe itself is untouched


def test_batch_size_must_be_positive(slm, tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        CascadeDecoder(slm, tokenizer, None, build_policy("argmax"), batch_size=0)


@pytest.mark.slow
def test_cascade_bench_reports_every_ratio():
    from lacy.bench.cascade import TARGETS, run

    result = run(profile="smoke", new_tokens=8, n_prompts=1, repeats=1, realistic=False)
    sizes, batched = result["profile_sizes"], result["batched_profile_sizes"]
    assert result["gemm_peak_flops"] > 0 and result["machine"]["dtype"] == "float32" and result["targets"] == TARGETS
    assert sizes["size_ratio"] == pytest.approx(sizes["helper_parameters"] / sizes["slm_parameters"])
    assert sizes["ratio_to_mixture_bound"] == pytest.approx(sizes["cascade_ms_per_token"] / sizes["mixture_bound_ms_per_token"])
    assert sizes["mixture_bound_ms_per_token"] >= sizes["mixture_bound_without_handoff_ms_per_token"]
    assert batched["identical_outputs"] and batched["batched_speedup"] > 0 and batched["batch_size"] == 32
    assert batched["repeats"] == 1


def test_width_groups_cover_every_row_once_at_least_cost():
    from itertools import combinations

    from lacy.cascade.hf import width_groups

    def cost(groups, widths, fixed):
        return sum(fixed + len(g) * max(widths[i] for i in g) for g in groups)

    assert width_groups([1] * 32, 128) == [list(range(32))]  # equal widths: one forward
    assert width_groups([88] + [1] * 31, 128) == [[0], list(range(1, 32))]  # a long backlog is read on its own
    rng = random.Random(0)
    for _ in range(30):
        widths, fixed = [rng.choice([1, 2, 5, 20, 90]) for _ in range(rng.randint(1, 7))], rng.choice([0, 16, 128])
        groups = width_groups(widths, fixed)
        assert sorted(i for g in groups for i in g) == list(range(len(widths)))
        order = sorted(range(len(widths)), key=lambda i: -widths[i])
        best = min(cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))], widths, fixed)
                   for k in range(len(order)) for cuts in combinations(range(1, len(order)), k))
        assert cost(groups, widths, fixed) == best


@pytest.mark.parametrize("forward_cost_tokens", [0, 10_000])  # every width apart, or all rows in one forward
def test_reading_rows_in_width_groups_changes_no_generation(slm, tokenizer, helpers, calibration, forward_cost_tokens, monkeypatch):
    one = decode(slm, tokenizer, helpers["shared"], "budget", calibration, 1, "word")
    monkeypatch.setattr(BatchedLM, "forward_cost_tokens", forward_cost_tokens)
    many = decode(slm, tokenizer, helpers["shared"], "budget", calibration, len(PROMPTS), "word")
    assert outputs(many) == outputs(one)


def test_sampling_never_draws_a_banned_id_and_top_p_keeps_the_head():
    from lacy.cascade.decoder import sample_top_p

    logits = np.array([2.0, -np.inf, 1.0, 0.5, -np.inf], dtype=np.float32)
    rng = np.random.default_rng(0)
    draws = [sample_top_p(logits, 1.0, 1.0, rng) for _ in range(2000)]
    assert set(draws) == {0, 2, 3}
    assert np.mean(np.array(draws) == 0) == pytest.approx(np.exp(2) / (np.exp(2) + np.exp(1) + np.exp(0.5)), abs=0.04)
    assert {sample_top_p(logits, 1.0, 0.5, rng) for _ in range(200)} == {0}  # the top id alone holds half the mass
