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
def test_evaluation_subjects_come_from_the_corpus_adapter(corpus, smoke_profile):
    """Subjects, their exposure groups, prompts and the helper's references are the adapter's: synthbio
    groups people by the world's tiers, vitalwiki by the top decile of summary length."""
    from lacy.data.corpora import frequency_labels
    from lacy.evaluate import run as evaluation

    adapter = get_corpus(corpus)
    documents, world = adapter.documents(smoke_profile, 0)
    assert (world is None) == (corpus == "vitalwiki")
    assert adapter.references(documents) == evaluation.reference_documents(corpus, smoke_profile, 0, world)
    candidates = adapter.subject_candidates(documents, world)
    labels, strata = adapter.exposure_groups(candidates, world)
    if corpus == "synthbio":
        assert strata == tuple(world.tiers) and labels == [world.person(c.name).tier for c in candidates]
    else:
        assert strata == ("frequent", "rare") and labels == frequency_labels([c.exposure for c in candidates])
    chosen = evaluation.subjects(corpus, smoke_profile, 0, world)
    by_name = {c.name: (c, label) for c, label in zip(candidates, labels)}
    assert all(s.n_docs == by_name[s.name][0].n_docs and s.frequency == by_name[s.name][1] for s in chosen)
    nlp = None
    if adapter.prompt_needs_nlp:
        from lacy.data.annotate import load_spacy

        nlp = load_spacy(smoke_profile.data.spacy_model or None)
    assert all(adapter.subject_prompt(s.name, nlp) == s.prompt for s in chosen)
