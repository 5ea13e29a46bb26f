"""glibc's malloc on a one-process CPU run, on request: freed activation memory kept for the next step.

A training step on a CPU allocates and frees the same large tensors again and again (activations, their
gradients, logits over the vocabulary: megabytes each). glibc's malloc serves a block above its mmap threshold
(at most 32 MiB, adjusted as blocks are freed) with a fresh ``mmap`` and returns it with ``munmap`` when freed,
and gives the top of the heap back to the OS once more than its trim threshold is free there. Each new block
then costs a page fault per 4 KiB page on first touch, the kernel zeroing every page. In the PPO speed
benchmark's iteration (a 4M-parameter GPT-2, batch 64, one thread) that was 138-191k page faults and 0.29-0.40 s
of system time an iteration, and the GELU, copy and matmul kernels writing into fresh pages ran slower for it
(under the profiler the GELU forward took 17.6 ms instead of 11.4). :func:`keep_freed_memory` asks glibc,
through ``mallopt``, to serve blocks up to :data:`MMAP_THRESHOLD` from the heap and to keep up to
:data:`TRIM_THRESHOLD` of free heap: 48-59k page faults and 0.10-0.13 s of system time an iteration, which ran
2.5% faster on average over three alternating runs (with the fused AdamW), within that machine's noise.

It is off unless ``INSTRUCTRL_MALLOC_TUNING=1``, because the price is memory: freed blocks stay resident and the
heap fragments. Peak RSS of PPO-ptx on a 124M GPT-2 on the CPU (``benchmarks/scale/cpu_engines.py --size
small``), with against without: one process 5,899 against 5,441 MiB (+8%); LoRA r16 on both models 2,112
against 1,905 (+11%); LoRA with the value model on the policy's base 1,735 against 1,459 (+19%); FSDP2 with two
processes 7,076 / 5,925 against 3,855 MiB (the collectives' buffers, allocated by several threads, fragment the
heaps). The effect on
speed is small against those figures, and ``instructrl plan`` could no longer promise a peak. When asked for, it
is applied once per process, on Linux with glibc, when a stage runs on the CPU in a single process
(``make_accelerator``); multi-process runs and a GPU run's host memory are left alone. The other cure, another
allocator preloaded by the user (jemalloc, tcmalloc), has the same trade.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import platform

log = logging.getLogger("instructrl")

ENV = "INSTRUCTRL_MALLOC_TUNING"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 64 << 20  # blocks up to 64 MiB come from the heap and are reused there
TRIM_THRESHOLD = 128 << 20  # up to 128 MiB of free heap top is kept for the next step


@functools.cache
def keep_freed_memory() -> str:
    """Tune glibc's malloc for a CPU run (see the module docstring); once per process. Returns what was done:
    ``"tuned"``, ``"off"`` (the default: not asked for with ``INSTRUCTRL_MALLOC_TUNING=1``) or ``"unavailable"``
    (not glibc)."""
    result = _tune()
    if result == "tuned":
        log.info("malloc: blocks up to %d MiB reused from the heap (%s=1)", MMAP_THRESHOLD >> 20, ENV)
    return result


def _tune() -> str:
    if os.environ.get(ENV, "0").strip().lower() not in ("1", "true", "yes", "on"):
        return "off"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "unavailable"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "unavailable"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "tuned" if ok else "unavailable"
