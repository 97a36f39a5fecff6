"""torch.compile of the training step: same loss and gradients as eager, a persistent cache, the setting."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from lacy.profiles import ConfigError, ModelConfig, TrainConfig, get_profile
from lacy.train import compile as compile_mod
from lacy.train.compile import AUTO_MIN_STEPS, CPU_AUTO_MIN_STEPS, compile_cache_dir, resolve_compile
from lacy.train.model import build_slm
from lacy.train.module import LacyLM

CALL, VOCAB, SEQ = 4, 300, 16
TINY = ModelConfig(d_model=16, n_layer=1, n_head=2, d_ff=32)


def fixed_batch(batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch_size, SEQ + 1), generator=g)
    valid = torch.ones(batch_size, SEQ, dtype=torch.bool)
    valid[0, -3:] = False  # some padding
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "valid": valid,
            "fact": torch.rand(batch_size, SEQ, generator=g) < 0.3}


def loss_and_grads(method: str, compile: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model = build_slm(TINY, VOCAB, SEQ, 0, 1, 2, seed=0)
    module = LacyLM(model, method, CALL, TrainConfig(), compile=compile)
    loss, _ = module.compute_loss(fixed_batch())
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.slow
def test_compiled_loss_and_gradients_equal_eager(tmp_path):
    """One graph serves every method (the loss and selection stay eager), so the ``lacy`` rule covers them."""
    compile_cache_dir(tmp_path)
    eager_loss, eager_grads = loss_and_grads("lacy", compile=False)
    compiled_loss, compiled_grads = loss_and_grads("lacy", compile=True)
    assert abs(compiled_loss.item() - eager_loss.item()) <= 1e-5
    for compiled, eager in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    assert any((tmp_path / "inductor").rglob("*")), "Inductor wrote nothing to the lacy compile cache"


def test_resolve_compile_auto_compiles_long_runs_only(monkeypatch):
    monkeypatch.setattr(compile_mod, "has_cpp_compiler", lambda: True)
    assert resolve_compile("auto", "gpu", AUTO_MIN_STEPS) and not resolve_compile("auto", "gpu", AUTO_MIN_STEPS - 1)
    assert resolve_compile("auto", "cpu", CPU_AUTO_MIN_STEPS) and not resolve_compile("auto", "cpu", CPU_AUTO_MIN_STEPS - 1)
    cpu = get_profile("cpu")  # the book's CPU runs stay eager
    for train in (cpu.train, cpu.helper_train):
        assert not resolve_compile(train.compile, "cpu", train.max_steps)
    assert resolve_compile("on", "cpu", 1) and not resolve_compile("off", "gpu", 10**6)
    monkeypatch.setattr(compile_mod, "has_cpp_compiler", lambda: False)
    assert resolve_compile("on", "gpu", 10)  # the GPU backend needs no C++ compiler
    assert not resolve_compile("auto", "cpu", 10**6)  # auto falls back to eager without one
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        resolve_compile("on", "cpu", 10)


def test_compile_setting_is_validated():
    assert get_profile("smoke", {"train.compile": "on"}).train.compile == "on"
    with pytest.raises(ConfigError, match="train.compile.*valid choices: auto, on, off"):
        get_profile("smoke", {"train.compile": "yes"})
    with pytest.raises(ConfigError, match="train.compile"):
        resolve_compile("fast", "cpu", 10)
    assert replace(get_profile("cpu").train).compile == "auto"


def test_compile_cache_dir_is_under_the_lacy_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    directory = compile_cache_dir(tmp_path)
    assert directory == tmp_path / "inductor" and directory.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(directory)
