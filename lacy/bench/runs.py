"""Several training runs at once: :func:`lacy.train.run.get_or_train_many` one after another against side by side.

The same jobs are trained twice in fresh run folders, in one process: ``workers=1`` (each run in this
process with every core's threads) and ``workers="auto"`` (one worker process per core, one thread each;
:func:`lacy.train.run.resolve_train_workers`). The jobs are ``standard`` and ``lacy`` at each of ``sizes``
(indices into chapter 7's ladder, :func:`lacy.evaluate.scaling.sized_profiles`; by default its two smallest
SLMs, ``-1`` is the profile's own SLM, the size chapter 3 trains), shortened to ``max_steps`` steps so the bench
takes minutes. The token cache is built before either side is timed.

Reports the wall seconds of each side, ``speedup`` (serial ÷ side by side), the workers and threads,
and each side's ``mfu``: training FLOPs (:func:`lacy.plan.train_flops_per_token` × tokens) per second
over the machine's GEMM peak (:func:`lacy.bench.peak.gemm_peak_flops`) in the dtype the runs train in.
Processes are started with ``spawn``, so the side-by-side time includes each worker's imports: what a
chapter pays.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from lacy.bench.peak import gemm_peak_flops, machine_features
from lacy.data.cache import default_cache_root
from lacy.data.datamodule import LacyDataModule
from lacy.evaluate.scaling import sized_profiles
from lacy.plan import parameters, train_flops_per_token
from lacy.profiles import get_profile
from lacy.train.model import autocast_dtype, resolve_precision
from lacy.train.run import TrainJob, get_or_train_many, resolve_accelerator, resolve_train_workers, worker_threads

DEFAULT_STEPS = 150
SIZES = (0, 1)  # the smallest sizes of the ladder: where a step is overhead-bound and side by side pays most


def run(profile: str = "cpu", overrides: Mapping[str, str] | None = None, max_steps: int = DEFAULT_STEPS,
        cache_root: str | Path | None = None, sizes: Sequence[int] = SIZES) -> dict[str, Any]:
    """Time the jobs serially and side by side (see the module docstring); JSON-ready dict."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    settings = get_profile(profile, {**(overrides or {}), "train.max_steps": str(max_steps)})
    ladder = sized_profiles(settings)
    if not sizes or any(not -len(ladder) <= i < len(ladder) for i in sizes):
        raise ValueError(f"sizes must be indices into the {len(ladder)} ladder sizes (0 = smallest, -1 = the profile's own SLM), got {list(sizes)}")
    jobs = [TrainJob("synthbio", method, ladder[i], 0) for i in sizes for method in ("standard", "lacy")]
    cache_root = default_cache_root() if cache_root is None else Path(cache_root)
    LacyDataModule("synthbio", settings, seed=0, cache_root=cache_root).setup("fit")
    accelerator = resolve_accelerator(settings.train.accelerator)
    workers = resolve_train_workers("auto", accelerator)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="lacy-bench-runs-") as tmp:
        for side, requested in (("serial", 1), ("side_by_side", "auto")):
            started = time.perf_counter()
            get_or_train_many(jobs, root=Path(tmp) / side, cache_root=cache_root, workers=requested, log=None)
            seconds[side] = time.perf_counter() - started
    dtype = autocast_dtype(resolve_precision(settings.train.precision, accelerator)) or torch.float32
    tokens = max_steps * settings.train.batch_size * settings.data.seq_len
    flops = sum(train_flops_per_token(job.profile.model, settings.data.vocab_size, settings.data.seq_len) * tokens for job in jobs)
    peak = gemm_peak_flops(dtype)
    return {
        "runs": len(jobs), "max_steps": max_steps, "sizes": list(sizes),
        "params": [parameters(job.profile.model, settings.data.vocab_size, settings.data.seq_len) for job in jobs],
        "serial_seconds": seconds["serial"], "side_by_side_seconds": seconds["side_by_side"],
        "speedup": seconds["serial"] / seconds["side_by_side"], "workers": workers,
        "threads_per_worker": worker_threads(workers),
        "gemm_peak_flops": peak, "mfu_serial": flops / seconds["serial"] / peak, "mfu_side_by_side": flops / seconds["side_by_side"] / peak,
        "features": machine_features(dtype),
    }
