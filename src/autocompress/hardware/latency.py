"""Latency of a PyTorch model on the CPU or CUDA.

Every measurement runs ``warmup`` untimed calls, then ``repeats`` timed calls of one
forward on the example input, and reports the median and the 10th/90th percentiles
in milliseconds as a :class:`~autocompress.export.timing.LatencyResult`; ONNX files are timed
in ONNX Runtime by :mod:`autocompress.export.timing` (``measure_ort_latency``, and
``compare_latency``, which measures several side by side).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from autocompress.export.timing import LatencyResult, check_counts, latency_result, time_cpu
from autocompress.trace import as_inputs

__all__ = ["measure_torch_latency"]


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
    check_counts(warmup, repeats, threads)
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
            timer = _time_cuda if target_device.type == "cuda" else time_cpu
            samples = timer(run, repeats)
    finally:
        torch.set_num_threads(old_threads)
        for module, training in modes:
            module.training = training
    return latency_result(
        samples,
        target="torch",
        warmup=warmup,
        batch_size=inputs[0].shape[0],
        threads=threads,
        device=str(target_device),
    )
