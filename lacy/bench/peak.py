"""The machine's own peak: every bench reports its throughput as a ratio to what this machine measures.

Machines of the same kind differ (some CPUs have bf16 units, others only AVX2), so absolute tokens/s
cannot be compared across them. A large square GEMM in the dtype a bench uses is the practical
ceiling for the dense work of a transformer step; MFU = model FLOPs/s ÷ this peak.
"""

from __future__ import annotations

import os
import time

import torch

from lacy.train.model import cpu_supports_bf16


def machine_features(dtype: torch.dtype = torch.float32, compiled: bool = False) -> dict[str, object]:
    """What a benchmark number depends on: device, dtype, threads, compile on/off, bf16 support."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "compile": compiled,
        "cpu_bf16_native": cpu_supports_bf16(),
        "torch": torch.__version__,
    }


def gemm_peak_flops(dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 5, device: str | None = None) -> float:
    """Measured FLOP/s of a ``size × size`` matmul in ``dtype``: best of ``repeats`` timed runs after a warm-up.

    The best (not the mean) run is the peak: it is the least disturbed by other processes on a shared machine.
    """
    if size < 1 or repeats < 1:
        raise ValueError(f"gemm_peak_flops needs size >= 1 and repeats >= 1, got size={size}, repeats={repeats}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
