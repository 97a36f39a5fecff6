"""Library pieces added for chapters 4 and 5: generation HTML and the cascade / method figures."""

import math

import pandas as pd
import pytest

from lacy import plots
from lacy.evaluate.run import HELPER_SHADE, generations_html, marked_html


def test_marked_html_shades_helper_spans_and_escapes_text():
    html = marked_html("was born in [[ Paris]] <b> & [[1990]].")
    assert html.count(f'background:{HELPER_SHADE}') == 2
    assert f'<span style="background:{HELPER_SHADE}"> Paris</span>' in html
    assert "&lt;b&gt; &amp;" in html and "<b>" not in html
    assert marked_html("no helper text") == "no helper text"


def test_generations_html_has_one_row_per_generation_with_labels():
    frame = pd.DataFrame({"subject": ["Ann Lee", "Bo <Li>"], "frequency": ["frequent", "rare"],
                          "prompt": ["Ann Lee", "Bo <Li>"], "marked": ["[[ was]] born", " works"]})
    html = generations_html(frame)
    assert html.count("<tr>") == 3  # header + 2 rows
    assert "Bo &lt;Li&gt;" in html and "<b>Ann Lee</b>" in html
    assert html.count("<span") == 1


def _sweep_frame():
    rows = []
    for helper in ("doc", "lm"):
        for method in ("standard", "lacy"):
            for rate in (0.0, 0.5):
                rows.append({"helper": helper, "method": method, "target_rate": rate, "call_rate": rate * 0.9,
                             "factscore": None if (method, rate) == ("standard", 0.0) else 0.2 + rate / 2})
        rows.append({"helper": helper, "method": plots.HELPER_ALONE, "target_rate": 1.0, "call_rate": 1.0, "factscore": 0.9})
    return pd.DataFrame(rows).astype({"factscore": float})


def test_factscore_vs_call_rate_one_panel_per_helper_with_endpoints():
    fig = plots.factscore_vs_call_rate(_sweep_frame())
    axes = fig.axes
    assert [ax.get_title().splitlines()[-1] for ax in axes] == ["helper: doc", "helper: lm"]
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel() == "FactScore (0-100)"
        levels = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
        assert levels and math.isclose(levels[0], 90.0)
    labels = fig.legends[0].texts
    assert {t.get_text() for t in labels} >= {"lacy", "standard", "SLM alone (0%)", "helper alone (100%)"}


@pytest.mark.parametrize("hue, col", [(None, None), ("frequency", None), ("frequency", "helper")])
def test_method_bars_orders_methods_and_makes_panels(hue, col):
    frame = pd.DataFrame({"method": ["standard", "lacy"] * 4, "frequency": ["frequent"] * 4 + ["rare"] * 4,
                          "helper": ["doc", "doc", "lm", "lm"] * 2, "score": range(8)})
    fig = plots.method_bars(frame, "score", "title", "score (points)", hue=hue, col=col)
    assert len(fig.axes) == (2 if col else 1)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == plots.method_order(["standard", "lacy"]) == ["lacy", "standard"]
