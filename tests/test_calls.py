"""Is a call worth it: helper words vs the SLM's own words at each call, checked against a reference."""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import pytest
import torch

from lacy.cascade.decoder import Generation
from lacy.data.tokenizer import call_token_id, train_tokenizer
from lacy.evaluate import calls
from lacy.evaluate.calls import CALL_COLUMNS, call_outcomes, call_value, helper_texts, slm_word, word_supported

SENTENCES = [f"{name} was born in {city} in {1900 + i} and lives in Oslo." for i, (name, city) in enumerate(
    (n, c) for n in ("Alice Martin", "Bruno Keller", "Chen Wei") for c in ("Paris", "Lyon", "Berlin", "Madrid"))]


class FavouriteTokenModel(torch.nn.Module):
    """Ranks ``<CALL>`` first and ``favourite`` second at every position, whatever the input."""

    def __init__(self, vocab_size: int, call_id: int, favourite: int) -> None:
        super().__init__()
        self.row = torch.zeros(vocab_size)
        self.row[favourite] = 5.0
        self.row[call_id] = 10.0
        self.device = torch.device("cpu")

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, -1).clone())


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SENTENCES, 320)


@pytest.fixture(scope="module")
def oslo_model(tokenizer):
    oslo = tokenizer(" Oslo", add_special_tokens=False)["input_ids"]
    assert len(oslo) == 1, "the test tokenizer should have merged ' Oslo' into one token"
    return FavouriteTokenModel(len(tokenizer), call_token_id(tokenizer), oslo[0])


def trace() -> Generation:
    """" was born in[[ Paris]][[,]] in[CALL, unresolved] 1900": calls at 12 and 18 answered (merged into
    one helper span), the call at 22 unresolved."""
    text = " was born in Paris, in 1900"
    return Generation(prompt="Alice Martin", text=text, spans=[(0, 12, "slm"), (12, 19, "helper"), (19, 27, "slm")],
                      p_call=[0.0] * 8, n_calls=3, unresolved_calls=1, slm_tokens=6, helper_tokens=2, seconds=0.0,
                      call_positions=[12, 18, 22])


def test_doctests_pass():
    assert doctest.testmod(calls).failed == 0


@pytest.mark.parametrize("word, reference, expected", [
    (" Paris", "Alice Martin was born in Paris.", True),
    (" paris.", "ALICE MARTIN WAS BORN IN PARIS", True),
    (" Zürich", "She moved to Zurich in 1990.", True),
    (" 1,200", "a town of 1200 people", True),
    (" 19th", "in the 19 century", True),
    (" Par", "born in Paris", False),  # whole words only
    (",", "born in Paris, France", False),  # normalises to nothing
    (" the", "the city", False),
    (None, "anything", False),
])
def test_word_supported(word, reference, expected):
    assert word_supported(word, reference) is expected


def test_helper_texts_split_merged_spans_and_mark_unresolved_calls():
    assert helper_texts(trace()) == [" Paris", ",", None]


def test_slm_word_bans_call_and_stops_at_the_word_boundary(tokenizer, oslo_model):
    assert slm_word(oslo_model, tokenizer, "Alice Martin was born in") == " Oslo"


def test_call_outcomes_compare_helper_and_slm_words(tokenizer, oslo_model):
    outcomes = call_outcomes(oslo_model, tokenizer, ["Alice Martin"], [trace()],
                             {"Alice Martin": "Alice Martin was born in Paris in 1900."})
    assert list(outcomes.columns) == list(CALL_COLUMNS)
    assert outcomes["helper_word"].tolist()[:2] == [" Paris", ","] and outcomes["helper_word"].isna().tolist() == [False, False, True]
    assert outcomes["slm_word"].tolist() == [" Oslo"] * 3
    assert outcomes["helper_supported"].tolist() == [True, False, False]
    assert outcomes["slm_supported"].tolist() == [False] * 3
    assert outcomes["context"].tolist() == ["Alice Martin was born in", "Alice Martin was born in Paris",
                                            "Alice Martin was born in Paris, in"]
    value = call_value(outcomes)
    assert value["calls"] == 3
    assert value["helper_only"] == pytest.approx(1 / 3) and value["neither"] == pytest.approx(2 / 3)
    assert value["unresolved"] == pytest.approx(1 / 3) and value["slm_only"] == 0.0


def test_call_outcomes_slm_supported_when_the_reference_has_its_word(tokenizer, oslo_model):
    outcomes = call_outcomes(oslo_model, tokenizer, ["Alice Martin"], [trace()],
                             {"Alice Martin": "Alice Martin was born in Oslo."})
    value = call_value(outcomes)
    assert outcomes["slm_supported"].all()
    assert value["slm_only"] == 1.0 and value["helper_only"] == 0.0


def test_call_outcomes_refuse_mismatched_inputs(tokenizer, oslo_model):
    with pytest.raises(ValueError, match="one subject per generation"):
        call_outcomes(oslo_model, tokenizer, [], [trace()], {})
    with pytest.raises(KeyError, match="no reference text"):
        call_outcomes(oslo_model, tokenizer, ["Nobody"], [trace()], {"Alice Martin": "x"})


def test_call_value_without_calls_is_nan():
    import math

    import pandas as pd

    value = call_value(pd.DataFrame(columns=list(CALL_COLUMNS)))
    assert value["calls"] == 0 and math.isnan(value["helper_supported"])
