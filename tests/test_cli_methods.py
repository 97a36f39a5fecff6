"""The CLI end to end under the smoke profile: every method trains on both corpora, and
``lacy evaluate`` / ``lacy sweep`` run for every synthbio method (the CI contract of the book)."""

import json

import pandas as pd
import pytest

from lacy.cli import main
from lacy.profiles import METHODS, get_profile

EVALUATE_KEYS = ("factscore", "respond_ratio", "facts_per_response", "call_rate", "unresolved_calls", "helper",
                 "policy", "n_subjects", "seconds")


@pytest.fixture(scope="module")
def synthbio_runs(tmp_path_factory, cache_root, smoke_datamodule):
    root = tmp_path_factory.mktemp("cli-runs")
    runs = {}
    for method in METHODS:
        out = root / method
        argv = ["train", "--corpus", "synthbio", "--method", method, "--profile", "smoke", "--out", str(out),
                "--cache", str(cache_root), "--no-progress"]
        if method in ("rho", "rho_excess"):  # METHODS lists standard first: reuse it as the reference model
            argv += ["--reference", str(runs["standard"] / "model")]
        assert main(argv) == 0
        runs[method] = out
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_evaluates_and_sweeps(method, synthbio_runs, cache_root, tmp_path, capsys):
    summary = json.loads((synthbio_runs[method] / "summary.json").read_text())
    assert summary["method"] == method and summary["steps"] == get_profile("smoke").train.max_steps
    trains_call = method not in ("standard", "ignore", "ignore_facts")
    assert (summary["call_fraction"] > 0) == trains_call
    model = str(synthbio_runs[method] / "model")
    common = ["--model", model, "--corpus", "synthbio", "--profile", "smoke", "--helper", "doc", "--cache", str(cache_root)]
    out = tmp_path / "eval.json"
    assert main(["evaluate", *common, "--policy", "budget", "--budget", "0.22", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in EVALUATE_KEYS:
        assert key in result
    assert result["n_subjects"] == get_profile("smoke").eval.n_subjects and 0 <= result["call_rate"] <= 1
    csv = tmp_path / "sweep.csv"
    assert main(["sweep", *common, "--out", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert sorted(table["target_rate"]) == sorted(get_profile("smoke").eval.sweep_rates)
    assert table.loc[table["target_rate"] == 0, "call_rate"].item() == 0
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_vitalwiki(method, tmp_path_factory, cache_root):
    root = tmp_path_factory.getbasetemp() / "wiki-runs"
    out = root / method
    argv = ["train", "--corpus", "vitalwiki", "--method", method, "--profile", "smoke", "--out", str(out),
            "--cache", str(cache_root), "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["corpus"] == "vitalwiki" and summary["method"] == method
    assert summary["val_loss"] == summary["val_loss"]  # not NaN


def test_compare_rates_pools_seeds_at_equal_achieved_rates(synthbio_runs, cache_root, tmp_path, capsys):
    out = tmp_path / "rates.json"
    argv = ["compare-rates", "--corpus", "synthbio", "--profile", "smoke", "--cache", str(cache_root), "--helper", "doc",
            "--a", str(synthbio_runs["lacy"]), "--b", str(synthbio_runs["standard"]), "--rates", "0,0.99", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["rates"] == [0.0, 0.99] and result["n_seeds"] == {"A": 1, "B": 1}
    rows = pd.DataFrame(result["rows"])
    assert set(rows["metric"]) == {"precision", "recall"}
    assert set(rows.loc[rows["rate"] == 0.99, "verdict"]) == {"out of range"}
    capsys.readouterr()
    assert main([*argv[:-4], "--rates", "0.2,1.5"]) == 2
    assert "every rate must be in [0, 1)" in capsys.readouterr().err
