"""The LightningDataModule: packed windows of the cached token stream with per-token flags.

Documents are packed as ``<bos> doc <eos> …`` and cut into windows of ``seq_len + 1`` tokens with a
stride of ``seq_len``, so every token is a target exactly once; only the last window is padded
(``valid`` is False there). All flags describe the *target* token (position ``t + 1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lacy.data.cache import SPLITS, CorpusCache, build_cache
from lacy.data.tokenizer import call_token_id
from lacy.profiles import Profile, check_choice, CORPORA


class TokenWindows(Dataset):
    """Window ``i`` of a flat token stream and its aligned per-token arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], seq_len: int, pad_id: int):
        self.arrays = arrays
        self.seq_len = seq_len
        self.pad_id = pad_id
        n = arrays["ids"].shape[0]
        self.n_windows = max(0, -(-(n - 1) // seq_len))

    def __len__(self) -> int:
        return self.n_windows

    def window(self, name: str, i: int, fill: Any = 0) -> np.ndarray:
        """Tokens ``[i*T, i*T + T + 1)`` of ``name``, padded with ``fill`` past the end."""
        a = self.arrays[name]
        start = i * self.seq_len
        chunk = np.asarray(a[start : start + self.seq_len + 1])
        if chunk.shape[0] < self.seq_len + 1:
            pad = np.full((self.seq_len + 1 - chunk.shape[0], *a.shape[1:]), fill, dtype=a.dtype)
            chunk = np.concatenate([chunk, pad])
        return chunk

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.window("ids", i, self.pad_id).astype(np.int64)
        n_real = min(self.seq_len + 1, self.arrays["ids"].shape[0] - i * self.seq_len)
        valid = np.arange(1, self.seq_len + 1) < n_real
        item = {
            "input_ids": torch.from_numpy(ids[:-1].copy()),
            "targets": torch.from_numpy(ids[1:].copy()),
            "valid": torch.from_numpy(valid),
            "attention_mask": torch.ones(self.seq_len, dtype=torch.long),
            "fact": torch.from_numpy(self.window("fact", i)[1:] > 0),
            "fact_category": torch.from_numpy(self.window("fact", i)[1:].astype(np.int64)),
            "gold": torch.from_numpy(self.window("gold", i)[1:] > 0),
            "gold_attribute": torch.from_numpy(self.window("gold", i)[1:].astype(np.int64)),
            "forced": torch.from_numpy(self.window("forced", i)[1:] > 0),
            "doc_id": torch.from_numpy(self.window("doc", i, -1)[1:].astype(np.int64)),
        }
        for name in self.arrays.keys() - {"ids", "fact", "gold", "forced", "doc"}:
            item[name] = torch.from_numpy(self.window(name, i)[1:].copy())
        return item


class LacyDataModule(L.LightningDataModule):
    """Batches of ``input_ids, targets, valid, attention_mask, fact, gold, forced, doc_id`` (+ attached arrays)."""

    def __init__(self, corpus: str, profile: Profile, seed: int = 0, cache_root: str | Path | None = None):
        super().__init__()
        check_choice("corpus", corpus, CORPORA)
        self.corpus, self.profile, self.seed, self.cache_root = corpus, profile, seed, cache_root
        self.cache: CorpusCache | None = None
        self.extra: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
        self._world = None
        self._tokenizer = None

    # Lightning hooks -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        build_cache(self.corpus, self.profile, self.seed, self.cache_root)

    def setup(self, stage: str | None = None) -> None:
        if self.cache is None:
            self.cache = build_cache(self.corpus, self.profile, self.seed, self.cache_root)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.dataset("train"), batch_size=self.profile.train.batch_size, shuffle=True,
                          generator=g, drop_last=True, num_workers=self.profile.train.num_workers,
                          persistent_workers=self.profile.train.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.profile.train.batch_size, shuffle=False,
                          num_workers=self.profile.train.num_workers)

    # Data access -----------------------------------------------------------------------------
    def _require(self) -> CorpusCache:
        if self.cache is None:
            self.setup()
        assert self.cache is not None
        return self.cache

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        cache = self._require()
        base = {f: cache.array(split, f) for f in ("ids", "fact", "gold", "forced", "doc")}
        return {**base, **self.extra[split]}

    def dataset(self, split: str) -> TokenWindows:
        return TokenWindows(self.arrays(split), self.profile.data.seq_len, self.pad_id)

    def flat_windows(self, split: str) -> np.ndarray:
        """All windows of ``split`` as an ``[N, T + 1]`` int64 array of token ids (padded)."""
        ds = self.dataset(split)
        return np.stack([ds.window("ids", i, self.pad_id) for i in range(len(ds))]).astype(np.int64)

    def attach_token_array(self, name: str, array: np.ndarray, split: str = "train") -> None:
        """Attach a per-token array aligned with the flat stream of ``split`` (e.g. ``ref_loss``)."""
        n = self.arrays(split)["ids"].shape[0]
        if array.shape[0] != n:
            raise ValueError(f"{name}: expected {n} rows aligned with the {split} token stream, got {array.shape[0]}")
        self.extra[split][name] = array

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._require().tokenizer()
        return self._tokenizer

    @property
    def call_id(self) -> int:
        return call_token_id(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def cache_key(self) -> str:
        return self._require().key

    @property
    def summary(self) -> dict[str, Any]:
        return self._require().summary

    @property
    def world(self):
        """The synthbio World (regenerated from its seed; cheap), or None for vitalwiki."""
        if self.corpus == "synthbio" and self._world is None:
            from lacy.data.synthbio import World

            self._world = World.from_config(self.profile.world)
        return self._world

    def documents(self, split: str | None = None):
        """The corpus documents (optionally one split), as used to build the cache."""
        from lacy.data.cache import load_documents

        docs, _ = load_documents(self.corpus, self.profile, self.seed)
        return [d for d in docs if split is None or d.split == split]
