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

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

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
        return tp.DependencyGraph().build_dependency(model, example_inputs=inputs, verbose=False)


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
    groups = graph.get_all_groups(ignored_layers=ignored_modules, root_module_types=(nn.Conv1d, nn.Conv2d, nn.Linear))
    described = [_describe(graph, group, names, order) for group in groups]
    return sorted(described, key=lambda g: order[g.name])


def channel_scores(group: object, importance: Importance) -> torch.Tensor:
    scores = importance(group)
    if scores is None:
        raise ValueError("the pruning importance returned None for a channel group")
    return torch.as_tensor(scores).flatten().float()


def prune_groups(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    remove: dict[str, int],
    importance: Importance | None = None,
) -> None:
    """Remove ``remove[leader]`` least important channels of each group, in place."""
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
        drop = torch.argsort(scores, stable=True)[:count].tolist()
        graph.get_pruning_group(leader, pruner.prune_out_channels, sorted(drop)).prune()
