"""The layer types the package compresses and counts, and layers that are a Linear in all but name.

:data:`COMPRESSED` are the layer types a policy prunes, factorizes and quantizes; :data:`COUNTED`
the ones whose multiply-accumulates cost models count.

``transformers``' ``Conv1D`` (GPT-2, GPT, ...) computes ``x @ weight + bias`` with a weight of shape
``(in, out)``: a Linear with a transposed weight. The search space and ``apply_policy`` work on a copy
in which each such layer is an ``nn.Linear`` with the same weights (same name, same outputs), so it can
be pruned, factorized and quantized like any Linear; the compressed model holds ``nn.Linear`` there.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["COMPRESSED", "COUNTED", "converted", "is_transposed_linear", "to_linear"]

#: the layer types a policy compresses (prune, low rank, quantization)
COMPRESSED: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)
#: the layer types whose multiply-accumulates are counted (a Conv3d is counted, not compressed)
COUNTED: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def is_transposed_linear(module: nn.Module) -> bool:
    """``transformers``' ``Conv1D``: attributes ``nf`` (out) and ``nx`` (in), weight ``(nx, nf)``."""
    weight = module._parameters.get("weight") if type(module).__name__ == "Conv1D" else None
    return (
        isinstance(weight, nn.Parameter)
        and isinstance(getattr(module, "nf", None), int)
        and isinstance(getattr(module, "nx", None), int)
        and tuple(weight.shape) == (module.nx, module.nf)
    )


def to_linear(module: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing exactly what ``module`` (a ``Conv1D``) computes."""
    weight = module.weight
    bias = module._parameters.get("bias")
    linear = nn.Linear(module.nx, module.nf, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.detach().T)
        if bias is not None:
            linear.bias.copy_(bias.detach())
    for param in linear.parameters():
        param.requires_grad_(weight.requires_grad)
    return linear.train(module.training)


def convert(model: nn.Module) -> list[str]:
    """Replace every transposed linear of ``model`` in place (a copy); returns their names."""
    names = [name for name, module in model.named_modules() if name and is_transposed_linear(module)]
    for name in names:
        model.set_submodule(name, to_linear(model.get_submodule(name)))
    return names


def converted(model: nn.Module) -> nn.Module:
    """``model`` itself if it has no transposed linear layers, else a converted copy."""
    if not any(is_transposed_linear(m) for m in model.modules()):
        return model
    work = copy.deepcopy(model)
    convert(work)
    return work

