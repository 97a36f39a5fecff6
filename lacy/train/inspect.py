"""Looking at trained runs (chapter 3): curves, summaries, and which tokens each rule sends to ``<CALL>``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

from lacy.data.datamodule import LacyDataModule
from lacy.train.model import load_model
from lacy.train.objective import token_terms
from lacy.train.selection import JUDGES, get_method

SUMMARY_COLUMNS = ("params", "train_tokens", "call_fraction", "val_loss", "val_loss_fact", "val_loss_nonfact", "tokens_per_s", "seconds")


def run_summaries(run_dirs: Mapping[str, Path]) -> pd.DataFrame:
    """One row per method with the headline fields of each run's ``summary.json``."""
    rows = []
    for method, folder in run_dirs.items():
        summary = json.loads((Path(folder) / "summary.json").read_text())
        rows.append({"method": method, **{k: summary.get(k) for k in SUMMARY_COLUMNS}})
    return pd.DataFrame(rows).set_index("method")


def seed_spread(seed_runs: Mapping[str, Sequence[Path]], columns: Sequence[str] = ("call_fraction", "val_loss_fact", "val_loss_nonfact")) -> pd.DataFrame:
    """Per method, the mean, standard deviation and range over training seeds of the ``summary.json``
    fields ``columns``: one row per method, columns ``(field, statistic)`` and ``n_seeds``."""
    rows = []
    for method, folders in seed_runs.items():
        for folder in folders:
            summary = json.loads((Path(folder) / "summary.json").read_text())
            rows.append({"method": method, "seed": summary.get("seed"), **{c: summary.get(c) for c in columns}})
    frame = pd.DataFrame(rows)
    table = frame.groupby("method", sort=False)[list(columns)].agg(["mean", "std", "min", "max"])
    table[("n_seeds", "")] = frame.groupby("method", sort=False)["seed"].nunique()
    return table


def training_results(summary: pd.DataFrame, corpus: str, bench: dict | None = None) -> pd.DataFrame:
    """Chapter 3's saved results (schema: :mod:`lacy.results`): per method the call fraction, the
    validation losses and the throughput of :func:`run_summaries`, plus the training benchmark's two
    ratios when ``bench`` (a :func:`lacy.bench.train.run` result) is given."""
    columns = ["call_fraction", "val_loss", "val_loss_fact", "val_loss_nonfact", "tokens_per_s"]
    rows = summary.reset_index()[["method", *columns]].melt(id_vars="method", var_name="metric").assign(corpus=corpus)
    if bench is None:
        return rows
    ratios = pd.DataFrame([
        {"metric": "bench train: speedup ratio vs naive", "value": bench["speedup_vs_naive"]},
        {"metric": "bench train: lacy overhead ratio vs standard", "value": bench["lacy_overhead"]},
    ])
    return pd.concat([rows, ratios], ignore_index=True)


def training_curves(run_dirs: Mapping[str, Path], metrics: tuple[str, ...] = ("train/loss", "train/call_fraction", "val/loss")) -> pd.DataFrame:
    """Tidy per-step metrics of every run: ``method, step, metric, value`` (NaN rows dropped)."""
    frames = []
    for method, folder in run_dirs.items():
        table = pd.read_csv(Path(folder) / "metrics.csv")
        present = [m for m in metrics if m in table.columns]
        long = table.melt(id_vars="step", value_vars=present, var_name="metric", value_name="value").dropna()
        frames.append(long.assign(method=method))
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def selection_masks(run_dirs: Mapping[str, Path], dm: LacyDataModule, n_windows: int = 4, split: str = "val",
                    reference: Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Apply each method's rule, with its own trained model's current losses, to the same windows.

    Returns the batch and ``{method: {"call": mask, "ignore": mask}}``. Methods that need reference
    losses (``rho``) are shown only when ``reference`` (a model folder) is given; methods that need a
    judge use the corpus's, and are left out when that judge reads a reference model's top-k.
    """
    ds = dm.dataset(split)
    batch = {k: torch.stack([ds[i][k] for i in range(min(n_windows, len(ds)))]) for k in ds[0]}
    cfg = dm.profile.train
    judge = JUDGES[dm.adapter.judge]
    if reference is not None:
        ref_model, _ = load_model(reference)
        batch["ref_loss"] = token_terms(ref_model(input_ids=batch["input_ids"]).logits, batch["targets"], dm.call_id).learn
    masks = {}
    for method, folder in run_dirs.items():
        model, _ = load_model(Path(folder) / "model")
        logits = model(input_ids=batch["input_ids"]).logits
        loss = token_terms(logits, batch["targets"], dm.call_id).learn
        spec = get_method(method)
        if (spec.needs_reference_loss and "ref_loss" not in batch) or spec.reference_top_k(judge):
            continue
        inputs = spec.rule_inputs(loss, batch, logits, dm.call_id, judge.judge)
        sel = spec.select(inputs, fraction=cfg.call_fraction, granularity=cfg.granularity,
                          generator=torch.Generator().manual_seed(0))
        masks[method] = {"call": sel.call, "ignore": sel.ignored(batch["valid"])}
    return batch, masks


def selection_html(batch: Mapping[str, torch.Tensor], masks: Mapping[str, Mapping[str, torch.Tensor]], tokenizer,
                   window: int = 0, max_tokens: int = 80) -> str:
    """One line per method over the same tokens: ``<CALL>`` targets shaded orange, ignored tokens struck
    through, gold facts underlined green."""
    targets = batch["targets"][window, :max_tokens].tolist()
    gold = batch["gold"][window, :max_tokens].tolist()
    lines = []
    for method, mask in masks.items():
        call = mask["call"][window, :max_tokens].tolist()
        ignore = mask["ignore"][window, :max_tokens].tolist()
        spans = []
        for tok, c, ig, g in zip(targets, call, ignore, gold):
            style = ["border-right:1px solid #ddd"]
            if c:
                style.append("background:#fdd49e")
            if ig:
                style.append("text-decoration:line-through;color:#999")
            if g:
                style.append("border-bottom:3px solid #029e73")
            spans.append(f'<span style="{";".join(style)}">{html.escape(tokenizer.decode([tok]))}</span>')
        lines.append(f'<tr><td style="text-align:right;padding-right:8px"><b>{method}</b></td>'
                     f'<td style="font-family:monospace;white-space:pre-wrap;text-align:left">{"".join(spans)}</td></tr>')
    legend = ('<div style="font-size:85%"><span style="background:#fdd49e">shaded</span> = trained as &lt;CALL&gt;; '
              '<span style="text-decoration:line-through">struck</span> = no loss (Ignore rules); '
              '<span style="border-bottom:3px solid #029e73">underlined</span> = gold fact.</div>')
    return f"<table>{''.join(lines)}</table>{legend}"
