"""Run provenance (what produced a chapter's outputs) and the store of chapters' headline results."""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lacy
from lacy import provenance, results
from lacy.profiles import get_profile


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch):
    """Each test starts without a running chapter (no start() call)."""
    monkeypatch.setattr(provenance, "_session", provenance._Session())


def test_capture_records_profile_code_environment_and_device():
    record = provenance.capture("smoke", seed=7)
    assert record.profile == "smoke"
    assert record.seed == 7
    assert record.settings == get_profile("smoke").to_dict()
    assert record.lacy_version == lacy.__version__
    assert set(record.packages) == set(provenance.PACKAGES)
    assert record.packages["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    assert record.cores >= 1 and record.cpu and record.device
    assert record.wall_seconds is None  # start() was not called


def test_rendered_block_starts_with_the_profile_line_and_lists_everything():
    lines = provenance.capture("cpu", seed=3).lines()
    assert lines[0] == "profile: cpu"
    keys = {line.split(":", 1)[0] for line in lines}
    assert {"seed", "lacy", "python", "device", "cpu", "wall time", "date", *provenance.PACKAGES} <= keys
    assert "seed: 3" in lines


def test_git_commit_is_the_checkout_head():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(lacy.__file__).parent,
                          capture_output=True, text=True, check=True).stdout.strip()
    commit, dirty = provenance.git_state()
    assert commit == head
    assert isinstance(dirty, bool)


def test_git_state_outside_a_checkout_is_unknown_or_the_installed_commit(tmp_path):
    (tmp_path / "lacy").mkdir()
    commit, dirty = provenance.git_state(tmp_path / "lacy")
    assert dirty is None
    assert commit == provenance._installed_commit()


def test_start_sets_the_defaults_and_the_wall_clock():
    provenance.start("smoke", 11)
    record = provenance.capture()
    assert (record.profile, record.seed) == ("smoke", 11)
    assert record.wall_seconds is not None and record.wall_seconds >= 0


def test_a_resolved_profile_keeps_its_overrides():
    profile = get_profile("smoke", {"train.max_steps": "3"})
    record = provenance.capture(profile, seed=0)
    assert record.settings["train"]["max_steps"] == 3
    table = record.settings_table()
    assert "max_steps=3" in table.loc["train", "settings"]
    assert "name" not in table.index


def test_a_chapter_that_overrides_its_settings_shows_the_overridden_settings(capsys):
    """Chapter 6 evaluates with ``settings.override(...)``: the provenance block must say so."""
    provenance.start("smoke", 0)
    settings = get_profile("smoke")
    eval_settings = provenance.use(settings.override({"eval.n_subjects": "2", "eval.max_new_tokens": "5"}))
    assert eval_settings.eval.n_subjects == 2
    provenance.show("smoke", 0)  # the chapter's last cell names the profile; the settings are the object's
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "profile: smoke"
    assert "overrides: eval.n_subjects=2, eval.max_new_tokens=5" in out
    assert "n_subjects=2" in out and f"n_subjects={settings.eval.n_subjects}" not in out
    record = provenance.capture()
    assert record.settings["eval"]["n_subjects"] == 2 and record.overrides == {"eval.n_subjects": 2, "eval.max_new_tokens": 5}


def test_a_plain_profile_has_no_overrides_line():
    assert not any(line.startswith("overrides:") for line in provenance.capture("cpu", seed=0).lines())
    with pytest.raises(TypeError, match="Profile"):
        provenance.use("smoke")


def test_without_profile_or_start_the_error_says_what_to_do():
    with pytest.raises(ValueError, match="start"):
        provenance.capture()


def test_show_prints_the_profile_line(capsys):
    provenance.start("smoke", 0)
    provenance.show(helper="exact")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "profile: smoke"
    assert "helper: exact" in out


# --- results store --------------------------------------------------------------------------------


def test_mapping_results_round_trip_with_numpy_and_nan(tmp_path):
    provenance.start("smoke", 2)
    path = provenance.save_results(tmp_path, "04_cascade", {"factscore": {"lacy": np.float32(22.5), "standard": math.nan}, "n": np.int64(4)})
    assert path == tmp_path / "results" / "smoke" / "04_cascade.json"
    stored = json.loads(path.read_text())  # strict JSON: NaN was stored as null
    assert stored["provenance"]["profile"] == "smoke"
    loaded = results.load_results(tmp_path, "smoke")["04_cascade"]
    assert (loaded.profile, loaded.seed) == ("smoke", 2)
    assert loaded.results == {"factscore": {"lacy": 22.5, "standard": None}, "n": 4}


def test_table_results_round_trip(tmp_path):
    frame = pd.DataFrame({"method": ["lacy", "loss"], "corpus": "synthbio", "metric": "factscore", "budget": 0.22, "value": [22.7, 18.0]})
    provenance.save_results(tmp_path, "04_cascade", frame, profile="cpu", seed=0)
    loaded = results.load_results(tmp_path, "cpu")["04_cascade"].results
    pd.testing.assert_frame_equal(loaded, frame)
    assert results.load_results(tmp_path, "gpu") == {}


def test_save_results_refuses_what_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="mapping or a pandas DataFrame"):
        provenance.save_results(tmp_path, "x", [1, 2], profile="cpu")
    with pytest.raises(TypeError, match="cannot store"):
        provenance.save_results(tmp_path, "x", {"model": object()}, profile="cpu")


def _store(tmp_path):
    provenance.save_results(tmp_path, "02_loss_is_not_enough",
                            pd.DataFrame({"signal": ["loss", "loss+spacy"], "corpus": "synthbio", "auroc": [0.61, 0.83]}), profile="cpu")
    provenance.save_results(tmp_path, "04_cascade", pd.DataFrame({
        "method": ["lacy", "lacy", "standard", "lacy"], "corpus": ["synthbio", "synthbio", "synthbio", "vitalwiki"],
        "metric": "factscore", "budget": [0.22, 0.8, 0.22, 0.22], "value": [22.7, 25.6, 15.9, 12.0]}), profile="cpu")
    provenance.save_results(tmp_path, "07_bench", {"throughput": {"speed_ratio": 2.5}}, profile="cpu")
    return results.load_results(tmp_path, "cpu")


def test_tidy_results_flattens_mappings_and_melts_wide_tables(tmp_path):
    tidy = results.tidy_results(_store(tmp_path))
    assert list(tidy.columns[:2]) == ["chapter", "metric"] and tidy.columns[-1] == "value"
    bench = tidy[tidy.chapter == "07_bench"]
    assert bench[["metric", "value"]].values.tolist() == [["throughput.speed_ratio", 2.5]]
    signals = tidy[tidy.chapter == "02_loss_is_not_enough"].set_index("signal")
    assert (signals["metric"] == "auroc").all()
    assert signals.loc["loss+spacy", "value"] == 0.83


def test_headline_tables_pick_the_budget_and_pivot(tmp_path):
    tables = results.headline_tables(results.tidy_results(_store(tmp_path)), budget=0.22)
    factscore = tables["FactScore at a 22% call budget"]
    assert factscore.loc["lacy", "synthbio"] == 22.7  # the 80% budget row is left out
    assert factscore.loc["lacy", "vitalwiki"] == 12.0
    assert tables["AUROC of the token signals"].loc["loss", "synthbio"] == 0.61
    assert tables["Benchmark ratios"]["value"].tolist() == [2.5]
    assert results.headline_tables(results.tidy_results({})) == {}


def test_headline_tables_show_chapter_7_per_size(tmp_path):
    rows = [{"size": size, "params": params, "method": method, "seed": seed, "metric": "recall_famous", "value": value,
             "part": "knowledge", "corpus": "synthbio"}
            for size, params, method, seed, value in [("172K", 172272, "lacy", 0, 0.1), ("58K", 58440, "lacy", 0, 0.0),
                                                      ("58K", 58440, "lacy", 1, 0.5), ("58K", 58440, "standard", 0, 0.2)]]
    provenance.save_results(tmp_path, "07_scaling", pd.DataFrame(rows), profile="cpu")
    tables = results.headline_tables(results.tidy_results(results.load_results(tmp_path, "cpu")))
    knowledge = next(table for caption, table in tables.items() if caption.startswith("Knowledge per SLM size"))
    assert knowledge.index.tolist() == [("58K", "lacy"), ("58K", "standard"), ("172K", "lacy")]  # smallest SLM first
    assert knowledge.loc[("58K", "lacy"), "recall_famous"] == 0.25 and knowledge.loc[("58K", "lacy"), "training seeds"] == 2


def test_chapter_status_marks_missing_chapters_not_run(tmp_path):
    status = results.chapter_status(_store(tmp_path), ["01_data", "04_cascade"])
    assert status.loc["01_data", "status"] == "not run"
    assert status.loc["04_cascade", "status"] == "ran"
    assert status.loc["04_cascade", "git"].startswith(provenance.git_state()[0])
