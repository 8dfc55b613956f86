"""Dense-chain discovery for ODF2NNA: which models are MLPs it can rebuild, and their hidden layers.

A model qualifies when its forward applies its leaf modules in registration order and they
form ``[Flatten] (Linear [per-unit modules])+ Linear``, the per-unit modules being
``BatchNorm1d`` (with running statistics) and those of :data:`LIPSCHITZ` (activations,
``Dropout``, ``Identity``, with the Lipschitz constants the deviation bound of
:mod:`autocompress.transforms.units` uses). :func:`dense_chain` checks that and names the hidden
layers (:class:`DenseLayer`); :func:`run_chain` applies the chain and taps each hidden layer's
unit outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["DenseChain", "DenseLayer", "DenseStructureError", "dense_chain"]

#: per-unit modules between two Linear layers and their Lipschitz constants (a bound on |f'|)
LIPSCHITZ: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0,
    nn.ReLU6: lambda m: 1.0,
    nn.LeakyReLU: lambda m: max(1.0, abs(m.negative_slope)),
    nn.ELU: lambda m: max(1.0, float(m.alpha)),
    nn.GELU: lambda m: 1.13,  # max of Phi(x) + x phi(x) is 1.129 at x = sqrt(2)
    nn.SiLU: lambda m: 1.1,  # max derivative 1.0998
    nn.Mish: lambda m: 1.1,  # max derivative 1.0886
    nn.Tanh: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25,
    nn.Softplus: lambda m: 1.0,
    nn.Hardtanh: lambda m: 1.0,
    nn.Identity: lambda m: 1.0,
    nn.Dropout: lambda m: 1.0,  # the identity in eval mode
}
ALLOWED_MODULES = "Linear, BatchNorm1d (with running statistics), Dropout, Identity, a leading Flatten, activations " + ", ".join(
    t.__name__ for t in LIPSCHITZ if t not in (nn.Identity, nn.Dropout)
)


class DenseStructureError(ValueError):
    """The model is not a dense feed-forward chain that :func:`refine_dense` can rebuild."""


@dataclass(frozen=True)
class DenseLayer:
    """A hidden layer: the Linear making the units, its per-unit modules, the Linear reading them."""

    linear: str
    elementwise: tuple[str, ...]
    consumer: str


@dataclass(frozen=True)
class DenseChain:
    """A model whose forward applies its leaf modules in registration order: an MLP."""

    modules: tuple[str, ...]  # every leaf module, in order
    layers: tuple[DenseLayer, ...]
    head: str  # the output Linear


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def _check_leaf(name: str, module: nn.Module, first: bool) -> None:
    if isinstance(module, nn.Linear) or type(module) in LIPSCHITZ:
        return
    if isinstance(module, nn.Flatten) and first:
        return
    if isinstance(module, nn.BatchNorm1d):
        if not module.track_running_stats:
            raise DenseStructureError(
                f"BatchNorm1d '{name}' has no running statistics (track_running_stats=False): in "
                "eval mode it normalises by the batch, so a unit's output depends on other samples"
            )
        return
    where = "" if not isinstance(module, nn.Flatten) else " (a Flatten is allowed only first)"
    raise DenseStructureError(
        f"'{name}' is a {type(module).__name__}{where}; a dense network may hold only: {ALLOWED_MODULES}"
    )


def dense_chain(model: nn.Module, example: Tensor | None = None) -> DenseChain:
    """Describe ``model`` as a chain ``[Flatten] (Linear [per-unit modules])+ Linear``.

    Raises :class:`DenseStructureError` naming the offending module when ``model`` holds anything
    else, owns parameters outside its leaf modules, or (given an ``example`` batch) when its
    forward is not the chain of its leaf modules in registration order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"refine_dense needs an nn.Module, got {type(model).__name__}")
    leaves = _leaves(model)
    for index, (name, module) in enumerate(leaves):
        _check_leaf(name, module, first=index == 0)
    leaf_ids = {id(m) for _, m in leaves}
    for name, module in model.named_modules():
        if id(module) not in leaf_ids and list(module.parameters(recurse=False)):
            raise DenseStructureError(f"'{name or type(model).__name__}' owns parameters outside its layers")
    linears = [i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise DenseStructureError(f"a dense network needs at least two Linear layers (one hidden layer); found {len(linears)}")
    if linears[-1] != len(leaves) - 1:
        raise DenseStructureError(f"the last module must be the output Linear, found '{leaves[-1][0]}' after it")
    layers = []
    for start, stop in zip(linears[:-1], linears[1:], strict=True):
        width = leaves[start][1].out_features
        between = tuple(name for name, _ in leaves[start + 1 : stop])
        for name, module in leaves[start + 1 : stop]:
            if isinstance(module, nn.BatchNorm1d) and module.num_features != width:
                raise DenseStructureError(f"BatchNorm1d '{name}' has {module.num_features} features; '{leaves[start][0]}' makes {width}")
        if leaves[stop][1].in_features != width:
            raise DenseStructureError(f"'{leaves[stop][0]}' reads {leaves[stop][1].in_features} features; '{leaves[start][0]}' makes {width}")
        layers.append(DenseLayer(leaves[start][0], between, leaves[stop][0]))
    chain = DenseChain(tuple(name for name, _ in leaves), tuple(layers), leaves[-1][0])
    if example is not None:
        _check_chain_forward(model, chain, example)
    return chain


def _check_chain_forward(model: nn.Module, chain: DenseChain, example: Tensor) -> None:
    with eval_mode(model), torch.no_grad():
        expected = model(example)
        got = run_chain(model, chain, example)
    if expected.shape != got.shape or not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise DenseStructureError(
            f"{type(model).__name__}'s forward is not its modules applied in registration order "
            f"({', '.join(chain.modules)}); refine_dense rebuilds only such dense chains"
        )


def run_chain(model: nn.Module, chain: DenseChain, x: Tensor, taps: dict[str, list] | None = None) -> Tensor:
    """Apply the chain's modules in order; record each hidden layer's unit outputs in ``taps``."""
    ends = {layer.elementwise[-1] if layer.elementwise else layer.linear: layer.linear for layer in chain.layers}
    for name in chain.modules:
        x = model.get_submodule(name)(x)
        if taps is not None and name in ends:
            taps[ends[name]].append(x)
    return x


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every submodule's flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
    finally:
        for module, mode in modes:
            module.training = mode

