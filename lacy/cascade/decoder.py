"""The cascade decoder: the small model writes, and hands the pen to a helper when it calls (paper §5).

At every step the SLM's next-token distribution gives P(``<CALL>``) (full softmax; for a model with a
deferral gate, ``model.call_head=gate``, that is the gate's ``sigmoid(g)``: its output layer writes the
gate into the ``<CALL>`` column so that the two agree exactly, see
:func:`lacy.train.objective.gated_call_logits`). A call policy
decides whether to defer. If not, ``<CALL>`` is masked and the SLM's own token is used (greedy by
default). If so, the helper continues the text — one helper token (``handoff="token"``) or up to the
next word boundary (``handoff="word"``, default) — and its text becomes SLM tokens that extend the
SLM's KV cache with a single forward over just those tokens. A helper with no answer (``None``) is
an *unresolved call*: the SLM falls back to its best non-``<CALL>`` token. A helper that ends the text
(an LM's end-of-text, the end of a document: ``HelperReply.ends``) ends the generation.

Hand-off between tokenizers: the generation is kept as a string. The helper's text is tokenised
*on its own* by the SLM tokenizer and appended to the SLM's ids, so the SLM's cache always matches
its id sequence exactly. The price: BPE merges across the hand-off boundary are not made, so the
SLM's ids may segment the text differently from tokenising the whole string (the decoded text is
the same). With byte-level BPE this only happens when the boundary falls inside a pre-token
(mid-word); re-tokenising the whole text instead would change ids already in the cache and force
recomputation. When the helper shares the SLM's vocabulary, its token ids are appended directly.

Batches: :meth:`CascadeDecoder.generate_many` decodes ``batch_size`` prompts at once. Every row
keeps its own text, policy state (:meth:`lacy.cascade.policies.CallPolicy.start`), sampling
generator and position ids; the SLM reads all rows in one forward (:class:`lacy.cascade.hf.BatchedLM`:
left padding, per-row attention masks), and the rows that call in a step are sent to the helper
together (:meth:`lacy.cascade.helpers.Helper.open`). Each row's hand-off is appended to its own slots
of the shared KV cache, so nothing is re-encoded. A row's greedy output is the one it gets alone.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lacy.cascade.hf import BatchedLM, banned_token_bias, encode_text, max_positions, model_fingerprint, output_vocab_size
from lacy.cascade.helpers import Helper, HelperBatch, HelperReply, LMHelper
from lacy.cascade.policies import CallPolicy
from lacy.data.cache import content_key
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


def sample_top_p(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """One id from softmax(logits / temperature) restricted to the smallest set of mass ≥ top_p.

    On the host in NumPy (inverse CDF of one uniform draw): per step and row it costs a fifth of the
    same torch ops, whose dispatch dominates next to a small model's forward. Ids with logit -inf
    (banned) have probability 0 and are never drawn.
    """
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_probs = probs[order]
        cumulative = np.cumsum(sorted_probs)
        outside = cumulative - sorted_probs >= top_p * cumulative[-1]  # mass before this id already reaches top_p
        probs = np.zeros_like(probs)
        probs[order[~outside]] = sorted_probs[~outside]
    cumulative = np.cumsum(probs)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


class CascadeDecoder:
    """Generate with an SLM that defers to ``helper`` when ``policy`` says so.

    ``slm`` is a Hugging Face causal LM whose ``tokenizer`` has ``<CALL>``. Greedy by default
    (``temperature=0``); sampling uses a generator seeded with ``seed`` at every ``generate``.
    ``call_logit_bias`` is added to the ``<CALL>`` logit before the softmax (for a gated model: to the
    gate logit, P(``<CALL>``) = ``sigmoid(g + bias)``); ``-inf`` removes
    ``<CALL>`` entirely and the SLM never calls (the fact-leakage probe). ``helper=None`` leaves
    every call unresolved. ``max_helper_tokens`` caps one word hand-off. ``ignore_eos`` bans the
    SLM's end-of-text token so that it always writes ``max_new_tokens`` (benchmarks). ``kv_cache=False``
    re-encodes the whole prefix at every step: the reference (:func:`naive_generate`).
    ``batch_size`` prompts are decoded together by :meth:`generate_many`.
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
        batch_size: int = 1,
    ) -> None:
        if handoff not in HANDOFFS:
            raise ValueError(f"unknown handoff {handoff!r}; valid: {', '.join(HANDOFFS)}")
        if max_new_tokens < 1 or max_helper_tokens < 1:
            raise ValueError(f"max_new_tokens and max_helper_tokens must be >= 1, got {max_new_tokens}, {max_helper_tokens}")
        if temperature < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(f"need temperature >= 0 (0 = greedy) and 0 < top_p <= 1, got {temperature}, {top_p}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (prompts decoded together), got {batch_size}")
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
        self.ignore_eos = ignore_eos
        self.kv_cache = kv_cache
        self.batch_size = batch_size
        self.call_id = call_token_id(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.max_positions = max_positions(slm)
        self.ban_bias = banned_token_bias(tokenizer, output_vocab_size(slm), allowed=() if ignore_eos else (self.eos_id,))
        self.ban_bias[self.call_id] = -np.inf
        helper_tokenizer = getattr(helper, "tokenizer", None)
        self.shared_vocab = helper_tokenizer is not None and helper_tokenizer.get_vocab() == tokenizer.get_vocab()

    def fingerprint(self) -> str | None:
        """A hash of everything that fixes this decoder's generation for a given prompt and subject:
        the SLM (:func:`lacy.cascade.hf.model_fingerprint`), the helper's and the policy's
        fingerprints, the decoding options and the cascade's own source code with the versions of
        torch and transformers. None when the helper or the policy cannot say. The batch size is part
        of it: greedy outputs match batch 1 in the tests, but on trained models a near-tie between two
        tokens or at the call threshold can resolve differently when the rows are padded differently
        (measured: 1 of 240 generations of one evaluation differed between batches of 32 and 128)."""
        helper = "none" if self.helper is None else self.helper.fingerprint()
        policy = self.policy.fingerprint()
        if helper is None or policy is None:
            return None
        if getattr(self, "_slm_fingerprint", None) is None:
            self._slm_fingerprint = model_fingerprint(self.slm, self.tokenizer)
        options = {name: getattr(self, name) for name in ("max_new_tokens", "handoff", "temperature", "top_p", "seed",
                                                          "call_logit_bias", "max_helper_tokens", "ignore_eos", "batch_size")}
        return content_key({"slm": self._slm_fingerprint, "helper": helper, "policy": policy, "options": options,
                            "code": cascade_code_fingerprint()})

    def _read_step(self, row: np.ndarray, generator: np.random.Generator | None) -> tuple[float, bool, int]:
        """(P(<CALL>), whether <CALL> is the argmax, the SLM's own non-<CALL> token) for one step.

        ``row`` is a host copy of one row's logits: a few NumPy ops cost ~10 µs where the same torch
        ops cost ~100 µs of dispatch, which matters next to a ~1 ms SLM forward.
        """
        if self.call_logit_bias is not None:
            row[self.call_id] += self.call_logit_bias
        top = row.max()
        p_call = float(np.exp(row[self.call_id] - top) / np.exp(row - top).sum())
        call_is_argmax = int(row.argmax()) == self.call_id
        if generator is None:
            own = int(np.argmax(row + self.ban_bias))
        else:
            own = sample_top_p(row + self.ban_bias, self.temperature, self.top_p, generator)
        return p_call, call_is_argmax, own

    def _ask_helper(self, helpers: HelperBatch | None, rows: list["_Row"]) -> list[HelperReply]:
        if helpers is None or not rows:
            return [HelperReply(None, 0) for _ in rows]
        texts = [row.prompt + row.out.text for row in rows]
        indices = [row.index for row in rows]
        if self.handoff == "token":
            return helpers.continue_texts(indices, texts, max_new_tokens=1, until_word_boundary=False)
        return helpers.continue_texts(indices, texts, max_new_tokens=self.max_helper_tokens, until_word_boundary=True)

    def generate(self, prompt: str, subject: str | None = None) -> Generation:
        """Continue ``prompt`` for up to ``max_new_tokens`` SLM-vocabulary tokens (a word hand-off may
        overshoot by its own length), stopping early at end-of-text or when the SLM's context is full
        (it has read its maximum number of positions; the last token generated is never read)."""
        return self._generate_batch([prompt], [subject])[0]

    def generate_many(self, prompts: Sequence[str], subjects: Sequence[str | None] | None = None) -> list[Generation]:
        """:meth:`generate` for each prompt (with its subject, when given), in order, ``batch_size`` at a time.

        Every generation is the one :meth:`generate` gives for it alone; its ``seconds`` is its
        batch's wall time divided by the batch's size, so the seconds add up to the time spent.
        """
        if subjects is not None and len(subjects) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(subjects)} subjects; give one subject per prompt")
        subjects = list(subjects) if subjects is not None else [None] * len(prompts)
        out: list[Generation] = []
        for begin in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[begin : begin + self.batch_size], subjects[begin : begin + self.batch_size]))
        return out

    def _generate_batch(self, prompts: Sequence[str], subjects: Sequence[str | None]) -> list[Generation]:
        started = time.perf_counter()
        rows = [_Row(i, prompt, self) for i, prompt in enumerate(prompts)]
        helpers = self.helper.open(list(subjects)) if self.helper is not None else None
        slm = BatchedLM(self.slm, len(rows), kv_cache=self.kv_cache)
        never_call = self.call_logit_bias == -math.inf
        active = rows
        with torch.inference_mode():
            logits = slm.extend([row.prompt_ids for row in rows])
            while active:
                host = logits.cpu().numpy()
                steps = [(row, *self._read_step(host[row.index].copy(), row.generator)) for row in active]
                callers = []
                for row, p_call, call_is_argmax, _ in steps:
                    row.p_calls.append(p_call)
                    if not never_call and row.policy.decide(p_call, call_is_argmax):
                        row.call_positions.append(row.out.flush())
                        callers.append(row)
                replies = dict(zip((row.index for row in callers), self._ask_helper(helpers, callers)))
                new_ids: list[list[int]] = [[] for _ in rows]
                still = []
                for row, _, _, own in steps:
                    ids = row.take(replies.get(row.index), own, self)
                    if ids is not None and not row.ended and len(row.out.ids) < self.max_new_tokens \
                            and len(slm.ids[row.index]) + len(ids) <= self.max_positions:
                        new_ids[row.index] = ids
                        still.append(row)
                active = still
                if active:
                    logits = slm.extend(new_ids)
        seconds = (time.perf_counter() - started) / len(rows)
        return [row.generation(seconds) for row in rows]


@functools.lru_cache(maxsize=1)
def cascade_code_fingerprint() -> str:
    """A hash of the source of :mod:`lacy.cascade` and the torch / transformers / tokenizers versions:
    what, besides the models and options, decides a generation."""
    sources = {path.name: path.read_text() for path in sorted(Path(__file__).parent.glob("*.py"))}
    versions = {package: metadata.version(package) for package in ("torch", "transformers", "tokenizers")}
    return content_key({"sources": sources, "versions": versions})


class _Row:
    """One generation of a batch: its prompt, text so far, policy state, sampling generator and counts."""

    def __init__(self, index: int, prompt: str, decoder: CascadeDecoder) -> None:
        self.index = index
        self.prompt = prompt
        self.prompt_ids = encode_text(decoder.tokenizer, prompt)
        if not self.prompt_ids:
            raise ValueError("empty prompt and the tokenizer has no BOS token: give a non-empty prompt")
        if len(self.prompt_ids) >= decoder.max_positions:
            raise ValueError(f"prompt is {len(self.prompt_ids)} tokens; the SLM accepts at most {decoder.max_positions}: shorten it")
        self.policy = decoder.policy.start()
        self.generator = None
        if decoder.temperature > 0:
            self.generator = np.random.default_rng(decoder.seed)
        self.out = _TextBuilder(decoder.tokenizer)
        self.p_calls: list[float] = []
        self.call_positions: list[int] = []
        self.unresolved = self.slm_tokens = self.helper_tokens = 0
        self.ended = False  # the helper ended the text (see HelperReply.ends)

    def take(self, reply: HelperReply | None, own: int, decoder: CascadeDecoder) -> list[int] | None:
        """Write this step: the helper's reply when it called and got one, else the SLM's own token.
        The SLM ids to read next, or None at end-of-text (the SLM's, or a helper's that ends the text)."""
        if reply is not None:
            self.ended = reply.ends
            if reply.text:
                if decoder.shared_vocab and reply.token_ids:
                    ids = list(reply.token_ids)
                else:
                    ids = decoder.tokenizer(reply.text, add_special_tokens=False)["input_ids"]
                self.out.add_helper(reply.text, ids)
                self.helper_tokens += reply.tokens
                return ids
            if reply.ends:
                return None
            self.unresolved += 1
        if own == decoder.eos_id:
            return None
        self.out.add_slm(own)
        self.slm_tokens += 1
        return [own]

    def generation(self, seconds: float) -> Generation:
        self.out.flush()
        return Generation(
            prompt=self.prompt,
            text=self.out.text,
            spans=self.out.spans,
            p_call=self.p_calls,
            n_calls=len(self.call_positions),
            unresolved_calls=self.unresolved,
            slm_tokens=self.slm_tokens,
            helper_tokens=self.helper_tokens,
            seconds=seconds,
            call_positions=self.call_positions,
            token_ids=self.out.ids,
        )

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
    as call-rate quantiles on held-out text (paper §5; Co-LLM). For a gated model it is the gate's
    ``sigmoid(g)`` (see the module docstring).
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
