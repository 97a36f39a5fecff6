"""The method and corpus records: every name decoded once, and what each method needs declared beside its rule."""

from __future__ import annotations

import pytest
import torch

from lacy.data.corpora import get_corpus
from lacy.profiles import CORPORA, METHODS, ConfigError
from lacy.train.objective import without_call
from lacy.train.selection import JUDGES, METHOD_SPECS, SELECTION_RULES, get_method


def test_method_records_match_the_light_list_in_profiles():
    assert tuple(METHOD_SPECS) == METHODS
    assert all(spec.name == name and SELECTION_RULES[name] is spec.rule for name, spec in METHOD_SPECS.items())
    with pytest.raises(ConfigError, match="valid choices: standard, lacy"):
        get_method("lazy")


@pytest.mark.parametrize("corpus", CORPORA)
def test_each_corpus_names_a_judge_and_a_factscore_variant(corpus):
    adapter = get_corpus(corpus)
    assert adapter.name == corpus and adapter.judge in JUDGES and adapter.factscore in ("exact", "reference")
    with pytest.raises(ConfigError, match="valid choices: synthbio, vitalwiki"):
        get_corpus("wikipedia")


def test_which_methods_need_a_reference_model_depends_on_the_corpus_judge():
    needs = {corpus: {m for m, spec in METHOD_SPECS.items() if spec.needs_reference(JUDGES[get_corpus(corpus).judge])}
             for corpus in CORPORA}
    assert needs == {"synthbio": {"rho", "rho_excess"}, "vitalwiki": {"rho", "rho_excess", "judge"}}
    assert [m for m, spec in METHOD_SPECS.items() if spec.stochastic] == ["random"]
    assert {m for m, spec in METHOD_SPECS.items() if spec.effect == "ignore"} == {"ignore", "ignore_facts"}


def test_rule_inputs_refuse_what_a_method_lacks():
    batch = {"valid": torch.ones(1, 3, dtype=torch.bool), "fact": torch.ones(1, 3, dtype=torch.bool)}
    loss = torch.rand(1, 3)
    with pytest.raises(ValueError, match="needs a judge"):
        get_method("judge").rule_inputs(loss, batch, torch.zeros(1, 3, 5), 4)
    with pytest.raises(ValueError, match="ref_loss"):
        get_method("rho").rule_inputs(loss, batch, torch.zeros(1, 3, 5), 4)
    inputs = get_method("lacy").rule_inputs(loss, batch, torch.zeros(1, 3, 5), 4)
    assert inputs["unacceptable"] is None and inputs["ref_loss"] is None


def test_without_call_masks_only_the_call_column():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 9.0, 3.0]])
    masked = without_call(logits, 1)
    assert masked[:, 1].eq(float("-inf")).all() and torch.equal(masked[:, [0, 2]], logits[:, [0, 2]])
    assert masked.argmax(-1).tolist() == [2, 2] and logits[0, 1] == 5.0  # the input is left as it was


@pytest.mark.parametrize("corpus", CORPORA)
def test_the_corpus_adapter_gives_what_evaluation_uses_today(corpus, smoke_profile):
    """Documents, references and subject candidates agree with lacy.evaluate.run's own corpus branches,
    so evaluation can switch to the adapter without changing a number."""
    from lacy.evaluate import run as evaluation

    adapter = get_corpus(corpus)
    documents, world = adapter.documents(smoke_profile, 0)
    assert (world is None) == (corpus == "vitalwiki")
    assert documents == evaluation._corpus_documents(corpus, smoke_profile, 0)[0]
    assert adapter.references(documents) == evaluation.reference_documents(corpus, smoke_profile, 0, world)
    candidates = adapter.subject_candidates(documents, world)
    chosen = evaluation.subjects(corpus, smoke_profile, 0, world)
    by_name = {c.name: c for c in candidates}
    assert all(s.n_docs == by_name[s.name].n_docs for s in chosen)
    labels = evaluation.frequency_labels([c.exposure for c in candidates])
    assert all(labels[list(by_name).index(s.name)] == s.frequency for s in chosen)
    nlp = None
    if adapter.prompt_needs_nlp:
        from lacy.data.annotate import load_spacy

        nlp = load_spacy(smoke_profile.data.spacy_model or None)
    assert all(adapter.subject_prompt(s.name, nlp) == s.prompt for s in chosen)
