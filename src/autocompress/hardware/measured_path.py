"""Latency targets as FLOPs budgets, through the measured latency of the uniform policy.

A per-layer lookup table can miss a whole model's latency by a factor (on ONNX Runtime's CPU a
convolution whose channels are not a multiple of its block size falls back to a slower kernel;
overheads between layers are not in any layer's timing). So :func:`measure_path` times the
uniform policy at a few strengths, whole, side by side with the original in one run, and
:func:`flops_for` reads off the FLOPs ratio whose *measured* latency meets a latency ratio (an
isotonic fit of latency against FLOPs, so one noisy point cannot make it fold back). A search
then fills that FLOPs budget exactly and measures each candidate's latency whole.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from autocompress.calls import Example, split_example
from autocompress.export import export_onnx
from autocompress.hardware.latency import compare_latency
from autocompress.hardware.targets import batched
from autocompress.policy import Policy
from autocompress.space import SearchSpace
from autocompress.transforms.apply import apply_policy

__all__ = ["STRENGTHS", "flops_for", "measure_path"]

STRENGTHS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0)


def measure_path(model: nn.Module, space: SearchSpace, example: Example, policies: Sequence[Policy], *,
                 batch: int = 32, threads: int = 1, repeats: int = 20) -> tuple[list[tuple[float, float]], float]:
    """(FLOPs ratio, measured latency ratio) of ``policies`` and of the original (1, 1), FLOPs ascending;
    and the original's latency (ms per batch)."""
    tensors, _ = split_example(example)
    base = space.cost(Policy()).flops
    with tempfile.TemporaryDirectory(prefix="autocompress-path-") as tmp:
        files = {"original": export_onnx(model, Path(tmp) / "original.onnx", example, output=space.output, check=False)}
        for index, policy in enumerate(policies):
            small = apply_policy(model, policy, example, space=space)
            files[index] = export_onnx(small, Path(tmp) / f"{index}.onnx", example, output=space.output, check=False)
        timed = compare_latency(files, batched(tuple(t.detach().cpu() for t in tensors), batch), threads=threads,
                                repeats=repeats, rounds=3)
    points = [(1.0, 1.0)] + [(space.cost(p).flops / base, timed[i].median_ms / timed["original"].median_ms)
                             for i, p in enumerate(policies)]
    return sorted(points), timed["original"].median_ms


def flops_for(points: Sequence[Sequence[float]], latency_ratio: float) -> tuple[float | None, float]:
    """(the largest FLOPs ratio whose fitted latency ratio is <= ``latency_ratio``, or None when even the
    smallest measured is slower; the smallest fitted latency ratio)."""
    from sklearn.isotonic import IsotonicRegression

    flops = np.array([p[0] for p in points], dtype=float)
    latency = np.array([p[1] for p in points], dtype=float)
    fit = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(flops, latency)
    grid = np.linspace(flops.min(), 1.0, 2001)
    fitted = fit.predict(grid)
    meeting = grid[fitted <= latency_ratio]
    return (float(meeting.max()) if meeting.size else None), float(fitted.min())
