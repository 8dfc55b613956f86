"""Which layers of a model can be compressed, and why not the others: the discovery behind
:meth:`SearchSpace.from_model <autocompress.space.SearchSpace.from_model>`.

:func:`discover_layers` runs the model once, finds its Conv1d/Conv2d/Linear layers, groups layers
whose channels are coupled (through Torch-Pruning's DependencyGraph; each group is pruned by one
channel on a copy, and one that breaks the model is left alone), lists every layer it leaves alone
with the reason and notes the analytic cost rows of every module. It never changes the model.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from autocompress.analytic import CostRow, cost_row, drop_parametrized_weights
from autocompress.calls import OutputSelector, bind
from autocompress.layers import COMPRESSED, COUNTED, converted
from autocompress.replacements import check_replacements
from autocompress.trace import flatten_tensors, trace_model
from autocompress.transforms.prune import (
    ChannelGroup,
    discover_groups,
    is_depthwise,
    prune_groups,
)

__all__ = ["METHODS", "Discovery", "LayerInfo", "discover_layers"]

METHODS = ("prune", "lowrank", "quant")


@dataclass(frozen=True)
class LayerInfo:
    """One Conv/Linear layer of the model and what may be done to it."""

    name: str
    type: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int
    bias: bool
    in_positions: int
    out_positions: int
    group: str | None  # the channel group its output channels belong to
    prunable: bool  # leads a prunable channel group: carries the prune gene
    decomposable: bool
    quantizable: bool
    reasons: dict[str, str] = field(default_factory=dict)  # method -> why it does not apply

    @property
    def methods(self) -> list[str]:
        return [m for m, ok in (("prune", self.prunable), ("lowrank", self.decomposable), ("quant", self.quantizable)) if ok]


@dataclass
class Discovery:
    """What :func:`discover_layers` found: the compressible layers, the channel groups (by leader),
    the layers left alone (name -> why) and every parameter/MAC module's cost row."""

    layers: dict[str, LayerInfo]
    groups: dict[str, ChannelGroup]
    excluded: dict[str, str]
    rows: list[CostRow]


def discover_layers(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], *, input_names: tuple[str, ...] | None, output: OutputSelector,
    exclude: Sequence[str], exclude_output: bool, methods: Sequence[str], activations: str,
) -> Discovery:
    """The layers of ``model`` (left untouched) run on ``inputs`` (the example, split), what applies to each and why not.

    The arguments are :meth:`SearchSpace.from_model <autocompress.space.SearchSpace.from_model>`'s, checked.
    """
    model = converted(model)  # transformers' Conv1D as nn.Linear (a copy, if any)
    runner = bind(model, input_names, output)
    trace = trace_model(runner, inputs, COUNTED)
    names = [n for n, _ in model.named_modules()]
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ValueError(f"exclude pattern {pattern!r} matches no module of the model")

    excluded: dict[str, str] = {}
    layers: dict[str, LayerInfo] = {}
    candidates: list[str] = []
    shared: dict[str, int] = {}  # layers called several times (shared weights): low rank and quant only
    modules = dict(model.named_modules())
    executed = [n for n in trace.executed() if isinstance(modules[n], COMPRESSED)]
    for name, module in model.named_modules():
        if isinstance(module, COMPRESSED):
            record = trace.layers[name]
            if any(fnmatch.fnmatchcase(name, p) for p in exclude):
                excluded[name] = "excluded by the user"
            elif record.calls == 0:
                excluded[name] = "never called through its forward() on the example input"
            elif record.calls > 1:
                shared[name] = record.calls
                candidates.append(name)
            elif exclude_output and executed and name == executed[-1]:
                excluded[name] = "output layer (exclude_output=True)"
            else:
                candidates.append(name)
        elif _is_weight_layer(module) and not any(name.startswith(c + ".") for c in candidates):
            excluded[name] = f"{type(module).__name__} is not supported (only Conv1d, Conv2d and Linear are compressed)"

    try:
        groups = discover_groups(runner, inputs, ignored=[*excluded, *shared])
    except Exception as error:  # Torch-Pruning could not trace: keep quant/low-rank
        groups = []
        group_error = f"channel dependencies could not be traced ({type(error).__name__}: {error})"
    else:
        group_error = ""
    groups = _verify_groups(runner, inputs, groups, trace.output_shapes)
    groups = [_unless_shared(g, shared) for g in groups]
    by_name = {g.name: g for g in groups}
    owner = {m.module: g.name for g in groups for m in g.members if m.role in ("out", "both")}

    for name in candidates:
        module = modules[name]
        record = trace.layers[name]
        reasons: dict[str, str] = {}
        group = by_name.get(owner.get(name, ""))
        prunable = group is not None and group.prunable and group.name == name
        if group is None:
            reasons["prune"] = group_error or (
                "its output channels cannot be pruned safely (they reach an excluded layer, an unsupported operation or the output)"
            )
        elif not group.prunable:
            reasons["prune"] = group.reason
        elif group.name != name:
            reasons["prune"] = f"its channels are coupled with '{group.name}', which carries the group's prune gene"
        if name in shared:
            prunable = False
            reasons["prune"] = f"called {shared[name]} times in one forward (shared weights)"
        conv = not isinstance(module, nn.Linear)
        decomposable = True
        if conv and module.groups > 1:
            decomposable = False
            reasons["lowrank"] = "depthwise convolution" if is_depthwise(module) else f"grouped convolution (groups={module.groups})"
        if conv and module.padding_mode != "zeros":
            decomposable = False
            reasons["lowrank"] = reasons["quant"] = f"padding_mode={module.padding_mode!r} (only 'zeros')"
        if activations == "dynamic" and conv:
            reasons["quant"] = "dynamic int8 (ONNX Runtime) runs Linear layers only"
        elif activations == "dynamic" and record.in_dims <= 2:
            reasons["quant"] = "a Linear on 2-D inputs exports as Gemm, which ONNX Runtime's dynamic int8 does not run"
        for method in set(METHODS) - set(methods):
            reasons.setdefault(method, "method not selected")
        prunable = prunable and "prune" in methods
        decomposable = decomposable and "lowrank" in methods
        layers[name] = LayerInfo(
            name=name,
            type=type(module).__name__,
            in_channels=module.in_channels if conv else module.in_features,
            out_channels=module.out_channels if conv else module.out_features,
            kernel_size=tuple(module.kernel_size) if conv else (),
            groups=module.groups if conv else 1,
            bias=module.bias is not None,
            in_positions=record.in_positions,
            out_positions=record.out_positions,
            group=group.name if group is not None else None,
            prunable=prunable,
            decomposable=decomposable,
            quantizable="quant" not in reasons and "quant" in methods,
            reasons=reasons,
        )
    check_replacements(runner, inputs, layers, excluded, trace.output_shapes)
    rows = [r for n, m in model.named_modules() if (r := cost_row(n, m, trace.layers.get(n))) is not None]
    drop_parametrized_weights(model, rows)
    return Discovery(layers, by_name, excluded, rows)


def _unless_shared(group: ChannelGroup, shared: dict[str, int]) -> ChannelGroup:
    """``group``, unprunable when one of its members is called several times in a forward."""
    reused = [m.module for m in group.members if m.module in shared]
    if not reused or not group.prunable:
        return group
    return replace(group, prunable=False, reason=f"its channels reach '{reused[0]}', called {shared[reused[0]]} times in one forward (shared weights)")


def _is_weight_layer(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.nn.Parameter) and weight.dim() >= 2 and not isinstance(module, COMPRESSED)


def _verify_groups(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], groups: list[ChannelGroup], output_shapes: list[tuple[int, ...]]
) -> list[ChannelGroup]:
    """Prune one channel of every group on a copy; groups that break the model are marked."""

    def works(candidates: list[ChannelGroup]) -> str:
        work = copy.deepcopy(model)
        try:
            prune_groups(work, inputs, {g.name: g.multiple for g in candidates}, multiples={g.name: g.multiple for g in candidates})
            work.eval()
            with torch.no_grad():
                shapes = [tuple(t.shape) for t in flatten_tensors(work(*inputs))]
        except Exception as error:  # noqa: BLE001 - any failure means: leave the group alone
            return f"pruning it breaks the model ({type(error).__name__}: {error})"
        if shapes != output_shapes:
            return f"pruning it changes the model's output shape {output_shapes} -> {shapes}"
        return ""

    candidates = [g for g in groups if g.prunable and g.units > 1]

    def single(g: ChannelGroup) -> str:
        return "" if g.units > 1 else ("a single attention head" if g.multiple > 1 else "a single channel")

    if not candidates or not works(candidates):
        return [g if g.units > 1 else replace(g, prunable=False, reason=single(g)) for g in groups]
    checked = []
    for group in groups:
        problem = works([group]) if group in candidates else single(group)
        checked.append(replace(group, prunable=not problem and group.prunable, reason=problem or group.reason))
    return checked
