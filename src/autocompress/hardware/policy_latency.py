"""A policy's latency on a target from the lookup table, without building its model.

:class:`PolicyLatency` derives the layer configurations ``apply_policy`` would produce —
channels left by pruning (the search space's channel plan), factor shapes of low rank
(:func:`~autocompress.transforms.factor_shapes.factor_shapes` with the original layer's stride,
padding and dilation), per-sample input shapes carried through each factor — and sums their
timings from a :class:`~autocompress.hardware.lut.LatencyTable` with the table's calibration
for the original model. It costs a few table look-ups per layer (new configurations are timed
once, then cached), so budget-filling strategies and the policy optimizer can use latency as a
cost like FLOPs. On ``ort-cpu`` tables a layer quantized to 8 bits or fewer (weights and inputs)
is looked up in int8, as the int8 file runs it.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from autocompress.analytic import CostRow
from autocompress.apply import apply_policy
from autocompress.calls import Example, bind, fit_inputs, split_example
from autocompress.hardware.lut import LatencyTable, LayerConfig, layer_configs, layers_signature
from autocompress.policy import LayerGenes, Policy
from autocompress.space import SearchSpace
from autocompress.transforms.factor_shapes import factor_shapes
from autocompress.transforms.quantize import runs_in_int8


class PolicyLatency:
    """``ms(policy)``: estimated latency (ms per batch of the table's target) of ``apply_policy(model, policy)``."""

    def __init__(self, space: SearchSpace, model: nn.Module, example_input: Example, table: LatencyTable, *,
                 calibration: int = 8, seed: int = 0) -> None:
        self.space, self.table = space, table
        tensors, names = split_example(example_input)  # keyword inputs: the model is called through bind
        runner = bind(model, names, space.output)
        calls = layer_configs(runner, tensors)  # the original's: float
        self.originals: dict[str, LayerConfig] = {}
        self.calls: dict[str, int] = {}
        for name, config in calls:
            self.originals.setdefault(name, config)
            self.calls[name] = self.calls.get(name, 0) + 1
        signature = layers_signature(calls)
        if signature not in table.overheads or (calibration and table.overheads[signature].get("calibration_models", 1) < 2):
            rng = np.random.default_rng(seed)
            derived = [bind(apply_policy(model, space.random_policy(rng), space=space), names, space.output)
                       for _ in range(calibration)]
            table.calibrate(runner, tensors, derived)
        self.coefficients = table.overheads[signature]

    def configs(self, policy: Policy) -> list[LayerConfig]:
        """The configuration of every Conv/Linear call of the compressed model (one per call)."""
        out: list[LayerConfig] = []
        for row in self.space.pruned_rows(policy):
            if row.kind not in ("conv", "linear") or row.name not in self.originals:
                continue
            for config in self.call_configs(row, policy.layers.get(row.name)):
                out += [config] * self.calls[row.name]
        return out

    def call_configs(self, row: CostRow, genes: LayerGenes | None) -> list[LayerConfig]:
        """The configurations one call of the Conv/Linear layer of ``row`` (channels as pruned) runs,
        compressed by ``genes``: the layer itself, or its 2-3 factors in call order."""
        original = self.originals[row.name]
        rank = genes.rank if genes else 1.0
        int8 = self.table.times_int8 and genes is not None and runs_in_int8(genes.weight_bits, genes.act_bits)
        factors = factor_shapes(row.type, row.in_channels, row.out_channels, rank, self.space.rank_multiple,
                                kernel=original.kernel, stride=original.stride or 1, padding=original.padding or 0,
                                dilation=original.dilation or 1, groups=row.groups, has_bias=row.bias)
        spatial = original.input_shape[1:] if row.kind == "conv" else ()
        prefix = original.input_shape[:-1] if row.kind == "linear" else ()
        out: list[LayerConfig] = []
        for f in factors:
            if row.kind == "conv":
                shape = (f.in_features, *spatial)
                spatial = tuple(
                    (size + 2 * p - d * (k - 1) - 1) // s + 1
                    for size, k, s, p, d in zip(spatial, f.kernel, f.stride, f.padding, f.dilation, strict=True)
                )
            else:
                shape = (*prefix, f.in_features)
            out.append(LayerConfig(f.type, f.in_features, f.out_features, f.kernel, f.stride, tuple(f.padding),
                                   f.dilation, f.groups, f.has_bias, tuple(shape), int8))
        return out

    def ms(self, policy: Policy) -> float:
        k = self.coefficients
        return k["overhead_ms"] + sum(self.table.scaled_ms(c, k) for c in self.configs(policy))


def latency_model_for(space: SearchSpace, model: nn.Module, task, settings: dict) -> PolicyLatency:  # noqa: ANN001
    """The :class:`PolicyLatency` of a search's latency settings (``runtime``, ``threads``, ``batch``, ``repeats``)."""
    from autocompress.hardware.targets import target_from_settings

    target = target_from_settings(settings, repeats=50)
    return PolicyLatency(space, model, fit_inputs(model, task.example_input(1)), LatencyTable.open(target))
