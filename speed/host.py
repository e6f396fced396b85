"""The machine a run uses: its device, and torch's (and numba's) threads and memory.

Used by every script that trains or scores (train_model.py, tools/authors_weights.py, tools/bench.py,
tools/tune.py); a module of its own so that those scripts need not import each other for it.
"""
from __future__ import annotations

import ctypes
import platform

import numba
import torch

from config import Config, ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA GPU is visible; use --device=auto or cpu")
    return torch.device(name)


def configure_host(config: Config) -> None:
    """Torch's (and numba's) thread count, and glibc's malloc told to keep the memory torch frees.

    By default glibc serves each block over 128 KB (adaptively up to 32 MB) with a fresh mapping
    from the kernel and unmaps it when freed, so every batch's activations land on new pages,
    and faulting them in is slow on this (virtual) machine. With `keep_freed_memory` the blocks
    come from the heap and freed ones are reused: `python -m tools.bench --target_market=uk` went from
    6.6 M to 0.3 M page faults over 200 batches, a pre-training epoch from 123 to 116 s and a validation pass
    from 14.1 to 11.2 s. No effect with another C library.
    """
    threads = config.num_threads or torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # cpu_kernels' dropout
    torch.set_num_threads(threads)  # after numba's: starting its OpenMP pool resets torch's count
    if config.keep_freed_memory and platform.libc_ver()[0] == "glibc":
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (malloc.h)
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_MAX, 0)  # no block gets its own mapping
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # free memory at the heap's top stays
