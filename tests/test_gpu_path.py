"""The ``gpu`` and ``colab`` profiles' code paths, shrunk to seconds, on every commit (CPU only).

Everything those profiles do differently from ``cpu`` runs here except the CUDA kernels: DataLoader
worker processes (``train.num_workers``), several spaCy annotation processes, SDPA attention (what
``attn_implementation="auto"`` picks on CUDA), the mixed precision their cards resolve to
(``bf16-mixed`` on an A100/H100, ``16-mixed`` on a T4), an ``hf:`` LM helper (how chapter 6 loads the
hub helper), and chapter 3 and 4's train → evaluate → sweep through the CLI.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lacy import plan
from lacy.cli import main
from lacy.profiles import get_profile
from lacy.train import model as model_module

TINY_MODEL = {"d_model": 32, "n_layer": 1, "n_head": 2, "d_ff": 64}
TINY_TRAIN = {"batch_size": 8, "max_steps": 4, "warmup_steps": 2, "val_every": 2, "val_batches": 2, "log_every": 1, "ckpt_every": 2}
# What each card resolves precision=auto to; on this CPU we force it, to run the same Lightning plugin.
CARD_PRECISION = {"gpu": "bf16-mixed", "colab": "16-mixed"}
# Lightning has no fp16 AMP on CPU and substitutes bf16-mixed (with a warning); the fp16 arithmetic of the
# objective and of a training step is tested directly in tests/test_precision.py.
CPU_PRECISION = {"bf16-mixed": "bf16-mixed", "16-mixed": "bf16-mixed"}


def shrink(profile: str) -> list[str]:
    """``--set`` overrides that keep ``profile``'s code path (workers, processes, precision) at seconds of work."""
    sets = {"world.tier_people": "3,6,12,30", "world.tier_max_docs": "20,10,4,2", "world.tier_min_docs": "12,5,2,1", "data.vocab_size": 512, "data.seq_len": 64,
            "data.annotate_processes": 2, "eval.n_subjects": 4, "eval.max_new_tokens": 8, "eval.calibration_docs": 4,
            "eval.sweep_rates": "0,0.5,1", "train.precision": CARD_PRECISION[profile],
            "helper_train.precision": CARD_PRECISION[profile]}
    for section, values in (("model", TINY_MODEL), ("helper_model", TINY_MODEL), ("train", TINY_TRAIN), ("helper_train", TINY_TRAIN)):
        sets.update({f"{section}.{key}": value for key, value in values.items()})
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def test_shrinking_keeps_the_branches_the_profile_takes():
    for name in CARD_PRECISION:
        full = get_profile(name)
        small = get_profile(name, dict(pair.split("=", 1) for pair in shrink(name)[1::2]))
        assert small.train.num_workers == full.train.num_workers >= 1
        assert small.data.annotate_processes > 1 and full.data.annotate_processes > 1
        assert small.hub_helper == full.hub_helper


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You passed .* but AMP with fp16 is not supported on CPU")
@pytest.mark.parametrize("profile", ["gpu", "colab"])
def test_chapter_3_and_4_paths_under_the_profile(tmp_path, monkeypatch, profile):
    attention = []

    def cuda_attention(requested: str) -> str:  # what resolve_attention("auto") picks on a CUDA machine
        attention.append("sdpa" if requested == "auto" else requested)
        return attention[-1]

    monkeypatch.setattr(model_module, "resolve_attention", cuda_attention)
    common = ["--profile", profile, "--cache", str(tmp_path / "cache"), *shrink(profile)]
    runs = {}
    for method in ("standard", "lacy"):
        runs[method] = tmp_path / method
        assert main(["train", "--method", method, "--out", str(runs[method]), "--no-progress", *common]) == 0
        summary = json.loads((runs[method] / "summary.json").read_text())
        assert summary["precision"] == CPU_PRECISION[CARD_PRECISION[profile]] and summary["steps"] == 4
        assert summary["config"]["train"]["num_workers"] == get_profile(profile).train.num_workers
    assert attention == ["sdpa", "sdpa"]
    helper = f"hf:{runs['standard'] / 'model'}"  # an LM helper loaded like chapter 6's hub helper
    out = tmp_path / "lacy-lm.json"
    assert main(["evaluate", "--model", str(runs["lacy"] / "model"), "--helper", helper, "--out", str(out), *common]) == 0
    result = json.loads(out.read_text())
    assert result["n_subjects"] == 4 and 0.0 <= result["call_rate"] <= 1.0
    curve = tmp_path / "sweep.csv"
    assert main(["sweep", "--model", str(runs["lacy"] / "model"), "--helper", "doc", "--out", str(curve), *common]) == 0
    assert list(pd.read_csv(curve)["target_rate"]) == [0.0, 0.5, 1.0]
    assert "H100" in str(plan.chapter_estimate("04_cascade", profile, measure=False))
