"""Training-step throughput: lacy's step against a naive PyTorch baseline, and against the machine's peak.

The machine's own ceiling is measured first: a large GEMM in the dtype the step uses
(:func:`lacy.bench.peak.gemm_peak_flops`). Then the steps run in one process on the same random
batches (the profile's ``seq_len`` and ``batch_size``, fact flags on ~25% of tokens), at the
profile's SLM size:

- ``naive``: GPT2LMHeadModel in fp32 with eager attention, a plain loop with ``F.cross_entropy`` and
  AdamW (no clipping, no schedule: strictly less work than lacy's step);
- ``lacy``: :meth:`lacy.train.module.LacyLM.compute_loss` with the ``lacy`` rule on the default
  Llama model under the precision ``train.precision`` resolves to (bf16 autocast on CPUs with
  native bf16), its model compiled when ``train.compile`` resolves to on (:mod:`lacy.train.compile`), then
  backward, gradient clipping, AdamW and the LR schedule, as Lightning runs it;
- ``standard``: the same step with the ``standard`` rule (the cost of selection is the difference);
- ``lacy_eager`` (only when compiling): the ``lacy`` step without compile, what compile buys.

Warm-up steps are excluded from the rates; the variants are interleaved step by step (in rotating
order) so that drifts in machine load hit all of them alike. Compile time is not hidden: the first
compiled step runs against an empty temporary Inductor cache (``compile_seconds_cold``: what the
first run on a machine pays) and the second compiled model re-traces against the now-filled cache
after ``torch._dynamo.reset()`` (``compile_seconds_warm``: what every later run pays at least).
A new process pays more: loading Inductor and the cached kernels. So a child process then compiles
the ``lacy`` step against the filled cache (``compile_seconds_new_process``: what a later training
run on this machine pays, the cache being persistent). Measured on the 2-core Xeon (``cpu`` size,
2026-12-07): 0.9 s warm here, 4.1 s in a new process, 25-30 s cold in fp32 and 33-35 s in bf16.
``speedup_vs_naive`` is the time of the profile's ``train.max_steps`` naive steps over that of
lacy's steps plus the cold compile; ``speedup_vs_naive_warm_cache`` adds the warm compile instead,
``speedup_vs_naive_new_process`` the new process's.
``mfu`` = model FLOPs/s (6 x parameters x tokens + attention) / the measured GEMM peak.

Where the rest of a step goes (on a CPU): after the timed steps, :func:`matmul_seconds` profiles five
more steps of ``naive`` and ``lacy`` (alternated) and sums the time spent inside matrix products
(``mm``, ``bmm``, ``addmm``, ``baddbmm``). ``*_matmul_share`` is that time over the timed step time;
``speedup_ceiling_matmul_only`` = naive step time / lacy's matmul time per step is the speed-up lacy's
step would reach if everything but its matrix products (norms, rotary embeddings, SwiGLU, the
vocabulary softmax, the optimizer, Python) cost nothing. It bounds what fusing the element-wise work
can buy at this size: a target above it needs fewer or faster matmuls (bf16 units, a larger model).
On a GPU these keys are ``None``: an op's CPU time there is its launch, not its work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
from torch.profiler import ProfilerActivity, profile

from lacy.bench.peak import gemm_peak_flops, machine_features
from lacy.profiles import ModelConfig, Profile, get_profile
from lacy.train.compile import resolve_compile
from lacy.train.memory import retain_freed_memory
from lacy.train.model import autocast_dtype, build_slm, count_parameters, resolve_precision
from lacy.train.module import LacyLM

SPEEDUP_TARGETS = {"32-true": 1.5, "bf16-mixed": 2.5}  # fp32 machines; machines with native bf16
TARGET_LACY_OVERHEAD = 0.05
CALL_ID, PAD_ID, BOS_ID, EOS_ID = 4, 0, 1, 2
WARMUP_STEPS = 3
MATMUL_OPS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"})
MATMUL_PROFILE_STEPS = 5

Step = Callable[[dict[str, torch.Tensor]], None]


def targets(precision: str) -> dict[str, float]:
    """The targets that apply under ``precision`` (bf16 units make a larger speed-up reachable)."""
    return {"speedup_vs_naive": SPEEDUP_TARGETS.get(precision, SPEEDUP_TARGETS["32-true"]), "lacy_overhead": TARGET_LACY_OVERHEAD}


def random_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of random tokens with ~25% fact flags, all positions valid."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(5, vocab_size, (batch_size, seq_len + 1), generator=g)
        batches.append({"input_ids": ids[:, :-1], "targets": ids[:, 1:], "valid": torch.ones(batch_size, seq_len, dtype=torch.bool),
                        "fact": torch.rand(batch_size, seq_len, generator=g) < 0.25})
    return batches


def naive_step_fn(cfg: ModelConfig, vocab_size: int, seq_len: int, lr: float, device: str = "cpu") -> tuple[Step, int]:
    model = build_slm(replace(cfg, arch="gpt2"), vocab_size, seq_len, PAD_ID, BOS_ID, EOS_ID, seed=0, attn_implementation="eager").to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def step(batch: dict[str, torch.Tensor]) -> None:
        logits = model(input_ids=batch["input_ids"]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, count_parameters(model)


def lacy_step_fn(method: str, cfg: ModelConfig, vocab_size: int, seq_len: int, train_cfg, precision: str,
                 compile: bool, device: str = "cpu") -> tuple[Step, int]:
    model = build_slm(cfg, vocab_size, seq_len, PAD_ID, BOS_ID, EOS_ID, seed=0, call_id=CALL_ID).to(device)
    module = LacyLM(model, method, CALL_ID, train_cfg, compile=compile)
    module.train()
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    dtype = autocast_dtype(precision)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = module.compute_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    return step, count_parameters(model)


def flops_per_token(params: int, cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x parameters (forward + backward of every weight, the tied output
    layer included) + 12 x layers x width x context for the attention scores and values (PaLM, App. B)."""
    return 6.0 * params + 12.0 * cfg.n_layer * cfg.d_model * seq_len


def _timed(step: Step, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    step(batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall_start, time.process_time() - cpu_start


@contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: Kineto announces every profiler start and stop there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def matmul_seconds(step: Step, batch: dict[str, torch.Tensor]) -> float:
    """Seconds that one ``step`` on ``batch`` spends inside matrix products on the CPU
    (:data:`MATMUL_OPS`, their own time as ``torch.profiler`` measures it)."""
    trace = profile(activities=[ProfilerActivity.CPU])
    with _c_stderr_silenced():
        trace.start()
    try:
        step(batch)
    finally:
        with _c_stderr_silenced():
            trace.stop()
    return sum(e.self_cpu_time_total for e in trace.key_averages() if e.key in MATMUL_OPS) / 1e6


def new_process_compile_seconds(profile: str, overrides: Mapping[str, Any] | None, size: ModelConfig,
                                threads: int | None, device: str) -> float:
    """Seconds by which the first compiled ``lacy`` step of a fresh Python process exceeds a steady
    step, against the Inductor cache this process uses (the child inherits ``TORCHINDUCTOR_CACHE_DIR``)."""
    spec = {"profile": profile, "overrides": dict(overrides or {}), "size": asdict(size), "threads": threads, "device": device}
    child = subprocess.run([sys.executable, "-m", "lacy.bench.train", "--new-process-compile", json.dumps(spec)],
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"the new-process compile measurement failed (exit {child.returncode}):\n{child.stderr[-2000:]}")
    return float(child.stdout.strip().splitlines()[-1])


def _precision_and_batches(prof: Profile, device: str, n: int) -> tuple[str, list[dict[str, torch.Tensor]]]:
    """The precision ``prof.train.precision`` resolves to on ``device``, and ``n`` random batches there."""
    batches = random_batches(n, prof.train.batch_size, prof.data.seq_len, prof.data.vocab_size)
    precision = resolve_precision(prof.train.precision, torch.device(device).type)
    return precision, [{k: v.to(device) for k, v in b.items()} for b in batches]


def _first_compiled_step_excess(profile: str, overrides: Mapping[str, Any], size: dict[str, Any],
                                threads: int | None, device: str) -> float:
    """The child side of :func:`new_process_compile_seconds`: first step minus the mean of three more."""
    if threads:
        torch.set_num_threads(threads)
    prof = get_profile(profile, overrides)
    precision, batches = _precision_and_batches(prof, device, 2)
    step, _ = lacy_step_fn("lacy", ModelConfig(**size), prof.data.vocab_size, prof.data.seq_len,
                           replace(prof.train, max_steps=100), precision, True, device)
    first = _timed(step, batches[0])[0]
    steady = sum(_timed(step, batches[i % 2])[0] for i in range(1, 4)) / 3
    return max(0.0, first - steady)


def run(profile: str = "cpu", steps: int = 20, size: ModelConfig | None = None, threads: int | None = None,
        overrides: Mapping[str, Any] | None = None, device: str | None = None) -> dict[str, Any]:
    """Tokens per second of the naive, ``standard`` and ``lacy`` training steps (``steps`` timed each),
    their MFU against this machine's measured GEMM peak, and the speed-up with compile time included.

    Wall-clock rates are the headline; rates per CPU-second of this process are reported too
    (``*_tokens_per_cpu_s``), since on a shared machine other processes' load skews wall-clock
    time. ``threads`` sets ``torch.set_num_threads`` for the measurement (default: unchanged).
    ``overrides`` are profile settings (``{"train.precision": "32"}``, ``{"train.compile": "off"}``).
    ``device`` defaults to CUDA when available (the colab/gpu models are too big to time on a CPU).
    """
    prof = get_profile(profile, overrides)
    cfg = size or prof.model
    seq_len, batch_size, vocab_size = prof.data.seq_len, prof.train.batch_size, prof.data.vocab_size
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision, batches = _precision_and_batches(prof, device, 4)
    compile = resolve_compile(prof.train.compile, torch.device(device).type, prof.train.max_steps)
    dtype = autocast_dtype(precision) or torch.float32
    train_cfg = replace(prof.train, max_steps=10 * (steps + WARMUP_STEPS))
    retained = retain_freed_memory()  # as lacy.train.run.train does; the naive step gets it too
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        peak = gemm_peak_flops(dtype)
        peak_fp32 = peak if dtype == torch.float32 else gemm_peak_flops(torch.float32)
        naive, n_naive = naive_step_fn(cfg, vocab_size, seq_len, prof.train.lr, device)
        variants = {"naive": naive}
        first_step: dict[str, float] = {}
        compile_new_process = 0.0
        with ExitStack() as stack:
            if compile:  # an empty Inductor cache, so that the first compile is a cold one
                stack.enter_context(temporary_cache_dir(stack.enter_context(tempfile.TemporaryDirectory(prefix="lacy-bench-inductor-"))))
            for method in ("lacy", "standard"):  # lacy compiles against the empty cache, standard finds it filled
                if compile:  # forget traced code, as a new process would, so that standard re-traces
                    torch._dynamo.reset()
                variants[method], params = lacy_step_fn(method, cfg, vocab_size, seq_len, train_cfg, precision, compile, device)
                first_step[method] = _timed(variants[method], batches[0])[0]
            if compile:
                compile_new_process = new_process_compile_seconds(profile, overrides, cfg, threads, device)
                variants["lacy_eager"], _ = lacy_step_fn("lacy", cfg, vocab_size, seq_len, train_cfg, precision, False, device)
            for name, step in variants.items():
                for i in range(int(name in first_step), WARMUP_STEPS):
                    step(batches[i % len(batches)])
            wall, cpu = dict.fromkeys(variants, 0.0), dict.fromkeys(variants, 0.0)
            names = list(variants)
            for i in range(steps):  # one step of each per round, in rotating order
                for name in names[i % len(names):] + names[: i % len(names)]:
                    w, c = _timed(variants[name], batches[i % len(batches)])
                    wall[name] += w
                    cpu[name] += c
            matmul = dict.fromkeys(("naive", "lacy"), 0.0 if device == "cpu" else None)
            for i in range(MATMUL_PROFILE_STEPS if device == "cpu" else 0):  # interleaved, one profiled step of each per round
                for name in matmul:
                    matmul[name] += matmul_seconds(variants[name], batches[i % len(batches)]) / MATMUL_PROFILE_STEPS
        features = {**machine_features(dtype, compiled=compile), "retain_freed_memory": retained}
    finally:
        torch.set_num_threads(previous_threads)
    tokens_per_step = batch_size * seq_len
    rate = {name: steps * tokens_per_step / s for name, s in wall.items()}
    cpu_rate = {name: steps * tokens_per_step / s for name, s in cpu.items()}
    step_seconds = {name: s / steps for name, s in wall.items()}
    compile_cold = max(0.0, first_step["lacy"] - step_seconds["lacy"]) if compile else 0.0
    compile_warm = max(0.0, first_step["standard"] - step_seconds["standard"]) if compile else 0.0
    run_steps = prof.train.max_steps
    naive_run = run_steps * step_seconds["naive"]
    lacy_run = run_steps * step_seconds["lacy"]
    result: dict[str, Any] = {f"{name}_tokens_per_s": r for name, r in rate.items()}
    result.update({f"{name}_tokens_per_cpu_s": r for name, r in cpu_rate.items()})
    result.update({
        "speedup_vs_naive": naive_run / (lacy_run + compile_cold),
        "speedup_vs_naive_warm_cache": naive_run / (lacy_run + compile_warm),
        "speedup_vs_naive_new_process": naive_run / (lacy_run + compile_new_process),
        "step_speedup_vs_naive": rate["lacy"] / rate["naive"],
        "speedup_vs_naive_cpu_time": cpu_rate["lacy"] / cpu_rate["naive"],
        "lacy_overhead": 1.0 - rate["lacy"] / rate["standard"],
        "lacy_overhead_cpu_time": 1.0 - cpu_rate["lacy"] / cpu_rate["standard"],
        "compile_seconds_cold": compile_cold, "compile_seconds_warm": compile_warm,
        "compile_seconds_new_process": compile_new_process, "amortised_over_steps": run_steps,
        "gemm_peak_flops": peak, "gemm_peak_flops_fp32": peak_fp32,
        "mfu": rate["lacy"] * flops_per_token(params, cfg, seq_len) / peak,
        "naive_mfu": rate["naive"] * flops_per_token(n_naive, cfg, seq_len) / peak_fp32,
        "params": params, "naive_params": n_naive, "steps": steps, "precision": precision, "device": device,
        "features": features, "load_average_1min": os.getloadavg()[0], "targets": targets(precision),
    })
    if compile:
        result["compile_step_speedup"] = rate["lacy"] / rate["lacy_eager"]
    measured = matmul["lacy"] is not None  # None (JSON null) off the CPU, where op time is launch time
    result.update({f"{name}_matmul_share": seconds / step_seconds[name] if measured else None for name, seconds in matmul.items()})
    result["lacy_matmul_seconds_per_step"] = matmul["lacy"]
    result["speedup_ceiling_matmul_only"] = step_seconds["naive"] / matmul["lacy"] if measured else None
    return result


def main() -> None:
    if sys.argv[1:2] == ["--new-process-compile"]:  # the child of new_process_compile_seconds
        print(_first_compiled_step_excess(**json.loads(sys.argv[2])))
    else:
        print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
