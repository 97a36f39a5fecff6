"""Evaluation orchestration: subjects, calibrated thresholds, evaluate/sweep/generate, the leakage probe."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lacy.data.tokenizer import train_tokenizer
from lacy.evaluate import run as evaluation
from lacy.evaluate.leakage import leakage_generations, leakage_probe
from lacy.profiles import get_profile

EVALUATE_KEYS = {"factscore", "respond_ratio", "facts_per_response", "call_rate", "unresolved_calls", "helper", "policy",
                 "tau", "budget", "n_subjects", "seconds", "variant", "by_frequency", "n_calls", "slm_tokens",
                 "helper_tokens", "method", "precision", "recall", "supported_per_response", "factscore_gamma10",
                 "by_tier", "ci95", "subjects", "seed"}


# -- calibrated thresholds ---------------------------------------------------------------------------


def test_thresholds_endpoints_and_achieved_rates():
    probs = np.random.default_rng(0).beta(0.5, 3.0, 5000)
    rates = (0.0, 0.1, 0.22, 0.5, 0.8, 1.0)
    taus = evaluation.thresholds_for_rates(probs, rates)
    assert list(taus) == list(rates)
    assert taus[0.0] == math.inf and taus[1.0] == 0.0
    for rate, tau in taus.items():
        assert (probs >= tau).mean() == pytest.approx(rate, abs=1e-3)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12, unique=True))
def test_thresholds_non_increasing_in_rate(probs, rates):
    taus = evaluation.thresholds_for_rates(probs, sorted(rates))
    values = [taus[r] for r in sorted(rates)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert all(0.0 <= t <= 1.0 or t == math.inf for t in values)


def test_thresholds_refuse_bad_input():
    with pytest.raises(ValueError, match="calibration"):
        evaluation.thresholds_for_rates([], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.thresholds_for_rates([0.1, 0.2], [1.5])


# -- subjects and reference documents ----------------------------------------------------------------


def test_subjects_deterministic_and_stratified(smoke_datamodule):
    profile = get_profile("smoke", {"eval.n_subjects": "10"})
    world = smoke_datamodule.world
    chosen = evaluation.subjects("synthbio", profile, 0, world)
    assert chosen == evaluation.subjects("synthbio", profile, 0, world)
    assert chosen != evaluation.subjects("synthbio", profile, 1, world)
    assert len(chosen) == 10 and len({s.name for s in chosen}) == 10
    counts = {tier: [s.frequency for s in chosen].count(tier) for tier in world.tiers}
    assert max(counts.values()) - min(counts.values()) <= 1  # spread evenly over the tiers (smoke: 3, 6, 12, 30 people)
    assert [s.frequency for s in chosen] == sorted((s.frequency for s in chosen), key=world.tiers.index)
    train_subjects = {d.subject for d in smoke_datamodule.documents("train")}
    for s in chosen:
        assert s.prompt == s.name and s.name in train_subjects
        assert s.frequency == world.person(s.name).tier and s.n_docs == world.person(s.name).n_docs
    labels = evaluation.frequency_labels([1, 5, 3, 9, 2, 2, 7, 0, 4, 8, 6])  # vitalwiki's split: top decile "frequent"
    assert labels.count("frequent") == math.ceil(0.1 * 11) == 2 and labels[3] == labels[9] == "frequent"


def test_stratified_sample_fills_in_for_a_stratum_that_runs_out():
    from lacy.evaluate.subjects import _stratified_sample

    labels = ["a"] * 2 + ["b"] * 10 + ["c"] * 10
    picked = _stratified_sample(labels, [True] * len(labels), 9, seed=0, strata=("a", "b", "c"))
    assert [labels[i] for i in picked] == ["a", "a", "b", "b", "b", "b", "c", "c", "c"]
    assert _stratified_sample(labels, [True] * len(labels), 9, seed=0, strata=("a", "b", "c")) == picked


def test_vitalwiki_subjects_are_trained_people_with_prompts(smoke_profile):
    from lacy.data import vitalwiki

    profile = get_profile("smoke", {"eval.n_subjects": "6"})
    chosen = evaluation.subjects("vitalwiki", profile, 0)
    trained = {d.subject for d in vitalwiki.documents(profile.data.vitalwiki_max_docs, profile.data.val_fraction, 0) if d.split == "train"}
    people = {a.title: a for a in vitalwiki.people()}
    assert len(chosen) == 6 and all(s.name in trained and s.name in people for s in chosen)
    assert all(s.prompt and people[s.name].summary.startswith(s.prompt) or s.prompt == s.name for s in chosen)
    assert {s.frequency for s in chosen} <= {"frequent", "rare"}
    refs = evaluation.reference_documents("vitalwiki", profile, 0)
    assert all(refs[s.name] == [people[s.name].summary] for s in chosen)


def test_reference_documents_are_training_biographies(smoke_datamodule, smoke_profile):
    refs = evaluation.reference_documents("synthbio", smoke_profile, 0, smoke_datamodule.world)
    train = smoke_datamodule.documents("train")
    assert sum(len(v) for v in refs.values()) == len(train)
    for doc in train[:20]:
        assert doc.text in refs[doc.subject]
    val_only = {d.subject for d in smoke_datamodule.documents("val")} - {d.subject for d in train}
    assert not val_only & set(refs)


# -- the leakage probe on a model whose logits we control --------------------------------------------


class FixedLogits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids: torch.Tensor, **_):
        return type("Output", (), {"logits": self.logits[: input_ids.shape[0]]})()


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return train_tokenizer(["Ada was born in Paris in 1815.", "Bob works at Acme in Rome."] * 5, vocab_size=300)


def _leakage_case(tokenizer):
    """Seven positions: 4 fact tokens (2 would call: one leaks), 2 non-fact (1 calls), 1 padding."""
    from lacy.data.tokenizer import call_token_id

    call = call_token_id(tokenizer)
    vocab = len(tokenizer)
    targets = torch.tensor([[10, 11, 12, 13, 14, 15, 16]])
    own = [10, 99, 12, 98, 14, 15, 16]  # the SLM's top non-<CALL> token per position
    calls = [True, True, False, False, True, False, True]  # <CALL> is the argmax
    logits = torch.zeros(1, 7, vocab)
    for t in range(7):
        logits[0, t, own[t]] = 3.0
        logits[0, t, call] = 5.0 + t / 10 if calls[t] else 1.0 + t / 10
    batch = {"input_ids": torch.zeros(1, 7, dtype=torch.long), "targets": targets,
             "valid": torch.tensor([[True] * 6 + [False]]),
             "gold": torch.tensor([[True, True, True, True, False, False, True]]),
             "gold_attribute": torch.tensor([[1, 2, 1, 2, 0, 0, 1]]),
             "doc_id": torch.tensor([[3, 3, 3, 3, 3, 3, 3]])}
    return FixedLogits(logits), batch


def test_leakage_probe_exact_numbers(tiny_tokenizer):
    model, batch = _leakage_case(tiny_tokenizer)
    summary, frame = leakage_probe(model, tiny_tokenizer, [batch], attribute_names={1: "birth_city", 2: "university"})
    assert summary["n_fact_tokens"] == 4 and summary["n_nonfact_tokens"] == 2
    assert summary["leakage_teacher_forced"] == pytest.approx(1 / 2)
    assert summary["kept_accuracy_teacher_forced"] == pytest.approx(1 / 2)
    assert summary["fact_accuracy_teacher_forced"] == pytest.approx(2 / 4)
    assert summary["call_rate_on_facts"] == pytest.approx(2 / 4)
    assert summary["call_rate_on_nonfacts"] == pytest.approx(1 / 2)
    assert frame["would_call"].tolist() == [True, True, False, False]
    assert frame["top1_correct"].tolist() == [True, False, True, False]
    assert frame["attribute"].tolist() == ["birth_city", "university", "birth_city", "university"]
    expected_p = torch.softmax(model.logits[0, :4], -1)[:, 4]
    np.testing.assert_allclose(frame["p_call"], expected_p.numpy(), rtol=1e-6)

    # with a threshold between the P(<CALL>) of positions 2 and 3, position 3 calls too
    tau = float((expected_p[2] + expected_p[3]) / 2)
    assert expected_p[3] > expected_p[2]
    summary, frame = leakage_probe(model, tiny_tokenizer, [batch], tau=tau)
    assert frame["would_call"].tolist() == [True, True, False, True]
    assert summary["leakage_teacher_forced"] == pytest.approx(1 / 3)
    assert summary["kept_accuracy_teacher_forced"] == pytest.approx(1 / 1)
    assert summary["call_rate_on_facts"] == pytest.approx(3 / 4)
    assert summary["fact_accuracy_teacher_forced"] == pytest.approx(2 / 4)


def test_leakage_probe_never_calling_model(tiny_tokenizer):
    model, batch = _leakage_case(tiny_tokenizer)
    model.logits[..., 4] = -20.0
    summary, _ = leakage_probe(model, tiny_tokenizer, [batch])
    assert summary["leakage_teacher_forced"] is None
    assert summary["call_rate_on_facts"] == 0.0
    assert summary["kept_accuracy_teacher_forced"] == summary["fact_accuracy_teacher_forced"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="fact_flag"):
        leakage_probe(model, tiny_tokenizer, [batch], fact_flag="oracle")


# -- evaluation of a trained smoke model --------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_profile, cache_root):
    """A tiny ``lacy`` run trained with the smoke profile (seconds)."""
    from lacy.train.run import get_or_train

    return get_or_train("synthbio", "lacy", smoke_profile, 0, root=tmp_path_factory.mktemp("runs"), cache_root=cache_root,
                        progress=False)


def test_evaluate_returns_every_key_in_range(smoke_run, smoke_profile, cache_root):
    run = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=cache_root)
    summary, frame = run.summary(), run.frame()
    assert EVALUATE_KEYS <= set(summary)
    assert summary["n_subjects"] == smoke_profile.eval.n_subjects == len(frame)
    assert summary["policy"] == "budget" and summary["budget"] == smoke_profile.eval.budget and summary["helper"] == "doc"
    assert summary["method"] == "lacy" and summary["variant"]
    assert 0.0 <= summary["call_rate"] <= 1.0 and 0.0 <= summary["respond_ratio"] <= 1.0
    assert summary["factscore"] is None or 0.0 <= summary["factscore"] <= 1.0
    assert set(summary["by_frequency"]) == set(summary["by_tier"]) == set(smoke_profile.world.tiers)  # one subject per tier
    for key in ("precision", "recall", "factscore_gamma10"):
        assert summary[key] is None or 0.0 <= summary[key] <= 1.0
        assert summary[key] is None or summary["ci95"][key] is None or summary["ci95"][key][0] <= summary[key] <= summary["ci95"][key][1]
    assert len(summary["subjects"]) == len(frame)
    assert [r["subject"] for r in summary["subjects"]] == frame["subject"].tolist()
    assert sum(r["stated"] for r in summary["subjects"]) == frame["stated"].sum()
    assert summary["call_rate"] == pytest.approx(frame["n_calls"].sum() / frame["slm_steps"].sum())
    assert summary["unresolved_calls"] == frame["unresolved_calls"].sum()
    assert (frame["marked"].str.replace("[[", "").str.replace("]]", "") == frame["text"]).all()
    assert json_safe(summary)
    # One prompt at a time gives the same generations as the profile's batches.
    one_by_one = smoke_profile.override({"eval.batch_size": 1})
    again = evaluation.evaluate(smoke_run, "synthbio", one_by_one, 0, cache_root=cache_root).summary()
    assert smoke_profile.eval.batch_size > 1
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in summary.items() if k != "seconds"}


def test_evaluate_with_retrieval_to_the_end_of_the_biography(smoke_run, smoke_profile, cache_root):
    from lacy.evaluate.metrics import generation_cap
    from lacy.evaluate.stats import compare

    auto = smoke_profile.override({"eval.max_new_tokens": "0"})
    ctx = evaluation.EvaluationContext.load(smoke_run, "synthbio", auto, 0, cache_root)
    train_texts = [d.text for d in ctx.world.documents(val_fraction=auto.data.val_fraction) if d.split == "train"]
    assert ctx.max_new_tokens == generation_cap(ctx.tokenizer, train_texts) > smoke_profile.eval.max_new_tokens
    retrieval = evaluation.evaluate(smoke_run, "synthbio", auto, 0, helper="retrieval", policy="threshold", tau=0.0,
                                    cache_root=cache_root).summary()
    oracle = evaluation.evaluate(smoke_run, "synthbio", auto, 0, helper="doc", policy="threshold", tau=0.0,
                                 cache_root=cache_root).summary()
    assert retrieval["helper"] == "retrieval" and retrieval["call_rate"] == 1.0
    comparison = compare(oracle, retrieval)
    assert comparison["n_subjects"] == smoke_profile.eval.n_subjects
    assert comparison["precision"]["diff"] is None or -1.0 <= comparison["precision"]["diff"] <= 1.0


def test_evaluate_accepts_a_built_helper(smoke_run, smoke_profile, cache_root):
    ctx = evaluation.EvaluationContext.load(smoke_run, "synthbio", smoke_profile, 0, cache_root)
    helper = ctx.helper("doc")
    assert ctx.helper(helper) is helper
    built = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, helper=helper, cache_root=cache_root).frame()
    by_spec = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, helper="doc", cache_root=cache_root).frame()
    pd.testing.assert_frame_equal(built.drop(columns="seconds"), by_spec.drop(columns="seconds"))


def json_safe(obj) -> bool:
    import json

    json.dumps(obj)
    return True


def test_evaluate_threshold_policy_endpoints(smoke_run, smoke_profile, cache_root):
    never = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, policy="threshold", tau=math.inf, cache_root=cache_root).summary()
    assert never["call_rate"] == 0 and never["helper_tokens"] == 0 and never["tau"] == math.inf and never["budget"] is None
    always = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, policy="threshold", tau=0.0, cache_root=cache_root).summary()
    assert always["call_rate"] == 1.0 and always["slm_tokens"] <= always["unresolved_calls"]


def test_threshold_calibrated_from_budget(smoke_run, smoke_profile, cache_root, smoke_datamodule):
    from lacy.train.model import load_model

    model, tokenizer = load_model(evaluation.model_folder(smoke_run))
    texts = evaluation.calibration_texts("synthbio", smoke_profile, 0, smoke_datamodule.world)
    val = {d.text for d in smoke_datamodule.documents("val")}
    assert len(texts) == min(smoke_profile.eval.calibration_docs, len(val)) and set(texts) <= val
    expected = evaluation.thresholds_for_rates(evaluation.calibration_probs(model, tokenizer, texts), [0.3])[0.3]
    summary = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, policy="threshold", budget=0.3, cache_root=cache_root).summary()
    assert summary["tau"] == pytest.approx(expected) and summary["budget"] == 0.3


def test_sweep_has_rates_and_endpoints(smoke_run, smoke_profile, cache_root):
    table = evaluation.sweep(smoke_run, "synthbio", smoke_profile, 0, cache_root=cache_root)
    assert isinstance(table, pd.DataFrame)
    assert table["target_rate"].tolist() == list(smoke_profile.eval.sweep_rates)
    assert {"target_rate", "tau", "factscore", "respond_ratio", "call_rate", "helper_tokens", "slm_tokens", "seconds",
            "flops_per_token", "method", "helper"} <= set(table.columns)
    first, last = table.iloc[0], table.iloc[-1]
    assert first["tau"] == math.inf and first["call_rate"] == 0 and first["helper_tokens"] == 0
    assert last["tau"] == 0.0 and last["call_rate"] == 1.0
    assert table["tau"].is_monotonic_decreasing
    assert (table["method"] == "lacy").all() and (table["helper"] == "doc").all()
    # the document helper is a lookup: the SLM alone sets the cost, 2·N FLOPs per SLM token run
    from lacy.train.model import count_parameters, load_model

    model, _ = load_model(evaluation.model_folder(smoke_run))
    assert first["flops_per_token"] >= 2 * count_parameters(model)


def test_generate_and_helper_errors(smoke_run, smoke_profile, cache_root):
    person = evaluation.subjects("synthbio", smoke_profile, 0)[0].name
    gen = evaluation.generate(smoke_run, "synthbio", smoke_profile, 0, helper="doc", policy="threshold", tau=0.0,
                              prompt=person, subject=None, max_new_tokens=5, cache_root=cache_root)
    assert gen.prompt == person and gen.n_calls == len(gen.p_call) >= 1
    with pytest.raises(ValueError, match="helper"):
        evaluation.generate(smoke_run, "synthbio", smoke_profile, 0, helper="nonsense", policy="argmax", prompt=person,
                            max_new_tokens=2, cache_root=cache_root)


def test_leakage_probe_and_generations_on_smoke_model(smoke_run, smoke_profile, cache_root, smoke_datamodule):
    from lacy.train.model import load_model

    model, tokenizer = load_model(evaluation.model_folder(smoke_run))
    summary, frame = leakage_probe(model, tokenizer, smoke_datamodule, max_windows=4)
    assert summary["n_fact_tokens"] == len(frame) > 0
    assert set(frame["attribute"]) <= set(smoke_datamodule.summary["attribute_codes"])
    assert set(frame["tier"]) <= set(get_profile("smoke").world.tiers) and frame["subject"].notna().all()
    for key in ("fact_accuracy_teacher_forced", "call_rate_on_facts", "call_rate_on_nonfacts"):
        assert 0.0 <= summary[key] <= 1.0
    assert set(summary["by_tier"]) == set(frame["tier"])
    for tier, rates in summary["by_tier"].items():
        part = frame[(frame["tier"] == tier) & ~frame["would_call"]]
        assert rates["kept_accuracy_teacher_forced"] == (part["top1_correct"].mean() if len(part) else None)
    run = leakage_generations(smoke_run, "synthbio", smoke_profile, 0, cache_root=cache_root)
    generated, frame = run.summary(), run.frame()
    assert generated["n_subjects"] == smoke_profile.eval.n_subjects == len(frame)
    assert (frame["n_calls"] == 0).all() and (frame["helper_tokens"] == 0).all()
    assert generated["precision"] is None or 0.0 <= generated["precision"] <= 1.0  # the generated leakage
    assert 0.0 <= generated["recall"] <= 1.0


def test_flops_per_token_counts_each_token_a_model_reads_once():
    from lacy.cascade.decoder import Generation
    from lacy.cascade.helpers import encode_text
    from lacy.evaluate.cascade_run import flops_per_token

    tokenizer = train_tokenizer(["Alice Martin was born in Paris in 1900.", "Chen Wei studied law."] * 20, 300)
    prompt, text = "Alice Martin was born in", " Paris in 1900."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    helper_part = len(" Paris in")

    def generation(spans, call_positions, helper_tokens):
        return Generation(prompt=prompt, text=text, spans=spans, p_call=[0.0] * len(ids), n_calls=len(call_positions),
                          unresolved_calls=0, slm_tokens=len(ids) - helper_tokens, helper_tokens=helper_tokens, seconds=0.0,
                          call_positions=call_positions, token_ids=ids)

    def read(upto: int) -> int:
        return len(encode_text(tokenizer, prompt + text[:upto]))

    # The helper wrote " Paris in" from one call at the start: it read the prompt and its own reply once.
    cascade = generation([(0, helper_part, "helper"), (helper_part, len(text), "slm")], [0], helper_tokens=3)
    assert flops_per_token(tokenizer, [cascade], 10, 100) == pytest.approx(
        (2 * 10 * (read(0) + len(ids)) + 2 * 100 * read(helper_part)) / len(ids))
    # The helper alone: no SLM, and the helper reads prompt + text once (its replies are not counted twice).
    alone = generation([(0, len(text), "helper")], list(range(0, len(text), 3)), helper_tokens=len(ids))
    assert flops_per_token(tokenizer, [alone], 10, 100, slm_reads=False) == pytest.approx(2 * 100 * read(len(text)) / len(ids))
    assert flops_per_token(tokenizer, [alone], 10, None) is None
