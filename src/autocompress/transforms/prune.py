"""Structured pruning that really removes channels, through Torch-Pruning's DependencyGraph.

Layers whose channels are coupled (a residual add, a depthwise chain, a flatten into a
Linear) form a *channel group*; removing channel ``c`` of the group removes it from every
member. :func:`discover_groups` describes the groups of a model without changing it;
:func:`prune_groups` removes the least important channels of each group from a model
(which must be a copy: it is changed in place).

Importance is pluggable: any callable taking a Torch-Pruning ``Group`` and returning one
score per channel (higher = keep). The default is the group's L2 weight magnitude.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
import torch_pruning as tp
from torch import nn

from autocompress.calls import without_cache

Importance = Callable[[object], torch.Tensor]

#: module types whose channel count a group may change, and that the cost model understands
SUPPORTED_MEMBERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class GroupMember:
    """One module of a channel group and how the group's channels map onto it.

    ``role``: "out" (its output channels), "in" (its input channels) or "both" (a
    BatchNorm or depthwise conv, whose single channel dimension is the group's).
    ``per_channel``: indices removed from that dimension per group channel (a Linear
    after a flatten of C×L loses L inputs per channel).
    """

    module: str
    role: str
    per_channel: int


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the leader: the first member (module order) whose output channels are the group's
    channels: int
    members: tuple[GroupMember, ...]
    prunable: bool = True
    reason: str = ""
    #: channels are removed in blocks of this many (an attention head: its ``head_dim`` channels)
    multiple: int = 1

    @property
    def units(self) -> int:
        """Removable units: channels, or heads of ``multiple`` channels."""
        return self.channels // self.multiple

    def outputs(self) -> list[str]:
        return [m.module for m in self.members if m.role == "out"]


def default_importance() -> Importance:
    return tp.importance.GroupMagnitudeImportance(p=2)


def is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d))
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def build_graph(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tp.DependencyGraph:
    """Trace ``model`` (which Torch-Pruning puts in eval mode: pass a copy)."""
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(without_cache(model), example_inputs=inputs, verbose=False)


def _role(graph: tp.DependencyGraph, module: nn.Module, handler: Callable) -> str:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) or is_depthwise(module):
        return "both"
    is_out = graph.is_out_channel_pruning_fn(handler)
    is_in = graph.is_in_channel_pruning_fn(handler)
    if is_out and not is_in:
        return "out"
    if is_in and not is_out:
        return "in"
    return "both"


def _describe(graph: tp.DependencyGraph, group: object, names: dict[nn.Module, str], order: dict[str, int]) -> ChannelGroup:
    root = group[0].dep.target.module
    channels = graph.get_out_channels(root)
    members: dict[tuple[str, str], int] = {}
    problems = []
    for item in group.items:
        target = item.dep.target.module
        if isinstance(target, nn.Parameter):
            problems.append("a bare nn.Parameter shares these channels")
            continue
        if target not in names:  # an operation node (add, flatten, ...), not a module
            continue
        name = names[target]
        if not isinstance(target, SUPPORTED_MEMBERS):
            problems.append(f"'{name}' ({type(target).__name__}) shares these channels and is not supported")
            continue
        if isinstance(target, (nn.Conv1d, nn.Conv2d)) and target.groups > 1 and not is_depthwise(target):
            problems.append(f"'{name}' is a grouped convolution (groups={target.groups})")
            continue
        role = _role(graph, target, item.dep.handler)
        count = len(item.idxs)
        if count % channels:
            problems.append(f"'{name}' maps {count} indices onto {channels} channels")
            continue
        members[(name, role)] = max(members.get((name, role), 0), count // channels)
    outs = sorted((n for (n, r) in members if r == "out"), key=order.__getitem__)
    leader = outs[0] if outs else names.get(root, "?")
    ordered = tuple(
        GroupMember(n, r, k) for (n, r), k in sorted(members.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    )
    reason = "; ".join(dict.fromkeys(problems))
    return ChannelGroup(leader, int(channels), ordered, prunable=not problems, reason=reason)


def discover_groups(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], ignored: list[str]
) -> list[ChannelGroup]:
    """Channel groups rooted at Conv/Linear layers, skipping groups that touch ``ignored``."""
    work = copy.deepcopy(model)
    graph = build_graph(work, inputs)
    names = {module: name for name, module in work.named_modules()}
    order = {name: i for i, (name, _) in enumerate(work.named_modules())}
    ignored_modules = [work.get_submodule(name) for name in ignored]
    described = []
    for root, group in _all_groups(graph, ignored_modules, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        if isinstance(group, str):  # its dependencies never settle: the layer is not pruned
            described.append(ChannelGroup(names[root], graph.get_out_channels(root), (GroupMember(names[root], "out", 1),),
                                          prunable=False, reason=group))
        else:
            described.append(_heads(work, _describe(graph, group, names, order)))
    return sorted(described, key=lambda g: order[g.name])


#: a channel group growing past this many items per graph node (or this many seconds) is a runaway
RUNAWAY_ITEMS_PER_NODE = 8
RUNAWAY_SECONDS = 5.0


class _Runaway(RuntimeError):
    pass


@contextlib.contextmanager
def _bounded_groups(graph: tp.DependencyGraph) -> Iterator[list[float]]:
    """Stop a group that keeps growing: Torch-Pruning's index mapping can loop without end (the
    rotary embeddings of Llama-style attention: a slice-and-concat it maps onto itself). Yields the
    one-item list holding the current group's start time (the caller resets it per group)."""
    limit = max(2000, RUNAWAY_ITEMS_PER_NODE * len(graph.module2node))
    original = tp.dependency.group.Group.add_dep
    start = [time.perf_counter()]

    def add_dep(group: object, dep: object, idxs: object) -> None:
        if len(group.items) > limit:
            raise _Runaway(f"its channel dependencies do not settle (Torch-Pruning's group grew past {limit} items)")
        if time.perf_counter() - start[0] > RUNAWAY_SECONDS:
            raise _Runaway(f"its channel dependencies do not settle (Torch-Pruning's group still grew after {RUNAWAY_SECONDS:g} s)")
        original(group, dep, idxs)

    tp.dependency.group.Group.add_dep = add_dep
    try:
        yield start
    finally:
        tp.dependency.group.Group.add_dep = original


def _all_groups(graph: tp.DependencyGraph, ignored: list[nn.Module], root_types: tuple[type, ...]) -> Iterator[tuple[nn.Module, object]]:
    """``(root, group)`` for every root layer, as Torch-Pruning's ``get_all_groups`` gives them, but a
    group that runs away comes back as the reason (a string) instead of hanging the search space."""
    visited: set[nn.Module] = set()
    ignored = [*ignored, *graph.IGNORED_LAYERS_IN_TRACING]
    with _bounded_groups(graph) as start:
        for module in list(graph.module2node):
            if module in visited or any(module is i for i in ignored) or not isinstance(module, root_types):
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            start[0] = time.perf_counter()
            try:
                group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(pruner.get_out_channels(module))))
            except _Runaway as runaway:
                visited.add(module)
                yield module, str(runaway)
                continue
            prunable = True
            for dep, _ in group:
                if graph.is_out_channel_pruning_fn(dep.handler):
                    visited.add(dep.target.module)
                    prunable = prunable and not any(dep.target.module is i for i in ignored)
            if prunable:
                yield module, group


def _heads(model: nn.Module, group: ChannelGroup) -> ChannelGroup:
    """``group`` removed in whole attention heads when its leader projects into heads."""
    size = head_size(model, group.name)
    return replace(group, multiple=size) if size > 1 and group.channels % size == 0 else group


def channel_scores(group: object, importance: Importance) -> torch.Tensor:
    scores = importance(group)
    if scores is None:
        raise ValueError("the pruning importance returned None for a channel group")
    return torch.as_tensor(scores).flatten().float()


def head_size(model: nn.Module, leader: str) -> int:
    """Channels per attention head when ``leader`` is the query/key/value projection of an
    attention module (its parent has ``attention_head_size`` or ``head_dim``), else 1."""
    parent_name = leader.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    for attribute in ("attention_head_size", "head_dim"):
        value = getattr(parent, attribute, None)
        if isinstance(value, int) and value > 1:
            return value
    return 1


def _blocks_to_drop(scores: torch.Tensor, count: int, multiple: int) -> list[int]:
    """The ``count`` channels of the least important whole blocks of ``multiple`` channels."""
    if multiple == 1:
        return torch.argsort(scores, stable=True)[:count].tolist()
    if count % multiple:
        raise ValueError(f"{count} channels cannot be removed in whole blocks of {multiple}")
    per_block = scores.reshape(-1, multiple).sum(dim=1)
    blocks = torch.argsort(per_block, stable=True)[: count // multiple].tolist()
    return [b * multiple + i for b in blocks for i in range(multiple)]


def prune_groups(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    remove: dict[str, int],
    importance: Importance | None = None,
    multiples: dict[str, int] | None = None,
) -> None:
    """Remove ``remove[leader]`` least important channels of each group, in place.

    ``multiples[leader]`` > 1 removes whole blocks of that many channels (attention heads),
    ranked by the sum of their channels' importance.
    """
    remove = {name: n for name, n in remove.items() if n > 0}
    if not remove:
        return
    importance = importance or default_importance()
    graph = build_graph(model, inputs)
    for leader_name, count in remove.items():
        leader = model.get_submodule(leader_name)
        pruner = graph.get_pruner_of_module(leader)
        channels = pruner.get_out_channels(leader)
        group = graph.get_pruning_group(leader, pruner.prune_out_channels, list(range(channels)))
        scores = channel_scores(group, importance)
        if scores.numel() != channels:
            raise ValueError(
                f"importance gave {scores.numel()} scores for group '{leader_name}' of {channels} channels"
            )
        drop = _blocks_to_drop(scores, count, (multiples or {}).get(leader_name, 1))
        graph.get_pruning_group(leader, pruner.prune_out_channels, sorted(drop)).prune()


def activation_std_importance(
    model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...], batch_size: int = 1024
) -> Importance:
    """Channel importance = standard deviation of the channel's output over ``inputs``.

    Measured once, when called, on ``model`` (eval mode, no grad, modes restored) with forward
    hooks on every Linear / Conv1d / Conv2d: a Linear's output ``(N, ..., C)`` gives per-channel
    std over every other position, a conv's ``(N, C, ...)`` over the batch and spatial positions
    (population std, float64 sums). A channel whose output hardly varies adds nearly a constant
    downstream (the ODF2NNA usefulness statistic, see ``transforms/units.py``). The returned
    callable scores a Torch-Pruning group by its leader's (``group[0]``) module name, so it also
    scores groups of a copy of ``model`` (as ``apply_policy`` prunes one).
    """
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    stds = _output_stds(model, inputs, batch_size)

    def importance(group: object) -> torch.Tensor:
        leader = group[0].dep.target
        name = getattr(leader, "_name", None)
        if name not in stds:
            raise ValueError(
                f"activation_std_importance: no measured outputs for the group leader {name!r}; "
                f"measured layers: {', '.join(stds) or 'none'} (build it on the model being pruned)"
            )
        return stds[name][list(group[0].idxs)]

    return importance


def _output_stds(model: nn.Module, inputs: tuple[torch.Tensor, ...], batch_size: int) -> dict[str, torch.Tensor]:
    """Per-channel output standard deviation of every Linear / Conv1d / Conv2d over ``inputs``."""
    sums: dict[str, list] = {}
    handles = []

    def hook_for(name: str, channel_dim: int) -> Callable:
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            values = output.detach().double().movedim(channel_dim, -1).reshape(-1, output.shape[channel_dim])
            total = sums.setdefault(name, [0, 0.0, 0.0])
            total[0] += values.shape[0]
            total[1] = total[1] + values.sum(dim=0)
            total[2] = total[2] + values.pow(2).sum(dim=0)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            handles.append(module.register_forward_hook(hook_for(name, -1 if isinstance(module, nn.Linear) else 1)))
    modes = [(m, m.training) for m in model.modules()]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(inputs[0]), batch_size):
                model(*(t[start : start + batch_size].to(device) for t in inputs))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    stds = {}
    for name, (count, total, squares) in sums.items():
        mean = total / count
        stds[name] = (squares / count - mean.pow(2)).clamp_min(0).sqrt().float().cpu()
    return stds
