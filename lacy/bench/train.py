"""Training-step throughput: lacy's step against a naive PyTorch baseline, side by side.

Three steps run in one process on the same random batches (the profile's ``seq_len`` and
``batch_size``, fact flags on ~25% of tokens), at the profile's SLM size:

- ``naive``: GPT2LMHeadModel in fp32 with eager attention, a plain loop with ``F.cross_entropy`` and
  AdamW (no clipping, no schedule: strictly less work than lacy's step);
- ``lacy``: :meth:`lacy.train.module.LacyLM.compute_loss` with the ``lacy`` rule on the default
  Llama model (eager attention on CPU, see :func:`lacy.train.model.resolve_attention`) under the
  precision ``train.precision`` resolves to (bf16 autocast on CPUs with native bf16), then backward,
  gradient clipping, AdamW and the LR schedule, as Lightning runs it;
- ``standard``: the same step with the ``standard`` rule (the cost of selection is the difference).

Warm-up steps are excluded; the variants are interleaved step by step (in rotating order) so that
drifts in machine load hit all of them alike. Targets on the 2-core development CPU: ``speedup_vs_naive >= 2.5`` and
``lacy_overhead <= 0.05``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lacy.profiles import ModelConfig, get_profile
from lacy.train.model import autocast_dtype, build_slm, count_parameters, resolve_precision
from lacy.train.module import LacyLM

TARGETS = {"speedup_vs_naive": 2.5, "lacy_overhead": 0.05}
CALL_ID, PAD_ID, BOS_ID, EOS_ID = 4, 0, 1, 2
WARMUP_STEPS = 3


def random_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of random tokens with ~25% fact flags, all positions valid."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(5, vocab_size, (batch_size, seq_len + 1), generator=g)
        batches.append({"input_ids": ids[:, :-1], "targets": ids[:, 1:], "valid": torch.ones(batch_size, seq_len, dtype=torch.bool),
                        "fact": torch.rand(batch_size, seq_len, generator=g) < 0.25})
    return batches


def naive_step_fn(cfg: ModelConfig, vocab_size: int, seq_len: int, lr: float, device: str = "cpu") -> tuple[Callable[[dict], None], int]:
    model = build_slm(replace(cfg, arch="gpt2"), vocab_size, seq_len, PAD_ID, BOS_ID, EOS_ID, seed=0, attn_implementation="eager")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def step(batch: dict[str, torch.Tensor]) -> None:
        logits = model(input_ids=batch["input_ids"]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, count_parameters(model)


def lacy_step_fn(method: str, cfg: ModelConfig, vocab_size: int, seq_len: int, train_cfg, precision: str,
                 device: str = "cpu") -> tuple[Callable[[dict], None], int]:
    model = build_slm(cfg, vocab_size, seq_len, PAD_ID, BOS_ID, EOS_ID, seed=0).to(device)
    module = LacyLM(model, method, CALL_ID, train_cfg)
    module.train()
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    dtype = autocast_dtype(precision)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = module.compute_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    return step, count_parameters(model)


def run(profile: str = "cpu", steps: int = 20, size: ModelConfig | None = None, threads: int | None = None,
        device: str | None = None) -> dict[str, Any]:
    """Tokens per second of the naive, ``standard`` and ``lacy`` training steps (``steps`` timed each).

    ``device`` defaults to CUDA when available (the ``colab``/``gpu`` profiles' models are too big to
    time on a CPU), else the CPU; the precision is what ``train.precision`` resolves to there.

    Wall-clock rates are the headline; rates per CPU-second of this process are reported too
    (``*_tokens_per_cpu_s``), since on a shared machine other processes' load skews wall-clock
    time. ``threads`` sets ``torch.set_num_threads`` for the measurement (default: unchanged).
    """
    prof = get_profile(profile)
    cfg = size or prof.model
    seq_len, batch_size, vocab_size = prof.data.seq_len, prof.train.batch_size, prof.data.vocab_size
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(prof.train.precision, "gpu" if device.startswith("cuda") else "cpu")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    train_cfg = replace(prof.train, max_steps=10 * (steps + WARMUP_STEPS))
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        batches = [{k: v.to(device) for k, v in b.items()} for b in random_batches(4, batch_size, seq_len, vocab_size)]
        naive, n_naive = naive_step_fn(cfg, vocab_size, seq_len, prof.train.lr, device)
        standard, params = lacy_step_fn("standard", cfg, vocab_size, seq_len, train_cfg, precision, device)
        lacy, _ = lacy_step_fn("lacy", cfg, vocab_size, seq_len, train_cfg, precision, device)
        variants = {"naive": naive, "standard": standard, "lacy": lacy}
        for step in variants.values():
            for i in range(WARMUP_STEPS):
                step(batches[i % len(batches)])
        wall, cpu = dict.fromkeys(variants, 0.0), dict.fromkeys(variants, 0.0)
        names = list(variants)
        for i in range(steps):  # one step of each per round, in rotating order
            for name in names[i % len(names):] + names[: i % len(names)]:
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                variants[name](batches[i % len(batches)])
                sync()
                wall[name] += time.perf_counter() - wall_start
                cpu[name] += time.process_time() - cpu_start
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    tokens = steps * batch_size * seq_len
    rate = {name: tokens / s for name, s in wall.items()}
    cpu_rate = {name: tokens / s for name, s in cpu.items()}
    result: dict[str, Any] = {f"{name}_tokens_per_s": r for name, r in rate.items()}
    result.update({f"{name}_tokens_per_cpu_s": r for name, r in cpu_rate.items()})
    result.update({
        "speedup_vs_naive": rate["lacy"] / rate["naive"], "lacy_overhead": 1.0 - rate["lacy"] / rate["standard"],
        "speedup_vs_naive_cpu_time": cpu_rate["lacy"] / cpu_rate["naive"],
        "lacy_overhead_cpu_time": 1.0 - cpu_rate["lacy"] / cpu_rate["standard"],
        "params": params, "naive_params": n_naive, "steps": steps, "precision": precision, "device": device,
        "threads": used_threads, "load_average_1min": os.getloadavg()[0], "targets": TARGETS,
    })
    return result


def main() -> None:
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
