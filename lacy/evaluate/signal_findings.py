"""The findings chapter 2 reads off a token-signal frame (paper §3): tables, verdicts and saved results.

Everything here is a pure function of :func:`lacy.evaluate.signals.token_signal_frame` (one row per
target token) or of its :func:`~lacy.evaluate.signals.signal_table` (one row per target × predictor:
``auroc``, ``auprc``, ``base_rate``, ``n``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lacy.evaluate.signals import signal_table

NON_ORACLE_ORDER = ("loss", "proxy", "loss_x_proxy", "gold")
"""Predictors in the order chapter 2 shows them: the three a trainer has, then the gold oracle."""


def wide_table(table: pd.DataFrame, predictors: tuple[str, ...] = NON_ORACLE_ORDER) -> pd.DataFrame:
    """AUROC and AUPRC, one row per predictor, one column per (metric, target)."""
    wide = table.pivot(index="predictor", columns="target", values=["auroc", "auprc"])
    return wide.loc[[p for p in predictors if p in wide.index]]


def base_rates(table: pd.DataFrame) -> dict[str, float]:
    """Target -> share of positive tokens (the no-skill line of a precision-recall plot)."""
    return table.groupby("target")["base_rate"].first().to_dict()


def loss_versus_proxy(table: pd.DataFrame) -> dict[str, Any]:
    """The paper's §3 claim over all tokens, checked on ``table``.

    Loss should be the best non-oracle predictor of a *mismatch*, and worse at an *unacceptable*
    prediction, where loss × proxy should beat it on both AUROC and AUPRC. Returns the three rows
    compared (``loss_mismatch``, ``loss_unacceptable``, ``loss_x_proxy_unacceptable``: mappings
    with ``auroc``, ``auprc``, ``base_rate``) and the booleans ``loss_best_at_mismatch``,
    ``loss_lower_on_unacceptable``, ``proxy_helps`` and ``reproduces`` (all of them).
    """
    score = table.set_index(["target", "predictor"])
    loss_mismatch, loss_unacceptable = score.loc[("mismatch", "loss")], score.loc[("unacceptable", "loss")]
    lxp_unacceptable = score.loc[("unacceptable", "loss_x_proxy")]
    best = loss_mismatch["auroc"] >= score.loc["mismatch"]["auroc"].drop("gold", errors="ignore").max()
    helps = lxp_unacceptable["auroc"] > loss_unacceptable["auroc"] and lxp_unacceptable["auprc"] > loss_unacceptable["auprc"]
    return {
        "loss_mismatch": loss_mismatch.to_dict(), "loss_unacceptable": loss_unacceptable.to_dict(),
        "loss_x_proxy_unacceptable": lxp_unacceptable.to_dict(),
        "loss_best_at_mismatch": bool(best), "proxy_helps": bool(helps),
        "loss_lower_on_unacceptable": bool(loss_unacceptable["auroc"] < loss_mismatch["auroc"]),
        "reproduces": bool(best and helps),
    }


def among_mismatches(frame: pd.DataFrame) -> pd.DataFrame:
    """The signal table of *unacceptable* among the mismatched tokens only (target
    ``unacceptable_given_mismatch``): can a signal tell a wrong guess from an acceptable one?"""
    mismatched = frame[frame["mismatch"]]
    table = signal_table(mismatched)
    return table[table["target"] == "unacceptable"].assign(target="unacceptable_given_mismatch")


def acceptable_mismatch_shares(frame: pd.DataFrame) -> dict[str, float]:
    """Among acceptable mismatches: how many (``n``), the share on tokens the proxy does not flag
    (``not_proxy``), and the share whose prediction is a shorter piece of the same text
    (``same_text``: the target token starts with the predicted one, a tokenization difference)."""
    acceptable = frame[frame["mismatch"] & frame["acceptable"]]
    same_text = [bool(p) and t.startswith(p) for t, p in zip(acceptable["token"], acceptable["predicted"])]
    return {"n": len(acceptable), "not_proxy": float((~acceptable["proxy"].astype(bool)).mean()),
            "same_text": float(pd.Series(same_text, dtype=bool).mean())}


def signal_results(tables: list[pd.DataFrame], corpus: str, method: str) -> pd.DataFrame:
    """Signal tables as saved results: ``metric`` (``signal_auroc``/``signal_auprc``), ``value``,
    ``corpus``, ``method``, ``signal``, ``target`` (schema: :mod:`lacy.results`)."""
    long = pd.concat(tables).melt(id_vars=["target", "predictor"], value_vars=["auroc", "auprc"],
                                  var_name="metric", value_name="value")
    long = long.rename(columns={"predictor": "signal"}).assign(corpus=corpus, method=method)
    long["metric"] = "signal_" + long["metric"]
    return long[["metric", "value", "corpus", "method", "signal", "target"]]
