"""Chapter 2's findings, computed from a small hand-made token frame whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from lacy.evaluate import signal_findings
from lacy.evaluate.signals import signal_table


@pytest.fixture
def frame():
    # 8 tokens: loss ranks mismatches perfectly; unacceptable = fact mismatches; two acceptable mismatches.
    mismatch = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    proxy = np.array([1, 1, 1, 0, 0, 1, 0, 0], bool)
    acceptable = np.array([0, 0, 0, 1, 1, 1, 1, 1], bool)
    return pd.DataFrame({
        "loss": [5.0, 4.0, 3.5, 4.5, 3.0, 1.0, 0.5, 0.2], "mismatch": mismatch, "acceptable": acceptable,
        "unacceptable": mismatch & ~acceptable, "proxy": proxy, "gold": proxy,
        "token": ["Paris", "1970", "MIT", " the", " was", "Ada", ".", " in"],
        "predicted": ["Lyon", "1971", "Yale", " th", " is", "Ada", ".", " in"],
    })


def test_loss_versus_proxy_reads_the_table(frame):
    finding = signal_findings.loss_versus_proxy(signal_table(frame))
    assert finding["loss_mismatch"]["auroc"] == 1.0 and finding["loss_best_at_mismatch"]
    assert finding["loss_unacceptable"]["base_rate"] == pytest.approx(3 / 8)
    assert finding["proxy_helps"] == (finding["loss_x_proxy_unacceptable"]["auroc"] > finding["loss_unacceptable"]["auroc"]
                                      and finding["loss_x_proxy_unacceptable"]["auprc"] > finding["loss_unacceptable"]["auprc"])
    assert finding["reproduces"] == (finding["loss_best_at_mismatch"] and finding["proxy_helps"])


def test_among_mismatches_keeps_only_mismatched_tokens(frame):
    table = signal_findings.among_mismatches(frame)
    assert set(table["target"]) == {"unacceptable_given_mismatch"}
    assert (table["n"] == 5).all() and table["base_rate"].iloc[0] == pytest.approx(3 / 5)
    assert table.set_index("predictor").loc["proxy", "auroc"] == 1.0  # the proxy flags exactly the unacceptable ones


def test_acceptable_mismatch_shares(frame):
    # " th" is a shorter piece of " the"; " is" is another word than " was"
    assert signal_findings.acceptable_mismatch_shares(frame) == {"n": 2, "not_proxy": 1.0, "same_text": 0.5}


def test_tables_and_saved_results(frame):
    table = signal_table(frame)
    wide = signal_findings.wide_table(table)
    assert list(wide.index) == ["loss", "proxy", "loss_x_proxy", "gold"]
    assert signal_findings.base_rates(table) == {"mismatch": pytest.approx(5 / 8), "unacceptable": pytest.approx(3 / 8)}
    results = signal_findings.signal_results([table, signal_findings.among_mismatches(frame)], corpus="synthbio", method="standard")
    assert list(results.columns) == ["metric", "value", "corpus", "method", "signal", "target"]
    assert set(results["metric"]) == {"signal_auroc", "signal_auprc"} and len(results) == 2 * (len(table) + 4)
