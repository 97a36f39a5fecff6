"""Tables and token-level pictures of a cached corpus (chapter 1): what the data is and what is flagged."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lacy.data.annotate import FactRules, precision_recall
from lacy.data.datamodule import LacyDataModule
from lacy.profiles import CORPORA, Profile

HEADLINE_FIELDS = ("documents", "tokens", "fact_fraction", "proxy_precision", "proxy_recall")
"""Fields of each corpus's cache summary that chapter 1 saves as its headline numbers."""


def prepared_modules(profile: Profile, seed: int, cache_root: str | Path | None,
                     corpora: Sequence[str] = CORPORA) -> dict[str, LacyDataModule]:
    """One data module per corpus with its token cache built (or verified) and loaded."""
    modules = {corpus: LacyDataModule(corpus, profile, seed=seed, cache_root=cache_root) for corpus in corpora}
    for dm in modules.values():
        dm.setup()
    return modules


def corpus_results(modules: dict[str, LacyDataModule]) -> dict[str, Any]:
    """``{corpus}_{field}`` for the :data:`HEADLINE_FIELDS` of every corpus (the results chapter 1 saves)."""
    return {f"{corpus}_{key}": dm.summary[key] for corpus, dm in modules.items() for key in HEADLINE_FIELDS}


def corpus_table(modules: dict[str, LacyDataModule]) -> pd.DataFrame:
    """One row per corpus: documents, tokens, vocabulary, fact shares, proxy quality."""
    rows = []
    for name, dm in modules.items():
        s = dm.summary
        rows.append({
            "corpus": name,
            "documents": s["documents"],
            "train tokens": s["train_tokens"],
            "val tokens": s["val_tokens"],
            "vocabulary": s["vocab_size"],
            "proxy fact share": s["fact_fraction"],
            "gold fact share": s["gold_fraction"],
            "proxy precision": s["proxy_precision"],
            "proxy recall": s["proxy_recall"],
        })
    return pd.DataFrame(rows).set_index("corpus")


def _content_mask(dm: LacyDataModule, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    arrays = {k: np.asarray(v) for k, v in dm.arrays(split).items()}
    specials = [dm.tokenizer.bos_token_id, dm.tokenizer.eos_token_id]
    return arrays, ~np.isin(arrays["ids"], specials)


def proxy_quality_by_attribute(dm: LacyDataModule, split: str = "train") -> pd.DataFrame:
    """Recall of the spaCy proxy per gold attribute, plus precision/recall overall (synthbio only)."""
    arrays, content = _content_mask(dm, split)
    fact, gold = arrays["fact"][content] > 0, arrays["gold"][content]
    codes = dm.summary["attribute_codes"]
    overall = precision_recall(fact, gold > 0)
    rows = [{"attribute": "all facts", "precision": overall["precision"], "recall": overall["recall"], "tokens": int((gold > 0).sum())}]
    for attribute, code in sorted(codes.items(), key=lambda kv: kv[1]):
        mask = gold == code
        rows.append({"attribute": attribute, "precision": np.nan, "recall": float(fact[mask].mean()), "tokens": int(mask.sum())})
    return pd.DataFrame(rows).set_index("attribute")


def proxy_categories(dm: LacyDataModule, split: str = "train", rules: FactRules = FactRules()) -> pd.DataFrame:
    """Share of tokens flagged by each proxy category (entity label or POS rule), and how many are gold."""
    arrays, content = _content_mask(dm, split)
    fact, gold = arrays["fact"][content], arrays["gold"][content] > 0
    names = {code: name for name, code in rules.categories().items()}
    rows = []
    for code in np.unique(fact[fact > 0]):
        mask = fact == code
        rows.append({"category": names.get(int(code), str(code)), "share of tokens": float(mask.mean()),
                     "gold share": float(gold[mask].mean()) if gold.any() else np.nan})
    return pd.DataFrame(rows).sort_values("share of tokens", ascending=False).set_index("category")


def token_highlights(dm: LacyDataModule, doc_id: int, split: str = "train", max_tokens: int = 160) -> str:
    """HTML of one document's subword tokens: gold facts underlined green, proxy facts shaded blue.

    A token can be both (shaded and underlined); ``<bos>``/``<eos>`` are dropped.
    """
    arrays, content = _content_mask(dm, split)
    where = np.flatnonzero((arrays["doc"] == doc_id) & content)[:max_tokens]
    if where.size == 0:
        raise ValueError(f"document {doc_id} is not in the {split} split")
    pieces = []
    for i in where:
        text = html.escape(dm.tokenizer.decode([int(arrays["ids"][i])]))
        style = ["padding:1px 0", "border-right:1px solid #ddd"]
        if arrays["fact"][i] > 0:
            style.append("background:#cfe3f7")
        if arrays["gold"][i] > 0:
            style.append("border-bottom:3px solid #029e73")
        pieces.append(f'<span style="{";".join(style)}">{text}</span>')
    legend = ('<div style="font-size:85%;margin-top:4px"><span style="background:#cfe3f7">shaded</span> = spaCy proxy'
              ' flags the token as factual; <span style="border-bottom:3px solid #029e73">underlined</span> = gold fact'
              ' (synthbio only); thin bars separate subword tokens.</div>')
    return f'<div style="font-family:monospace;line-height:1.9;white-space:pre-wrap">{"".join(pieces)}</div>{legend}'


def exposure_frame(world: Any) -> pd.DataFrame:
    """One row per person: rank (1 = most written about) and number of biographies."""
    counts = np.array([p.n_docs for p in world.people])
    order = np.argsort(-counts, kind="stable")
    return pd.DataFrame({"rank": np.arange(1, len(counts) + 1), "biographies": counts[order]})


def document_lengths(dm: LacyDataModule, split: str = "train") -> pd.Series:
    """Tokens per document (without ``<bos>``/``<eos>``)."""
    arrays, content = _content_mask(dm, split)
    _, counts = np.unique(arrays["doc"][content], return_counts=True)
    return pd.Series(counts, name="tokens")
