"""How fast ONNX Runtime runs an ONNX file on the CPU: one file alone, or several side by side.

Every measurement runs ``warmup`` untimed calls, then ``repeats`` timed calls of one forward on the
example input, and reports the median and the 10th/90th percentiles in milliseconds
(:class:`LatencyResult`, which :mod:`autocompress.hardware.latency` fills for PyTorch too).
:func:`compare_latency` measures several files side by side, round-robin, so that noise on a
shared machine hits them all alike; :func:`batched` repeats an example input to a batch size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from autocompress.export.fp32 import onnx_session, session_feeds
from autocompress.trace import as_inputs

__all__ = ["LatencyResult", "batched", "compare_latency", "measure_ort_latency"]


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward pass on the example input, in milliseconds."""

    target: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    warmup: int
    batch_size: int
    threads: int | None
    device: str


def check_counts(warmup: int, repeats: int, threads: int | None = None) -> None:
    """ValueError unless ``warmup`` >= 0, ``repeats`` >= 1 and ``threads`` is None or >= 1."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")


def time_cpu(call: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def latency_result(
    samples: Sequence[float],
    *,
    target: str,
    warmup: int,
    batch_size: int,
    threads: int | None,
    device: str,
) -> LatencyResult:
    """The median and 10th/90th percentiles of ``samples`` (milliseconds) as a :class:`LatencyResult`."""
    p10, median, p90 = np.percentile(np.asarray(samples, dtype=np.float64), [10, 50, 90])
    return LatencyResult(
        target=target,
        median_ms=float(median),
        p10_ms=float(p10),
        p90_ms=float(p90),
        repeats=len(samples),
        warmup=warmup,
        batch_size=batch_size,
        threads=threads,
        device=device,
    )


def batched(example_input: Tensor | tuple, batch: int) -> tuple[Tensor, ...]:
    """The example input(s) resized to ``batch`` along dim 0 (rows repeated or cut)."""
    out = []
    for x in as_inputs(example_input):
        reps = -(-batch // x.shape[0])
        out.append(x.repeat(reps, *([1] * (x.dim() - 1)))[:batch].contiguous())
    return tuple(out)


def _ort_runner(
    onnx_path: str | Path, inputs: tuple[Tensor, ...], threads: int
) -> Callable[[], object]:
    """A zero-argument call running the ONNX model on ``inputs`` (feeds built once)."""
    session = onnx_session(onnx_path, threads=threads)
    feeds = session_feeds(session, inputs)
    return lambda: session.run(None, feeds)


def measure_ort_latency(
    onnx_path: str | Path,
    example_input: Tensor | tuple,
    *,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
) -> LatencyResult:
    """Latency of an ONNX model in ONNX Runtime on the CPU with ``threads`` intra-op threads."""
    check_counts(warmup, repeats, threads)
    inputs = as_inputs(example_input)
    run = _ort_runner(onnx_path, inputs, threads)
    for _ in range(warmup):
        run()
    return latency_result(
        time_cpu(run, repeats),
        target="onnxruntime",
        warmup=warmup,
        batch_size=inputs[0].shape[0],
        threads=threads,
        device="cpu",
    )


def compare_latency(
    onnx_paths: Mapping[str, str | Path],
    example_input: Tensor | tuple,
    *,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
) -> dict[str, LatencyResult]:
    """Measure several ONNX models side by side in ONNX Runtime on the CPU.

    After ``warmup`` calls each, ``rounds`` rounds run ``repeats`` timed calls of every
    model in turn (the starting model rotates each round); each result is over all
    ``rounds * repeats`` samples of its model.
    """
    check_counts(warmup, repeats, threads)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not onnx_paths:
        raise ValueError("onnx_paths is empty; give at least one model")
    inputs = as_inputs(example_input)
    names = list(onnx_paths)
    runners = {name: _ort_runner(onnx_paths[name], inputs, threads) for name in names}
    for name in names:
        for _ in range(warmup):
            runners[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].extend(time_cpu(runners[name], repeats))
    return {
        name: latency_result(
            samples[name],
            target="onnxruntime",
            warmup=warmup,
            batch_size=inputs[0].shape[0],
            threads=threads,
            device="cpu",
        )
        for name in names
    }
