"""Run small torch kernels on one thread (faster at small sizes, much faster on a busy machine)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Limit torch to one thread inside the block, then restore the previous count.

    Multi-threaded kernels gain little at layer / tiny-MLP sizes and collapse when cores are
    busy (measured on a loaded 2-core machine: eigh of a 64x64 matrix 80 ms on 2 threads,
    0.5 ms on 1; a 5-MLP ensemble fit 22 s on 2 threads, 6 s on 1). Only speed changes,
    never a result.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
