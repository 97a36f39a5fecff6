"""Figures of the book: one style, one colour per method, and the figure functions of the chapters.

Conventions for every figure function (chapter sections below add theirs):

- create the figure with :func:`new_figure` (a plain :class:`matplotlib.figure.Figure`, not managed
  by pyplot, so a notebook shows it exactly once: when the cell returns it), draw with seaborn or
  matplotlib on its axes, end with :func:`finish`, and return the figure;
- colour methods with :data:`METHOD_COLORS` (``palette=method_palette(...)`` for seaborn) so a
  method has the same colour in every chapter;
- axis labels name the quantity and its unit in parentheses: ``"call rate (% of tokens)"``,
  ``"FactScore (0-100)"``, ``"loss (nats/token)"``; categorical axes name the category (``"method"``).

:func:`set_style` is called once per chapter, in the cell after the ``parameters`` cell.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

import matplotlib as mpl
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lacy.provenance import in_ipython

# --- style ----------------------------------------------------------------------------------------

FIGURE_DPI = 110
"""Resolution of figures shown in the book (also used when saving)."""

# seaborn "colorblind" palette, fixed here so colours never depend on the order methods are plotted.
METHOD_COLORS: dict[str, str] = {
    "lacy": "#0173b2",
    "lacy_adaptive": "#004a7c",
    "loss": "#de8f05",
    "facts": "#029e73",
    "rho": "#d55e00",
    "rho_excess": "#8c2d04",
    "judge": "#cc78bc",
    "random": "#ca9161",
    "ignore": "#fbafe4",
    "ignore_facts": "#56b4e9",
    "standard": "#949494",
    "helper alone": "#000000",
    "SLM alone": "#8d7c00",
}
"""Colour of each training method (:data:`lacy.profiles.METHODS`) and of the two cascade endpoints."""

METHOD_ORDER: tuple[str, ...] = tuple(METHOD_COLORS)
"""Legend order: LaCy first, baselines next, the reference endpoints last."""


def set_style() -> None:
    """Apply the book's seaborn theme and figure resolution (call once per chapter).

    In a notebook it also makes returned figures render as PNG: figures from :func:`new_figure` live
    outside pyplot, so nothing else would register matplotlib's display hook.
    """
    if in_ipython():
        # Importing the inline backend applies its own rcParams, so it must precede the theme.
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    sns.set_theme(context="notebook", style="whitegrid", palette=list(METHOD_COLORS.values()))
    mpl.rcParams.update({"figure.dpi": FIGURE_DPI, "savefig.dpi": FIGURE_DPI, "savefig.bbox": "tight"})


def method_palette(methods: Iterable[str]) -> dict[str, str]:
    """``{method: colour}`` for seaborn's ``palette=``; unknown names raise with the known ones."""
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHOD_COLORS]
    if unknown:
        raise KeyError(f"no colour for {unknown}; known methods: {', '.join(METHOD_COLORS)} (add it to lacy.plots.METHOD_COLORS)")
    return {m: METHOD_COLORS[m] for m in methods}


def method_order(methods: Iterable[str]) -> list[str]:
    """``methods`` sorted in :data:`METHOD_ORDER` (for seaborn's ``hue_order=`` / ``order=``)."""
    present = set(methods)
    method_palette(present)
    return [m for m in METHOD_ORDER if m in present]


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 4.0), **subplot_kw: Any) -> tuple[Figure, Any]:
    """A figure outside pyplot and its axes (``Figure.subplots`` semantics: one Axes or an array)."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> Figure:
    """Set a title and both axis labels (all required, non-empty) and return the axes' figure."""
    missing = [name for name, text in (("title", title), ("xlabel", xlabel), ("ylabel", ylabel)) if not str(text).strip()]
    if missing:
        raise ValueError(f"figure needs a non-empty {', '.join(missing)}; label axes as 'quantity (unit)', e.g. 'call rate (% of tokens)'")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax.figure


# --- chapter 1: data --------------------------------------------------------------------------------


def exposure_plot(exposure) -> Figure:
    """Biographies per person against the person's rank, log-log (the heavy-tailed exposure law)."""
    fig, ax = new_figure()
    sns.lineplot(data=exposure, x="rank", y="biographies", ax=ax, drawstyle="steps-post")
    ax.set(xscale="log", yscale="log")
    return finish(ax, "synthbio: how often each person is written about", "person rank (1 = most frequent)",
                  "biographies per person (count)")


def length_histogram(lengths_by_corpus: dict) -> Figure:
    """Histogram of document lengths, one panel per corpus."""
    fig, axes = new_figure(1, len(lengths_by_corpus), figsize=(4.2 * len(lengths_by_corpus), 3.4))
    axes = np.atleast_1d(axes)
    for ax, (corpus, lengths) in zip(axes, lengths_by_corpus.items()):
        sns.histplot(lengths, bins=40, ax=ax)
        finish(ax, f"{corpus}: document length", "document length (subword tokens)", "documents (count)")
    return fig


# --- chapter 3: training ----------------------------------------------------------------------------


def training_curve(curves, metric: str, title: str, ylabel: str, smooth: int = 5) -> Figure:
    """One line per method of ``metric`` against the optimisation step (rolling mean over ``smooth`` logs)."""
    frame = curves[curves["metric"] == metric].sort_values("step").copy()
    frame["value"] = frame.groupby("method")["value"].transform(lambda v: v.rolling(smooth, min_periods=1).mean())
    fig, ax = new_figure(figsize=(7.2, 4.2))
    methods = method_order(frame["method"].unique())
    sns.lineplot(data=frame, x="step", y="value", hue="method", hue_order=methods, palette=method_palette(methods), ax=ax)
    ax.legend(title="method", fontsize="small", ncols=2)
    return finish(ax, title, "optimisation step (count)", ylabel)


# --- chapter 4: cascade -----------------------------------------------------------------------------

HELPER_ALONE = "helper alone"
"""``method`` label of the helper-alone endpoint (call rate 100%) in a sweep frame."""


def factscore_vs_call_rate(sweep, title: str = "FactScore of the cascade against its call rate", *, metric: str = "factscore",
                           ylabel: str = "FactScore (0-100)") -> Figure:
    """``metric`` (a fraction, drawn ×100: FactScore, precision or recall) against the achieved call rate
    (%), one line per method, one panel per helper.

    ``sweep`` is a tidy frame with ``helper, method, call_rate`` and ``metric`` (fractions, as
    :func:`lacy.evaluate.run.sweep` returns them). The SLM-alone points (target rate 0) are squares;
    rows whose method is :data:`HELPER_ALONE` are drawn as a black star with a dotted level line.
    """
    frame = sweep.assign(call_pct=100 * sweep["call_rate"], score=100 * sweep[metric].astype(float))
    helpers = list(dict.fromkeys(frame["helper"]))
    fig, axes = new_figure(1, len(helpers), figsize=(5.6 * len(helpers), 4.2), sharey=True, squeeze=False)
    curves = frame[frame["method"] != HELPER_ALONE]
    methods = method_order(curves["method"].unique())
    palette = method_palette(methods)
    for ax, helper in zip(axes[0], helpers):
        panel = curves[curves["helper"] == helper].sort_values("call_pct")
        sns.lineplot(data=panel, x="call_pct", y="score", hue="method", hue_order=methods, palette=palette,
                     marker="o", ax=ax, legend=ax is axes[0][0])
        alone = panel[panel["target_rate"] == 0]
        ax.scatter(alone["call_pct"], alone["score"], marker="s", s=60, c=[palette[m] for m in alone["method"]],
                   edgecolors="black", zorder=3, label="SLM alone (0%)")
        top = frame[(frame["method"] == HELPER_ALONE) & (frame["helper"] == helper)]
        if not top.empty:
            ax.axhline(top["score"].mean(), color=METHOD_COLORS[HELPER_ALONE], linestyle=":", linewidth=1)
            ax.scatter(top["call_pct"], top["score"], marker="*", s=160, color=METHOD_COLORS[HELPER_ALONE], zorder=3,
                       label="helper alone (100%)")
        ax.set_xlim(-3, 103)
        finish(ax, f"{title}\nhelper: {helper}", "achieved call rate (% of SLM steps)", ylabel)
    handles, labels = [], []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", title="method")
    return fig


def method_bars(frame, y: str, title: str, ylabel: str, *, hue: str | None = None, col: str | None = None,
                hue_order: list[str] | None = None) -> Figure:
    """Bars of ``y`` per method (x axis, in :data:`METHOD_ORDER`), optionally split by ``hue`` (in
    ``hue_order``) and with one panel per value of ``col``. Methods are coloured by :data:`METHOD_COLORS`
    when there is no ``hue``."""
    panels = list(dict.fromkeys(frame[col])) if col else [None]
    fig, axes = new_figure(1, len(panels), figsize=(max(5.0, 0.8 * frame["method"].nunique()) * len(panels) ** 0.8 + 1, 4.0),
                           sharey=True, squeeze=False)
    methods = method_order(frame["method"].unique())
    for ax, panel in zip(axes[0], panels):
        data = frame if panel is None else frame[frame[col] == panel]
        if hue:
            sns.barplot(data=data, x="method", y=y, hue=hue, order=methods, hue_order=hue_order, ax=ax)
            ax.legend(title=hue, fontsize="small")
        else:
            sns.barplot(data=data, x="method", y=y, hue="method", order=methods, hue_order=methods,
                        palette=method_palette(methods), legend=False, ax=ax)
        ax.tick_params(axis="x", labelrotation=30)
        finish(ax, title if panel is None else f"{title}\n{col}: {panel}", "method", ylabel)
    return fig


# --- chapter 2: loss is not enough ------------------------------------------------------------------

SIGNAL_COLORS: dict[str, str] = {"loss": "#de8f05", "proxy": "#029e73", "loss_x_proxy": "#0173b2", "gold": "#000000"}
"""Colour of each §3 token predictor (:func:`lacy.evaluate.signals.signal_table`); ``gold`` is the oracle."""


def _signal_panels(curves, x: str, y: str, title: str, xlabel: str, ylabel: str, chance, drawstyle: str) -> Figure:
    """One panel per target, one line per predictor (the oracle dashed); ``chance(ax, target)`` draws the baseline."""
    targets = list(dict.fromkeys(curves["target"]))
    fig, axes = new_figure(1, len(targets), figsize=(4.6 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for predictor, curve in curves[curves["target"] == target].groupby("predictor", sort=False):
            ax.plot(curve[x], curve[y], color=SIGNAL_COLORS[predictor], label=predictor, drawstyle=drawstyle,
                    linestyle="--" if predictor == "gold" else "-")
        chance(ax, target)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(title="predictor", fontsize="small")
        finish(ax, f"{title}: {target}", xlabel, ylabel)
    return fig


def signal_roc(curves) -> Figure:
    """ROC curves of the token predictors, one panel per target (``roc_curves`` output)."""
    return _signal_panels(curves, "fpr", "tpr", "ROC", "false positive rate (fraction)", "true positive rate (fraction)",
                          lambda ax, target: ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, label="chance"), "default")


def signal_pr(curves, base_rates: dict[str, float]) -> Figure:
    """Precision-recall curves of the token predictors, one panel per target (``pr_curves`` output);
    ``base_rates[target]`` (the precision of chance) is drawn as a horizontal line."""
    return _signal_panels(curves, "recall", "precision", "Precision-recall", "recall (fraction)", "precision (fraction)",
                          lambda ax, target: ax.axhline(base_rates[target], color="0.6", linewidth=0.8, label="chance"), "steps-pre")


# --- knowledge curve (synthbio) ---------------------------------------------------------------------


def knowledge_curve(frame) -> Figure:
    """Recall of the SLM alone per attribute against training exposures (log axis; 0 kept, linear below 1).

    ``frame`` is :func:`lacy.evaluate.knowledge.knowledge_frame`: facts are binned by exposures in powers
    of two (0, 1, 2-3, 4-7, ...) and each bin is drawn at its median exposures; the black line pools
    all attributes.
    """
    from lacy.evaluate.scaling import exposure_bins, recall_by_exposure

    per_attribute = frame.assign(bin=exposure_bins(frame["exposures"])).groupby(["attribute", "bin"], sort=False).agg(
        exposures=("exposures", "median"), recall=("correct", "mean")).reset_index()
    pooled = recall_by_exposure(frame)
    fig, ax = new_figure()
    sns.lineplot(data=per_attribute, x="exposures", y="recall", hue="attribute", marker="o", ax=ax, alpha=0.7)
    ax.plot(pooled["exposures"], pooled["recall"], color="black", linewidth=2.5, marker="o", label="all attributes")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small")
    return finish(ax, "What the SLM alone knows: exact recall against exposure",
                  "training biographies of the person (count, log scale)", "recall (share of facts stated exactly)")


# --- chapter 7: the delegation scaling law ----------------------------------------------------------


def size_label(params: float) -> str:
    """A model size for legends and tables: ``"58K"``, ``"1.97M"``."""
    return f"{params / 1e3:.0f}K" if params < 1e6 else f"{params / 1e6:.2f}M"


def recall_by_size(curves) -> Figure:
    """Pooled exact recall of the SLM alone against training exposures (log axis), one line per SLM size
    and one panel per method. ``curves``: ``params, method, exposures, recall`` (one
    :func:`lacy.evaluate.scaling.recall_by_exposure` per run, seeds pooled by the mean)."""
    frame = curves.assign(size=curves["params"].map(size_label))
    methods = method_order(frame["method"].unique())
    sizes = [size_label(p) for p in sorted(frame["params"].unique())]
    fig, axes = new_figure(1, len(methods), figsize=(5.2 * len(methods), 4.0), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        sns.lineplot(data=frame[frame["method"] == method], x="exposures", y="recall", hue="size", hue_order=sizes,
                     palette="viridis", marker="o", errorbar=None, ax=ax)
        ax.axhline(0.5, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(title="SLM parameters", fontsize="small")
        finish(ax, f"What the SLM alone knows, by size\nmethod: {method}", "training biographies of the person (count, log scale)",
               "recall (share of facts stated exactly)")
    return fig


def delegation_curves(frame, *, y: str = "precision_x_recall", ylabel: str = "precision x recall of the cascade") -> Figure:
    """``y`` of the cascade against the training ``call_fraction``, one line per SLM size (``params``);
    the best fraction of each size is ringed. ``frame``: ``params, call_fraction`` and ``y``."""
    data = frame.assign(size=frame["params"].map(size_label))
    sizes = [size_label(p) for p in sorted(data["params"].unique())]
    fig, ax = new_figure()
    sns.lineplot(data=data, x="call_fraction", y=y, hue="size", hue_order=sizes, palette="viridis", marker="o", ax=ax)
    best = data.loc[data.groupby("size")[y].idxmax()]
    ax.scatter(best["call_fraction"], best[y], s=220, facecolors="none", edgecolors="black", linewidths=1.5, zorder=3,
               label="best fraction")
    ax.legend(title="SLM parameters", fontsize="small")
    return finish(ax, "How much should the SLM learn to delegate?", "call fraction in training (share of fact tokens)", ylabel)


def cost_frontier(points) -> Figure:
    """Precision and recall (two panels) against forward FLOPs per generated token (log axis): one point per
    SLM alone, cascade and helper alone. ``points``: ``label, kind, flops_per_token, precision, recall``
    (fractions; ``kind`` colours the points). Points that run no model (a document or retrieval helper
    alone: 0 FLOPs) cannot sit on the log axis; each panel lists them under its axis label instead."""
    data = points.assign(precision=100 * points["precision"].astype(float), recall=100 * points["recall"].astype(float))
    free, data = data[data["flops_per_token"] <= 0], data[data["flops_per_token"] > 0]
    fig, axes = new_figure(1, 2, figsize=(11.0, 4.2))
    for ax, metric in zip(axes, ("precision", "recall")):
        sns.scatterplot(data=data, x="flops_per_token", y=metric, hue="kind", style="kind", s=90, ax=ax)
        for _, row in data.iterrows():
            ax.annotate(row["label"], (row["flops_per_token"], row[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        xlabel = "forward FLOPs per generated token (log scale)"
        if len(free):
            xlabel += "\n0 FLOPs, not drawn: " + ", ".join(
                f"{row['label']} {'alone' if row['kind'] == 'helper alone' else row['kind']} {row[metric]:.1f}%" for _, row in free.iterrows())
        ax.set_xscale("log")
        finish(ax, f"{metric.capitalize()} against compute", xlabel, f"{metric} (%)")
    return fig
