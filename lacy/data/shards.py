"""Annotate a corpus on many machines: ``lacy data --shard I/N`` per machine, then ``lacy data --merge N``.

spaCy annotation is the slow part of a cache build (the paper: 152 CPU-hours per billion tokens). A
shard annotates a contiguous slice of each split's documents into its own part folder::

    <root>/parts/<corpus>-<key>/part-<I>-of-<N>/{split}.{field}.npy + part.json

``<key>`` is the content hash of everything that determines the cache (the same key the finished
cache gets), so parts of different settings never mix; ``part.json`` records every file's SHA-256
and the tokenizer's fingerprint. The merge verifies the parts, concatenates them in shard order and
writes the cache through :func:`lacy.data.cache.build_cache`: the arrays, tokenizer and manifest
files are byte for byte those of a single-machine build (only the timing fields of the summary differ).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lacy.data.cache import (FIELDS, SPLITS, _attribute_codes, _encode_split, build_cache, cache_config, content_key,
                             default_cache_root, load_documents, save_npy_atomic, sha256_file, write_json_atomic)
from lacy.profiles import ConfigError, Profile


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``; anything else is refused with the expected form."""
    index, sep, total = spec.partition("/")
    try:
        i, n = int(index), int(total)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard expects I/N with 0 <= I < N (e.g. 0/8 for the first of 8 shards), got {spec!r}")
    return i, n


def shard_bounds(n_items: int, index: int, n_shards: int) -> tuple[int, int]:
    """``[start, end)`` of shard ``index``: contiguous slices whose sizes differ by at most one."""
    return index * n_items // n_shards, (index + 1) * n_items // n_shards


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's full serialisation: shards must all use the same one."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def parts_dir(root: Path, corpus: str, key: str) -> Path:
    return root / "parts" / f"{corpus}-{key}"


def part_name(index: int, n_shards: int) -> str:
    return f"part-{index:05d}-of-{n_shards:05d}"


def _prepare(corpus: str, profile: Profile, seed: int):
    """Documents by split, the world, the tokenizer and the attribute codes, exactly as a full build makes them."""
    from lacy.data.tokenizer import train_tokenizer

    docs, world = load_documents(corpus, profile, seed)
    by_split = {s: [d for d in docs if d.split == s] for s in SPLITS}
    tokenizer = train_tokenizer((d.text for d in by_split["train"]), profile.data.vocab_size)
    return by_split, world, tokenizer, _attribute_codes(docs)


def build_shard(corpus: str, profile: Profile, seed: int, root: str | Path | None, index: int, n_shards: int,
                *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Annotate shard ``index`` of ``n_shards`` into its part folder (reused when it already verifies)."""
    from lacy.data.annotate import FactAnnotator

    root = Path(root) if root is not None else default_cache_root()
    key = content_key(cache_config(corpus, profile, seed))
    final = parts_dir(root, corpus, key) / part_name(index, n_shards)
    if (final / "part.json").exists():
        try:
            return verify_part(final)
        except ValueError as err:
            log(f"[lacy] rebuilding shard: {err}")
            shutil.rmtree(final, ignore_errors=True)
    started = time.perf_counter()
    by_split, world, tokenizer, codes = _prepare(corpus, profile, seed)
    annotator = FactAnnotator(model=profile.data.spacy_model or None, n_process=profile.data.annotate_processes,
                              batch_size=profile.data.annotate_batch_size)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        record: dict[str, Any] = {"key": key, "corpus": corpus, "index": index, "shards": n_shards,
                                  "tokenizer": tokenizer_fingerprint(tokenizer), "annotate_seconds": 0.0, "documents": {}}
        for split, docs in by_split.items():
            start, end = shard_bounds(len(docs), index, n_shards)
            arrays, seconds = _encode_split(docs[start:end], tokenizer, annotator, world, codes)
            record["annotate_seconds"] += seconds
            record["documents"][split] = [start, end]
            for field, array in arrays.items():
                save_npy_atomic(tmp / f"{split}.{field}.npy", array)
        record["files"] = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.npy"))}
        record["build_seconds"] = time.perf_counter() - started
        write_json_atomic(tmp / "part.json", record)
        if final.exists():  # another job wrote this shard meanwhile
            shutil.rmtree(tmp)
            return verify_part(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[lacy] shard {index}/{n_shards} of {corpus}: {final}")
    return record


def verify_part(folder: Path) -> dict[str, Any]:
    """The part's record, after checking every file against its recorded SHA-256 (``ValueError`` if not)."""
    try:
        record = json.loads((folder / "part.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"shard part {folder} has no readable part.json ({err})") from None
    for name, digest in record["files"].items():
        if not (folder / name).exists() or sha256_file(folder / name) != digest:
            raise ValueError(f"shard part {folder}: {name} is missing or does not match its recorded hash")
    return record


def merge_shards(corpus: str, profile: Profile, seed: int, root: str | Path | None, n_shards: int,
                 *, log: Callable[[str], None] = print):
    """Join the ``n_shards`` parts into the cache a single-machine :func:`build_cache` writes."""
    root = Path(root) if root is not None else default_cache_root()
    key = content_key(cache_config(corpus, profile, seed))
    folder = parts_dir(root, corpus, key)
    missing = [i for i in range(n_shards) if not (folder / part_name(i, n_shards) / "part.json").exists()]
    if missing:
        raise FileNotFoundError(f"cannot merge {corpus}: shards {missing} of {n_shards} are missing in {folder}; "
                                f"run `lacy data --corpus {corpus} --shard I/{n_shards}` for each (same profile, seed, --set)")
    records = [verify_part(folder / part_name(i, n_shards)) for i in range(n_shards)]

    def joined_split(split, docs, tokenizer, annotator, world, codes) -> tuple[dict[str, np.ndarray], float]:
        fingerprint = tokenizer_fingerprint(tokenizer)
        for record in records:
            if record["tokenizer"] != fingerprint:
                raise ValueError(f"shard {record['index']} was annotated with a different tokenizer; rebuild the shards")
        ends = [record["documents"][split] for record in records]
        if ends[0][0] != 0 or ends[-1][1] != len(docs) or any(a[1] != b[0] for a, b in zip(ends, ends[1:])):
            raise ValueError(f"the {n_shards} shards do not tile the {len(docs)} {split} documents: {ends}")
        arrays = {f: np.concatenate([np.load(folder / part_name(r["index"], n_shards) / f"{split}.{f}.npy") for r in records])
                  for f in FIELDS}
        return arrays, sum(r["annotate_seconds"] for r in records) if split == SPLITS[0] else 0.0

    cache = build_cache(corpus, profile, seed, root, log=log, encode_split=joined_split)
    log(f"[lacy] merged {n_shards} shards into {cache.path}")
    return cache


def data_command(corpus: str, profile: Profile, seed: int, root: str | Path | None, *, shard: str | None = None,
                 merge: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``lacy data``: the whole cache, one shard (``shard="I/N"``) or the merge of N shards (``merge=N``)."""
    if shard is not None and merge is not None:
        raise ConfigError("use either --shard I/N (annotate one part) or --merge N (join the parts), not both")
    if shard is not None:
        return build_shard(corpus, profile, seed, root, *parse_shard(shard), log=log)
    if merge is not None:
        if merge < 1:
            raise ConfigError(f"--merge expects the number of shards (>= 1), got {merge}")
        return merge_shards(corpus, profile, seed, root, merge, log=log).summary
    return build_cache(corpus, profile, seed, root, log=log).summary
