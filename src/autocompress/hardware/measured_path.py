"""Latency targets as FLOPs budgets, through the measured latency of the uniform policy.

A per-layer lookup table can miss a whole model's latency by a factor (on ONNX Runtime's CPU a
convolution whose channels are not a multiple of its block size falls back to a slower kernel;
overheads between layers are not in any layer's timing). So :func:`measure_path` times the
uniform policy at a few strengths, whole, side by side with the original in one run, and
:func:`flops_for` reads off the FLOPs ratio whose *measured* latency meets a latency ratio (an
isotonic fit of latency against FLOPs, so one noisy point cannot make it fold back). A search
then fills that FLOPs budget exactly and measures each candidate's latency whole.

FLOPs are the wrong currency for comparing *allocations*, though: on a ``transformers`` ResNet
(digits, 32x32) per-layer allocations at one FLOPs budget measured 0.39x to 0.69x the original's
latency. :class:`MeasuredLatency` measures a set of policies whole, side by side with the original,
so that a search (``allocate``'s measured projection) can fill a latency budget itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from autocompress.apply import apply_policy
from autocompress.calls import Example, OutputSelector, split_example
from autocompress.export import LatencyResult, batched, compare_latency, export_onnx
from autocompress.policy import Policy
from autocompress.space import SearchSpace

__all__ = ["STRENGTHS", "MeasuredLatency", "flops_for", "measure_path", "policy_latency_ratios", "side_by_side"]

STRENGTHS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0)


def side_by_side(models: Mapping[Any, nn.Module], example: Example, output: OutputSelector = None, *, batch: int = 32,
                 threads: int = 1, warmup: int = 10, repeats: int = 20, rounds: int = 3) -> dict[Any, LatencyResult]:
    """Every model exported to fp32 ONNX and timed in one interleaved ONNX Runtime run (see ``compare_latency``)."""
    tensors, _ = split_example(example)
    with tempfile.TemporaryDirectory(prefix="autocompress-side-by-side-") as tmp:
        files = {key: export_onnx(model, Path(tmp) / f"{index}.onnx", example, output=output, check=False)
                 for index, (key, model) in enumerate(models.items())}
        return compare_latency(files, batched(tuple(t.detach().cpu() for t in tensors), batch), threads=threads,
                               warmup=warmup, repeats=repeats, rounds=rounds)


def measure_path(model: nn.Module, space: SearchSpace, example: Example, policies: Sequence[Policy], *,
                 batch: int = 32, threads: int = 1, repeats: int = 20) -> tuple[list[tuple[float, float]], float]:
    """(FLOPs ratio, measured latency ratio) of ``policies`` and of the original (1, 1), FLOPs ascending;
    and the original's latency (ms per batch)."""
    base = space.cost(Policy()).flops
    ratios, original_ms = policy_latency_ratios(model, space, example, policies, batch=batch, threads=threads, repeats=repeats)
    points = [(1.0, 1.0)] + [(space.cost(p).flops / base, r) for p, r in zip(policies, ratios, strict=True)]
    return sorted(points), original_ms


def policy_latency_ratios(model: nn.Module, space: SearchSpace, example: Example, policies: Sequence[Policy], *,
                          batch: int = 32, threads: int = 1, repeats: int = 20) -> tuple[list[float], float]:
    """Each policy's measured latency as a ratio of the original's, all timed in one side-by-side run;
    and the original's latency (ms per batch)."""
    models = {"original": model, **{i: apply_policy(model, p, example, space=space) for i, p in enumerate(policies)}}
    timed = side_by_side(models, example, space.output, batch=batch, threads=threads, repeats=repeats)
    original = timed["original"].median_ms
    return [timed[i].median_ms / original for i in range(len(policies))], original


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


class MeasuredLatency:
    """Latency ratios of policies of ``space`` applied to ``model``, measured whole on ONNX Runtime, side by
    side with the original in one interleaved run; ``points``: the uniform policy's measured path
    (:func:`measure_path`), which gives the FLOPs ratio to start from for a latency ratio."""

    def __init__(self, model: nn.Module, space: SearchSpace, example: Example, points: Sequence[Sequence[float]], *,
                 batch: int = 32, threads: int = 1, repeats: int = 20) -> None:
        self.model, self.space, self.example = model, space, example
        self.points = [tuple(map(float, p)) for p in points]
        self.batch, self.threads, self.repeats = batch, threads, repeats

    def flops_guess(self, latency_ratio: float) -> float | None:
        """The FLOPs ratio at which the uniform policy measured ``latency_ratio`` (None: out of its reach)."""
        return flops_for(self.points, latency_ratio)[0]

    def fastest(self) -> float:
        """The smallest latency ratio on the uniform policy's path."""
        return flops_for(self.points, 0.0)[1]

    def ratios(self, policies: Sequence[Policy]) -> list[float]:
        """Each policy's measured latency as a ratio of the original's (one side-by-side run)."""
        if not policies:
            return []
        return policy_latency_ratios(self.model, self.space, self.example, policies, batch=self.batch,
                                     threads=self.threads, repeats=self.repeats)[0]
