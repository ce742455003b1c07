"""CPU training keeps its freed tensor memory (glibc's allocator, Linux): PyTorch allocates each CPU tensor
with ``posix_memalign``, and glibc maps a large block (above 128 KiB, raised dynamically up to the size last
freed) straight from the kernel and unmaps it when freed, so every step of a small model page-faults its
activations in afresh: 19-25 % of the CG-MNIST paper recipe's CPU time was the kernel's (system time)
zeroing pages. ``keep_freed_memory`` serves blocks up to ``MMAP_THRESHOLD`` from the heap and returns the
heap's free top to the kernel only beyond ``TRIM_THRESHOLD``: the same numbers, 2 % system time, ~1.25x
on that recipe's training step (BENCHMARKS.md, CG-MNIST at the paper's scale). Elsewhere (another C
library, no glibc): nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 64 << 20  # blocks up to 64 MiB from the heap (CG-MNIST's largest map: 6.4 MB)
TRIM_THRESHOLD = 256 << 20  # free heap top kept up to 256 MiB


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; whether they are set (False: not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has mallopt as a no-op stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
