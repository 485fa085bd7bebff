"""Keep the heap from holding on to the memory of pages already emitted (issue 15).

A list page of ``attributes=all`` sales invoices is about 800 KiB of JSON, read in a page thread
and decoded there. glibc serves allocations of 128 KiB and more with ``mmap`` and gives them
back to the system when they are freed, but its threshold is *dynamic*: once such a block is
freed, the threshold rises to its size (up to 32 MiB), and every later page body comes from the
heaps of the threads instead, where freed blocks stay resident and fragment, and the resident
high-water mark rises with them. Measured as ``bench/tap_bench.py`` step 4 does (the tap's own
VmHWM, 19,992 vs 2,001 sales invoices, in turn with the tree before): the threshold fixed
lowers the peak by about 4.5 MiB at both sizes (70.8 and 70.2 vs 75.5 and 74.2 MiB at 20,000;
63.2 and 63.5 vs 68.5 and 67.1 MiB at 2,000). What is left between the two sizes is the
records held in the pipeline's buffers, which a short list does not fill.

``bound_heap()`` fixes the threshold at glibc's default (``M_MMAP_THRESHOLD``, 128 KiB, which
also stops the dynamic adjustment; see mallopt(3)), so that every page body is its own mapping
and leaves when it is freed. Once per process; nothing on a C library without ``mallopt``
(musl, macOS), or when ``MALLOC_MMAP_THRESHOLD_`` is set (the user chose).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

#: ``M_MMAP_THRESHOLD`` of glibc's malloc.h.
M_MMAP_THRESHOLD = -3
#: Bytes: glibc's default threshold (``DEFAULT_MMAP_THRESHOLD_MIN``), now fixed.
MMAP_THRESHOLD = 128 * 1024

_lock = threading.Lock()
_done = False


def bound_heap() -> bool:
    """Fix glibc's mmap threshold (module docstring), once per process; whether it was set."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            return False
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name)
            mallopt = libc.mallopt
        except (OSError, AttributeError, TypeError):
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
