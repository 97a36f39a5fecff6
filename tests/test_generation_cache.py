"""Cached cascade generations: read back only for the same SLM, helper, policy, options and subjects."""

import math

import pytest
import torch

from lacy.cascade.decoder import CascadeDecoder
from lacy.cascade.helpers import DocumentHelper, LMHelper
from lacy.cascade.policies import ArgmaxPolicy, BudgetPolicy, ThresholdPolicy
from lacy.evaluate import generation_cache
from lacy.evaluate import run as evaluation


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_profile, cache_root):
    from lacy.train.run import get_or_train

    return get_or_train("synthbio", "lacy", smoke_profile, 0, root=tmp_path_factory.mktemp("runs"), cache_root=cache_root,
                        progress=False)


@pytest.fixture
def counted(monkeypatch):
    """Turn the cache on and count the batches actually decoded."""
    monkeypatch.setenv(generation_cache.ENV, "on")
    calls = []
    original = CascadeDecoder.generate_many

    def counting(self, prompts, subjects=None):
        calls.append(len(prompts))
        return original(self, prompts, subjects)

    monkeypatch.setattr(CascadeDecoder, "generate_many", counting)
    return calls


def _entries(root):
    return sorted((root / "generations").glob("*.json.gz"))


def _summary(run):
    return {k: v for k, v in run.summary().items() if k != "seconds"}


def test_a_repeated_evaluation_is_read_back_identical(smoke_run, smoke_profile, tmp_path, counted):
    first = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=tmp_path)
    again = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=tmp_path)
    assert counted == [smoke_profile.eval.n_subjects] and len(_entries(tmp_path)) == 1
    assert again.generations == first.generations and _summary(again) == _summary(first)
    # Another batch size decodes afresh (a near-tie can resolve differently on a trained model); here the same text.
    one_by_one = evaluation.evaluate(smoke_run, "synthbio", smoke_profile.override({"eval.batch_size": 1}), 0, cache_root=tmp_path)
    assert len(counted) == 2 and len(_entries(tmp_path)) == 2
    assert [(g.token_ids, g.call_positions) for g in one_by_one.generations] == [(g.token_ids, g.call_positions) for g in first.generations]


def test_any_input_that_changes_generations_decodes_again(smoke_run, smoke_profile, tmp_path, counted):
    evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=tmp_path)
    evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, budget=0.5, cache_root=tmp_path)
    evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, helper="retrieval", cache_root=tmp_path)
    evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, policy="threshold", tau=math.inf, cache_root=tmp_path)
    evaluation.evaluate(smoke_run, "synthbio", smoke_profile.override({"eval.max_new_tokens": 7}), 0, cache_root=tmp_path)
    subjects = evaluation.EvaluationContext.load(smoke_run, "synthbio", smoke_profile, 0, tmp_path).subjects()[:1]
    evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, subjects=subjects, cache_root=tmp_path)
    assert len(counted) == 6 and len(_entries(tmp_path)) == 6


def test_a_corrupt_entry_is_decoded_again_and_replaced(smoke_run, smoke_profile, tmp_path, counted):
    first = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=tmp_path)
    (entry,) = _entries(tmp_path)
    entry.write_bytes(entry.read_bytes()[:40])
    with pytest.warns(UserWarning, match="unreadable"):
        again = evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=tmp_path)
    assert len(counted) == 2 and _summary(again) == _summary(first)  # decoded afresh: only the seconds differ
    evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=tmp_path)  # the rewritten entry reads back
    assert len(counted) == 2


def test_the_cache_can_be_turned_off(smoke_run, smoke_profile, tmp_path, counted, monkeypatch):
    monkeypatch.setenv(generation_cache.ENV, "off")
    for _ in range(2):
        evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, cache_root=tmp_path)
    assert len(counted) == 2 and not _entries(tmp_path)


def test_fingerprints_follow_what_decides_the_generations(smoke_run):
    assert ThresholdPolicy(0.5).fingerprint() != ThresholdPolicy(0.6).fingerprint()
    assert BudgetPolicy(0.22, [0.1, 0.2]).fingerprint() == BudgetPolicy(0.22, [0.2, 0.1]).fingerprint()
    assert BudgetPolicy(0.22, [0.1]).fingerprint() != BudgetPolicy(0.22, [0.2]).fingerprint() != BudgetPolicy(0.3, [0.2]).fingerprint()
    assert DocumentHelper({"a": ["x"]}).fingerprint() != DocumentHelper({"a": ["y"]}).fingerprint()
    model_dir = smoke_run / "model"
    first, second = LMHelper.from_pretrained(str(model_dir)), LMHelper.from_pretrained(str(model_dir))
    assert first.fingerprint() == second.fingerprint()
    with torch.no_grad():
        next(second.model.parameters()).view(-1)[0] += 1.0
    assert LMHelper(second.model, second.tokenizer).fingerprint() != first.fingerprint()
    decoder = CascadeDecoder(first.model, first.tokenizer, first, ArgmaxPolicy())
    assert decoder.fingerprint() is not None
    assert CascadeDecoder(first.model, first.tokenizer, first, ArgmaxPolicy(), batch_size=4).fingerprint() != decoder.fingerprint()
    assert CascadeDecoder(first.model, first.tokenizer, first, ArgmaxPolicy(), handoff="token").fingerprint() != decoder.fingerprint()


def test_a_helper_that_cannot_say_what_it_is_is_never_cached(smoke_run, smoke_profile, tmp_path, counted):
    class Opaque(DocumentHelper):
        def _fingerprint(self):
            return None

    ctx = evaluation.EvaluationContext.load(smoke_run, "synthbio", smoke_profile, 0, tmp_path)
    opaque = Opaque(ctx.helper("doc").documents)
    for _ in range(2):
        evaluation.evaluate(smoke_run, "synthbio", smoke_profile, 0, helper=opaque, cache_root=tmp_path)
    assert len(counted) == 2 and not _entries(tmp_path)
