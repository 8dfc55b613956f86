"""Run a model once on its example input and record what each layer saw.

The search space needs, for every module, how many times it ran and the spatial size
of its input and output (which pruning never changes); when the forward pass fails, the
user needs to know which module failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from autocompress.calls import OutputSelectionError


class ModelTraceError(RuntimeError):
    """The model could not run (or be traced) on its example input."""


@dataclass
class LayerTrace:
    calls: int = 0
    in_positions: int = 0  # elements per channel of the input, per sample (spatial size / tokens)
    out_positions: int = 0  # elements per channel of the output, per sample
    order: int = -1  # position in execution order of first call
    in_dims: int = 0  # dimensions of its input (a Linear on 2-D inputs exports as Gemm, on more as MatMul)


@dataclass
class Trace:
    layers: dict[str, LayerTrace] = field(default_factory=dict)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)

    def executed(self) -> list[str]:
        """Names of traced layers in the order they first ran."""
        ran = [(t.order, name) for name, t in self.layers.items() if t.calls > 0]
        return [name for _, name in sorted(ran)]


def as_inputs(example_input: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Normalise an example input to a tuple of positional tensors."""
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, Sequence) and all(isinstance(t, torch.Tensor) for t in example_input):
        return tuple(example_input)
    raise TypeError(
        "example_input must be a tensor or a tuple/list of tensors (positional model inputs), "
        f"got {type(example_input).__name__}"
    )


def flatten_tensors(value: object, strict: bool = False) -> list[torch.Tensor]:
    """The tensors in a (nested) tuple/list/dict output; ``strict``: anything else is an error."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flatten_tensors(item, strict)]
    if strict:
        raise TypeError(f"model outputs must be tensors or (nested) tuples/lists/dicts of tensors, got {type(value).__name__}")
    return []


def _positions(tensor: torch.Tensor, channel_dim: int, batch_size: int) -> int:
    """Elements per channel per *model* sample: a layer may see windows or patches folded into its
    batch dimension (Swin, MobileViT), so divide by the model input's batch, not the layer's."""
    if tensor.dim() < 2:
        return 1
    channels = tensor.shape[channel_dim]
    if not channels or not batch_size:
        return 0
    return tensor.numel() // (channels * batch_size)


def trace_model(model: nn.Module, inputs: tuple[torch.Tensor, ...], layer_types: tuple[type, ...]) -> Trace:
    """One no-grad forward in eval mode (modes restored) recording ``layer_types`` modules."""
    trace = Trace()
    stack: list[str] = []
    handles = []
    counter = [0]
    names = {module: name for name, module in model.named_modules()}
    batch_size = inputs[0].shape[0] if inputs and inputs[0].dim() else 1

    def pre_hook(module: nn.Module, args: tuple) -> None:
        stack.append(names.get(module, type(module).__name__))

    def post_hook(module: nn.Module, args: tuple, output: object) -> None:
        stack.pop()
        if not isinstance(module, layer_types):
            return
        record = trace.layers.setdefault(names[module], LayerTrace())
        record.calls += 1
        if record.order < 0:
            record.order = counter[0]
            counter[0] += 1
        channel_dim = -1 if isinstance(module, nn.Linear) else 1
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            record.in_dims = args[0].dim()
            record.in_positions = _positions(args[0], channel_dim, batch_size)
            record.out_positions = _positions(output, channel_dim, batch_size)

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            output = model(*inputs)
    except OutputSelectionError:  # the model ran; output= names nothing in what it returned
        raise
    except Exception as error:  # the user's model failed: say where
        where = stack[-1] if stack else "the model's top-level forward"
        raise ModelTraceError(
            f"the model failed to run on its example input in module '{where}' "
            f"({type(error).__name__}: {error}). Check the example input's shape and dtype; "
            f"if this module cannot be traced, exclude it (exclude=['{where}'])."
        ) from error
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.train(mode)
    trace.output_shapes = [tuple(t.shape) for t in flatten_tensors(output)]
    for name, module in model.named_modules():
        if isinstance(module, layer_types):
            trace.layers.setdefault(name, LayerTrace())
    return trace
