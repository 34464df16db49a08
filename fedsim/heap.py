"""Keep freed tensor memory in the process instead of handing it back to the kernel (glibc).

PyTorch's CPU allocator asks ``malloc`` for every tensor and frees it when the tensor
dies; it keeps no cache. glibc serves large requests either by ``mmap`` (above a threshold
that starts at 128 KiB and follows the largest block freed, up to 32 MiB) or from the heap,
whose free top it returns to the kernel once it passes the trim threshold (twice the mmap
threshold). A DP-SGD step of the default CNN frees several 3 MiB activations at once, so
the heap is trimmed after each step and the next step's first touch of that memory is a
page fault: 1.9–5.7 thousand minor faults and 4–15 ms of kernel time in a 42–56 ms step
(2-core CI machine, one thread; ``benchmarks/page_faults.py``), and 5.8 of the 65
CPU-seconds the quickstart's two workers spent.

:func:`keep_freed_heap` fixes both thresholds for this process (``mallopt``): requests up
to :data:`MMAP_THRESHOLD` come from the heap, and up to :data:`TRIM_THRESHOLD` of its free
top stays mapped. Setting only one of them makes it worse (it switches glibc's dynamic
threshold off and leaves the other at 128 KiB). Results do not change, only where memory
comes from; at most :data:`TRIM_THRESHOLD` of free heap top stays with a process (the
quickstart's workers keep their memory: ``benchmarks/actor_memory.py``). Processes
that train or evaluate call it once (client workers, Ray actors, a deployed site's
ClientApp, the driver); elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform

logger = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Requests up to this many bytes come from the heap (glibc's largest allowed value).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap up to this many bytes stays with the process.
TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_freed_heap() -> bool:
    """Fix this process's ``malloc`` thresholds (once per process).

    Returns
    -------
    bool
        Whether both thresholds were set: ``False`` where the C library is not glibc
        (nothing changed) or refused a value.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not done:
        logger.debug("mallopt refused the heap thresholds")
    return done


__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_heap"]
