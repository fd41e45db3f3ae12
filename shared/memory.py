"""Allocator settings of the workers that hold large arrays (compute, ingest), set once per process.

Arrow's buffers come from the system allocator rather than mimalloc's pools, and glibc keeps two
malloc arenas instead of one per thread (the kernel's threads, the parse and staging threads), so
memory a finished unit or upload freed goes back instead of staying with the process. Measured on
one 100k-cell compute unit: its peak fell from 1,022 MB to 651 MB at the same speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa

# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8
ARENAS = 2


def keep_freed_memory_small() -> None:
    """Set this process's allocators as the module docstring says; call before threads start."""
    pa.set_memory_pool(pa.system_memory_pool())
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).mallopt(_M_ARENA_MAX, ARENAS)
