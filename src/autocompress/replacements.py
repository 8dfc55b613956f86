"""The search space's safety net: does the model still run with a layer factorized or quantized?

Code outside our control reads and calls its layers in ways no type check foresees (a forward that
reads ``conv.stride`` for its own padding, a patch embedding that reads ``weight.dtype``). So after
discovery, the space replaces layers on a copy of the model — low rank as a cheap rank-1 placeholder,
quantization as an 8-bit wrapper — and runs the model once: first every layer and method at once
(one forward when all is well), then, if that fails, each method and each layer alone. A layer x
method that breaks the model is left alone with the reason, never a crash later in a search.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from autocompress.trace import flatten_tensors
from autocompress.transforms.lowrank import placeholder
from autocompress.transforms.quantize import quantize_layer

CHECKED = ("lowrank", "quant")
_FLAGS = {"lowrank": "decomposable", "quant": "quantizable"}


def _attempt(work: nn.Module, inputs: tuple[torch.Tensor, ...], plan: dict[str, tuple[str, ...]],
             output_shapes: list[tuple[int, ...]]) -> str:
    """'' if ``work`` runs with ``plan``'s replacements (then undone), else why not."""
    originals: dict[str, nn.Module] = {}
    try:
        for name, methods in plan.items():
            layer = originals[name] = work.get_submodule(name)
            if "lowrank" in methods:
                layer = placeholder(layer, name)
            if "quant" in methods:
                layer = quantize_layer(layer, 8, 8)
            work.set_submodule(name, layer)
        with torch.no_grad():
            shapes = [tuple(t.shape) for t in flatten_tensors(work(*inputs))]
    except Exception as error:  # noqa: BLE001 - any failure means: leave it alone
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    finally:
        for name, layer in originals.items():
            work.set_submodule(name, layer)
    if shapes != output_shapes:
        return f"the output shape changes {output_shapes} -> {shapes}"
    return ""


def check_replacements(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], layers: dict, excluded: dict[str, str],
    output_shapes: list[tuple[int, ...]],
) -> dict[tuple[str, str], str]:
    """Check every layer x method of ``layers`` (name -> LayerInfo, updated in place); returns the failures.

    A failing method is switched off for that layer with the reason in its ``reasons``; a layer left
    with no method at all moves to ``excluded``. ``model`` is the (bound) model; it is not changed.
    """
    plan = {
        name: tuple(m for m in CHECKED if getattr(info, _FLAGS[m]))
        for name, info in layers.items()
    }
    plan = {name: methods for name, methods in plan.items() if methods}
    if not plan:
        return {}
    work = copy.deepcopy(model).eval()
    if not _attempt(work, inputs, plan, output_shapes):
        return {}
    failures: dict[tuple[str, str], str] = {}
    for method in CHECKED:
        alone = {name: (method,) for name, methods in plan.items() if method in methods}
        if alone and _attempt(work, inputs, alone, output_shapes):
            for name in alone:
                problem = _attempt(work, inputs, {name: (method,)}, output_shapes)
                if problem:
                    failures[(name, method)] = problem
    remaining = {n: tuple(m for m in ms if (n, m) not in failures) for n, ms in plan.items()}
    if _attempt(work, inputs, {n: ms for n, ms in remaining.items() if ms}, output_shapes):
        for name, methods in remaining.items():  # each method works alone but not together
            if len(methods) == 2 and (problem := _attempt(work, inputs, {name: methods}, output_shapes)):
                failures[(name, "quant")] = f"with low rank: {problem}"
    for (name, method), problem in failures.items():
        info = layers[name]
        reason = f"the model fails with this layer {'factorized' if method == 'lowrank' else 'quantized'} ({problem})"
        layers[name] = replace(info, **{_FLAGS[method]: False}, reasons={**info.reasons, method: reason})
    for name in [n for n in layers if any((n, m) in failures for m in CHECKED)]:  # in layer order
        info = layers[name]
        if not (info.prunable or info.decomposable or info.quantizable):
            excluded[name] = "; ".join(f"{m}: {r}" for m, r in info.reasons.items())
            del layers[name]
    return failures
