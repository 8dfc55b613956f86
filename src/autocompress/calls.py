"""How a user's model is called, and which of its outputs is measured.

Models written by others take their inputs as keywords (``model(input_ids=..., attention_mask=...)``)
and return tuples, dicts or ``transformers``' ``ModelOutput``. Everything in autocompress calls a
model with positional tensors, so an example input is split once into tensors and their keyword
names (:func:`split_example`), and :func:`bind` gives a module that takes the positional tensors,
calls the user's model with them as keywords and returns the selected output.

The bound module *shares* the user's submodules, parameters and buffers (the same objects under the
same names, no prefix): hooks, Torch-Pruning's graph, ``state_dict`` keys and ONNX node names all see
the user's own layer names. ``bind`` returns the model itself when there is nothing to adapt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

#: an example input: one tensor, positional tensors, or keyword tensors (``{"input_ids": ..., ...}``)
Example = Tensor | Sequence[Tensor] | Mapping[str, Tensor]
#: which output is measured: None (all of them), a key or attribute name, an index, or a callable
OutputSelector = str | int | Callable[[Any], Any] | None

__all__ = ["Bound", "OutputSelectionError", "Example", "OutputSelector", "accepted_keywords", "bind", "call_model", "example_to", "fit_inputs", "join_example", "select_output", "split_example", "without_cache"]


class OutputSelectionError(ValueError):
    """``output=`` names nothing in the model's output (the message lists what it has)."""


def split_example(example: Example) -> tuple[tuple[Tensor, ...], tuple[str, ...] | None]:
    """``(tensors, names)``: the example's tensors in call order and their keyword names (None: positional)."""
    if isinstance(example, Tensor):
        return (example,), None
    if isinstance(example, Mapping):
        if not example:
            raise ValueError("example_input is an empty mapping; give the model's keyword inputs, e.g. {'input_ids': ids}")
        bad = [str(k) for k, v in example.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
        if bad:
            raise TypeError(f"example_input mapping must map keyword names to tensors; not tensors: {bad}")
        return tuple(example.values()), tuple(example.keys())
    if isinstance(example, Sequence) and example and all(isinstance(t, Tensor) for t in example):
        return tuple(example), None
    raise TypeError(
        "example_input must be a tensor, a tuple/list of tensors (positional inputs) or a dict of "
        f"tensors (keyword inputs, e.g. {{'input_ids': ids, 'attention_mask': mask}}), got {type(example).__name__}"
    )


def accepted_keywords(model: nn.Module) -> tuple[set[str], bool] | None:
    """(the keyword names ``model``'s forward names, whether it takes any other too via ``**kwargs``);
    None when its signature cannot be read."""
    target = model.target if isinstance(model, Bound) else model
    try:
        parameters = inspect.signature(target.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    named = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def fit_inputs(model: nn.Module, inputs: Any) -> Any:
    """``inputs`` without the keywords ``model``'s forward does not name (a tokenizer's ``token_type_ids``
    for DistilBERT, even when its forward also takes ``**kwargs``); anything but a dict comes back unchanged."""
    if not isinstance(inputs, Mapping):
        return inputs
    accepted = accepted_keywords(model)
    if accepted is None:
        return dict(inputs)
    named, takes_any = accepted
    kept = {k: v for k, v in inputs.items() if k in named}
    if kept:
        return kept
    if takes_any:
        return dict(inputs)
    raise ValueError(f"none of the batch's keys ({', '.join(map(str, inputs))}) is an input of "
                     f"{type(model).__name__}.forward (it takes {', '.join(sorted(named))}); "
                     "give Task.from_loaders(..., batch_to_inputs=fn) to map a batch to the model's inputs")


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model`` called on one batch's inputs: a tensor, positional tensors or keyword tensors."""
    if isinstance(inputs, Mapping):
        return model(**fit_inputs(model, inputs))
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def join_example(tensors: Sequence[Tensor], names: Sequence[str] | None) -> Example:
    """The inverse of :func:`split_example`: a dict when the inputs have names, else a tuple."""
    return dict(zip(names, tensors, strict=True)) if names else tuple(tensors)


def example_to(example: Example, device: torch.device | str) -> Example:
    """``example`` with every tensor on ``device``, in the same structure."""
    tensors, names = split_example(example)
    moved = tuple(t.to(device) for t in tensors)
    return moved[0] if isinstance(example, Tensor) else join_example(moved, names)


def _keys(output: Any) -> list[str]:
    if isinstance(output, Mapping):
        return [str(k) for k in output.keys()]
    return [k for k in vars(output) if not k.startswith("_")] if hasattr(output, "__dict__") else []


def select_output(output: Any, selector: OutputSelector) -> Any:
    """The part of a model's ``output`` that ``selector`` names (see :data:`OutputSelector`)."""
    if selector is None:
        return output
    if callable(selector):
        return selector(output)
    if isinstance(selector, bool) or not isinstance(selector, (str, int)):
        raise TypeError(f"output= must be None, a key, an index or a callable, got {type(selector).__name__}")
    if isinstance(selector, int):
        items = output.to_tuple() if hasattr(output, "to_tuple") else output
        items = tuple(items.values()) if isinstance(items, Mapping) else items
        if not isinstance(items, (tuple, list)) or not -len(items) <= selector < len(items):
            size = len(items) if isinstance(items, (tuple, list)) else "not a tuple"
            raise OutputSelectionError(f"output={selector}: the model's output has no item {selector} (it has {size})")
        return items[selector]
    if isinstance(output, Mapping) and selector in output:
        return output[selector]
    if not isinstance(output, Mapping) and hasattr(output, selector):
        return getattr(output, selector)
    raise OutputSelectionError(
        f"output={selector!r}: the model's {type(output).__name__} output has no such key; "
        f"it has: {', '.join(_keys(output)) or 'no named items'}"
    )


class Bound(nn.Module):
    """``model`` called with positional tensors as its ``names`` keywords, returning the selected output.

    Shares ``model``'s submodules, parameters and buffers (same objects, same names); ``train()`` and
    ``eval()`` reach the model itself too. A deep copy copies the model with it.
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | None, output: OutputSelector,
                 fixed: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "target", model)
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self.names = tuple(names) if names else None
        self.output = output
        #: keyword arguments passed on every call (``use_cache=False`` while tracing, see :func:`without_cache`)
        self.fixed = dict(fixed or {})
        self.training = model.training

    def train(self, mode: bool = True) -> Bound:
        self.target.training = mode
        return super().train(mode)

    def forward(self, *tensors: Tensor, **keywords: Any) -> Any:
        if keywords:  # a batch of keyword inputs, as the user's model takes them
            output = self.target(*tensors, **self.fixed, **keywords)
        elif self.names is None:
            output = self.target(*tensors, **self.fixed)
        else:
            if len(tensors) != len(self.names):
                raise TypeError(f"expected {len(self.names)} inputs ({', '.join(self.names)}), got {len(tensors)}")
            output = self.target(**self.fixed, **dict(zip(self.names, tensors, strict=True)))
        return select_output(output, self.output)


def without_cache(model: nn.Module) -> nn.Module:
    """``model`` called with ``use_cache=False`` when its forward takes it (``transformers``' decoders).

    A key/value cache adds concatenations to the graph that Torch-Pruning cannot map (GPT-2), and it
    is nothing a compressed layer depends on: channel dependencies are traced without it.
    """
    accepted = accepted_keywords(model)
    if accepted is None or "use_cache" not in accepted[0]:
        return model
    target = model.target if isinstance(model, Bound) else model
    names, output, fixed = (model.names, model.output, model.fixed) if isinstance(model, Bound) else (None, None, {})
    return Bound(target, names, output, {**fixed, "use_cache": False})


def bind(model: nn.Module, names: Sequence[str] | None = None, output: OutputSelector = None) -> nn.Module:
    """``model`` callable as ``module(*tensors)`` returning the selected output (itself if nothing to adapt)."""
    if isinstance(model, Bound):
        model = model.target
    if not names and output is None:
        return model
    return Bound(model, names, output)
