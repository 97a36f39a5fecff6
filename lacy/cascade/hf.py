"""Hugging Face model plumbing for the cascade: input conventions, banned ids, and batched decoding.

:class:`BatchedLM` runs a causal LM over several rows at once. Rows grow at different speeds (a
helper hand-off adds several tokens to one row, one token to another; an LM helper continues only
the few rows that call), so the KV cache is kept per row (:class:`RowCacheLayer`): row ``r``'s
tokens fill its slots ``0 .. length[r] - 1`` of one ``[rows, heads, capacity, dim]`` buffer, with no
padding between them. A forward left-pads the new ids of the rows that move, writes each live key
straight into its row's next slot, and attends over the first ``max length`` slots: every row's
queries see its own filled slots (a 4D mask; each row carries its own position ids). A padding
query sees slot 0 only: a query that sees nothing would give NaN. When most rows are idle, only the
moving rows' slots are gathered for attention, so the work follows the rows that move, not the
batch size. A row can also drop its latest tokens (:meth:`BatchedLM.forget`): its length shrinks,
which is how an LM helper follows a text whose tokenisation changed at the end. With a single row
no mask is passed, and the forward is the plain one-sequence forward.

Rows whose new ids differ much in length are read by separate forwards (:func:`width_groups`), so
that one row's long backlog does not pad every other row's new ids to its length.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass
from itertools import chain
from typing import Any, Sequence

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from lacy.data.tokenizer import call_token_id


def is_lacy_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` has ``<CALL>``, i.e. was trained by lacy (documents seen as ``<bos> text``)."""
    try:
        call_token_id(tokenizer)
    except ValueError:
        return False
    return True


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids a model sees for ``text`` as the start of a document.

    lacy-trained models (tokenizer with ``<CALL>``) were trained on ``<bos> doc <eos>`` streams, so
    their input is ``<bos>`` + text; other models get their tokenizer's own convention
    (``add_special_tokens=True``: Llama 3 adds its BOS, GPT-2 and SmolLM2 add nothing).
    """
    return encode_texts(tokenizer, [text])[0]


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """:func:`encode_text` of each text, in one tokenizer call (its per-call overhead exceeds a short text's encoding)."""
    if not texts:
        return []
    if is_lacy_tokenizer(tokenizer):
        return [[tokenizer.bos_token_id, *ids] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return [list(ids) for ids in tokenizer(list(texts))["input_ids"]]


def model_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> str:
    """A hash of what determines a model's outputs: its config, every weight and its tokenizer.

    Hashes the weights' bytes (≈ 1 s per 100M parameters), so equal models give equal fingerprints
    wherever they were loaded from.
    """
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    if tokenizer is not None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        h.update((backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)).encode())
        h.update(json.dumps(tokenizer.all_special_ids).encode())
    return h.hexdigest()[:32]


def cache_argument(model: PreTrainedModel) -> str:
    """The name of the KV-cache keyword of ``model.forward``: ``cache`` (transformers ≥ 5.x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def max_positions(model: PreTrainedModel) -> int:
    """The longest sequence the model accepts (``max_position_embeddings`` or GPT-2's ``n_positions``)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    return 1 << 30


def output_vocab_size(model: PreTrainedModel) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def banned_token_bias(tokenizer: PreTrainedTokenizerBase, vocab_size: int, allowed: Sequence[int] = ()) -> np.ndarray:
    """Additive logit bias (0 or -inf, float32) banning ids a model must not emit as text: special
    tokens (except ``allowed``) and ids the tokenizer cannot decode (an output layer padded beyond
    the vocabulary). A NumPy array: per-step greedy picks run on the host, where small ops are cheap."""
    bias = np.zeros(vocab_size, dtype=np.float32)
    bias[len(tokenizer):] = -np.inf
    special = [i for i in tokenizer.all_special_ids if i is not None and i not in set(allowed) and i < vocab_size]
    bias[special] = -np.inf
    return bias


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """End-of-text ids: the tokenizer's EOS and the model's generation-config EOS (an int or a list)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.discard(None)
    return {int(i) for i in ids}


@dataclass
class _Step:
    """Where one forward's new keys go: set by :class:`BatchedLM` before the forward, read by every layer."""

    rows: torch.Tensor | None = None  # the rows in the forward's batch; None: all rows, in order
    source: tuple[torch.Tensor, ...] = ()  # (batch index, column) of each live new id
    target: tuple[torch.Tensor, ...] = ()  # (row, slot) its key and value are stored at
    width: int = 0  # slots attended: the longest row of the batch after the forward
    start: int | None = None  # every row's new ids fill slots start .. start + width - 1 (equal rows): a slice copy
    past: int = 0  # cached length reported to the model: in a forward, its rows' length before it (used when all
    # are equal); between forwards, the longest row's


class RowCacheLayer(DynamicLayer):
    """One layer's keys and values for ``n_rows`` rows, row ``r``'s tokens in its slots ``0 .. length - 1``.

    :meth:`update` stores the forward's live new keys at the slots :class:`_Step` names and returns
    the first ``step.width`` slots of the batch's rows (a view when the batch is every row, a gathered
    copy otherwise). The buffer starts zeroed and grows by half (zero-filled), so every slot a query
    can see holds finite numbers; a slot past a row's length is masked from its queries.
    """

    def __init__(self, n_rows: int, step: _Step) -> None:
        super().__init__()
        self.n_rows, self.step = n_rows, step
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.step
        capacity = 0 if self.buffers is None else self.buffers[0].shape[2]
        if step.width > capacity:
            self._grow(key_states, value_states, max(step.width, capacity * 3 // 2, 16))
        attended = []
        for buffer, new in zip(self.buffers, (key_states, value_states)):
            if step.start is not None:
                buffer[:, :, step.start : step.start + new.shape[2]] = new
            else:
                buffer[step.target[0], :, step.target[1]] = new[step.source[0], :, step.source[1]]
            filled = buffer[:, :, : step.width]
            attended.append(filled if step.rows is None else filled.index_select(0, step.rows))
        return attended[0], attended[1]

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        grown = []
        for i, new in enumerate((key_states, value_states)):
            buffer = new.new_zeros((self.n_rows, new.shape[1], capacity, new.shape[3]))
            if self.buffers is not None:
                buffer[:, :, : self.buffers[i].shape[2]] = self.buffers[i]
            grown.append(buffer)
        self.buffers = (grown[0], grown[1])
        self.device, self.is_initialized = key_states.device, True

    def get_seq_length(self) -> int:
        return self.step.past

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.step.past + query_length, 0


def width_groups(widths: Sequence[int], forward_cost_tokens: float) -> list[list[int]]:
    """Split rows that read ``widths[i]`` new ids each into groups read by separate forwards.

    One forward pads every row to the longest: a row with a long backlog (an LM helper's first call
    after 80 SLM tokens) beside rows that read one token makes the batch read mostly padding. A
    forward costs about ``forward_cost_tokens +
    rows x width`` token slots. Its fixed cost, measured at the ``cpu`` sizes on a 2-core CPU, is
    2.5-3 ms: the work of 40-55 token slots of the helper and about 150 of the SLM, so
    :attr:`BatchedLM.forward_cost_tokens` (128) splits only where padding clearly dominates (a GPU's
    fixed cost is larger still). The rows are sorted by width and cut where that total is least
    (exact dynamic programme over the sorted order, where an optimal grouping always lies). Returns
    lists of indices into ``widths``, widest first.
    """
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    # Rows of equal width belong together (moving one into its equal's group never costs more), so
    # the cuts fall between distinct widths: few, where rows are many.
    starts = [i for i in range(len(order)) if i == 0 or widths[order[i]] != widths[order[i - 1]]] + [len(order)]
    best = [0.0] + [math.inf] * (len(starts) - 1)  # best[j]: least cost of reading the rows before starts[j]
    cut = [0] * len(starts)
    for end in range(1, len(starts)):
        for start in range(end):
            cost = best[start] + forward_cost_tokens + (starts[end] - starts[start]) * widths[order[starts[start]]]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(starts) - 1
    while end:
        groups.append(order[starts[cut[end]]:starts[end]])
        end = cut[end]
    return groups[::-1]


class BatchedLM:
    """``n_rows`` token sequences decoded together by ``model``; :meth:`extend` returns next-token logits.

    ``ids[row]`` is what the model has read for that row, in order. With ``kv_cache=True`` only the
    new ids are encoded (:class:`RowCacheLayer` holds each row's keys); with ``kv_cache=False`` every
    row that received ids is re-encoded in full (the naive reference), and rows that received none
    are skipped.
    """

    forward_cost_tokens = 128  # a forward's fixed cost in padded token slots (see width_groups)

    def __init__(self, model: PreTrainedModel, n_rows: int, *, kv_cache: bool = True) -> None:
        if n_rows < 1:
            raise ValueError(f"a batch needs at least one row, got {n_rows}")
        self.model = model
        self.device = model.device
        self.n_rows = n_rows
        self.step = _Step()
        self.cache = self._row_cache() if kv_cache else None
        self.cache_kwarg = cache_argument(model)
        self.pad_id = int(getattr(model.config, "pad_token_id", None) or 0)
        self.ids: list[list[int]] = [[] for _ in range(n_rows)]

    def _row_cache(self) -> DynamicCache:
        cache = DynamicCache(config=self.model.config)
        if any(type(layer) is not DynamicLayer for layer in cache.layers):
            kinds = sorted({type(layer).__name__ for layer in cache.layers})
            raise ValueError(f"{type(self.model).__name__} has cache layers {kinds}: batched decoding with a KV cache "
                             "supports full-attention layers only (DynamicLayer); decode it with kv_cache=False")
        cache.layers = [RowCacheLayer(self.n_rows, self.step) for _ in cache.layers]
        return cache

    def forget(self, row: int, keep: int) -> None:
        """Keep the first ``keep`` ids of ``row``: the later ones are no longer seen by its next tokens."""
        del self.ids[row][keep:]
        self.step.past = max(map(len, self.ids))

    def extend(self, new_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Read ``new_ids[row]`` for every row (possibly none); float logits ``[n_rows, vocab]`` after
        each row's last id (meaningless for rows that received none)."""
        if len(new_ids) != self.n_rows:
            raise ValueError(f"need new ids for each of the {self.n_rows} rows, got {len(new_ids)}")
        moving = [row for row, ids in enumerate(new_ids) if ids]
        if not moving:
            raise ValueError("extend needs new ids for at least one row")
        if self.cache is None:
            for row in moving:
                self.ids[row].extend(new_ids[row])
            return self._scatter(moving, moving, self._forward(moving, [[]] * len(moving), [self.ids[row] for row in moving], cached=False))
        groups = width_groups([len(new_ids[row]) for row in moving], self.forward_cost_tokens)
        out = None
        for group in groups:  # rows are independent: reading them in turn gives each the same logits
            rows = sorted(moving[i] for i in group)
            # A gathered batch costs a copy of its rows' cache: worth it only when most rows are idle
            # (an LM helper's callers; the SLM's last rows after the others ended).
            batch = list(range(self.n_rows)) if len(rows) > self.n_rows // 2 else rows
            logits = self._forward(batch, [self.ids[row] for row in batch], [new_ids[row] for row in batch], cached=True)
            for row in rows:
                self.ids[row].extend(new_ids[row])
            out = logits if len(groups) == 1 and len(batch) == self.n_rows else self._scatter(rows, batch, logits, out)
        self.step.past = max(map(len, self.ids))
        return out

    def _scatter(self, rows: list[int], batch: list[int], logits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out`` (``[n_rows, vocab]``, zeros when None) with ``rows``' logits taken from ``logits`` of ``batch``."""
        out = logits.new_zeros((self.n_rows, logits.shape[-1])) if out is None else out
        out[rows] = logits if rows == batch else logits[rows]  # a batch other than rows is every row
        return out

    def _forward(self, batch: list[int], past: Sequence[Sequence[int]], new: Sequence[Sequence[int]], *, cached: bool) -> torch.Tensor:
        """Logits after each of ``batch``'s rows read ``new[i]`` after ``past[i]`` (cached: the keys of
        ``past`` are in :attr:`cache`; else ``past`` is empty and ``new`` is the whole row).

        The index work is NumPy (a small op costs ~1 µs there, ~10 µs in torch: it matters next to a
        1-row forward of a few ms). When every row of the batch has the same length and reads as many
        ids (one row; the SLM's first step), the model's own causal mask and positions apply."""
        width = max(map(len, new))
        lengths = np.fromiter(map(len, past), dtype=np.int64, count=len(batch))
        counts = np.fromiter(map(len, new), dtype=np.int64, count=len(batch))
        dead = np.arange(width)[None, :] < (width - counts)[:, None]  # left padding: last ids in the last column
        slots = np.where(dead, 0, lengths[:, None] + np.arange(width)[None, :] - (width - counts)[:, None])
        inputs = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        inputs[~dead] = np.fromiter(chain.from_iterable(new), dtype=np.int64, count=int(counts.sum()))
        attended = int((lengths + counts).max())
        uniform = bool((counts == width).all() and (lengths == lengths[0]).all())
        kwargs: dict = {"use_cache": cached}
        if cached:
            step = self.step
            step.rows = None if len(batch) == self.n_rows else torch.from_numpy(np.asarray(batch)).to(self.device)
            step.width, step.past = attended, int(lengths.max())
            step.start = int(lengths[0]) if uniform and step.rows is None else None
            if step.start is None:  # the slot each live query's key is stored at
                source = np.nonzero(~dead)
                step.source = tuple(torch.from_numpy(index).to(self.device) for index in source)
                step.target = tuple(torch.from_numpy(index).to(self.device) for index in (np.asarray(batch)[source[0]], slots[source]))
            kwargs[self.cache_kwarg] = self.cache
        if not uniform:  # a padding query attends to slot 0 only
            kwargs.update(attention_mask=self._mask(slots, attended), position_ids=torch.from_numpy(slots).to(self.device))
        return self.model(input_ids=torch.from_numpy(inputs).to(self.device), logits_to_keep=1, **kwargs).logits[:, -1].float()

    def _mask(self, slots: np.ndarray, attended: int) -> torch.Tensor:
        """Additive 4D mask ``[rows, 1, new, attended]``: the query stored at slot ``s`` of its row sees
        the row's slots ``0 .. s``; a padding query sees slot 0 only."""
        allowed = torch.from_numpy(np.arange(attended)[None, None, :] <= slots[:, :, None])
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None].to(self.device)
