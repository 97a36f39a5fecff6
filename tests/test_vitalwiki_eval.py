"""The vitalwiki evaluation path on the real data: subject prompts, reference lookup, and reference-based
FactScore with dates and numbers written differently from the summary (hand-checked golden cases)."""

from __future__ import annotations

import pytest

from lacy.data import vitalwiki
from lacy.evaluate import run as evaluation
from lacy.evaluate.factscore import vitalwiki_factscore

# (subject, generation, [(atomic fact, supported)]) checked by hand against the real summaries.
GOLDEN = [
    ("Alexander II of Russia", "Alexander II became Emperor of Russia on March 2, 1855 and ruled until 1881 in Moscow.",
     # "March 2, 1855" matches the summary's "2 March 1855"; he died in 1881; Moscow is not in the summary.
     # spaCy en_core_web_sm labels "Emperor" GPE here: a decomposition quirk the golden file records.
     [("Emperor", True), ("March 2, 1855", True), ("1881", True), ("Moscow", False)]),
    ("Charles Lindbergh", "On May 21, 1927 Lindbergh flew 3600 miles from New York to Paris, the 1st nonstop flight, in 20 hours.",
     # "3600 miles" matches "3,600 miles"; the summary says "May 20–21, 1927", so "21 May 1927" does not occur
     # (a stricter metric than a human judge); "20" occurs there, so it counts although the claim is wrong.
     [("May 21, 1927", False), ("3600 miles", True), ("New York", True), ("Paris", True), ("the 1st", False), ("20", True)]),
    ("Bing Crosby", "Bing Crosby made over seventy films and recorded more than 1600 songs.",
     # numbers are not converted between words and digits: "seventy" is not "70".
     [("seventy", False), ("more than 1600", True)]),
    ("Pierre Curie", "Pierre Curie was a French physicist who shared the 1903 Nobel Prize in Physics with Marie Curie.",
     # "Pierre Curie" is the subject (no fact), "Marie Curie" is another person and a fact.
     [("French", True), ("1903", True), ("Nobel Prize in Physics", True), ("Marie Curie", True)]),
]

PROMPTS = [("Alexander II of Russia", "Alexander II"), ("Charles Lindbergh", "Charles Augustus Lindbergh"),
           ("Pierre Curie", "Pierre Curie")]


@pytest.fixture(scope="module")
def nlp():
    from lacy.data.annotate import load_spacy

    return load_spacy()


@pytest.fixture(scope="module")
def scorer(nlp):
    return vitalwiki_factscore(vitalwiki.summaries(), nlp)


@pytest.mark.parametrize("subject, generation, facts", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_reference_factscore_golden(scorer, subject, generation, facts):
    verdicts = scorer.verdicts(subject, generation)
    assert [(v.fact.text, v.supported) for v in verdicts] == facts
    result = scorer.score([(subject, generation)])
    supported = sum(ok for _, ok in facts)
    assert result.rows[0]["supported"] == supported and result.rows[0]["stated"] == len(facts)


@pytest.mark.parametrize("title, prompt", PROMPTS)
def test_subject_prompts_of_real_biographies(nlp, title, prompt):
    article = next(a for a in vitalwiki.people() if a.title == title)
    assert vitalwiki.prompt_for(article, nlp) == prompt
    assert article.summary.startswith(prompt)


def test_reference_lookup_is_the_articles_own_summary(smoke_profile):
    references = evaluation.reference_documents("vitalwiki", smoke_profile, 0)
    summaries = vitalwiki.summaries()
    for title, _ in PROMPTS:
        assert references[title] == [summaries[title]]
    assert references["Charles Lindbergh"][0].startswith("Charles Augustus Lindbergh was an American aviator")


def test_unknown_subject_is_refused_with_a_clear_error(scorer):
    with pytest.raises(KeyError, match="no reference summary for subject 'Nobody Atall'"):
        scorer.score([("Nobody Atall", "He was born in 1900.")])


def test_proxy_audit_finds_both_failure_kinds_on_a_real_biography():
    from lacy.data.annotate import FactAnnotator
    from lacy.data.proxy_audit import WORD_COLUMNS, proxy_failures, proxy_words

    ada = [a for a in vitalwiki.people() if a.title == "Ada Lovelace"]
    words = proxy_words(FactAnnotator(), ada)
    assert list(words.columns) == list(WORD_COLUMNS)
    assert words["subject"].eq("Ada Lovelace").all() and not words["word"].isin([",", ".", "'"]).any()
    mathematician = words[words["word"] == "mathematician"].iloc[0]
    assert not mathematician["flagged"] and mathematician["pos"] == "NOUN" and mathematician["first_sentence"]
    assert words[words["word"] == "Lovelace"]["flagged"].all() and words[words["word"] == "Lovelace"]["subject_name"].all()
    failures = proxy_failures(words)
    assert {"mathematician", "writer"} <= set(failures["missed nouns"]["word"])
    assert set(failures["flagged name"]["word"]) == {"ada", "lovelace"}
    assert "first" in set(failures["flagged counting"]["word"])
