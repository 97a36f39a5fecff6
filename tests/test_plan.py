"""``lacy plan``: FLOPs counted from the profile, time budgets the profiles promise."""

from __future__ import annotations

import pytest

from lacy import plan
from lacy.cli import main
from lacy.profiles import METHODS, ModelConfig, get_profile
from lacy.train.model import build_slm, count_parameters


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_parameter_count_is_exact(arch):
    cfg = ModelConfig(arch=arch, d_model=32, n_layer=2, n_head=4, d_ff=80)
    model = build_slm(cfg, vocab_size=300, max_positions=64, pad_id=0, bos_id=1, eos_id=2, seed=0)
    assert plan.parameters(cfg, 300, 64) == count_parameters(model)


def test_training_flops_follow_the_6n_rule():
    p = get_profile("smoke")
    work = plan.training("x", p, models=3)
    tokens = p.train.max_steps * p.train.batch_size * p.data.seq_len
    n = plan.parameters(p.model, p.data.vocab_size, p.data.seq_len)
    assert work.flops == pytest.approx(3 * tokens * (6 * n + 12 * p.model.n_layer * p.model.d_model * p.data.seq_len))


def test_chapter_3_trains_every_method_but_the_shared_standard():
    p = get_profile("smoke")
    one = plan.training("x", p).flops
    assert plan.chapter_work("03_training", p)[0].flops == pytest.approx((len(METHODS) - 1) * one)


def test_colab_fits_a_t4_session_and_gpu_is_paper_scale():
    """The promises of the profiles: colab ≤ 60 min per chapter and ≤ 4 h per book on a T4;
    gpu: a ≥ 100M-parameter SLM trained on ≥ 1B tokens."""
    colab = plan.plan_table(plan.plan(get_profile("colab")))
    assert all(row["T4 h"] <= 1.0 for row in colab[:-1]), colab
    assert colab[-1]["T4 h"] <= 4.0
    gpu = get_profile("gpu")
    assert plan.parameters(gpu.model, gpu.data.vocab_size, gpu.data.seq_len) >= 100e6
    assert gpu.train.max_steps * gpu.train.batch_size * gpu.data.seq_len >= 1e9


def test_chapter_estimate_prints_one_line():
    text = str(plan.chapter_estimate("03_training", "smoke", measure=False))
    assert text.startswith("03_training under profile 'smoke'") and "H100" in text and "MFU 30% assumed" in text
    with pytest.raises(ValueError, match="valid choices"):
        plan.chapter_estimate("07_nothing", "smoke", measure=False)


def test_plan_command(tmp_path, capsys):
    assert main(["plan", "--profile", "colab", "--no-measure", "--out", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "04_cascade" in out and "book" in out and "MFU assumed 30%" in out
    assert (tmp_path / "plan.json").exists()
    assert main(["plan", "--profile", "laptop"]) == 2


@pytest.mark.parametrize("cuda, name, expected", [(False, "", "cpu"), (True, "Tesla T4", "colab"),
                                                  (True, "NVIDIA A100-SXM4-40GB", "gpu"), (True, "NVIDIA H100 80GB HBM3", "gpu"),
                                                  (True, "Some Future GPU", "colab")])
def test_profile_for_device(monkeypatch, cuda, name, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert plan.profile_for_device() == expected
