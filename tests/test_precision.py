"""Precision ``auto``: the hardware decides; the CALL-aware objective and a training step stay finite under fp16."""

from __future__ import annotations

import pytest
import torch

from lacy.profiles import PROFILES
from lacy.train import model as model_module
from lacy.train.objective import call_aware_loss, normalise_loss, token_terms

CALL = 3


@pytest.mark.parametrize("accelerator, cuda_bf16, cpu_bf16, expected", [
    ("gpu", True, False, "bf16-mixed"),   # A100 / H100 (compute capability >= 8.0)
    ("gpu", False, False, "16-mixed"),    # T4, V100: fp16 with a grad scaler
    ("cpu", False, True, "bf16-mixed"),   # CPUs with AVX512-BF16 / AMX
    ("cpu", False, False, "32-true"),     # CPUs without bf16 units
])
def test_auto_precision_follows_the_hardware(monkeypatch, accelerator, cuda_bf16, cpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(model_module, "cpu_supports_bf16", lambda: cpu_bf16)
    assert model_module.resolve_precision("auto", accelerator) == expected
    assert model_module.resolve_precision("32", accelerator) == "32-true"


def test_no_profile_hard_codes_a_precision():
    for profile in PROFILES.values():
        assert profile.train.precision == "auto" and profile.helper_train.precision == "auto", profile.name


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_fp16_on_a_gpu_gets_a_grad_scaler():
    """Lightning's 16-mixed plugin for a CUDA device carries a GradScaler (loss scaling against fp16 underflow)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    plugin = MixedPrecision("16-mixed", "cuda")
    assert isinstance(plugin.scaler, torch.amp.GradScaler)


def _case(seed: int, call_logit: float | None = None):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 16, 50, generator=g) * 4
    if call_logit is not None:
        logits[..., CALL] = call_logit
    targets = torch.randint(0, 50, (2, 16), generator=g)
    targets[targets == CALL] = CALL + 1
    return logits.half(), targets


@pytest.mark.parametrize("call_logit", [None, 60_000.0, -60_000.0])
def test_objective_is_finite_and_exact_under_fp16_logits(call_logit):
    """fp16 logits (what 16-mixed autocast produces), including a model that always calls (<CALL> logit near
    the fp16 maximum of 65504) and one that never does: the terms are computed in fp32 and match the fp32 ones."""
    logits16, targets = _case(0, call_logit)
    logits32 = logits16.float()
    terms16, terms32 = token_terms(logits16, targets, CALL), token_terms(logits32, targets, CALL)
    assert terms16.learn.dtype == torch.float32
    for t16, t32 in zip(terms16, terms32):
        assert torch.isfinite(t16).all()
        torch.testing.assert_close(t16, t32, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("always_call", [False, True])
def test_loss_and_gradient_finite_under_fp16(always_call):
    logits16, targets = _case(1, 60_000.0 if always_call else None)
    logits16.requires_grad_(True)
    call_mask = torch.ones_like(targets, dtype=torch.bool) if always_call else targets % 3 == 0
    learn_mask = ~call_mask
    loss_sum, n = call_aware_loss(logits16, targets, call_mask, learn_mask, CALL)
    loss = normalise_loss(loss_sum, n, sync=False)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits16.grad).all() and logits16.grad.dtype == torch.float16
    reference = logits16.detach().float().requires_grad_(True)
    ref_loss = normalise_loss(*call_aware_loss(reference, targets, call_mask, learn_mask, CALL), sync=False)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits16.grad.float(), reference.grad, rtol=1e-2, atol=1e-4)


def test_one_training_step_under_fp16_matches_fp32(smoke_datamodule, smoke_profile):
    """One LaCy step of the smoke SLM under fp16 autocast: finite loss and gradients close to fp32."""
    from lacy.train.model import build_slm
    from lacy.train.module import LacyLM

    dm = smoke_datamodule
    batch = next(iter(dm.val_dataloader()))

    def step(dtype: torch.dtype | None):
        slm = build_slm(smoke_profile.model, dm.vocab_size, smoke_profile.data.seq_len, dm.pad_id,
                        dm.tokenizer.bos_token_id, dm.tokenizer.eos_token_id, seed=0)
        module = LacyLM(slm, "lacy", dm.call_id, smoke_profile.train, seed=0)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = module.compute_loss(batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.reshape(-1) for p in slm.parameters() if p.grad is not None])

    loss16, grad16 = step(torch.float16)
    loss32, grad32 = step(None)
    assert torch.isfinite(loss16) and torch.isfinite(grad16).all()
    torch.testing.assert_close(loss16, loss32, rtol=5e-3, atol=5e-3)
    cosine = torch.nn.functional.cosine_similarity(grad16.float(), grad32, dim=0)
    assert cosine > 0.999, f"fp16 and fp32 gradients disagree (cosine {cosine:.5f})"


def test_autocast_dtype_of_each_precision():
    assert model_module.autocast_dtype("bf16-mixed") == torch.bfloat16
    assert model_module.autocast_dtype("16-mixed") == torch.float16
    assert model_module.autocast_dtype("32-true") is None
