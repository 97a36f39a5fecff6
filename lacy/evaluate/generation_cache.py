"""Cascade generations kept on disk: an evaluation repeated with the same inputs is read back, not decoded.

The book evaluates some cascades more than once: chapter 7 evaluates the profile's own SLM with the LM
helper at the budget, as chapter 4 did, and a re-executed chapter repeats all of its evaluations. An
entry is keyed by :meth:`lacy.cascade.decoder.CascadeDecoder.fingerprint` (the SLM's weights and
tokenizer, the helper's and the policy's fingerprints, the decoding options, the cascade's source code)
and the prompts with their subjects, so a change to any of them decodes afresh. Entries live in
``generations/`` under the data cache root (``runs/cache`` in the book) as gzipped JSON, are written atomically and
checked when read; an unreadable or mismatched entry is decoded again and replaced. A generation read
back keeps the ``seconds`` it took when it was decoded. ``LACY_GENERATION_CACHE=off`` turns the cache off
(the test suite does, except where it tests the cache).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

from lacy.cascade.decoder import CascadeDecoder, Generation
from lacy.data.cache import content_key, default_cache_root
from lacy.io import atomic_write

ENV = "LACY_GENERATION_CACHE"
FORMAT = 1


def enabled() -> bool:
    """Whether generations are cached: unless ``$LACY_GENERATION_CACHE`` is ``off``, ``0`` or ``false``."""
    return os.environ.get(ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def _read(path: Path, key: str, n: int) -> list[Generation] | None:
    if not path.exists():
        return None
    try:
        entry = json.loads(gzip.decompress(path.read_bytes()))
        if entry["format"] != FORMAT or entry["key"] != key or len(entry["generations"]) != n:
            raise ValueError("format, key or length does not match")
        return [Generation(**{**g, "spans": [tuple(span) for span in g["spans"]]}) for g in entry["generations"]]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError; gzip raises OSError/EOFError
        warnings.warn(f"cached generations {path} are unreadable ({error}); decoding them again", stacklevel=3)
        return None


def generate_cached(decoder: CascadeDecoder, prompts: Sequence[str], subjects: Sequence[str | None],
                    cache_root: str | Path | None = None) -> list[Generation]:
    """``decoder.generate_many(prompts, subjects)``, read from the cache under ``cache_root`` (default
    :func:`lacy.data.cache.default_cache_root`) when the same decoder already generated them."""
    fingerprint = decoder.fingerprint() if enabled() else None
    if fingerprint is None:
        return decoder.generate_many(prompts, subjects)
    key = content_key({"decoder": fingerprint, "prompts": list(prompts), "subjects": list(subjects)})
    path = Path(cache_root if cache_root is not None else default_cache_root()) / "generations" / f"{key}.json.gz"
    cached = _read(path, key, len(prompts))
    if cached is not None:
        return cached
    generations = decoder.generate_many(prompts, subjects)
    entry = {"format": FORMAT, "key": key, "generations": [dataclasses.asdict(g) for g in generations]}
    with atomic_write(path, "wb") as fh:
        fh.write(gzip.compress(json.dumps(entry, separators=(",", ":")).encode(), mtime=0))
    return generations
