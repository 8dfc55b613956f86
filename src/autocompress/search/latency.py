"""A candidate's latency on the search's target (``search(..., latency=...)``): timed side by side with
the original, measured alone, or estimated from the lookup table; the original's measured once per process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from autocompress.calls import bind, fit_inputs, split_example

if TYPE_CHECKING:
    from autocompress.search.evaluation import EvaluationSpec


def side_by_side_ms(spec: EvaluationSpec, model: nn.Module) -> tuple[float, float] | None:
    """(ms, ratio to the original) with the original timed in the same interleaved run (fp32 models on
    ``ort-cpu``; None otherwise: measured alone and divided by the original's first measurement)."""
    from autocompress.hardware.measured_path import side_by_side
    from autocompress.hardware.targets import static_quantized, target_from_settings

    settings = spec.latency
    target = target_from_settings(settings)
    if settings.get("estimate") or target.runtime != "ort-cpu" or static_quantized(model):
        return None
    example = fit_inputs(spec.model, spec.task.example_input(1))
    timed = side_by_side({"original": spec.model, "candidate": model}, example, spec.space.output, batch=target.batch,
                         threads=target.threads, warmup=target.warmup, repeats=max(1, target.repeats // 3))
    return timed["candidate"].median_ms, timed["candidate"].median_ms / timed["original"].median_ms


_ORIGINAL_MS: dict[int, float] = {}


def original_ms(spec: EvaluationSpec) -> float:
    """The original model's latency on the spec's target (measured once per process)."""
    if id(spec) not in _ORIGINAL_MS:
        _ORIGINAL_MS[id(spec)] = latency_ms(spec, spec.model)
    return _ORIGINAL_MS[id(spec)]


def latency_ms(spec: EvaluationSpec, model: nn.Module) -> float:
    """Milliseconds per batch on the spec's target: measured whole, or estimated from the lookup table."""
    from autocompress.hardware.lut import LatencyTable
    from autocompress.hardware.targets import measure, target_from_settings

    settings = spec.latency
    target = target_from_settings(settings)
    example, names = split_example(fit_inputs(spec.model, spec.task.example_input(1)))
    model, original = bind(model, names, spec.space.output), bind(spec.model, names, spec.space.output)
    if settings.get("estimate"):
        table = LatencyTable.open(target)  # cached per target: every candidate after the first few is free
        return table.estimate(model, example, original=original).total_ms
    return measure(model, example, target).median_ms
