"""Cost counting on a built model: MACs/FLOPs, parameters, BitOps and bytes per layer.

The numbers are simple and exact, so that the search can compute the same ones
analytically from a policy:

- **Per sample.** One ``no_grad`` forward runs on the example input (model in eval
  mode; every module's mode is restored afterwards and nothing else is touched) and
  the counts are divided by the batch size, the size of dim 0 of the first input.
- **MACs** are counted only for ``Conv1d``/``Conv2d``/``Conv3d`` and ``Linear`` layers
  (also inside a quant wrapper, and ``transformers``' ``Conv1D``, a Linear with its weight transposed), summed over every call of the layer:

  - conv: ``out_elements_per_sample * (in_channels / groups) * prod(kernel_size)``
  - linear: ``out_elements_per_sample * in_features`` (so a Linear on ``(B, T, F)``
    tokens costs ``T * out_features * in_features``)

  Bias, normalization, activations, pooling and functional calls (``F.linear`` in
  user code, attention matmuls) cost no MACs.
- **FLOPs** = 2 * MACs.
- **params**: every parameter counted once (buffers are not parameters), attributed
  to the module that owns it directly; BatchNorm, LayerNorm, Embedding, ... get rows
  with 0 MACs. A quant wrapper (any module with attributes ``layer``,
  ``weight_bits`` and ``act_bits``) and everything below it form one row, named
  after the wrapper and typed after its ``layer``.
- **bytes**: the ``weight`` of a quantized layer at ``weight_bits / 8`` bytes per
  element; every other parameter (biases, BN, unquantized weights) at 4 bytes (fp32).
- **BitOps** = MACs * weight_bits * act_bits; unquantized layers are 32 x 32.
- **Rows** follow ``named_modules()`` order and names; only modules that own
  parameters or have MACs get a row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from rich.table import Table
from torch import Tensor, nn

from autocompress.calls import Example, bind, split_example
from autocompress.layers import COUNTED, is_transposed_linear

FP32_BITS = 32
_TOTAL_KEYS = ("flops", "macs", "params", "bitops", "bytes")


def is_quant_wrapper(module: nn.Module) -> bool:
    """True for a quantization wrapper: a module with ``layer``, ``weight_bits``, ``act_bits``."""
    return (
        isinstance(getattr(module, "layer", None), nn.Module)
        and hasattr(module, "weight_bits")
        and hasattr(module, "act_bits")
    )


@dataclass(frozen=True)
class LayerCost:
    """Per-sample cost of one layer (one row of a :class:`CostReport`)."""

    name: str
    type: str
    macs: int
    params: int
    bitops: int
    bytes: float
    weight_bits: int = FP32_BITS
    act_bits: int = FP32_BITS

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class CostReport:
    """Per-layer costs of a model and their totals."""

    layers: tuple[LayerCost, ...]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def bitops(self) -> int:
        return sum(layer.bitops for layer in self.layers)

    @property
    def bytes(self) -> float:
        return float(sum(layer.bytes for layer in self.layers))

    def layer(self, name: str) -> LayerCost:
        """The row named ``name``; KeyError naming the known rows otherwise."""
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer {name!r} in cost report; layers: {[r.name for r in self.layers]}")

    def as_dict(self) -> dict[str, float]:
        """Totals: ``{"flops", "macs", "params", "bitops", "bytes"}``."""
        return {key: getattr(self, key) for key in _TOTAL_KEYS}

    def ratio_to(self, other: CostReport) -> dict[str, float]:
        """``self / other`` for each total (1.0 when both are 0, inf when only ``other`` is)."""
        ratios = {}
        for key, mine in self.as_dict().items():
            theirs = other.as_dict()[key]
            if theirs == 0:
                ratios[key] = 1.0 if mine == 0 else math.inf
            else:
                ratios[key] = mine / theirs
        return ratios

    def to_table(self, title: str | None = "Cost per sample") -> Table:
        """A rich table with one row per layer and a total row."""
        table = Table(title=title)
        for column in ("layer", "type", "MACs", "params", "BitOps", "bytes", "W/A bits"):
            table.add_column(column, justify="left" if column in ("layer", "type") else "right")
        for row in self.layers:
            table.add_row(
                row.name or "<model>",
                row.type,
                f"{row.macs:,}",
                f"{row.params:,}",
                f"{row.bitops:,}",
                f"{row.bytes:,.1f}",
                f"{row.weight_bits}/{row.act_bits}",
            )
        table.add_section()
        table.add_row(
            "total",
            "",
            f"{self.macs:,}",
            f"{self.params:,}",
            f"{self.bitops:,}",
            f"{self.bytes:,.1f}",
            "",
        )
        return table


def _input_tuple(example_input: Example) -> tuple[tuple, tuple[str, ...] | None]:
    inputs, names = split_example(example_input)
    if not inputs or inputs[0].dim() == 0:
        raise ValueError(
            "example_input must be a tensor or a tuple whose first item is a tensor "
            "with the batch on dim 0"
        )
    return inputs, names


def _layer_macs_per_output(layer: nn.Module) -> int:
    """MACs for one output element of a Conv/Linear layer."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if is_transposed_linear(layer):
        return layer.nx
    return (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


def _rows(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """``(name, row module, compute layer)`` for each row candidate, in module order.

    A quant wrapper's subtree collapses into the wrapper's row; its compute layer is
    ``wrapper.layer``.
    """
    inside_wrapper: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in inside_wrapper:
            continue
        if is_quant_wrapper(module):
            inside_wrapper.update(id(m) for m in module.modules())
            yield name, module, module.layer
        else:
            yield name, module, module


def _stored_weight(layer: nn.Module) -> Tensor | None:
    """The parameter holding ``layer``'s weight: ``weight`` itself, or for a parametrized weight
    (``weight_norm``: ``g * v / |v|``) the original of the weight's shape (v)."""
    parametrizations = getattr(layer, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        shape = layer.weight.shape
        return next((p for p in parametrizations["weight"].parameters() if p.shape == shape), None)
    return getattr(layer, "weight", None)


def count_cost(model: nn.Module, example_input: Example) -> CostReport:
    """Count per-sample MACs, params, BitOps and bytes of ``model`` (see module docs).

    ``example_input``: a tensor, positional tensors or a dict of keyword tensors.
    """
    inputs, names = _input_tuple(example_input)
    batch_size = inputs[0].shape[0]
    if batch_size == 0:
        raise ValueError("example_input has batch size 0; costs are per sample")
    rows = list(_rows(model))

    out_elements: dict[int, int] = {}
    handles = []

    def make_hook(key: int):
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            out_elements[key] = out_elements.get(key, 0) + output.numel()

        return hook

    for _, module, layer in rows:
        if isinstance(layer, COUNTED) or is_transposed_linear(layer):
            handles.append(module.register_forward_hook(make_hook(id(module))))

    modes = [(m, m.training) for m in model.modules()]
    device = next((p.device for p in model.parameters()), None)
    if device is not None:
        inputs = tuple(x.to(device) if isinstance(x, Tensor) else x for x in inputs)
    try:
        model.eval()
        with torch.no_grad():
            bind(model, names)(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training

    seen_params: set[int] = set()
    costs = []
    for name, module, layer in rows:
        wrapped = module is not layer
        weight_bits = int(module.weight_bits) if wrapped else FP32_BITS
        act_bits = int(module.act_bits) if wrapped else FP32_BITS
        quant_weight = _stored_weight(layer) if wrapped else None
        owned = module.parameters() if wrapped else module.parameters(recurse=False)
        params, size_bytes = 0, 0.0
        for param in owned:
            if id(param) in seen_params:
                continue
            seen_params.add(id(param))
            params += param.numel()
            bits = weight_bits if param is quant_weight else FP32_BITS
            size_bytes += param.numel() * bits / 8
        macs = 0
        if id(module) in out_elements:
            total = out_elements[id(module)]
            if total % batch_size:
                raise ValueError(
                    f"layer {name!r}: output elements {total} not divisible by batch size "
                    f"{batch_size}; is the batch on dim 0?"
                )
            macs = total // batch_size * _layer_macs_per_output(layer)
        if params == 0 and macs == 0:
            continue
        costs.append(
            LayerCost(
                name=name,
                type=type(layer).__name__,
                macs=macs,
                params=params,
                bitops=macs * weight_bits * act_bits,
                bytes=size_bytes,
                weight_bits=weight_bits,
                act_bits=act_bits,
            )
        )
    return CostReport(tuple(costs))
