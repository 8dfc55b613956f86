"""Latency measurement: ONNX Runtime on CPU, PyTorch on CPU or CUDA.

Every measurement runs ``warmup`` untimed calls, then ``repeats`` timed calls of one
forward on the example input, and reports the median and the 10th/90th percentiles
in milliseconds. :func:`compare_latency` measures several ONNX models side by side,
round-robin, so that noise on a shared machine hits them all alike.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from autocompress.export import onnx_session, session_feeds
from autocompress.trace import as_inputs

__all__ = ["LatencyResult", "compare_latency", "measure_ort_latency", "measure_torch_latency"]


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


def _check_counts(warmup: int, repeats: int, threads: int | None = None) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")


def _time_cpu(call: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _time_cuda(call: Callable[[], object], repeats: int) -> list[float]:
    """CUDA-event milliseconds of ``repeats`` calls."""
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(repeats)
    ]
    torch.cuda.synchronize()
    for start, end in events:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def _result(
    samples: Sequence[float],
    *,
    target: str,
    warmup: int,
    batch_size: int,
    threads: int | None,
    device: str,
) -> LatencyResult:
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
    _check_counts(warmup, repeats, threads)
    inputs = as_inputs(example_input)
    run = _ort_runner(onnx_path, inputs, threads)
    for _ in range(warmup):
        run()
    return _result(
        _time_cpu(run, repeats),
        target="onnxruntime",
        warmup=warmup,
        batch_size=inputs[0].shape[0],
        threads=threads,
        device="cpu",
    )


def measure_torch_latency(
    model: nn.Module,
    example_input: Tensor | tuple,
    *,
    device: str = "cpu",
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
) -> LatencyResult:
    """Latency of ``model`` in PyTorch (eval mode, no_grad) on ``device``.

    CUDA is timed with CUDA events; CPU with ``time.perf_counter``. ``threads`` sets
    ``torch.set_num_threads`` for the measurement only. The model is not modified
    (it is copied when it lives on another device).
    """
    _check_counts(warmup, repeats, threads)
    target_device = torch.device(device)
    if target_device.type == "cuda" and target_device.index is None:
        target_device = torch.device("cuda", torch.cuda.current_device())
    inputs = tuple(x.to(target_device) for x in as_inputs(example_input))
    tensors = [*model.parameters(), *model.buffers()]
    same_device = all(t.device == target_device for t in tensors)
    runner = model if same_device else copy.deepcopy(model).to(target_device)
    modes = [(m, m.training) for m in runner.modules()]
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        runner.eval()
        with torch.no_grad():

            def run() -> object:
                return runner(*inputs)

            for _ in range(warmup):
                run()
            timer = _time_cuda if target_device.type == "cuda" else _time_cpu
            samples = timer(run, repeats)
    finally:
        torch.set_num_threads(old_threads)
        for module, training in modes:
            module.training = training
    return _result(
        samples,
        target="torch",
        warmup=warmup,
        batch_size=inputs[0].shape[0],
        threads=threads,
        device=str(target_device),
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
    _check_counts(warmup, repeats, threads)
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
            samples[name].extend(_time_cpu(runners[name], repeats))
    return {
        name: _result(
            samples[name],
            target="onnxruntime",
            warmup=warmup,
            batch_size=inputs[0].shape[0],
            threads=threads,
            device="cpu",
        )
        for name in names
    }
