"""Keep freed memory in the training process instead of handing it back to the kernel (glibc only).

A CPU training step allocates and frees blocks of several MiB: activations, the ``[B, T, V]`` logits and
their gradients. By default glibc serves large blocks with ``mmap`` and trims free memory off the top of its
heap, so the memory freed by one step goes back to the kernel. The next step then touches fresh pages, and
every first touch of a 4 KiB page is a page fault that zero-fills it. At the SLM sizes of this project these
faults cost a sizeable share of the step.

:func:`retain_freed_memory` tells glibc to serve every block from its heap (``M_MMAP_MAX = 0``), to keep up
to ``TRIM_THRESHOLD`` free at the heap's top and to grow it by ``TOP_PAD`` of slack at a time. Freed blocks
are then reused without faults. Only where memory lives changes, so no result does: the same run gives the
same weights and losses to the last bit.

Measured on a 2-core Xeon, 2026-12-07, with ``lacy train --profile cpu --method lacy --set
train.compile=off`` (bf16, two runs each, alternating; identical validation losses):

- training time: 38.1 and 40.5 s, against 46.1 and 47.7 s with glibc's defaults;
- peak RSS: 763–766 MB, against 757–760 MB.

Decoding, whose blocks are small, is unchanged (``lacy bench cascade``). The cost: free memory inside the
heap is never returned until the process exits, so the process keeps its peak heap size.
``LACY_RETAIN_FREED_MEMORY=0`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # mallopt parameters, from glibc's <malloc.h>
TRIM_THRESHOLD = 1 << 30  # free memory kept at the heap's top (bytes)
TOP_PAD = 64 << 20  # slack added whenever the heap grows (bytes)
SWITCH = "LACY_RETAIN_FREED_MEMORY"


def retain_freed_memory() -> bool:
    """Apply the glibc settings of the module docstring to this process (idempotent).

    Returns whether they apply: False where ``LACY_RETAIN_FREED_MEMORY=0``, off Linux, or where the C library
    has no ``mallopt`` that accepts them (musl, for one).
    """
    switch = os.environ.get(SWITCH, "1")
    if switch not in ("0", "1"):
        raise ValueError(f"{SWITCH}={switch!r}: use 1 (keep freed memory for reuse, the default) or 0 (glibc's defaults)")
    if switch == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all([mallopt(parameter, value) == 1 for parameter, value in settings])
