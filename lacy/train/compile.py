"""``torch.compile`` for the training step: the model's forward (and its backward) as one graph.

At the SLM sizes of this project much of a CPU training step is element-wise work between small
matmuls (RMSNorm, rotary embeddings, SwiGLU), each a separate eager kernel that reads and writes whole
activations. TorchInductor fuses them into a few C++ loops (forward and backward). The CALL-aware loss
stays outside the graph: its hand-written chunked kernel (:mod:`lacy.train.objective`) beat Inductor's
fusion of the same terms, 9.7 vs 20.7 ms (fp32) and 6.9 vs 12.3 ms (bf16) for forward + backward over
``[16, 128, 2048]`` logits on a 2-core Xeon; with the loss out of the graph the compiled fp32 step of
``lacy bench train`` went from 1.13 to 1.23x the naive step (bf16: no difference beyond run-to-run
noise). The selection rules stay eager too: they are cheap ``[B, T]`` work with data-dependent shapes.

Compiling costs seconds to tens of seconds; Inductor's FX-graph and AOTAutograd caches are kept on
disk under the lacy cache root (``<cache>/inductor``), so a machine pays the full compile once and
later runs only re-trace the model. ``train.compile``: ``on``, ``off``, or ``auto`` = on where it is
known to win: GPU runs of at least ``AUTO_MIN_STEPS`` steps, and CPU runs (with a C++ compiler) long
enough to repay even a cold compile, ``CPU_AUTO_MIN_STEPS``. Shorter CPU runs stay eager: a cold
compile costs more than it saves over them, and Inductor's C++ compile took minutes on a loaded
2-core machine (10 min cold for a one-layer model at load average 16). ``lacy bench train --set
train.compile=on`` measures what compiling buys on any machine, every compile included.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from lacy.profiles import COMPILE_MODES, ConfigError, check_choice
from lacy.train.objective import TokenTerms, token_terms

AUTO_MIN_STEPS = 200
"""``train.compile=auto`` compiles GPU runs of at least this many steps; short runs (``smoke``, tests)
stay eager, where the trace would cost more than it saves."""

CPU_AUTO_MIN_STEPS = 2500
"""``train.compile=auto`` compiles CPU runs of at least this many steps, where even a cold compile
pays for itself. ``lacy bench train --set train.compile=on`` at the ``cpu`` size on a 2-core Xeon
(2026-12-07): the compiled step saves 16-26 ms (fp32 97-110 -> 78-84 ms, bf16 74-78 -> 56-62 ms)
and a cold compile costs 25-35 s, repaid after 1,000-2,200 steps (after about 200 once the persistent
cache is warm: 3.7-3.9 s in a new process). The ``cpu`` profile's runs (500 steps, the helper 800)
stay eager, so the book's committed numbers are those of the eager step."""

ForwardTerms = Callable[[Tensor, Tensor], tuple[Tensor, TokenTerms]]


def has_cpp_compiler() -> bool:
    """Whether a C++ compiler that Inductor's CPU backend can use is on ``PATH`` (``$CXX``, g++, clang++)."""
    candidates = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
    return any(name and shutil.which(name) for name in candidates)


def resolve_compile(requested: str, accelerator: str, max_steps: int) -> bool:
    """Whether the training step is compiled, for ``train.compile`` (see the module docstring).

    ``accelerator`` is the resolved one (``"cpu"``, ``"gpu"``/``"cuda"``). ``on`` without a C++
    compiler on CPU raises a ConfigError (Inductor would fail at the first step instead).
    """
    check_choice("train.compile", requested, COMPILE_MODES)
    needs_cpp = accelerator == "cpu"
    if requested == "on" and needs_cpp and not has_cpp_compiler():
        raise ConfigError("train.compile=on needs a C++ compiler (g++ or clang++ on PATH, or $CXX) for "
                          "TorchInductor's CPU backend; install one, or set train.compile=auto or off")
    if requested != "auto":
        return requested == "on"
    if needs_cpp:
        return max_steps >= CPU_AUTO_MIN_STEPS and has_cpp_compiler()
    return max_steps >= AUTO_MIN_STEPS


def compile_cache_dir(cache_root: str | Path | None = None) -> Path:
    """Point Inductor's on-disk caches at ``<cache_root>/inductor`` (default root: ``$LACY_CACHE``).

    Sets ``TORCHINDUCTOR_CACHE_DIR`` for this process, which Inductor reads at every cache access.
    """
    from lacy.data.cache import default_cache_root

    directory = Path(cache_root or default_cache_root()) / "inductor"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    return directory


def forward_terms(model: torch.nn.Module, call_id: int, compile: bool = False) -> ForwardTerms:
    """``(input_ids, targets) -> (logits, terms)``: the model's forward and both per-token loss terms.

    ``compile=True`` runs the model through ``torch.compile`` (static shapes: training batches are full;
    another shape, such as a last partial batch, recompiles once); the loss terms stay eager (see the
    module docstring).
    """
    def logits_of(input_ids: Tensor) -> Tensor:
        return model(input_ids=input_ids).logits

    if compile:
        logits_of = torch.compile(logits_of, dynamic=False)

    def terms(input_ids: Tensor, targets: Tensor) -> tuple[Tensor, TokenTerms]:
        logits = logits_of(input_ids)
        return logits, token_terms(logits, targets, call_id)

    return terms
