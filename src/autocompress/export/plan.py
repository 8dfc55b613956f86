"""Which layers run in int8: the plan, computed once from a model and its float ONNX graph, that an
ONNX Runtime backend (:mod:`~autocompress.export.static`, :mod:`~autocompress.export.dynamic`) carries out.

- **static** int8 runs a float model's every Conv/Linear layer in int8; a fake-quantized model's
  (a policy's, with :class:`~autocompress.transforms.quantize.QuantWrapper` layers) layers at 8 bits or
  fewer, weights and inputs, with static input ranges (:func:`static_int8_layers`);
- **dynamic** int8 runs Linear layers whose ONNX node is a MatMul (a Linear on 2-D inputs exports as
  a Gemm, which ONNX Runtime's dynamic int8 leaves in fp32): a float model's every one, a
  fake-quantized model's 8-bit layers with dynamic input ranges (:func:`int8_layers`).

``exclude`` keeps layers in fp32 (a module name keeps all of its layers; an ONNX node name, its
layer). Layer names are those of :func:`float_twin`'s layers (a wrapper's own name): the model
whose fp32 file the backends quantize.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import onnx
from torch import nn

from autocompress.export.constants import DYNAMIC_OPS, QUANTIZED_OPS
from autocompress.export.graph import layer_nodes, natural_key
from autocompress.transforms.quantize import QuantWrapper, runs_in_int8

__all__ = ["MODES", "Int8Plan", "float_twin", "int8_layers", "plan_int8", "static_int8_layers"]

MODES = ("static", "dynamic")
#: the layers a plan places (the types a fake-quantized model wraps)
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
#: the one precision ONNX Runtime's dynamic quantization runs besides fp32
INT8 = 8


def float_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`QuantWrapper` replaced by its float layer."""
    twin = copy.deepcopy(model)
    if isinstance(twin, QuantWrapper):
        return twin.layer.eval()
    for name, module in list(twin.named_modules()):
        if isinstance(module, QuantWrapper):
            twin.set_submodule(name, module.layer)
    return twin.eval()


def static_int8_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """(int8, fp32): the Conv/Linear layers of a fake-quantized ``model`` that its int8 file runs in
    int8 (weights and inputs at 8 bits or fewer) and in fp32 (the others: unquantized, or one of
    the two at 32 bits). Names are those of :func:`float_twin`'s layers (a wrapper's own name).
    ValueError for a layer with dynamic input ranges (deployed by ``export_dynamic_int8``)."""
    int8, fp32, inside = [], [], set()
    for name, module in model.named_modules():
        if isinstance(module, QuantWrapper):
            if module.act_quant.dynamic:
                raise ValueError(f"layer '{name}' has dynamic input ranges; deploy the model with "
                                 "autocompress.export.export_dynamic_int8 (target ort-cpu-int8)")
            (int8 if runs_in_int8(module.weight_bits, module.act_bits) else fp32).append(name)
            inside.add(id(module.layer))
        elif isinstance(module, LAYER_TYPES) and id(module) not in inside:
            fp32.append(name)
    return int8, fp32


def int8_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s quantized layers, each checked to be deployable as dynamic int8.

    Raises ValueError naming the layer when one is quantized otherwise (other bit-widths,
    weights and inputs at different bits, or static input ranges).
    """
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantWrapper):
            continue
        if (module.weight_bits, module.act_bits) != (INT8, INT8) or not module.act_quant.dynamic:
            raise ValueError(
                f"layer '{name}' is quantized at weight_bits={module.weight_bits}, act_bits={module.act_bits}"
                f"{' with dynamic' if module.act_quant.dynamic else ' with static'} input ranges; ONNX Runtime's "
                "dynamic int8 runs layers at weight_bits = act_bits = 8 with dynamic ranges, or at 32 (fp32)"
            )
        if not isinstance(module.layer, nn.Linear):
            raise ValueError(f"layer '{name}' is a {type(module.layer).__name__}; dynamic int8 deploys Linear layers only")
        names.append(name)
    return names


@dataclass(frozen=True)
class Int8Plan:
    """Which Conv/Linear layers of a model run in int8 in its ``mode`` ("static" or "dynamic") int8 file.

    ``int8``: each layer run in int8 and its ONNX nodes (in the float twin's file); ``fp32``: the
    model's other layers in that file; ``exclude``: what the caller kept in fp32, as given;
    ``own_precision``: the model is fake-quantized, so its bits chose (else every layer the mode runs).
    """

    mode: str
    int8: dict[str, tuple[str, ...]]
    fp32: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    own_precision: bool = False

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers run in int8."""
        return tuple(self.int8)

    @property
    def nodes(self) -> list[str]:
        """Their ONNX nodes (Conv / Gemm / MatMul)."""
        return [node for nodes in self.int8.values() for node in nodes]

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "int8": list(self.int8), "fp32": list(self.fp32)}


def plan_int8(model: nn.Module, mode: str, graph: onnx.ModelProto, exclude: Iterable[str] = (), *,
              own_precision_only: bool = False) -> Int8Plan:
    """The plan of ``model``'s ``mode`` int8 file; ``graph``: the fp32 ONNX file of its
    :func:`float_twin` (what the backend quantizes). Layers that feed no output of the file are in
    neither list. ``own_precision_only``: only a fake-quantized model's quantized layers run in int8
    (a float model's plan is then empty: a policy that quantizes nothing). ValueError for a layer the
    mode cannot run at the model's precision, an unknown ``exclude`` and (unless
    ``own_precision_only``) a float model none of whose layers the mode runs in int8."""
    if mode not in MODES:
        raise ValueError(f"unknown int8 mode {mode!r}; allowed: {', '.join(MODES)}")
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    quantized = any(isinstance(m, QuantWrapper) for m in model.modules())
    twin = float_twin(model)
    modules = {name for name, _ in twin.named_modules()}
    layers = [name for name, m in twin.named_modules() if isinstance(m, LAYER_TYPES)]
    present = layer_nodes(graph, QUANTIZED_OPS, modules)
    nodes = layer_nodes(graph, QUANTIZED_OPS if mode == "static" else DYNAMIC_OPS, modules)
    if not quantized and own_precision_only:
        wanted = []
    elif mode == "static":
        wanted = static_int8_layers(model)[0] if quantized else layers
    else:
        wanted = int8_layers(model) if quantized else [n for n in layers if isinstance(twin.get_submodule(n), nn.Linear)]
        gemms = [name for name in wanted if name in present and name not in nodes]
        if quantized and gemms:
            raise ValueError(f"no ONNX MatMul found for layers {gemms} (exported as Gemm?); they cannot run in int8")
    graph_nodes = {node.name for node in graph.graph.node}
    unknown = [name for name in exclude if name not in modules and name not in graph_nodes]
    if unknown:
        allowed = ", ".join(sorted((n for n in layers if n in present), key=natural_key)) or "(none)"
        raise ValueError(f"exclude: unknown layer {unknown[0]!r}; layers with weights that can be kept in fp32: {allowed}")

    def excluded(layer: str) -> bool:
        return any(layer == e or layer.startswith(f"{e}.") or e in present[layer] for e in exclude)

    int8 = {name: tuple(nodes[name]) for name in wanted if name in nodes and not excluded(name)}
    if not quantized and not int8 and not own_precision_only:
        runs = ("Conv and Linear layers" if mode == "static" else
                "Linear layers exported as MatMul (a Linear on 2-D inputs is a Gemm, which stays fp32)")
        raise ValueError(f"no layer of this model runs in {mode} int8: it runs {runs}"
                         + (f", less exclude={list(exclude)}" if exclude else ""))
    fp32 = tuple(name for name in layers if name in present and name not in int8)
    return Int8Plan(mode, int8, fp32, exclude, quantized or own_precision_only)
