"""The analytic cost model: a row per module that owns parameters or computes MACs, priced for a
policy's genes without building the model (``SearchSpace.cost`` must equal ``count_cost`` of the
built model, row by row)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from autocompress.cost import FP32_BITS, LayerCost
from autocompress.layers import COUNTED
from autocompress.policy import LayerGenes
from autocompress.transforms.factor_shapes import factor_shapes


@dataclass
class CostRow:
    """Analytic description of one module that owns parameters or computes MACs."""

    name: str
    type: str
    kind: str  # "conv", "linear", "norm", "fixed"
    in_channels: int = 0
    out_channels: int = 0
    groups: int = 1
    kernel: int = 1
    kernel_size: tuple[int, ...] = ()
    bias: bool = False
    in_positions: int = 0
    out_positions: int = 0
    params: int = 0  # "norm": per channel; "fixed": total


def cost_row(name: str, module: nn.Module, trace_info: object | None) -> CostRow | None:
    own = sum(p.numel() for p in module.parameters(recurse=False))
    if isinstance(module, COUNTED):
        conv = not isinstance(module, nn.Linear)
        return CostRow(
            name=name,
            type=type(module).__name__,
            kind="conv" if conv else "linear",
            in_channels=module.in_channels if conv else module.in_features,
            out_channels=module.out_channels if conv else module.out_features,
            groups=module.groups if conv else 1,
            kernel=math.prod(module.kernel_size) if conv else 1,
            kernel_size=tuple(module.kernel_size) if conv else (),
            bias=module.bias is not None,
            in_positions=trace_info.in_positions * trace_info.calls if trace_info else 0,
            out_positions=trace_info.out_positions * trace_info.calls if trace_info else 0,
        )
    if own == 0:
        return None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return CostRow(name=name, type=type(module).__name__, kind="norm", out_channels=module.num_features, params=own // module.num_features)
    return CostRow(name=name, type=type(module).__name__, kind="fixed", params=own)


def drop_parametrized_weights(model: nn.Module, rows: list[CostRow]) -> None:
    """A parametrized layer's weight (``weight_norm``: ``weight = g * v / |v|``) is counted by the
    layer's own row; its parametrization's row keeps only the parameters beyond that weight (g)."""
    for row in rows:
        owner, _, tensor = row.name.rpartition(".parametrizations.")
        if owner and row.kind == "fixed" and "." not in tensor:
            layer = model.get_submodule(owner)
            if isinstance(layer, COUNTED) and tensor == "weight":
                row.params = max(0, row.params - layer.weight.numel())


def linear_cost(name: str, type_: str, macs: int, weights: int, biases: int, weight_bits: int, act_bits: int) -> LayerCost:
    return LayerCost(
        name=name,
        type=type_,
        macs=macs,
        params=weights + biases,
        bitops=macs * weight_bits * act_bits,
        bytes=weights * weight_bits / 8 + biases * 4,
        weight_bits=weight_bits,
        act_bits=act_bits,
    )


def layer_costs(row: CostRow, genes: LayerGenes | None, rank_multiple: int) -> list[LayerCost]:
    wb, ab = (genes.weight_bits, genes.act_bits) if genes else (FP32_BITS, FP32_BITS)
    rank = genes.rank if genes else 1.0
    if rank < 1.0:
        factors = factor_shapes(
            row.type, row.in_channels, row.out_channels, rank, rank_multiple, kernel=row.kernel_size, has_bias=row.bias
        )
        costs = []
        for i, f in enumerate(factors):
            # a Tucker-2 factorization's first 1x1 conv runs at the input's resolution
            positions = row.in_positions if (i == 0 and len(factors) == 3) else row.out_positions
            weights = f.num_params - (f.out_features if f.has_bias else 0)
            biases = f.out_features if f.has_bias else 0
            costs.append(linear_cost(f"{row.name}.{i}", f.type, positions * weights, weights, biases, wb, ab))
        return costs
    weights = row.out_channels * (row.in_channels // row.groups) * row.kernel
    biases = row.out_channels if row.bias else 0
    macs = row.out_positions * weights
    return [linear_cost(row.name, row.type, macs, weights, biases, wb, ab)]
