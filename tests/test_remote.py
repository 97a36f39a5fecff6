"""The helper server (lacy.serve) and its client (lacy.cascade.remote), against real loopback servers.

Every server here is started by the test on 127.0.0.1 (a free port) and always shut down; every
client call has a timeout and a bounded number of retries.
"""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lacy.bench import remote as remote_bench
from lacy.cascade.decoder import CascadeDecoder
from lacy.cascade.helpers import Helper, HelperReply, HelperSession, LMHelper
from lacy.cascade.policies import ThresholdPolicy, threshold_for_rate
from lacy.cascade.remote import RemoteHelper, RemoteHelperError, RemoteHelperUnavailable, normalise_base_url
from lacy.data.tokenizer import train_tokenizer
from lacy.profiles import ModelConfig
from lacy.serve import background_server, create_app
from lacy.train.model import build_slm

SCRIPT_TOKENS = re.findall(r"\s?\w+|[^\w\s]", " was born in Paris, France, and studied physics at Lyon-Sud in 1990.")
LOOPBACK = "http://127.0.0.1:"


class ScriptSession(HelperSession):
    """Continues any text with tokens of a fixed script, starting at a position set by the text's length."""

    def __init__(self, subject: str | None) -> None:
        self.subject = subject

    def continue_text(self, text: str, *, max_new_tokens: int, until_word_boundary: bool) -> HelperReply:
        if self.subject == "nobody":
            return HelperReply(None, 0)
        if self.subject == "crash":
            raise RuntimeError("this helper cannot continue that")
        start = len(text) % len(SCRIPT_TOKENS)
        emitted: list[str] = []
        for token in (SCRIPT_TOKENS * 2)[start : start + max_new_tokens]:
            # Token-level word rule (independent of the client's character-level cut).
            if until_word_boundary and re.search(r"\w", "".join(emitted)) and not re.match(r"\w", token):
                break
            emitted.append(token)
        return HelperReply("".join(emitted), len(emitted))


class ScriptHelper(Helper):
    name = "script"

    def session(self, subject: str | None = None) -> HelperSession:
        return ScriptSession(subject)


@pytest.fixture(scope="module")
def script_server():
    with background_server(create_app(ScriptHelper(), max_prompt_chars=1_000, max_tokens_limit=32)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server():
    with background_server(create_app(ScriptHelper(), api_key="s3cret")) as url:
        yield url


# --- the protocol, with a scripted helper ----------------------------------------------------------


def test_servers_bind_loopback_only(script_server):
    assert script_server.startswith(LOOPBACK)
    assert httpx.get(f"{script_server}/health", timeout=5).json()["status"] == "ok"


def test_completion_has_the_openai_shape_and_the_helpers_text(script_server):
    prompt = "Ada Lovelace"
    response = httpx.post(f"{script_server}/v1/completions", json={"model": "script", "prompt": prompt, "max_tokens": 5}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    expected = ScriptSession(None).continue_text(prompt, max_new_tokens=5, until_word_boundary=False)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert isinstance(body["created"], int) and body["model"] == "script"
    assert body["choices"] == [{"text": expected.text, "index": 0, "logprobs": None, "finish_reason": "length"}]
    usage = body["usage"]
    assert usage["completion_tokens"] == expected.tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    models = httpx.get(f"{script_server}/v1/models", timeout=5).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["script"]


@pytest.mark.parametrize("stop", [",", [".", ","]])
def test_stop_sequences_cut_the_completion(script_server, stop):
    prompt = "x" * (SCRIPT_TOKENS.index(" Paris") - 1)  # the script then reads " in Paris, France"
    full = ScriptSession(None).continue_text(prompt, max_new_tokens=6, until_word_boundary=False).text
    body = httpx.post(f"{script_server}/v1/completions", json={"prompt": prompt, "max_tokens": 6, "stop": stop}, timeout=5).json()
    assert body["choices"][0]["text"] == full[: full.index(",")]
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"max_tokens": 4}, 400, "prompt"),
        ({"prompt": ["a", "b"]}, 400, "prompt"),
        ({"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "a", "max_tokens": 33}, 400, "limit of 32"),
        ({"prompt": "a", "temperature": 0.7}, 400, "temperature=0"),
        ({"prompt": "a", "stream": True}, 400, "stream"),
        ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"prompt": "a", "logprobs": 6}, 400, "logprobs"),
        ({"prompt": "a", "model": "gpt-4"}, 404, "'script'"),
        ({"prompt": "a" * 1_001}, 413, "at most 1000"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(script_server, payload, status, message):
    response = httpx.post(f"{script_server}/v1/completions", json=payload, timeout=5)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_non_json_and_oversized_bodies_are_refused(script_server):
    response = httpx.post(f"{script_server}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}, timeout=5)
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    huge = (b'{"prompt": "' + b"a" * 200_000 + b'"}' for _ in range(1))  # a generator: sent chunked, no length
    response = httpx.post(f"{script_server}/v1/completions", content=huge, timeout=5)
    assert response.status_code == 413 and "bytes" in response.json()["error"]["message"]


def test_api_key_is_required_when_set(keyed_server):
    url = f"{keyed_server}/v1/completions"
    payload = {"prompt": "Ada", "max_tokens": 2}
    assert httpx.post(url, json=payload, timeout=5).status_code == 401
    wrong = httpx.post(url, json=payload, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    assert httpx.post(url, json=payload, headers={"Authorization": "Bearer s3cret"}, timeout=5).status_code == 200
    assert httpx.get(f"{keyed_server}/v1/models", timeout=5).status_code == 401
    assert httpx.get(f"{keyed_server}/health", timeout=5).status_code == 200
    with RemoteHelper(keyed_server, api_key="s3cret") as helper:
        assert helper.session().continue_text("Ada", max_new_tokens=2, until_word_boundary=False).text
    with RemoteHelper(keyed_server, api_key="nope", fallback=True) as helper:  # a wrong key is never hidden
        with pytest.raises(RemoteHelperError, match="HTTP 401"):
            helper.session().continue_text("Ada", max_new_tokens=2, until_word_boundary=False)


@pytest.mark.parametrize("until_word_boundary", [True, False])
@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_remote_session_matches_the_in_process_session(script_server, until_word_boundary, suffix):
    local = ScriptHelper().session("Ada")
    with RemoteHelper(script_server + suffix, model="script") as helper:
        remote = helper.session("Ada")
        for length in range(len(SCRIPT_TOKENS)):
            text = "y" * length
            expected = local.continue_text(text, max_new_tokens=8, until_word_boundary=until_word_boundary)
            got = remote.continue_text(text, max_new_tokens=8, until_word_boundary=until_word_boundary)
            assert got.text == expected.text
            if not until_word_boundary:
                assert got.tokens == expected.tokens


def test_subject_travels_and_no_help_stays_no_help(script_server):
    with RemoteHelper(script_server) as helper:
        assert helper.session("nobody").continue_text("Ada", max_new_tokens=4, until_word_boundary=True) == HelperReply(None, 0)


def test_a_failing_helper_gives_500_with_its_error_and_the_client_retries_then_raises(script_server):
    response = httpx.post(f"{script_server}/v1/completions", json={"prompt": "Ada", "subject": "crash"}, timeout=5)
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "the helper failed: RuntimeError: this helper cannot continue that"
    with RemoteHelper(script_server, retries=1, backoff=0.01) as helper:
        with pytest.raises(RemoteHelperUnavailable, match="after 2 attempts .*cannot continue that"):
            helper.session("crash").continue_text("Ada", max_new_tokens=2, until_word_boundary=True)


def test_requests_are_capped_at_max_new_tokens_cap(script_server):
    with RemoteHelper(script_server, max_new_tokens_cap=3) as helper:
        reply = helper.session().continue_text("z", max_new_tokens=30, until_word_boundary=False)
    assert reply == ScriptSession(None).continue_text("z", max_new_tokens=3, until_word_boundary=False)


def test_base_url_validation():
    assert normalise_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    for bad in ["127.0.0.1:8000", "ftp://127.0.0.1", "http://"]:
        with pytest.raises(ValueError, match="http"):
            RemoteHelper(bad)


# --- the cascade through a served LM helper -------------------------------------------------------

SENTENCES = [
    f"{name} was born in {city} in {1900 + 7 * i}, studied {field} at the University of {city}."
    for i, (name, city, field) in enumerate(
        (n, c, f) for n in ("Alice Martin", "Bruno Keller", "Chen Wei") for c in ("Paris", "Oslo", "Berlin")
        for f in ("physics", "law", "music")
    )
]
PROMPTS = ["Alice Martin was born in", "Chen Wei studied", "Bruno Keller"]


def random_llama(tokenizer, d_model: int, seed: int):
    """A random Llama in float64, so a fresh server session and a cached one pick the same argmax."""
    config = ModelConfig(d_model=d_model, n_layer=1, n_head=2, d_ff=2 * d_model)
    eos = tokenizer.eos_token_id
    model = build_slm(config, vocab_size=len(tokenizer), max_positions=512, pad_id=tokenizer.pad_token_id or eos,
                      bos_id=tokenizer.bos_token_id or eos, eos_id=eos, seed=seed)
    return model.double().eval()


def ascii_tokenizer() -> PreTrainedTokenizerFast:
    """A helper vocabulary unlike the SLM's, built from the corpus's own (ASCII) bytes only, so a random
    helper never emits half a UTF-8 character and token-level word stops equal character-level ones."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES, trainer=trainers.BpeTrainer(vocab_size=200, special_tokens=["<|endoftext|>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def slm_and_tokenizer():
    tokenizer = train_tokenizer(SENTENCES, 320)
    return random_llama(tokenizer, d_model=32, seed=0), tokenizer


@pytest.fixture(scope="module")
def lm_helper():
    tokenizer = ascii_tokenizer()
    return LMHelper(random_llama(tokenizer, d_model=48, seed=1), tokenizer, name="tiny-helper")


@pytest.fixture(scope="module")
def lm_server(lm_helper):
    with background_server(create_app(lm_helper)) as url:
        yield url


@pytest.mark.parametrize("handoff", ["word", "token"])
def test_cascade_through_the_server_equals_the_in_process_cascade(slm_and_tokenizer, lm_helper, lm_server, handoff):
    slm, tokenizer = slm_and_tokenizer
    options = dict(max_new_tokens=24, handoff=handoff)
    alone = CascadeDecoder(slm, tokenizer, None, ThresholdPolicy(math.inf), **options)
    calibration = [p for prompt in PROMPTS for p in alone.generate(prompt).p_call]
    policy = ThresholdPolicy(threshold_for_rate(calibration, 0.4))
    local = CascadeDecoder(slm, tokenizer, lm_helper, policy, **options).generate_many(PROMPTS)
    with RemoteHelper(lm_server) as remote:
        served = CascadeDecoder(slm, tokenizer, remote, policy, **options).generate_many(PROMPTS)
    assert sum(g.n_calls - g.unresolved_calls for g in local) > 0, "no resolved call: the test would prove nothing"
    for mine, theirs in zip(local, served):
        # Word hand-off: the server generates past the word boundary the client cuts at, so it counts more tokens.
        ignored = {"seconds": 0.0, "helper_tokens": 0} if handoff == "word" else {"seconds": 0.0}
        assert dataclasses.replace(theirs, **ignored) == dataclasses.replace(mine, **ignored)
        assert theirs.helper_tokens >= mine.helper_tokens


def test_lm_server_returns_openai_logprobs(lm_helper, lm_server):
    prompt = "Alice Martin was born in"
    expected = lm_helper.session().continue_text(prompt, max_new_tokens=6, until_word_boundary=False)
    body = httpx.post(f"{lm_server}/v1/completions", json={"prompt": prompt, "max_tokens": 6, "logprobs": 2}, timeout=10).json()
    choice = body["choices"][0]
    assert choice["text"] == expected.text and body["usage"]["completion_tokens"] == expected.tokens
    assert body["usage"]["prompt_tokens"] == len(lm_helper.tokenizer(prompt)["input_ids"])
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["text_offset"] == [sum(map(len, logprobs["tokens"][:i])) for i in range(len(logprobs["tokens"]))]
    for token_logprob, top in zip(logprobs["token_logprobs"], logprobs["top_logprobs"]):
        assert len(top) == 2 and sum(math.exp(v) for v in top.values()) <= 1 + 1e-9
        assert token_logprob <= max(top.values()) + 1e-9
    # Greedy decoding: the first generated token is the most likely one.
    assert logprobs["token_logprobs"][0] == pytest.approx(max(logprobs["top_logprobs"][0].values()))


def test_remote_benchmark_reports_comparable_timings():
    result = remote_bench.run(5, profile="smoke")
    assert result["n_calls"] == 5
    assert result["inprocess_calls_per_s"] > 0 and result["remote_calls_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["inprocess_calls_per_s"] / result["remote_calls_per_s"])
    added = 1000 * (1 / result["remote_calls_per_s"] - 1 / result["inprocess_calls_per_s"])
    assert result["added_latency_ms_per_call"] == pytest.approx(added)


# --- failures ---------------------------------------------------------------------------------------


def _garbage_app(hits: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/{kind}/v1/completions")
    def completions(kind: str):
        hits.append(kind)
        if kind == "html":
            return PlainTextResponse("<html>hello</html>")
        if kind == "nochoices":
            return {"id": "x", "choices": []}
        return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)

    return app


@pytest.mark.parametrize(("kind", "attempts"), [("html", 1), ("nochoices", 1), ("busy", 3)])
def test_garbage_and_5xx_answers_raise_or_fall_back(kind, attempts):
    hits: list[str] = []
    with background_server(_garbage_app(hits)) as url:
        with RemoteHelper(f"{url}/{kind}", retries=2, backoff=0.01) as helper:
            with pytest.raises(RemoteHelperUnavailable, match="lacy serve|completions server"):
                helper.session().continue_text("Ada", max_new_tokens=2, until_word_boundary=True)
        assert hits == [kind] * attempts
        with RemoteHelper(f"{url}/{kind}", retries=2, backoff=0.01, fallback=True) as helper:
            assert helper.session().continue_text("Ada", max_new_tokens=2, until_word_boundary=True) == HelperReply(None, 0)
            assert helper.failed_calls == 1


def test_a_slow_server_times_out_within_bounds():
    release = threading.Event()

    class StuckHelper(ScriptHelper):
        def session(self, subject=None):
            release.wait(timeout=10)
            return super().session(subject)

    with background_server(create_app(StuckHelper())) as url:
        started = time.monotonic()
        with RemoteHelper(url, timeout=0.3, retries=1, backoff=0.01) as helper:
            with pytest.raises(RemoteHelperUnavailable, match="ReadTimeout"):
                helper.session().continue_text("Ada", max_new_tokens=2, until_word_boundary=True)
        assert time.monotonic() - started < 3
        release.set()


# A server whose helper never finishes; duck-typed so the subprocess starts without importing torch.
SLOW_SERVER = textwrap.dedent(
    """
    import threading, time
    from types import SimpleNamespace
    from lacy.serve import background_server, create_app

    class SlowSession:
        def continue_text(self, text, *, max_new_tokens, until_word_boundary):
            print("generating", flush=True)
            time.sleep(60)
            return SimpleNamespace(text=" late", tokens=1)

    class SlowHelper:
        name = "slow"
        def session(self, subject=None):
            return SlowSession()

    with background_server(create_app(SlowHelper())) as url:
        print(url, flush=True)
        threading.Event().wait(120)
    """
)


@pytest.mark.parametrize("fallback", [False, True])
def test_server_killed_mid_generation_gives_a_clear_error_or_fallback(fallback):
    server = subprocess.Popen([sys.executable, "-c", SLOW_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        assert url.startswith(LOOPBACK), f"server did not start: {url!r}"

        def kill_once_generating() -> None:
            if server.stdout.readline().strip() == "generating":
                server.kill()

        killer = threading.Thread(target=kill_once_generating, daemon=True)
        killer.start()
        started = time.monotonic()
        with RemoteHelper(url, timeout=20, retries=2, backoff=0.05, fallback=fallback) as helper:
            session = helper.session()
            if fallback:
                assert session.continue_text("Ada", max_new_tokens=4, until_word_boundary=True) == HelperReply(None, 0)
                assert helper.failed_calls == 1
            else:
                with pytest.raises(RemoteHelperUnavailable, match=r"unavailable after 3 attempts .*lacy serve"):
                    session.continue_text("Ada", max_new_tokens=4, until_word_boundary=True)
        assert time.monotonic() - started < 15  # far below the 20 s read timeout: the kill is noticed at once
        killer.join(timeout=5)
    finally:
        server.kill()
        server.wait(timeout=10)
