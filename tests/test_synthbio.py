"""The synthetic biography world: determinism, gold spans, exposure, the acceptability grammar, claims."""

from __future__ import annotations

import hashlib
import os
import re
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
    REMARKS,
    Tier,
    World,
)
from lacy.data.synthbio_grammar import REMARK_TOPICS
from lacy.profiles import get_profile

HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


LAW = ExposureLaw((Tier("famous", 4, 40, 20), Tier("known", 16, 15, 5), Tier("rare", 60, 4, 2), Tier("obscure", 120, 1, 1)))
SMALL_LAW = ExposureLaw((Tier("famous", 5, 15, 10), Tier("obscure", 75, 2, 1)))


@lru_cache(maxsize=None)
def world(seed: int = 0, remarks_per_doc: int = 4) -> World:
    return World.generate(LAW, seed=seed, remarks_per_doc=remarks_per_doc)


@lru_cache(maxsize=None)
def docs(seed: int = 0, remarks_per_doc: int = 4) -> tuple[Document, ...]:
    return tuple(world(seed, remarks_per_doc).documents())


def remark_sentences(text: str, person) -> list[str]:
    """The sentences of a biography that state no fact of ``person`` (without their period)."""
    return [s for s in text[:-1].split(". ") if not any(person.value(a) in s for a in ATTRIBUTES)]


def remark_topic(sentence: str) -> str | None:
    """The remark topic whose template and free word make ``sentence``, else None."""
    for topic, (templates, choices) in REMARKS.items():
        for template in templates:
            pattern = re.escape(template[:-1]).replace(re.escape("{subject}'s"), "(?:Her|His|her|his)")
            pattern = pattern.replace(re.escape("{subject}"), "(?:She|He|she|he)").replace(re.escape("{choice}"), r"(\w+)")
            match = re.fullmatch(pattern, sentence)
            if match and match.group(1) in choices:
                return topic
    return None


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
    a = World.generate(SMALL_LAW, seed=5).documents()
    b = World.generate(SMALL_LAW, seed=5).documents()
    c = World.generate(SMALL_LAW, seed=6).documents()
    assert corpus_digest(a) == corpus_digest(b)
    assert [d.text for d in a] != [d.text for d in c]


def test_corpus_is_identical_in_a_fresh_process_and_imports_no_torch():
    """Byte-identical across processes (no dependence on hash randomisation); no torch import."""
    code = (
        "import sys; from lacy.data.synthbio import World; from tests.test_synthbio import SMALL_LAW, corpus_digest;"
        "print(corpus_digest(World.generate(SMALL_LAW, seed=5).documents()));"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root)
    out = out.stdout.split()
    assert out == [corpus_digest(World.generate(SMALL_LAW, seed=5).documents()), "False"]


def test_from_config_matches_generate_and_uses_the_world_seed():
    cfg = replace(get_profile("smoke").world, seed=3)
    from_config = World.from_config(cfg)
    generated = World.generate(ExposureLaw.from_config(cfg), 3, cfg.remarks_per_doc, cfg.name_repeat)
    assert corpus_digest(from_config.documents()) == corpus_digest(generated.documents())
    assert from_config.seed == 3 and from_config.tiers == list(cfg.tiers)


def test_the_data_cache_keys_on_the_world_seed_not_the_training_seed():
    from lacy.data.cache import cache_config, content_key

    smoke = get_profile("smoke")
    other_world = get_profile("smoke", {"world.seed": "1"})
    assert content_key(cache_config("synthbio", smoke, 0)) == content_key(cache_config("synthbio", smoke, 7))
    assert content_key(cache_config("synthbio", smoke, 0)) != content_key(cache_config("synthbio", other_world, 0))
    assert content_key(cache_config("vitalwiki", smoke, 0)) != content_key(cache_config("vitalwiki", smoke, 7))


def test_generation_errors_are_clear():
    with pytest.raises(ValueError, match="n_people must be between 1 and"):
        World.generate(ExposureLaw((Tier("everyone", 10**7, 1, 1),)))
    with pytest.raises(ValueError, match="min_docs <= max_docs"):
        Tier("broken", 10, 2, 5)
    with pytest.raises(ValueError, match="most exposed first"):
        ExposureLaw((Tier("rare", 10, 2, 1), Tier("famous", 2, 50, 20)))
    with pytest.raises(ValueError, match="distinct tier names"):
        ExposureLaw((Tier("a", 1, 5, 5), Tier("a", 1, 2, 2)))
    with pytest.raises(ValueError, match="remarks_per_doc must be in 0..5"):
        World.generate(SMALL_LAW, remarks_per_doc=6)
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
        assert len(sentences) == len(ATTRIBUTES) + 4 and d.text.endswith(".")
        assert person.full_name in sentences[0]  # the first sentence names the person in full
        assert "  " not in d.text
        assert [f.start for f in d.facts] == sorted(f.start for f in d.facts)
        # remarks: one free word each, never the name, nothing a fact proxy could flag
        remarks = remark_sentences(d.text, person)
        assert len(remarks) == 4 and not any(person.last_name in r for r in remarks)
        assert all(r[1:] == r[1:].lower() and not any(c.isdigit() for c in r) for r in remarks)
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


def test_exposure_tiers():
    w = world()
    counts = np.array([p.n_docs for p in w.people])
    assert [(p.tier, p.n_docs) for p in w.people] == LAW.assign()
    assert np.all(np.diff(counts) <= 0)  # people are listed in order of fame
    assert w.tiers == ["famous", "known", "rare", "obscure"]
    for tier in LAW.tiers:  # each tier falls geometrically from its max_docs to its min_docs
        people = w.tier(tier.name)
        assert len(people) == tier.n_people
        assert (people[0].n_docs, people[-1].n_docs) == (tier.max_docs, tier.min_docs)
    assert [p.n_docs for p in w.tier("known")][7] == round(15 * (5 / 15) ** (7 / 15))
    with pytest.raises(KeyError, match="tiers of this world: famous, known, rare, obscure"):
        w.tier("legendary")
    cpu = get_profile("cpu").world
    assert ExposureLaw.from_config(cpu).n_people == cpu.n_people
    with pytest.raises(ValueError, match="one entry per tier"):
        ExposureLaw.from_config(replace(cpu, tier_people=(1, 2)))


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
    assert card["exposure"]["tiers"]["famous"] == {"n_people": 4, "max_docs": 40, "min_docs": 20,
                                                   "median_docs": np.median([p.n_docs for p in w.tier("famous")]),
                                                   "documents": sum(p.n_docs for p in w.tier("famous")),
                                                   "share_of_documents": sum(p.n_docs for p in w.tier("famous")) / len(docs())}
    assert card["remarks"]["per_document"] == 4 and set(card["remarks"]["topics"]) == set(REMARKS)
    md = w.card_markdown()
    assert md.startswith("# synthbio dataset card") and f"| major | {len(vocab.MAJORS)} | 6 |" in md
    assert "| famous | 4 | 40..20 |" in md


# --- acceptability ------------------------------------------------------------------------------


@HYPOTHESIS
@given(st.integers(0, 10**6))
def test_every_prefix_of_a_real_biography_is_valid(index):
    d = docs()[index % len(docs())]
    w = world()
    assert all(w.is_valid_prefix(d.subject, d.text[:k]) for k in range(len(d.text) + 1))
    # after the facts, only a remark of an unused topic may follow; nothing is ever stated twice
    first = d.text.split(". ")[0] + "."
    assert not w.is_valid_prefix(d.subject, d.text + " " + first)
    person = w.person(d.subject)
    used = {remark_topic(r) for r in remark_sentences(d.text, person)}
    assert len(used) == 4 and None not in used
    (unused,) = set(REMARK_TOPICS) - used
    templates, choices = REMARKS[unused]
    remark = templates[0].format(subject=person.pronoun, choice=choices[-1])
    assert w.is_valid_prefix(d.subject, d.text + " " + remark)


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
        assert "" in w.next_word_options(d.subject, d.text)  # it may end, or add its unused remark
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
    with pytest.raises(ValueError, match="fits no template"):  # a fact stated twice
        w.forced_word_spans(replace(d, text=d.text + " " + d.text))
    full = docs(remarks_per_doc=5)[0]
    with pytest.raises(ValueError, match="continues after every fact and remark"):
        world(remarks_per_doc=5).forced_word_spans(replace(full, text=full.text + " " + full.text))


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
