"""The synthetic biography world: determinism, gold spans, exposure, the acceptability grammar, claims."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lacy.data import synthbio_vocab as vocab
from lacy.data.corpus import Document
from lacy.data.synthbio import (
    ATTRIBUTES,
    BIRTH_CUES,
    DATE_RE,
    TEMPLATES,
    WORD_RE,
    WORK_CUES,
    ExposureLaw,
    World,
)
from lacy.profiles import get_profile

HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=None)
def world(n_people: int = 200, seed: int = 0) -> World:
    return World.generate(n_people, seed=seed, max_docs_per_person=40)


@lru_cache(maxsize=None)
def docs(n_people: int = 200, seed: int = 0) -> tuple[Document, ...]:
    return tuple(world(n_people, seed).documents())


def corpus_digest(documents) -> str:
    h = hashlib.sha256()
    for d in documents:
        h.update(f"{d.doc_id}\x00{d.subject}\x00{d.split}\x00{d.text}\x00{d.facts}\x01".encode())
    return h.hexdigest()


# --- vocabularies and templates -----------------------------------------------------------------


def test_vocabulary_sizes_and_uniqueness():
    assert len(vocab.FEMALE_FIRST_NAMES) >= 200 and len(vocab.MALE_FIRST_NAMES) >= 200
    assert len(vocab.SURNAMES) >= 300 and len(vocab.TOWNS) >= 300 and len(vocab.MAJORS) >= 100
    assert len(vocab.UNIVERSITIES) >= 300 and len(vocab.EMPLOYERS) >= 300
    fields = [vocab.FEMALE_FIRST_NAMES, vocab.MALE_FIRST_NAMES, vocab.SURNAMES, vocab.TOWNS, vocab.UNIVERSITIES,
              vocab.MAJORS, vocab.EMPLOYERS]  # fmt: skip
    for values in fields:
        assert len(set(values)) == len(values)
    assert not set(vocab.FEMALE_FIRST_NAMES) & set(vocab.MALE_FIRST_NAMES)


def test_values_never_read_as_names_and_never_hold_a_period():
    names = set(vocab.FEMALE_FIRST_NAMES) | set(vocab.MALE_FIRST_NAMES) | set(vocab.SURNAMES)
    values = vocab.TOWNS + vocab.UNIVERSITIES + vocab.MAJORS + vocab.EMPLOYERS
    assert not names & set(values)
    assert not any("." in v for v in values)
    fields = [set(vocab.TOWNS), set(vocab.UNIVERSITIES), set(vocab.MAJORS), set(vocab.EMPLOYERS)]
    assert sum(map(len, fields)) == len(set().union(*fields))  # no value belongs to two fields


def test_every_vocabulary_value_is_extracted_as_its_own_field():
    """Longest match wins: "University of Ashford" is a university, not the town inside it."""
    w = world()
    for field, values in [("university", vocab.UNIVERSITIES), ("major", vocab.MAJORS), ("employer", vocab.EMPLOYERS),
                          ("city", vocab.TOWNS)]:  # fmt: skip
        for value in values:
            text = f"Then {value} again."
            claims = w.extract_claims(text)
            assert [(c.attribute, c.value, text[c.start : c.end]) for c in claims] == [(field, value, value)]


def test_templates():
    all_templates = [t for a in ATTRIBUTES for t in TEMPLATES[a]]
    assert set(TEMPLATES) == set(ATTRIBUTES)
    assert len(set(all_templates)) == len(all_templates)  # distinct, also across attributes
    for attribute in ATTRIBUTES:
        assert len(TEMPLATES[attribute]) >= 5
        for template in TEMPLATES[attribute]:
            assert template.count("{value}") == 1 and template.count("{subject}") == 1
            assert template.endswith(".") and template.count(".") == 1
    # openings shared across attributes give acceptable alternatives
    openings = {}
    for attribute in ATTRIBUTES:
        for template in TEMPLATES[attribute]:
            opening = " ".join(template.split()[:3])
            openings.setdefault(opening, set()).add(attribute)
    assert sum(len(attrs) > 1 for attrs in openings.values()) >= 3
    # town roles are decidable from cue words
    for template in TEMPLATES["birth_city"]:
        words = set(WORD_RE.findall(template.lower()))
        assert words & BIRTH_CUES and not words & WORK_CUES, template
    for template in TEMPLATES["employer_city"]:
        words = set(WORD_RE.findall(template.lower()))
        assert words & WORK_CUES and not words & BIRTH_CUES, template


# --- people and determinism ---------------------------------------------------------------------


def test_people_are_well_formed():
    w = world()
    names = [p.full_name for p in w.people]
    assert len(set(names)) == len(names)
    assert [p.pid for p in w.people] == list(range(len(w.people)))
    for p in w.people:
        pool = vocab.FEMALE_FIRST_NAMES if p.gender == "female" else vocab.MALE_FIRST_NAMES
        assert p.first_name in pool and p.last_name in vocab.SURNAMES
        assert p.pronoun == ("She" if p.gender == "female" else "He")
        assert p.birth_city in vocab.TOWNS and p.employer_city in vocab.TOWNS
        assert p.university in vocab.UNIVERSITIES and p.major in vocab.MAJORS and p.employer in vocab.EMPLOYERS
        assert DATE_RE.fullmatch(p.birth_date)
        assert w.kb[p.full_name] == {a: p.value(a) for a in ATTRIBUTES}
        assert w.person(p.full_name) is p
    with pytest.raises(KeyError, match="no person named 'Nobody Atall'"):
        w.person("Nobody Atall")
    with pytest.raises(KeyError, match="valid attributes"):
        w.people[0].value("height")


def test_same_seed_same_corpus_different_seed_different_corpus():
    a = World.generate(80, seed=5, max_docs_per_person=15).documents()
    b = World.generate(80, seed=5, max_docs_per_person=15).documents()
    c = World.generate(80, seed=6, max_docs_per_person=15).documents()
    assert corpus_digest(a) == corpus_digest(b)
    assert [d.text for d in a] != [d.text for d in c]


def test_corpus_is_identical_in_a_fresh_process_and_imports_no_torch():
    """Byte-identical across processes (no dependence on hash randomisation); no torch import."""
    code = (
        "import sys; from lacy.data.synthbio import World; from tests.test_synthbio import corpus_digest;"
        "print(corpus_digest(World.generate(80, seed=5, max_docs_per_person=15).documents()));"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root)
    out = out.stdout.split()
    assert out == [corpus_digest(World.generate(80, seed=5, max_docs_per_person=15).documents()), "False"]


def test_from_config_matches_generate():
    cfg = get_profile("smoke").world
    from_config = World.from_config(cfg, seed=3)
    generated = World.generate(cfg.n_people, 3, cfg.zipf_exponent, cfg.max_docs_per_person, cfg.min_docs_per_person)
    assert corpus_digest(from_config.documents()) == corpus_digest(generated.documents())


def test_generation_errors_are_clear():
    with pytest.raises(ValueError, match="n_people must be between 1 and"):
        World.generate(10**7)
    with pytest.raises(ValueError, match="min_docs <= max_docs"):
        World.generate(10, min_docs_per_person=5, max_docs_per_person=2)
    with pytest.raises(ValueError, match="val_fraction"):
        world().documents(val_fraction=1.5)
    twin = replace(world().people[1], pid=99, first_name=world().people[0].first_name,
                   last_name=world().people[0].last_name)  # fmt: skip
    with pytest.raises(ValueError, match="unique"):
        World([world().people[0], twin])


# --- documents ----------------------------------------------------------------------------------


def test_documents_gold_spans_and_structure():
    w, documents = world(), docs()
    assert [d.doc_id for d in documents] == list(range(len(documents)))
    assert len(documents) == sum(p.n_docs for p in w.people)
    for d in documents:
        person = w.person(d.subject)
        assert sorted(f.attribute for f in d.facts) == sorted(ATTRIBUTES)
        for f in d.facts:
            assert d.text[f.start : f.end] == person.value(f.attribute)
        sentences = d.text.split(". ")
        assert len(sentences) == len(ATTRIBUTES) and d.text.endswith(".")
        assert person.full_name in sentences[0]  # the first sentence names the person in full
        assert "  " not in d.text
    # different biographies of the same person paraphrase the same facts
    by_subject = {}
    for d in documents:
        by_subject.setdefault(d.subject, []).append(d.text)
    famous = max(by_subject.values(), key=len)
    assert len(set(famous)) > len(famous) // 2


def test_validation_split_is_seeded_and_sized():
    documents = docs()
    n_val = sum(d.split == "val" for d in documents)
    assert n_val == round(0.05 * len(documents))
    assert [d.split for d in world().documents()] == [d.split for d in documents]
    assert all(d.split == "train" for d in world().documents(val_fraction=0.0))


def test_exposure_is_heavy_tailed():
    w = World.generate(2000, seed=0)
    counts = np.array([p.n_docs for p in w.people])
    law = ExposureLaw(1.3, 200, 1)
    assert counts.tolist() == [law.n_docs(r) for r in range(1, 2001)]
    assert np.all(np.diff(counts) <= 0)  # people are listed in order of fame
    assert counts.max() == 200 and counts.min() == 1
    top_share = np.sort(counts)[::-1][:20].sum() / counts.sum()  # top 1% of people
    assert top_share > 0.1  # ten times their share of the population
    assert np.median(counts) <= 2


def test_card():
    w = world()
    card = w.card()
    counts = np.array([p.n_docs for p in w.people])
    assert card["n_people"] == len(w.people) and card["seed"] == 0
    assert card["n_documents"] == len(docs())
    assert card["docs_per_person"]["p50"] == np.median(counts)
    assert card["docs_per_person"]["p100"] == counts.max()
    assert card["templates_per_attribute"] == {a: len(TEMPLATES[a]) for a in ATTRIBUTES}
    assert card["vocabulary_sizes"]["birth_city"] == len(vocab.TOWNS)
    assert card["exposure"]["zipf_exponent"] == 1.3 and card["exposure"]["max_docs"] == 40
    md = w.card_markdown()
    assert md.startswith("# synthbio dataset card") and f"| major | {len(vocab.MAJORS)} | 6 |" in md


# --- acceptability ------------------------------------------------------------------------------


@HYPOTHESIS
@given(st.integers(0, 10**6))
def test_every_prefix_of_a_real_biography_is_valid(index):
    d = docs()[index % len(docs())]
    w = world()
    assert all(w.is_valid_prefix(d.subject, d.text[:k]) for k in range(len(d.text) + 1))
    assert not w.is_valid_prefix(d.subject, d.text + " ")  # a biography ends after its sixth sentence


@HYPOTHESIS
@given(st.integers(0, 10**6), st.sampled_from(ATTRIBUTES), st.integers(0, 10**6))
def test_a_corrupted_fact_is_invalid_where_it_diverges(index, attribute, donor_index):
    w, d = world(), docs()[index % len(docs())]
    person = w.person(d.subject)
    own_values = {person.value(a) for a in ATTRIBUTES}
    donors = [p.value(attribute) for p in w.people if p.value(attribute) not in own_values]
    wrong = donors[donor_index % len(donors)]
    span = next(f for f in d.facts if f.attribute == attribute)
    corrupted = d.text[: span.start] + wrong + d.text[span.end :]
    diverge = next(i for i, (a, b) in enumerate(zip(d.text + "\0", corrupted + "\0")) if a != b)
    assert w.is_valid_prefix(d.subject, corrupted[:diverge])
    assert not w.is_valid_prefix(d.subject, corrupted[: span.start + len(wrong) + 1])
    if span.start > 0 and d.text[span.start - 2] != ".":  # mid-sentence: the template already fixed the value
        assert not w.is_valid_prefix(d.subject, corrupted[: diverge + 1])
    assert not w.is_valid_prefix(w.people[(person.pid + 1) % len(w.people)].full_name, d.text[:40])


def test_next_word_options():
    w = world()
    for d in docs()[:15]:
        words = list(WORD_RE.finditer(d.text))
        for i, m in enumerate(words):
            options = w.next_word_options(d.subject, d.text[: m.start()])
            assert m.group() in options
            if i == 0 or words[i - 1].group() == ".":  # sentence starts: other facts, other subject forms
                assert len(options) >= 2
        assert w.next_word_options(d.subject, d.text) == {""}
        assert w.next_word_options(d.subject, d.text[: words[1].start() - 1] + "x") == set()
    person = w.people[0]
    opening = w.next_word_options(person.full_name, "")
    assert person.first_name in opening and "On" in opening and person.pronoun not in opening
    after = w.next_word_options(person.full_name, f"{person.full_name} was born")
    assert after == {"on", "in"}


@HYPOTHESIS
@given(st.integers(0, 10**6))
def test_forced_words_are_exactly_those_without_alternatives(index):
    w, d = world(), docs()[index % len(docs())]
    spans = w.forced_word_spans(d)
    assert [(s, e) for s, e, _ in spans] == [m.span() for m in WORD_RE.finditer(d.text)]
    for start, _, forced in spans:
        assert forced == (len(w.next_word_options(d.subject, d.text[:start])) == 1)


def test_forced_word_spans_mark_fact_values():
    w = world()
    n_forced = n_words = 0
    for d in docs()[:200]:
        spans = w.forced_word_spans(d)
        for fact in d.facts:
            inside = [forced for start, end, forced in spans if fact.start <= start and end <= fact.end]
            assert all(inside[1:])  # once a value has begun, the rest of it is forced
        sentence_starts = [forced for i, (_, _, forced) in enumerate(spans) if i and d.text[spans[i - 1][0]] == "."]
        assert not any(sentence_starts)
        n_forced += sum(forced for _, _, forced in spans)
        n_words += len(spans)
    assert 0.3 < n_forced / n_words < 0.95


def test_forced_word_spans_refuse_foreign_text():
    w, d = world(), docs()[0]
    foreign = replace(d, text=d.text.replace(d.subject, "Somebody Else", 1))
    with pytest.raises(ValueError, match="fits no template"):
        w.forced_word_spans(foreign)
    with pytest.raises(ValueError, match="continues after all six facts"):
        w.forced_word_spans(replace(d, text=d.text + " " + d.text))


# --- claims -------------------------------------------------------------------------------------


def test_claims_recover_every_fact_of_real_biographies():
    w = world()
    for d in docs()[:300]:
        claims = w.extract_claims(d.text)
        assert [(c.attribute, c.start, c.end) for c in claims] == [(f.attribute, f.start, f.end) for f in d.facts]
        assert all(d.text[c.start : c.end] == c.value for c in claims)


def test_claims_from_garbled_truncated_and_mixed_text():
    w = world()
    a, b = w.people[0], w.people[1]
    text = (
        f"{a.full_name} was born in {a.birth_city} works for {b.employer}. "
        f"{b.full_name} studied {a.major} at {a.university}. "
        f"She lived in {b.employer_city}. He works in {a.employer_city}, born in {b.birth_city}. "
        f"On {a.birth_date}, she was bo"
    )
    claims = w.extract_claims(text)
    got = [(c.attribute, c.value) for c in claims]
    assert got == [
        ("birth_city", a.birth_city),
        ("employer", b.employer),
        ("major", a.major),
        ("university", a.university),
        ("city", b.employer_city),
        ("employer_city", a.employer_city),
        ("birth_city", b.birth_city),
        ("birth_date", a.birth_date),
    ]
    assert all(c1.end <= c2.start for c1, c2 in zip(claims, claims[1:]))
    # an invented value in a template is still a claim
    claims = w.extract_claims("She works for Zzyzx Corp. She attended University of Qwerty.")
    assert [(c.attribute, c.value) for c in claims] == [("employer", "Zzyzx Corp"), ("university", "University of Qwerty")]
    # outside templates, invented universities and employers are recognised by their shape
    known = set(vocab.UNIVERSITIES + vocab.EMPLOYERS)
    surname = next(s for s in vocab.SURNAMES if not {f"{s} Foundry", f"{s} College"} & known)
    invented = ["University of Qwerty", "Qwerty State University", f"{surname} Foundry", f"{surname} College"]
    assert not set(invented) & known
    claims = w.extract_claims("Then " + ", then ".join(invented) + ", then Zzyzx Foundry.")
    assert [(c.attribute, c.value) for c in claims] == [
        ("university", invented[0]),
        ("university", invented[1]),
        ("employer", invented[2]),
        ("university", invented[3]),
    ]
    assert w.extract_claims("") == [] and w.extract_claims("nothing here at all") == []


@HYPOTHESIS
@given(st.lists(st.sampled_from([*"AaSs .,'", "Ashford", " born ", " works ", "University of ", "March 5, 1972"])).map("".join))
def test_claims_never_overlap_and_point_at_their_text(text):
    claims = world().extract_claims(text)
    assert all(text[c.start : c.end] == c.value for c in claims)
    assert all(c1.end <= c2.start for c1, c2 in zip(claims, claims[1:]))
