"""The cascade decoder and call policies: cached == naive, hand-off across tokenizers, policies, probes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lacy.cascade.decoder import CascadeDecoder, Generation, naive_generate, p_call_teacher_forced
from lacy.cascade.helpers import DocumentHelper, Helper, HelperReply, HelperSession, LMHelper
from lacy.cascade.policies import ArgmaxPolicy, BudgetPolicy, ThresholdPolicy, build_policy, threshold_for_rate
from lacy.data.tokenizer import train_tokenizer
from test_helpers import SENTENCES, foreign_llama, foreign_tokenizer, tiny_llama

PROMPTS = ["Alice Martin was born in", "Chen Wei studied law at the University of"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SENTENCES, 400)


@pytest.fixture(scope="module")
def slm(tokenizer):
    return tiny_llama(tokenizer, d_model=32, seed=0)


@pytest.fixture(scope="module")
def shared_helper(tokenizer):
    """A bigger random LM with the SLM's own tokenizer: token ids are handed off directly."""
    return LMHelper(tiny_llama(tokenizer, d_model=48, n_layer=2, seed=1), tokenizer, name="shared")


@pytest.fixture(scope="module")
def foreign_helper():
    """A random LM with another tokenizer (no <CALL>, other special tokens): text is handed off."""
    tok = foreign_tokenizer()
    return LMHelper(foreign_llama(tok), tok, name="foreign")


def slm_alone(slm, tokenizer, prompt: str, **options) -> Generation:
    return CascadeDecoder(slm, tokenizer, None, ThresholdPolicy(math.inf), **options).generate(prompt)


def threshold_calling_about(slm, tokenizer, fraction: float, prompts=tuple(PROMPTS)) -> float:
    """A τ between two distinct P(<CALL>) values of the SLM alone on ``prompts``, about ``fraction``
    of them above it (midway between values, so float noise cannot flip a decision)."""
    values = np.unique(np.concatenate([slm_alone(slm, tokenizer, p, max_new_tokens=24).p_call for p in prompts]))
    i = int((1 - fraction) * (len(values) - 1))
    return float((values[i] + values[i + 1]) / 2)


# --- cached cascade == naive loop -----------------------------------------------------------------


@pytest.mark.parametrize("handoff", ["token", "word"])
@pytest.mark.parametrize("helper_name", ["shared_helper", "foreign_helper"])
def test_cached_cascade_matches_naive_loop(slm, tokenizer, handoff, helper_name, request):
    helper = request.getfixturevalue(helper_name)
    tau = threshold_calling_about(slm, tokenizer, 0.3)
    options = dict(max_new_tokens=24, handoff=handoff)
    calls = steps = 0
    for prompt in PROMPTS:
        cached = CascadeDecoder(slm, tokenizer, helper, ThresholdPolicy(tau), **options).generate(prompt)
        naive = naive_generate(slm, tokenizer, helper, ThresholdPolicy(tau), prompt, **options)
        assert cached.token_ids == naive.token_ids
        assert (cached.text, cached.spans, cached.call_positions) == (naive.text, naive.spans, naive.call_positions)
        np.testing.assert_allclose(cached.p_call, naive.p_call, rtol=1e-6)
        calls, steps = calls + cached.n_calls, steps + len(cached.p_call)
    assert 0 < calls < steps


def test_shared_vocabulary_hands_off_token_ids(slm, tokenizer, shared_helper):
    tau = threshold_calling_about(slm, tokenizer, 0.3, [PROMPTS[0]])
    decoder = CascadeDecoder(slm, tokenizer, shared_helper, ThresholdPolicy(tau), max_new_tokens=24, handoff="token")
    assert decoder.shared_vocab
    g = decoder.generate(PROMPTS[0])
    assert g.n_calls > 0 and g.unresolved_calls == 0
    # One helper token per call, appended as is: every generated id came from one model or the other.
    assert g.helper_tokens == g.n_calls and len(g.token_ids) == g.slm_tokens + g.helper_tokens


def test_text_handoff_across_tokenizers(slm, tokenizer, foreign_helper):
    prompt = PROMPTS[1]
    tau = threshold_calling_about(slm, tokenizer, 0.3, [prompt])
    decoder = CascadeDecoder(slm, tokenizer, foreign_helper, ThresholdPolicy(tau), max_new_tokens=24, handoff="word")
    assert not decoder.shared_vocab
    g = decoder.generate(prompt)
    assert g.n_calls > 0
    # Each call appended exactly what the helper says after the text so far (fresh, uncached session).
    for position in g.call_positions:
        reply = foreign_helper.without_kv_cache().session().continue_text(
            prompt + g.text[:position], max_new_tokens=decoder.max_helper_tokens, until_word_boundary=True)
        assert reply.text and g.text[position:].startswith(reply.text)
    # The SLM's ids (helper text re-tokenised on its own) spell exactly the generated text.
    assert tokenizer.decode(g.token_ids) == g.text


# --- the Generation record ------------------------------------------------------------------------


def test_generation_spans_cover_the_text_and_mark_helper_text(slm, tokenizer, shared_helper):
    tau = threshold_calling_about(slm, tokenizer, 0.3, [PROMPTS[0]])
    g = CascadeDecoder(slm, tokenizer, shared_helper, ThresholdPolicy(tau), max_new_tokens=24).generate(PROMPTS[0])
    assert g.spans[0][0] == 0 and g.spans[-1][1] == len(g.text)
    assert all(a[1] == b[0] and a[2] != b[2] for a, b in zip(g.spans, g.spans[1:]))  # contiguous, merged
    helper_spans = [g.text[s:e] for s, e, source in g.spans if source == "helper"]
    assert helper_spans and g.marked().count("[[") == len(helper_spans)
    assert g.marked().replace("[[", "").replace("]]", "") == g.text
    assert all(0 <= p <= len(g.text) for p in g.call_positions) and g.call_positions == sorted(g.call_positions)
    assert g.call_rate == g.n_calls / len(g.p_call) and g.seconds > 0


# --- policies ---------------------------------------------------------------------------------------


def test_argmax_policy(slm, tokenizer, shared_helper):
    policy = ArgmaxPolicy()
    assert policy.decide(0.1, True) and not policy.decide(0.9, False)
    always = CascadeDecoder(slm, tokenizer, shared_helper, policy, max_new_tokens=8, call_logit_bias=50.0).generate(PROMPTS[0])
    assert always.n_calls == len(always.p_call) and min(always.p_call) > 0.99
    never = CascadeDecoder(slm, tokenizer, shared_helper, policy, max_new_tokens=8).generate(PROMPTS[0])
    assert never.n_calls == 0  # a random SLM's <CALL> is never its top token


def test_threshold_policy(slm, tokenizer, shared_helper):
    assert ThresholdPolicy(0.3).decide(0.3, False) and not ThresholdPolicy(0.3).decide(0.2999, True)
    assert ThresholdPolicy(0.0).decide(0.0, False) and not ThresholdPolicy(math.inf).decide(1.0, True)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        ThresholdPolicy(-0.1)
    tau = threshold_calling_about(slm, tokenizer, 0.5, [PROMPTS[0]])
    g = CascadeDecoder(slm, tokenizer, shared_helper, ThresholdPolicy(tau), max_new_tokens=24).generate(PROMPTS[0])
    assert g.n_calls == sum(p >= tau for p in g.p_call) > 0


@pytest.mark.parametrize("rate", [0.05, 0.22, 0.5, 0.8])
def test_budget_policy_reaches_its_target_rate(rate):
    rng = np.random.default_rng(0)
    warmup, stream = rng.beta(2, 8, size=200), rng.beta(2, 8, size=3000)
    policy = BudgetPolicy(rate, warmup)
    calls = [policy.decide(float(p), False) for p in stream]
    assert abs(np.mean(calls) - rate) <= 0.02
    assert policy.call_rate == np.mean(calls)
    # It defers on the high probabilities: what it calls on is mostly above what it lets pass.
    assert np.median(stream[np.array(calls)]) > np.median(stream[~np.array(calls)])


def test_budget_policy_holds_its_budget_under_ties_and_extremes():
    tied = BudgetPolicy(0.22)
    calls = sum(tied.decide(0.5, False) for _ in range(1000))
    assert calls <= math.ceil(0.22 * 1000)
    assert not any(BudgetPolicy(0.0, [0.1]).decide(p, True) for p in (0.0, 0.5, 1.0))
    assert all(BudgetPolicy(1.0).decide(p, False) for p in (0.0, 0.5, 1.0))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        BudgetPolicy(1.5)


def test_build_policy():
    assert isinstance(build_policy("argmax"), ArgmaxPolicy)
    assert build_policy("threshold", tau=0.3).tau == 0.3
    calibration = np.linspace(0, 1, 101)
    assert build_policy("threshold", budget=0.2, calibration=calibration).tau == pytest.approx(np.quantile(calibration, 0.8))
    assert threshold_for_rate(calibration, 0.0) == math.inf and threshold_for_rate(calibration, 1.0) == 0.0
    budget = build_policy("budget", budget=0.22, calibration=[0.1, 0.2])
    assert isinstance(budget, BudgetPolicy) and budget.rate == 0.22 and budget.observed == [0.1, 0.2]
    with pytest.raises(ValueError, match="needs tau"):
        build_policy("threshold")
    with pytest.raises(ValueError, match="needs budget"):
        build_policy("budget")
    with pytest.raises(ValueError, match="valid policies: argmax, threshold, budget"):
        build_policy("random")


# --- unresolved calls, the leakage probe -------------------------------------------------------------


def test_unresolved_calls_fall_back_to_the_slm(slm, tokenizer):
    no_match = DocumentHelper({"Alice Martin": ["Zebras eat grass."]})
    g = CascadeDecoder(slm, tokenizer, no_match, ThresholdPolicy(0.0), max_new_tokens=12).generate(PROMPTS[0], "Alice Martin")
    assert g.n_calls == g.unresolved_calls == len(g.p_call) and g.helper_tokens == 0
    # The fallback is the SLM's best non-<CALL> token: the same text as the SLM alone.
    assert g.token_ids == slm_alone(slm, tokenizer, PROMPTS[0], max_new_tokens=12).token_ids
    assert all(source == "slm" for _, _, source in g.spans)


def test_document_helper_in_the_cascade(slm, tokenizer):
    documents = {"Alice Martin": ["Alice Martin was born in Paris in 1900, studied physics at the University of Paris."]}
    g = CascadeDecoder(slm, tokenizer, DocumentHelper(documents), ThresholdPolicy(0.0), max_new_tokens=6).generate(
        PROMPTS[0], "Alice Martin")
    assert g.text.startswith(" Paris in 1900,") and g.unresolved_calls == 0


def test_call_logit_bias_minus_inf_never_calls(slm, tokenizer, shared_helper):
    g = CascadeDecoder(slm, tokenizer, shared_helper, ThresholdPolicy(0.0), max_new_tokens=12,
                       call_logit_bias=-math.inf).generate(PROMPTS[0])
    assert g.n_calls == 0 and g.helper_tokens == 0 and set(g.p_call) == {0.0}
    assert g.token_ids == slm_alone(slm, tokenizer, PROMPTS[0], max_new_tokens=12).token_ids


# --- sampling, limits, errors ------------------------------------------------------------------------


def test_sampling_is_seeded(slm, tokenizer):
    def sample(seed):
        return slm_alone(slm, tokenizer, PROMPTS[0], max_new_tokens=16, temperature=1.0, top_p=0.9, seed=seed).token_ids

    assert sample(3) == sample(3)
    assert len({tuple(sample(s)) for s in range(4)}) > 1


def test_generation_stops_at_the_context_length(tokenizer):
    short = tiny_llama(tokenizer, max_positions=16)
    g = slm_alone(short, tokenizer, PROMPTS[0], max_new_tokens=64)
    # The SLM reads <bos> + prompt + all but the last generated token: 16 positions, its maximum.
    assert 1 + len(tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]) + len(g.token_ids) - 1 == 16
    with pytest.raises(ValueError, match="at most 16"):
        slm_alone(short, tokenizer, " ".join(SENTENCES[:3]))


def test_bad_options_are_refused(slm, tokenizer):
    with pytest.raises(ValueError, match="valid: word, token"):
        CascadeDecoder(slm, tokenizer, None, ArgmaxPolicy(), handoff="sentence")
    with pytest.raises(ValueError, match="temperature"):
        CascadeDecoder(slm, tokenizer, None, ArgmaxPolicy(), temperature=-1)
    with pytest.raises(ValueError, match="one subject per prompt"):
        CascadeDecoder(slm, tokenizer, None, ArgmaxPolicy()).generate_many(PROMPTS, ["only one"])


def test_generate_many_is_generate_per_prompt(slm, tokenizer):
    decoder = CascadeDecoder(slm, tokenizer, None, ArgmaxPolicy(), max_new_tokens=6)
    assert [g.token_ids for g in decoder.generate_many(PROMPTS)] == [decoder.generate(p).token_ids for p in PROMPTS]


# --- teacher-forced P(<CALL>) ------------------------------------------------------------------------


def test_p_call_teacher_forced(slm, tokenizer):
    texts = SENTENCES[:5] + [""]
    batched = p_call_teacher_forced(slm, tokenizer, texts, batch_size=4)
    single = [p_call_teacher_forced(slm, tokenizer, [t])[0] for t in texts]
    assert [len(p) for p in batched] == [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    for a, b in zip(batched, single):  # right padding does not change any position
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert all(((p > 0) & (p < 1)).all() for p in batched)
    # Position 0 is P(<CALL> | <bos>), the decoder's first step on an empty prompt.
    assert batched[0][0] == pytest.approx(slm_alone(slm, tokenizer, "", max_new_tokens=1).p_call[0], rel=1e-5)


def test_the_end_of_the_document_ends_the_helper_alone(slm, tokenizer):
    """Every step calls: the oracle copies the rest of its document and the text ends with it, whatever
    the SLM (before, the SLM wrote on after the document's end and the helper resumed from there)."""
    documents = {"Alice Martin": ["Alice Martin was born in Paris in 1900, studied physics at the University of Paris."]}
    texts = set()
    for model in (slm, tiny_llama(tokenizer, d_model=32, seed=5)):
        g = CascadeDecoder(model, tokenizer, DocumentHelper(documents), ThresholdPolicy(0.0), max_new_tokens=64).generate(
            PROMPTS[0], "Alice Martin")
        assert g.unresolved_calls == 0 and g.slm_tokens == 0
        texts.add(g.text)
    assert texts == {" Paris in 1900, studied physics at the University of Paris."}


class _ScriptedHelper(Helper):
    """Answers each call with the next of ``replies`` (then no help)."""

    def __init__(self, replies: list[HelperReply]) -> None:
        self.replies = replies

    def session(self, subject=None) -> HelperSession:
        replies = iter(self.replies)

        class Session(HelperSession):
            def continue_text(self, text, *, max_new_tokens, until_word_boundary):
                return next(replies, HelperReply(None, 0))

        return Session()


@pytest.mark.parametrize("last", [HelperReply(" in 1900", 1, ends=True), HelperReply(None, 0, ends=True)])
def test_a_helper_that_ends_the_text_ends_the_generation(slm, tokenizer, last):
    helper = _ScriptedHelper([HelperReply(" Paris", 1), last])
    g = CascadeDecoder(slm, tokenizer, helper, ThresholdPolicy(0.0), max_new_tokens=24).generate(PROMPTS[0])
    assert g.text == " Paris" + (last.text or "") and g.unresolved_calls == 0 and g.n_calls == 2


def test_an_lm_helper_reply_ends_at_its_end_of_text(shared_helper):
    from lacy.cascade.helpers import _Reply

    reply = _Reply(shared_helper, max_new_tokens=4, until_word_boundary=False)
    word = shared_helper.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert all(reply.take(token) for token in word)
    assert not reply.take(next(iter(shared_helper.eos_ids)))
    assert reply.reply().ends and reply.reply().text == shared_helper.tokenizer.decode(word)
    fresh = _Reply(shared_helper, max_new_tokens=4, until_word_boundary=False)
    assert not fresh.take(next(iter(shared_helper.eos_ids))) and fresh.reply() == HelperReply(None, 0, ends=True)
