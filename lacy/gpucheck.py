"""``make gpu-check``: does this CUDA machine run the ``gpu`` profile, and how fast?

Trains the ``gpu`` profile's SLM for a fixed number of steps on random tokens with the LaCy objective
(the precision ``auto`` resolves to, SDPA attention, the fused AdamW), then runs the cascade bench
(:mod:`lacy.bench.cascade`: KV caches, SDPA) on the GPU. Prints one JSON object: tokens/s, MFU against
the card's published dense peak (:data:`lacy.plan.CARD_PEAKS`) and against its measured GEMM peak, peak
memory, and the cascade's ratios. Without a CUDA GPU it prints that it skipped and exits 0.

    python -m lacy.gpucheck [--steps 30] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

import torch

from lacy.plan import card_peak, parameters, train_flops_per_token
from lacy.profiles import Profile, get_profile
from lacy.train.model import autocast_dtype, build_slm, resolve_attention, resolve_precision
from lacy.train.objective import call_aware_loss, normalise_loss

CALL_SHARE = 0.15  # the share of <CALL> targets LaCy trains (paper §4)


def train_check(profile: Profile, device: str = "cuda", steps: int = 30, warmup: int = 3, batch_size: int = 16,
                seed: int = 0) -> dict[str, Any]:
    """Time ``steps`` optimiser steps of the profile's SLM on random tokens (after ``warmup`` untimed ones)."""
    precision = resolve_precision(profile.train.precision, torch.device(device).type)
    vocab, context = profile.data.vocab_size, profile.data.seq_len
    model = build_slm(profile.model, vocab, context, pad_id=0, bos_id=1, eos_id=2, seed=seed,
                      attn_implementation=resolve_attention("auto")).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.train.lr, fused=device.startswith("cuda"))
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "16-mixed")
    g = torch.Generator(device="cpu").manual_seed(seed)
    tokens = torch.randint(5, vocab, (batch_size, context + 1), generator=g).to(device)
    call_mask = (torch.rand(batch_size, context, generator=g) < CALL_SHARE).to(device)
    call_id = 4
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    dtype = autocast_dtype(precision)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            started = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(input_ids=tokens[:, :-1]).logits
        loss = normalise_loss(*call_aware_loss(logits, tokens[:, 1:], call_mask, ~call_mask, call_id), sync=False)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), profile.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    sync()
    seconds = time.perf_counter() - started
    tokens_per_s = steps * batch_size * context / seconds
    flops_per_s = tokens_per_s * train_flops_per_token(profile.model, vocab, context)
    return {
        "params": parameters(profile.model, vocab, context), "precision": precision, "attention": model.config._attn_implementation,
        "batch_size": batch_size, "context": context, "steps": steps, "seconds": seconds, "tokens_per_s": tokens_per_s,
        "model_tflops_per_s": flops_per_s / 1e12, "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
        "finite": bool(torch.isfinite(torch.stack(losses)).all()),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lacy.gpucheck", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step (the profile's context length each)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per prompt in the cascade bench")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: skipped (make gpu-check trains the gpu SLM and benches the cascade on an NVIDIA GPU; "
              "run it on a machine with one)")
        return 0
    from lacy.bench import cascade
    from lacy.bench.peak import gemm_peak_flops

    profile = get_profile(args.profile)
    name = torch.cuda.get_device_name(0)
    train = train_check(profile, steps=args.steps, batch_size=args.batch_size)
    measured = gemm_peak_flops(autocast_dtype(train["precision"]) or torch.float32, size=8192, device="cuda")
    published = card_peak(name)
    report = {
        "device": name, "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch": torch.__version__, "train": train,
        "gemm_peak_tflops_measured": measured / 1e12,
        "published_peak_tflops": published[0] / 1e12 if published else None,
        "mfu_vs_published": train["model_tflops_per_s"] * 1e12 / published[0] if published else None,
        "mfu_vs_measured_gemm": train["model_tflops_per_s"] * 1e12 / measured,
        "cascade": cascade.run(profile=args.profile, new_tokens=args.new_tokens, n_prompts=2, repeats=2, device="cuda", realistic=False),
    }
    print(json.dumps(report, indent=2, default=str))
    return 0 if train["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
