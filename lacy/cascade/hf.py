"""Hugging Face model plumbing for the cascade: input conventions, banned ids, and batched decoding.

:class:`BatchedLM` runs a causal LM over several rows at once with one KV cache. Rows grow at
different speeds (a helper hand-off adds several tokens to one row, one token to another), so each
forward left-pads the shorter rows; a padded slot stays in the cache as a *dead* slot, hidden from
every later query by the attention mask, and each row carries its own position ids. A dead slot's
own query sees only itself: a query that sees nothing would give NaN, and NaN keys poison every
later query of the row even where the mask hides them (0 × NaN). A row can also
drop its latest tokens (:meth:`BatchedLM.forget`), which kills their slots: that is how an LM helper
follows a text whose tokenisation changed at the end, without touching the other rows. With a single
row there is never a dead slot in the middle of the cache, no mask is passed, and the forward is the
plain one-sequence forward.

The cache grows in place (:class:`GrowingLayer`: spare capacity, doubled when full), so an append
copies only the new slots, not the whole cache. Dead slots still cost every later forward (they are
attended in full), and an LM helper that continues one row at a time leaves many: each call pads the 31 other rows. When
dead slots outnumber :attr:`BatchedLM.compact_slack` plus the longest row, the cache is compacted:
each row's live slots are gathered, in order, into a left-padded cache as wide as the longest row.
Keys carry their rotary positions, so moving them changes no logit. Rows whose new ids differ much in
length are read by separate forwards (:func:`width_groups`), so that one row's long backlog does not
pad every other row to its length.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
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


class GrowingLayer(DynamicLayer):
    """A KV-cache layer that appends into spare capacity instead of concatenating.

    ``DynamicLayer`` concatenates on every update, copying the whole cache once per generated token;
    here the keys and values live in buffers of ``capacity`` slots (doubled when full) and
    :attr:`keys` / :attr:`values` are views of the filled part. Assigning them (compaction, a row
    subset) replaces the buffers; assign both together (``layer.keys, layer.values = k, v``), since
    the keys set the length. The views hold the same numbers as the concatenated tensors, and
    attention reads each ``[slots, head_dim]`` matrix with the same layout, so logits do not change.
    """

    def __init__(self) -> None:
        self._buffers: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        self._length = 0
        super().__init__()

    def _view(self, buffer: torch.Tensor | None) -> torch.Tensor | None:
        return buffer[:, :, : self._length] if buffer is not None and buffer.dim() == 4 else buffer

    @property
    def keys(self) -> torch.Tensor | None:
        return self._view(self._buffers[0])

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self._buffers = (tensor, self._buffers[1])
        self._length = tensor.shape[2] if tensor is not None and tensor.dim() == 4 else 0

    @property
    def values(self) -> torch.Tensor | None:
        return self._view(self._buffers[1])

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._buffers = (self._buffers[0], tensor)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[2]
        if self._buffers[0].dim() != 4:  # nothing stored yet (lazy initialisation leaves empty 1-D tensors)
            self.load(key_states[:, :, :0], value_states[:, :, :0], max(end, 16))
        elif end > self._buffers[0].shape[2]:
            self.load(self.keys, self.values, max(end, 2 * self._length) - self._length)
        keys, values = self._buffers
        keys[:, :, self._length : end] = key_states
        values[:, :, self._length : end] = value_states
        self._length = end
        return self.keys, self.values

    def load(self, keys: torch.Tensor, values: torch.Tensor, spare: int) -> None:
        """Hold a copy of ``keys`` and ``values`` with room for ``spare`` more slots."""
        buffers = []
        for tensor in (keys, values):
            buffer = tensor.new_empty((*tensor.shape[:2], tensor.shape[2] + spare, tensor.shape[3]))
            buffer[:, :, : tensor.shape[2]] = tensor
            buffers.append(buffer)
        self._buffers, self._length = tuple(buffers), keys.shape[2]
        self.device, self.is_initialized = keys.device, True

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of slots to remove, got {tokens_to_remove}")
        if self.is_initialized:
            self._length = max(0, self._length + tokens_to_remove)


def growing_cache(model: PreTrainedModel) -> DynamicCache:
    """A ``DynamicCache`` for ``model`` whose plain layers are :class:`GrowingLayer` (sliding-window
    layers, if any, keep their own class)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def width_groups(widths: Sequence[int], forward_cost_tokens: float) -> list[list[int]]:
    """Split rows that read ``widths[i]`` new ids each into groups read by separate forwards.

    One forward pads every row to the longest: a row with a long backlog (an LM helper's first call
    after 80 SLM tokens) beside rows that read one token makes the batch read mostly padding, and
    leaves as many dead slots in every row's cache. A forward costs about ``forward_cost_tokens +
    rows x width`` token slots. Its fixed cost, measured at the ``cpu`` sizes on a 2-core CPU, is
    2.5-3 ms: the work of 40-55 token slots of the helper and about 150 of the SLM, so
    :attr:`BatchedLM.forward_cost_tokens` (128) splits only where padding clearly dominates (a GPU's
    fixed cost is larger still). The rows are sorted by width and cut where that total is least
    (exact dynamic programme over the sorted order, where an optimal grouping always lies). Returns
    lists of indices into ``widths``, widest first.
    """
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: least cost of reading the j widest rows
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):
            cost = best[start] + forward_cost_tokens + (end - start) * widths[order[start]]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], n
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


class BatchedLM:
    """``n_rows`` token sequences decoded together by ``model``; :meth:`extend` returns next-token logits.

    ``ids[row]`` is what the model has read for that row, in order. With ``kv_cache=True`` only the
    new ids are encoded (one forward for all rows); with ``kv_cache=False`` every row that received
    ids is re-encoded in full (the naive reference), and rows that received none are skipped.
    """

    compact_slack = 64  # dead slots tolerated beyond the longest row before the cache is compacted
    forward_cost_tokens = 128  # a forward's fixed cost in padded token slots (see width_groups)

    def __init__(self, model: PreTrainedModel, n_rows: int, *, kv_cache: bool = True) -> None:
        if n_rows < 1:
            raise ValueError(f"a batch needs at least one row, got {n_rows}")
        self.model = model
        self.device = model.device
        self.n_rows = n_rows
        self.cache = growing_cache(model) if kv_cache else None
        self.sub_cache: DynamicCache | None = None  # see _rows_cache
        self.cache_kwarg = cache_argument(model)
        self.pad_id = int(getattr(model.config, "pad_token_id", None) or 0)
        self.ids: list[list[int]] = [[] for _ in range(n_rows)]
        self.slots: list[list[int]] = [[] for _ in range(n_rows)]  # cache slot of each id (kv_cache only)
        self.live = torch.zeros((n_rows, 0), dtype=torch.long)  # 1 where a cache slot holds a row's token

    def forget(self, row: int, keep: int) -> None:
        """Keep the first ``keep`` ids of ``row``: the later ones are no longer seen by its next tokens."""
        if self.cache is not None:
            self.live[row, self.slots[row][keep:]] = 0
            del self.slots[row][keep:]
            self._drop_dead_tail()
        del self.ids[row][keep:]

    def _drop_dead_tail(self) -> None:
        """Remove trailing slots that no row uses (after a single row forgets, nothing dead remains)."""
        used = self.live.any(dim=0).nonzero()
        end = int(used.max()) + 1 if len(used) else 0
        excess = self.live.shape[1] - end
        if excess > 0:
            self.cache.crop(-excess)
            self.live = self.live[:, :end]

    def _compact(self) -> None:
        """Gather each row's live slots into a left-padded cache as wide as the longest row, when the
        dead slots exceed :attr:`compact_slack` beyond that width. A padding slot copies a live key
        (any finite key will do: it is masked from every query), so no NaN enters the cache."""
        width = max(len(slots) for slots in self.slots)
        if self.live.shape[1] <= width + self.compact_slack or not self.cache.get_seq_length():
            return
        index = torch.zeros((self.n_rows, width), dtype=torch.long)
        self.live = torch.zeros((self.n_rows, width), dtype=torch.long)
        for row, slots in enumerate(self.slots):
            start = width - len(slots)
            if slots:
                index[row, start:] = torch.tensor(slots, dtype=torch.long)
                index[row, :start] = slots[0]
            self.live[row, start:] = 1
            self.slots[row] = list(range(start, width))
        rows = torch.arange(self.n_rows)[:, None]
        for layer in self.cache.layers:  # [rows, heads, slots, dim] -> the same with the gathered slots
            layer.keys, layer.values = [cached.transpose(1, 2)[rows, index].transpose(1, 2).contiguous()
                                        for cached in (layer.keys, layer.values)]

    def extend(self, new_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Read ``new_ids[row]`` for every row (possibly none); float logits ``[n_rows, vocab]`` after
        each row's last id (meaningless for rows that received none).

        When most rows receive none (an LM helper continues the few rows that call), only the rows
        that move run the model: their cache rows are gathered into a smaller batch and the new slots
        are written back, so the work follows the rows that move, not the batch size.
        """
        if len(new_ids) != self.n_rows:
            raise ValueError(f"need new ids for each of the {self.n_rows} rows, got {len(new_ids)}")
        if self.cache is None:
            return self._extend_uncached(new_ids)
        moving = [row for row, ids in enumerate(new_ids) if ids]
        if not moving:
            raise ValueError("extend needs new ids for at least one row")
        groups = width_groups([len(new_ids[row]) for row in moving], self.forward_cost_tokens)
        if len(groups) == 1:
            return self._extend_rows(new_ids, moving)
        out = None
        for group in groups:  # rows are independent: reading them in turn gives each the same logits
            rows = [moving[i] for i in group]
            logits = self._extend_rows([new_ids[row] if row in rows else [] for row in range(self.n_rows)], rows)
            if out is None:
                out = logits
            else:
                out[rows] = logits[rows]
        return out

    def _extend_rows(self, new_ids: Sequence[Sequence[int]], moving: list[int]) -> torch.Tensor:
        """:meth:`extend` in one forward; ``moving`` are the rows with new ids."""
        width = max(len(new_ids[row]) for row in moving)
        self._compact()
        past = self.live.shape[1]
        # A smaller batch costs a copy of the moving rows' cache and a write-back: worth it only when
        # most rows are idle (an LM helper's callers; the SLM's last rows after the others ended).
        everyone = len(moving) > self.n_rows // 2
        batch = list(range(self.n_rows)) if everyone else moving
        inputs = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        step_live = torch.zeros((self.n_rows, width), dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            ids = new_ids[row]
            if not ids:
                continue
            start = width - len(ids)  # left padding: every row's last id sits in the last column
            inputs[i, start:] = torch.tensor(ids, dtype=torch.long)
            step_live[row, start:] = 1
            positions[i, start:] = torch.arange(len(self.ids[row]), len(self.ids[row]) + len(ids))
            self.slots[row].extend(range(past + start, past + width))
            self.ids[row].extend(ids)
        self.live = torch.cat([self.live, step_live], dim=1)
        cache = self.cache if everyone else self._rows_cache(moving, width)
        live = self.live if everyone else self.live[moving]
        kwargs = {self.cache_kwarg: cache, "use_cache": True}
        if not bool(live.all()):  # all slots live: positions are the slot indices, no mask needed
            kwargs.update(attention_mask=self._mask(live, past), position_ids=positions.to(self.device))
        logits = self.model(input_ids=inputs.to(self.device), logits_to_keep=1, **kwargs).logits[:, -1].float()
        if everyone:
            return logits
        self._write_back(cache, moving, past)
        out = torch.zeros((self.n_rows, logits.shape[-1]), dtype=logits.dtype, device=logits.device)
        out[moving] = logits
        return out

    def _rows_cache(self, rows: list[int], spare: int) -> DynamicCache:
        """A cache holding only ``rows`` of this one (a copy, with room for ``spare`` new slots), for a
        forward of those rows alone. One cache object serves every such forward (building a
        ``DynamicCache`` costs more than a small model's step)."""
        if self.sub_cache is None:
            self.sub_cache = growing_cache(self.model)
        if not self.cache.get_seq_length():
            for layer in self.sub_cache.layers:
                layer.reset()
            return self.sub_cache
        index = torch.tensor(rows, device=self.device)
        for mine, layer in zip(self.sub_cache.layers, self.cache.layers):
            mine.load(layer.keys[index], layer.values[index], spare)
        return self.sub_cache

    def _write_back(self, sub: DynamicCache, rows: list[int], past: int) -> None:
        """Append the slots ``sub`` gained after ``past`` to this cache: ``rows`` get them, the other
        rows get dead zero slots (finite, and masked from every query)."""
        index = torch.tensor(rows, device=self.device)
        for full, part in zip(self.cache.layers, sub.layers):
            slabs = []
            for theirs in (part.keys, part.values):
                slab = theirs.new_zeros((self.n_rows, theirs.shape[1], theirs.shape[2] - past, theirs.shape[3]))
                slab[index] = theirs[:, :, past:]
                slabs.append(slab)
            full.update(*slabs)

    def _mask(self, live: torch.Tensor, past: int) -> torch.Tensor:
        """Additive 4D mask ``[rows, 1, new, slots]``: a query at slot ``past + i`` sees the live slots up
        to itself, and always itself (so a dead query sees its own slot instead of nothing)."""
        slots = torch.arange(live.shape[1])
        query = past + torch.arange(live.shape[1] - past)
        allowed = (live.bool()[:, None, :] & (slots[None, :] <= query[:, None])[None]) | (slots[None, :] == query[:, None])[None]
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None].to(self.device)

    def _extend_uncached(self, new_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        rows = [row for row, ids in enumerate(new_ids) if ids]
        for row in rows:
            self.ids[row].extend(new_ids[row])
        width = max(len(self.ids[row]) for row in rows)
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        live = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(self.ids[row])
            inputs[i, width - n:] = torch.tensor(self.ids[row], dtype=torch.long)
            live[i, width - n:] = 1
            positions[i, width - n:] = torch.arange(n)
        kwargs: dict = {"use_cache": False}
        if not bool(live.all()):
            kwargs.update(attention_mask=self._mask(live, 0), position_ids=positions.to(self.device))
        logits = self.model(input_ids=inputs.to(self.device), logits_to_keep=1, **kwargs).logits[:, -1].float()
        out = torch.zeros((self.n_rows, logits.shape[-1]), dtype=logits.dtype, device=logits.device)
        out[rows] = logits
        return out
