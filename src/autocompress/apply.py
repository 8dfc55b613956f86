"""apply_policy: build the compressed model a policy describes. Pure: the input is never changed.

The order of operations is fixed:

1. **prune** — each channel group loses its least important channels (Torch-Pruning
   removes them from every coupled layer, so the model is genuinely smaller);
2. **low-rank** — layers with ``rank < 1`` are factorized (SVD / Tucker-2) at ranks
   relative to their *pruned* shapes;
3. **quantize** — layers with bits < 32 get fake-quantized weights (per channel) and
   input activations (per tensor), trainable with a straight-through estimator;
   a factorized layer has each of its factors quantized.

The result is a new ``nn.Module``; the user's model, its parameters and buffers are
left byte-identical.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from autocompress.calls import Example, bind, split_example
from autocompress.layers import convert
from autocompress.policy import Policy
from autocompress.quiet import collected_warnings
from autocompress.space import SearchSpace
from autocompress.transforms.lowrank import factorize
from autocompress.transforms.prune import Importance, prune_groups
from autocompress.transforms.quantize import quantize_layer

#: attribute of a compressed model holding the policy that made it (read by ``save``)
POLICY_ATTRIBUTE = "autocompress_policy"


def resolve_example(policy: Policy, example_input: Example | None) -> Example:
    if example_input is not None:
        split_example(example_input)  # a clear error for a bad one
        return example_input
    example = policy.example_input()
    if example is None:
        raise ValueError(
            "apply_policy needs an example input to trace the model: pass example_input=..., "
            "or use a policy made from a SearchSpace (it records the input's shape)"
        )
    return example


def apply_policy(
    model: nn.Module,
    policy: Policy | dict,
    example_input: Example | None = None,
    *,
    space: SearchSpace | None = None,
    importance: Importance | None = None,
) -> nn.Module:
    """Return a new, compressed copy of ``model`` following ``policy``.

    ``example_input``: a tensor, positional tensors or keyword tensors (a dict), as for
    :meth:`SearchSpace.from_model`. ``space``: the model's SearchSpace, if already built (saves a
    trace). ``importance``: channel-importance criterion for pruning (default: L2 magnitude of the
    group). ``transformers``' ``Conv1D`` layers come back as the equivalent ``nn.Linear``.
    """
    if not isinstance(policy, Policy):
        policy = Policy.from_dict(policy)
    example = resolve_example(policy, example_input)
    if space is None:
        space = SearchSpace.from_model(model, example, output=policy.output)
    policy = space.validate(policy)
    inputs, names = split_example(example)
    small = copy.deepcopy(model)
    convert(small)
    device = next((p.device for p in small.parameters()), torch.device("cpu"))
    inputs = tuple(t.to(device) for t in inputs)
    with collected_warnings("pruning the model"):
        prune_groups(bind(small, names, space.output), inputs, space.channel_plan(policy), importance, space.multiples())
    for name, genes in policy.layers.items():
        if name not in space.layers or genes.is_identity:
            continue
        layer = small.get_submodule(name)
        layer = factorize(layer, genes.rank, space.rank_multiple, name=name)
        layer = quantize_layer(layer, genes.weight_bits, genes.act_bits, dynamic=policy.activations == "dynamic")
        small.set_submodule(name, layer)
    modes = {name: m.training for name, m in model.named_modules()}
    for name, module in small.named_modules():
        module.training = modes.get(name, model.training)
    object.__setattr__(small, POLICY_ATTRIBUTE, policy)
    return small
