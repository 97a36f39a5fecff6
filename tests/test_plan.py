"""``lacy plan``: FLOPs counted from the profile, time budgets the profiles promise."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lacy import plan
from lacy.cli import main
from lacy.evaluate.scaling import model_ladder
from lacy.profiles import ModelConfig, get_profile
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


def test_chapter_3_trains_every_method_and_seed_but_the_shared_standard():
    """9 methods at seed 0 (standard is chapter 2's), seeds 1 and 2 of 4 methods, and the LM helper (rho's reference)."""
    p = get_profile("smoke")
    one = plan.training("x", p).flops
    work = plan.chapter_work("03_training", p)
    assert work[0].flops == pytest.approx((8 + 4 * 2) * one)
    assert work[1].flops == pytest.approx(plan.training("x", p, helper=True).flops)
    assert not {"lacy_adaptive", "rho_excess"} & set(plan.CH3_METHODS)
    assert not any(w.label.startswith("train") for w in plan.chapter_work("04_cascade", p))  # the helper is chapter 3's


def test_chapter_7_training_is_the_hand_count():
    """Sizes 0-2 of the ladder (standard + lacy; a second seed of the smallest), fractions 0.2, 0.4, 0.8 at sizes 0
    and 1, lacy_adaptive and the gated lacy at the profile's size; the largest size's runs are chapter 3's."""
    p = get_profile("cpu")
    vocab, context = p.data.vocab_size, p.data.seq_len
    tokens = p.train.max_steps * p.train.batch_size * context
    sizes = model_ladder(p.model)
    assert sizes[-1] == p.model
    per_token = [plan.train_flops_per_token(cfg, vocab, context) for cfg in sizes]
    gated = plan.train_flops_per_token(replace(p.model, call_head="gate"), vocab, context)
    assert gated == per_token[-1] + 6 * (p.model.d_model + 1)
    expected = tokens * ((4 + 3) * per_token[0] + (2 + 3) * per_token[1] + 2 * per_token[2] + per_token[3] + gated)
    training = [w for w in plan.chapter_work("07_scaling", p) if w.label.startswith("train")]
    assert len(training) == 1 and training[0].flops == pytest.approx(expected, rel=1e-12)


def test_chapter_7_decodes_every_cascade_of_the_chapter():
    """Per subject: 5 budget runs at each of sizes 0 and 1, 3 + 9 at the SLM's size, 2 per ladder size and the helper alone."""
    p = get_profile("smoke")
    e = p.eval
    helper = plan.parameters(p.helper_model, p.data.vocab_size, p.data.seq_len)
    slms = [plan.parameters(cfg, p.data.vocab_size, p.data.seq_len) for cfg in model_ladder(p.model)]
    per_subject = 5 * (slms[0] + slms[1] + 2 * helper) + 12 * (slms[3] + helper) + 2 * (sum(slms) + 4 * helper) + slms[0] + helper
    decoded = sum(w.flops for w in plan.chapter_work("07_scaling", p) if not w.label.startswith("train"))
    assert decoded == pytest.approx(e.n_subjects * e.max_new_tokens * 2 * per_subject)


def test_plan_covers_chapter_7_before_the_summary():
    chapters = [p.chapter for p in plan.plan(get_profile("smoke"))]
    assert chapters.index("07_scaling") == chapters.index("summary") - 1


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


def test_plan_command_prints_chapter_7(capsys):
    assert main(["plan", "--profile", "smoke", "--no-measure"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert any(row and row[0] == "07_scaling" and float(row[1]) > 0 for row in rows)


@pytest.mark.parametrize("cuda, name, expected", [(False, "", "cpu"), (True, "Tesla T4", "colab"),
                                                  (True, "NVIDIA A100-SXM4-40GB", "gpu"), (True, "NVIDIA H100 80GB HBM3", "gpu"),
                                                  (True, "Some Future GPU", "colab")])
def test_profile_for_device(monkeypatch, cuda, name, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert plan.profile_for_device() == expected
