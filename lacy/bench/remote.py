"""Benchmark: what serving the helper over HTTP costs per call (the remote cascade of paper §5).

The same helper object answers the same prompts twice, in one process: (a) in-process, a fresh
session per call (as the server does per request); (b) through ``lacy serve``'s app on 127.0.0.1
(uvicorn in a thread, a free port) and :class:`~lacy.cascade.remote.RemoteHelper`. The difference
is the HTTP round trip, JSON and the server's bookkeeping. The helper is a random-initialised LM
sized by the profile's ``helper_model`` (speed does not depend on training), with the tokenizer of
``lacy.bench.cascade``. Both paths must return identical replies, or the comparison is refused.

Torch runs single-threaded during the benchmark (``torch_threads=1``, restored afterwards): with
two intra-op threads on a busy 2-core CPU, a tiny model was measured 10-20x slower on the main
thread than on the server's worker threads, which would pass for a remote speed-up.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Iterator, Sequence

import torch

from lacy.bench.cascade import synthetic_sentences
from lacy.cascade.helpers import Helper, HelperReply, LMHelper
from lacy.cascade.remote import RemoteHelper
from lacy.data.tokenizer import train_tokenizer
from lacy.profiles import get_profile
from lacy.serve import background_server, create_app
from lacy.train.model import build_slm


def random_lm_helper(profile: str = "cpu", seed: int = 0) -> LMHelper:
    """A random-initialised LM helper sized by ``profile``'s ``helper_model``."""
    config = get_profile(profile)
    tokenizer = train_tokenizer(synthetic_sentences(), config.data.vocab_size)
    model = build_slm(
        config.helper_model, vocab_size=len(tokenizer), max_positions=max(config.data.seq_len, 256),
        pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, seed=seed,
    )
    return LMHelper(model, tokenizer, name=f"random-helper-{profile}")


def _timed_replies(helper: Helper, prompts: Sequence[str], max_new_tokens: int) -> tuple[float, list[HelperReply]]:
    """Seconds to answer ``prompts`` (a fresh session each, after one warm-up call) and the replies."""

    def reply(prompt: str) -> HelperReply:
        return helper.session().continue_text(prompt, max_new_tokens=max_new_tokens, until_word_boundary=False)

    reply(prompts[0])
    started = time.perf_counter()
    replies = [reply(prompt) for prompt in prompts]
    return time.perf_counter() - started, replies


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (``None``: unchanged), restoring the previous number."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run(
    n_calls: int = 200, *, profile: str = "cpu", max_new_tokens: int = 4, seed: int = 0, torch_threads: int | None = 1
) -> dict:
    """Calls per second in-process and remote, the added latency per call, and their ratio."""
    if n_calls < 1:
        raise ValueError(f"n_calls must be at least 1, got {n_calls}")
    helper = random_lm_helper(profile, seed)
    sentences = synthetic_sentences(n_calls)
    prompts = [sentence[: len(sentence) // 2] for sentence in sentences]
    with _torch_threads(torch_threads):
        threads = torch.get_num_threads()
        local_s, local_replies = _timed_replies(helper, prompts, max_new_tokens)
        with background_server(create_app(helper)) as url, RemoteHelper(url, max_new_tokens_cap=max_new_tokens) as remote:
            remote_s, remote_replies = _timed_replies(remote, prompts, max_new_tokens)
    local_pairs = [(r.text, r.tokens) for r in local_replies]
    if local_pairs != [(r.text, r.tokens) for r in remote_replies]:
        raise RuntimeError("the remote helper answered differently from the in-process one; the benchmark compares unequal work")
    return {
        "profile": profile,
        "n_calls": n_calls,
        "max_new_tokens": max_new_tokens,
        "inprocess_calls_per_s": n_calls / local_s,
        "remote_calls_per_s": n_calls / remote_s,
        "added_latency_ms_per_call": 1000 * (remote_s - local_s) / n_calls,
        "ratio": remote_s / local_s,
        "torch_threads": threads,
    }


def main() -> None:
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
