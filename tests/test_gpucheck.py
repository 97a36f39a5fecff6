"""``make gpu-check`` on a machine without CUDA says it skipped; its training loop and card table work on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from lacy import gpucheck
from lacy.plan import card_peak
from lacy.profiles import get_profile


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: make gpu-check runs for real")
def test_without_cuda_it_skips_and_says_so(capsys):
    assert gpucheck.main([]) == 0
    assert "no CUDA GPU: skipped" in capsys.readouterr().out


def test_train_check_runs_the_objective_on_cpu():
    tiny = get_profile("gpu", {"model.d_model": "32", "model.n_layer": "1", "model.n_head": "2", "model.d_ff": "64",
                               "data.seq_len": "32", "data.vocab_size": "300", "train.precision": "32"})
    result = gpucheck.train_check(tiny, device="cpu", steps=3, warmup=1, batch_size=2)
    assert result["finite"] and result["tokens_per_s"] > 0 and result["precision"] == "32-true"
    assert result["loss_first"] == pytest.approx(math.log(300), rel=0.2)  # a fresh model is near uniform


@pytest.mark.parametrize("name, peak", [("Tesla T4", 65e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A10", 125e12),
                                        ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H200", 989e12), ("NVIDIA L40S", 362e12)])
def test_card_peaks_by_device_name(name, peak):
    assert card_peak(name)[0] == peak


def test_unknown_card_has_no_published_peak():
    assert card_peak("Some Future GPU") is None


def test_cascade_bench_runs_on_a_given_device():
    from lacy.bench import cascade

    result = cascade.run(profile="smoke", new_tokens=8, n_prompts=1, repeats=1, device="cpu", realistic=False)
    sizes = result["profile_sizes"]
    assert result["device"] == sizes["device"] == "cpu" and sizes["generated_tokens"] == 8 and sizes["ratio_to_mixture_bound"] > 0
