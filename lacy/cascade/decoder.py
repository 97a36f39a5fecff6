"""The cascade decoder: the small model writes, and hands the pen to a helper when it calls (paper §5).

At every step the SLM's next-token distribution gives P(``<CALL>``) (full softmax). A call policy
decides whether to defer. If not, ``<CALL>`` is masked and the SLM's own token is used (greedy by
default). If so, the helper continues the text — one helper token (``handoff="token"``) or up to the
next word boundary (``handoff="word"``, default) — and its text becomes SLM tokens that extend the
SLM's KV cache with a single forward over just those tokens. A helper with no answer (``None``) is
an *unresolved call*: the SLM falls back to its best non-``<CALL>`` token.

Hand-off between tokenizers: the generation is kept as a string. The helper's text is tokenised
*on its own* by the SLM tokenizer and appended to the SLM's ids, so the SLM's cache always matches
its id sequence exactly. The price: BPE merges across the hand-off boundary are not made, so the
SLM's ids may segment the text differently from tokenising the whole string (the decoded text is
the same). With byte-level BPE this only happens when the boundary falls inside a pre-token
(mid-word); re-tokenising the whole text instead would change ids already in the cache and force
recomputation. When the helper shares the SLM's vocabulary, its token ids are appended directly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from lacy.cascade.helpers import (
    Helper,
    HelperReply,
    LMHelper,
    banned_token_bias,
    cache_argument,
    encode_text,
    max_positions,
    output_vocab_size,
)
from lacy.cascade.policies import CallPolicy
from lacy.data.tokenizer import call_token_id

HANDOFFS = ("word", "token")


@dataclass
class Generation:
    """One cascade generation.

    ``text`` is the continuation only; ``spans`` are ``(start, end, source)`` character spans of it
    with source ``"slm"`` or ``"helper"`` (adjacent spans of one source merged); ``p_call`` holds
    P(``<CALL>``) at every SLM decision step; ``call_positions`` the character offset in ``text``
    where each call (resolved or not) happened; ``token_ids`` the continuation in SLM ids.
    """

    prompt: str
    text: str
    spans: list[tuple[int, int, str]]
    p_call: list[float]
    n_calls: int
    unresolved_calls: int
    slm_tokens: int
    helper_tokens: int
    seconds: float
    call_positions: list[int]
    token_ids: list[int] = field(default_factory=list)

    @property
    def call_rate(self) -> float:
        """Calls per SLM decision step."""
        return self.n_calls / len(self.p_call) if self.p_call else 0.0

    def marked(self, open_mark: str = "[[", close_mark: str = "]]") -> str:
        """The text with helper spans marked, e.g. ``"was born in [[ Paris]]."``."""
        return "".join(
            f"{open_mark}{self.text[start:end]}{close_mark}" if source == "helper" else self.text[start:end]
            for start, end, source in self.spans
        )


class _TextBuilder:
    """The continuation as text, SLM ids and source spans.

    SLM tokens are decoded as they come; a token ending inside a multi-byte character (U+FFFD) waits
    until the character is complete, or until a call or the end forces it out.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.text = ""
        self.spans: list[tuple[int, int, str]] = []
        self.ids: list[int] = []
        self.pending: list[int] = []

    def _append(self, piece: str, source: str) -> None:
        if not piece:
            return
        start = len(self.text)
        self.text += piece
        if self.spans and self.spans[-1][2] == source and self.spans[-1][1] == start:
            self.spans[-1] = (self.spans[-1][0], len(self.text), source)
        else:
            self.spans.append((start, len(self.text), source))

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def add_slm(self, token: int) -> None:
        self.ids.append(token)
        self.pending.append(token)
        piece = self._decode(self.pending)
        if not piece.endswith("\ufffd"):
            self._append(piece, "slm")
            self.pending.clear()

    def flush(self) -> int:
        """Write out pending SLM tokens; the text length."""
        if self.pending:
            self._append(self._decode(self.pending), "slm")
            self.pending.clear()
        return len(self.text)

    def add_helper(self, piece: str, ids: list[int]) -> None:
        self.flush()
        self.ids.extend(ids)
        self._append(piece, "helper")


class _SLMRunner:
    """Encodes SLM ids and returns the next-token logits; with a KV cache, only the new ids are encoded."""

    def __init__(self, model: PreTrainedModel, cache_kwarg: str, kv_cache: bool) -> None:
        self.model = model
        self.device = model.device
        self.cache = DynamicCache(config=model.config) if kv_cache else None
        self.cache_kwarg = cache_kwarg
        self.ids: list[int] = []

    def extend(self, new_ids: list[int]) -> torch.Tensor:
        self.ids.extend(new_ids)
        if self.cache is None:
            inputs, kwargs = self.ids, {"use_cache": False}
        else:
            inputs, kwargs = new_ids, {self.cache_kwarg: self.cache, "use_cache": True}
        input_ids = torch.tensor([inputs], dtype=torch.long, device=self.device)
        return self.model(input_ids=input_ids, logits_to_keep=1, **kwargs).logits[0, -1].float()


def sample_top_p(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One id from softmax(logits / temperature) restricted to the smallest set of mass ≥ top_p."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # mass before this id already reaches top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[0]


class CascadeDecoder:
    """Generate with an SLM that defers to ``helper`` when ``policy`` says so.

    ``slm`` is a Hugging Face causal LM whose ``tokenizer`` has ``<CALL>``. Greedy by default
    (``temperature=0``); sampling uses a generator seeded with ``seed`` at every ``generate``.
    ``call_logit_bias`` is added to the ``<CALL>`` logit before the softmax; ``-inf`` removes
    ``<CALL>`` entirely and the SLM never calls (the fact-leakage probe). ``helper=None`` leaves
    every call unresolved. ``max_helper_tokens`` caps one word hand-off. ``ignore_eos`` bans the
    SLM's end-of-text token so that it always writes ``max_new_tokens`` (benchmarks). ``kv_cache=False``
    re-encodes the whole prefix at every step: the reference (:func:`naive_generate`).
    """

    def __init__(
        self,
        slm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        helper: Helper | None,
        policy: CallPolicy,
        *,
        max_new_tokens: int = 64,
        handoff: str = "word",
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        call_logit_bias: float | None = None,
        max_helper_tokens: int = 16,
        ignore_eos: bool = False,
        kv_cache: bool = True,
    ) -> None:
        if handoff not in HANDOFFS:
            raise ValueError(f"unknown handoff {handoff!r}; valid: {', '.join(HANDOFFS)}")
        if max_new_tokens < 1 or max_helper_tokens < 1:
            raise ValueError(f"max_new_tokens and max_helper_tokens must be >= 1, got {max_new_tokens}, {max_helper_tokens}")
        if temperature < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(f"need temperature >= 0 (0 = greedy) and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.slm = slm.eval()
        self.tokenizer = tokenizer
        self.helper = helper
        self.policy = policy
        self.max_new_tokens = max_new_tokens
        self.handoff = handoff
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.call_logit_bias = call_logit_bias
        self.max_helper_tokens = max_helper_tokens
        self.kv_cache = kv_cache
        self.call_id = call_token_id(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.max_positions = max_positions(slm)
        self.cache_kwarg = cache_argument(slm)
        self.ban_bias = banned_token_bias(tokenizer, output_vocab_size(slm), allowed=() if ignore_eos else (self.eos_id,))
        self.ban_bias[self.call_id] = -np.inf
        self.ban_bias_torch = torch.from_numpy(self.ban_bias).to(slm.device)
        helper_tokenizer = getattr(helper, "tokenizer", None)
        self.shared_vocab = helper_tokenizer is not None and helper_tokenizer.get_vocab() == tokenizer.get_vocab()

    def _read_step(self, logits: torch.Tensor, generator: torch.Generator | None) -> tuple[float, bool, int]:
        """(P(<CALL>), whether <CALL> is the argmax, the SLM's own non-<CALL> token) for one step.

        Greedy steps run on a host copy of the logits: a few NumPy ops cost ~10 µs where the same
        torch ops cost ~100 µs of dispatch, which matters next to a ~1 ms SLM forward.
        """
        row = logits.cpu().numpy()
        if self.call_logit_bias is not None:
            row[self.call_id] += self.call_logit_bias
        top = row.max()
        p_call = float(np.exp(row[self.call_id] - top) / np.exp(row - top).sum())
        call_is_argmax = int(row.argmax()) == self.call_id
        if generator is None:
            own = int(np.argmax(row + self.ban_bias))
        else:
            masked = torch.from_numpy(row).to(self.ban_bias_torch.device) + self.ban_bias_torch
            own = int(sample_top_p(masked, self.temperature, self.top_p, generator))
        return p_call, call_is_argmax, own

    def _ask_helper(self, session, text: str) -> HelperReply:
        if session is None:
            return HelperReply(None, 0)
        if self.handoff == "token":
            return session.continue_text(text, max_new_tokens=1, until_word_boundary=False)
        return session.continue_text(text, max_new_tokens=self.max_helper_tokens, until_word_boundary=True)

    def generate(self, prompt: str, subject: str | None = None) -> Generation:
        """Continue ``prompt`` for up to ``max_new_tokens`` SLM-vocabulary tokens (a word hand-off may
        overshoot by its own length), stopping early at end-of-text or when the SLM's context is full
        (it has read its maximum number of positions; the last token generated is never read)."""
        started = time.perf_counter()
        prompt_ids = encode_text(self.tokenizer, prompt)
        if not prompt_ids:
            raise ValueError("empty prompt and the tokenizer has no BOS token: give a non-empty prompt")
        if len(prompt_ids) >= self.max_positions:
            raise ValueError(f"prompt is {len(prompt_ids)} tokens; the SLM accepts at most {self.max_positions}: shorten it")
        generator = None
        if self.temperature > 0:
            generator = torch.Generator(device=self.slm.device).manual_seed(self.seed)
        session = self.helper.session(subject) if self.helper is not None else None
        out = _TextBuilder(self.tokenizer)
        runner = _SLMRunner(self.slm, self.cache_kwarg, self.kv_cache)
        never_call = self.call_logit_bias == -math.inf
        p_calls: list[float] = []
        call_positions: list[int] = []
        unresolved = slm_tokens = helper_tokens = 0
        with torch.inference_mode():
            logits = runner.extend(prompt_ids)
            while True:
                p_call, call_is_argmax, own = self._read_step(logits, generator)
                p_calls.append(p_call)
                new_ids: list[int] | None = None
                if not never_call and self.policy.decide(p_call, call_is_argmax):
                    call_positions.append(out.flush())
                    reply = self._ask_helper(session, prompt + out.text)
                    if reply.text:
                        if self.shared_vocab and reply.token_ids:
                            new_ids = list(reply.token_ids)
                        else:
                            new_ids = self.tokenizer(reply.text, add_special_tokens=False)["input_ids"]
                        out.add_helper(reply.text, new_ids)
                        helper_tokens += reply.tokens
                    else:
                        unresolved += 1
                if new_ids is None:
                    if own == self.eos_id:
                        break
                    new_ids = [own]
                    out.add_slm(own)
                    slm_tokens += 1
                if len(out.ids) >= self.max_new_tokens or len(runner.ids) + len(new_ids) > self.max_positions:
                    break
                logits = runner.extend(new_ids)
        out.flush()
        return Generation(
            prompt=prompt,
            text=out.text,
            spans=out.spans,
            p_call=p_calls,
            n_calls=len(call_positions),
            unresolved_calls=unresolved,
            slm_tokens=slm_tokens,
            helper_tokens=helper_tokens,
            seconds=time.perf_counter() - started,
            call_positions=call_positions,
            token_ids=out.ids,
        )

    def generate_many(self, prompts: Sequence[str], subjects: Sequence[str | None] | None = None) -> list[Generation]:
        """``generate`` for each prompt (with its subject, when given), in order."""
        if subjects is not None and len(subjects) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(subjects)} subjects; give one subject per prompt")
        return [self.generate(p, s) for p, s in zip(prompts, subjects if subjects is not None else [None] * len(prompts))]


def naive_generate(
    slm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    helper: Helper | None,
    policy: CallPolicy,
    prompt: str,
    subject: str | None = None,
    **options,
) -> Generation:
    """The cascade without KV caches: both models re-encode their whole prefix at every step.

    The SLM re-encodes its own id sequence (so the ids match the cached path exactly); an LM helper
    re-tokenises the full text. The reference for tests and for ``lacy.bench.cascade``.
    """
    reference_helper = helper.without_kv_cache() if isinstance(helper, LMHelper) else helper
    return CascadeDecoder(slm, tokenizer, reference_helper, policy, kv_cache=False, **options).generate(prompt, subject)


def p_call_teacher_forced(
    slm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, batch_size: int = 16
) -> list[np.ndarray]:
    """P(``<CALL>``) before every token of each text, the text given (teacher forcing).

    Entry ``i`` of a text's array is P(``<CALL>`` | ``<bos>`` + its first ``i`` tokens), one per
    token; texts longer than the SLM's context are truncated to it. Used to calibrate thresholds
    as call-rate quantiles on held-out text (paper §5; Co-LLM).
    """
    call_id = call_token_id(tokenizer)
    limit = max_positions(slm)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[np.ndarray] = []
    slm.eval()
    with torch.inference_mode():
        for begin in range(0, len(texts), batch_size):
            encoded = [encode_text(tokenizer, text)[:limit] for text in texts[begin : begin + batch_size]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            logits = slm(input_ids=input_ids.to(slm.device), attention_mask=attention.to(slm.device), use_cache=False).logits
            p_call = (logits[..., call_id].float() - torch.logsumexp(logits.float(), dim=-1)).exp().cpu().numpy()
            results.extend(p_call[row, : len(ids) - 1].astype(np.float64) for row, ids in enumerate(encoded))
    return results
