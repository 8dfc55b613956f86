"""ODF2NNA for dense networks: keep the useful units, rebuild a smaller MLP from them, retrain.

Balderas, Lastra and Benítez, "Optimizing dense feed-forward neural networks" (Neural Networks
2024, arXiv 2312.10560): a wide MLP is trained; a hidden unit whose output hardly varies over
the data adds (almost) a constant to the next layer, so it is removed and that constant is
folded into the next layer's bias; the useful units, with their learned weights, form a
smaller network, which is retrained briefly.

What is measured. A *unit* is one output feature of a hidden ``Linear`` followed by its
per-unit modules (``BatchNorm1d``, activation, ``Dropout``, in any order; the chain is found by
:func:`~autocompress.transforms.dense_chain.dense_chain`); its *output* ``a_j`` is the value the
next ``Linear`` reads, in eval mode, over the samples given (the training inputs of a Task).
:func:`measure_units` records per unit the mean, the standard deviation (population, ddof = 0)
and ``max |a_j - mean_j|``. The usefulness *statistic* (higher = more useful; a unit is removed
when its score is below ``epsilon``) is one of :data:`STATISTICS`:

- ``"std"``: ``std(a_j)``;
- ``"std_mean"``: ``std(a_j)`` divided by the mean std of the layer's units;
- ``"std_max"``: ``std(a_j)`` divided by the largest std of the layer;
- ``"contribution"``: ``std(a_j) * ||W_next[:, j]||_2``, the standard deviation (summed over
  the next layer's features in quadrature) of the unit's contribution ``W_next[:, j] a_j`` to
  the next layer;
- ``"contribution_max"``: the contribution divided by the layer's largest (scale-free, in
  [0, 1]). The default, chosen by the statistic comparison of ``benchmarks/odf2nna.py`` (see
  ``benchmarks/results/odf2nna.md``).

Every layer keeps at least one unit (its highest-scoring). With ``epsilon = 0`` nothing is
removed and the rebuilt model computes exactly what the original does.

Bias folding. Removing the units ``R`` of a layer changes the next Linear to
``z' = W[:, K] a_K + (b + W[:, R] mean(a_R))``, so ``z' - z = -W[:, R] (a_R - mean(a_R))``.
:func:`deviation_bound` propagates that, per feature, through the later layers (absolute
weights, each per-unit module's Lipschitz constant; an eval-mode BatchNorm's is
``|gamma| / sqrt(running_var + eps)``), which bounds ``|refined(x) - original(x)|`` for every
sample ``x`` the statistics were measured on. With removals in the last hidden layer only, the
bound is ``sum_{j in R} |W_out[:, j]| max |a_j - mean(a_j)|``.

The input model is never changed: the refined model is a deep copy whose Linear and
BatchNorm1d layers are replaced by smaller ones, so it keeps the original's class, forward
and state_dict keys (a ``TabularMLP`` stays a ``TabularMLP`` with narrower hidden layers).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autocompress.transforms.dense_chain import (
    LIPSCHITZ,
    DenseChain,
    DenseLayer,
    DenseStructureError,
    dense_chain,
    eval_mode,
    run_chain,
)

__all__ = [
    "DEFAULT_EPSILONS",
    "DEFAULT_STATISTIC",
    "STATISTICS",
    "UnitStats",
    "deviation_bound",
    "measure_units",
    "rebuild_dense",
    "select_units",
    "unit_scores",
]

STATISTICS = ("std", "std_mean", "std_max", "contribution", "contribution_max")
DEFAULT_STATISTIC = "contribution_max"
#: the epsilon grid of ``epsilon="auto"`` (for the layer-normalised statistics, scores in [0, 1])
DEFAULT_EPSILONS = (
    0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9,
)
NORMALISED = ("std_max", "contribution_max")


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class UnitStats:
    """Per-unit output statistics of one hidden layer over ``samples`` inputs (eval mode)."""

    mean: Tensor  # (units,) float64
    std: Tensor  # population standard deviation
    max_deviation: Tensor  # max over samples of |a - mean|
    samples: int


def measure_units(
    model: nn.Module, inputs: Tensor, chain: DenseChain | None = None, batch_size: int = 1024
) -> dict[str, UnitStats]:
    """Mean, std and max |a - mean| of every hidden unit's output over ``inputs``, keyed by Linear.

    One pass in eval mode without grad (modes restored), in float64 sums.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or len(inputs) == 0:
        raise ValueError("measure_units: inputs must be a non-empty batch tensor (N, features...)")
    chain = chain or dense_chain(model, inputs[:8])
    device = next(model.parameters()).device
    outputs: dict[str, list[Tensor]] = {layer.linear: [] for layer in chain.layers}
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            taps: dict[str, list] = {layer.linear: [] for layer in chain.layers}
            run_chain(model, chain, inputs[start : start + batch_size].to(device), taps)
            for name, values in taps.items():
                if values[0].dim() != 2:
                    raise DenseStructureError(
                        f"the units of '{name}' have shape {tuple(values[0].shape)} per batch; refine_dense "
                        "needs 2-D activations (samples, units): feed (N, features) inputs"
                    )
                outputs[name].append(values[0].double().cpu())
    stats = {}
    for name, parts in outputs.items():
        values = torch.cat(parts)
        mean = values.mean(dim=0)
        stats[name] = UnitStats(
            mean=mean,
            std=values.std(dim=0, unbiased=False),
            max_deviation=(values - mean).abs().amax(dim=0),
            samples=len(values),
        )
    return stats


def unit_scores(
    model: nn.Module, chain: DenseChain, stats: dict[str, UnitStats], statistic: str = DEFAULT_STATISTIC
) -> dict[str, Tensor]:
    """The usefulness score of every hidden unit (higher = more useful), keyed by Linear name."""
    check_statistic(statistic)
    scores = {}
    for layer in chain.layers:
        std = stats[layer.linear].std
        if statistic.startswith("contribution"):
            weight = model.get_submodule(layer.consumer).weight.detach().double().cpu()
            std = std * weight.norm(dim=0)
        if statistic.endswith("_max"):
            std = std / max(float(std.max()), 1e-300)
        elif statistic == "std_mean":
            std = std / max(float(std.mean()), 1e-300)
        scores[layer.linear] = std
    return scores


def select_units(scores: dict[str, Tensor], epsilon: float) -> dict[str, Tensor]:
    """Sorted indices of the units kept in each layer: score >= ``epsilon``, at least the best one."""
    check_epsilon(epsilon)
    kept = {}
    for name, score in scores.items():
        keep = torch.nonzero(score >= epsilon).flatten()
        kept[name] = keep if keep.numel() else score.argmax().reshape(1)
    return kept


# --------------------------------------------------------------------------- rebuilding


def _linear(original: nn.Linear, rows: Tensor, cols: Tensor, bias_shift: Tensor | None) -> nn.Linear:
    """A new Linear with ``original``'s weights at ``rows`` x ``cols``, bias + ``bias_shift``."""
    weight = original.weight.detach()
    needs_bias = original.bias is not None or bias_shift is not None
    layer = nn.Linear(len(cols), len(rows), bias=needs_bias, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight[rows][:, cols])
        if needs_bias:
            bias = torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device)
            if original.bias is not None:
                bias += original.bias.detach().double()
            if bias_shift is not None:
                bias += bias_shift.to(weight.device)
            layer.bias.copy_(bias[rows].to(weight.dtype))
    layer.train(original.training)
    return layer


def _batchnorm(original: nn.BatchNorm1d, keep: Tensor) -> nn.BatchNorm1d:
    new = copy.deepcopy(original)
    new.num_features = len(keep)
    for key in ("weight", "bias"):
        if getattr(original, key) is not None:
            setattr(new, key, nn.Parameter(getattr(original, key).detach()[keep].clone()))
    for key in ("running_mean", "running_var"):
        if getattr(original, key) is not None:
            setattr(new, key, getattr(original, key)[keep].clone())
    return new


def rebuild_dense(
    model: nn.Module, chain: DenseChain, kept: dict[str, Tensor], stats: dict[str, UnitStats]
) -> nn.Module:
    """A new model with only the ``kept`` units; removed units' mean contribution folded into biases.

    ``model`` is left untouched (the result is a deep copy with smaller layers swapped in).
    """
    small = copy.deepcopy(model)
    rows = {layer.linear: kept[layer.linear] for layer in chain.layers}
    cols = {layer.consumer: kept[layer.linear] for layer in chain.layers}
    shifts = {layer.consumer: _folded_shift(model, layer, kept[layer.linear], stats) for layer in chain.layers}
    for name in [*rows, chain.head]:
        original = model.get_submodule(name)
        every_row = torch.arange(original.out_features)
        every_col = torch.arange(original.in_features)
        new = _linear(original, rows.get(name, every_row), cols.get(name, every_col), shifts.get(name))
        small.set_submodule(name, new)
    for layer in chain.layers:
        for name in layer.elementwise:
            module = model.get_submodule(name)
            if isinstance(module, nn.BatchNorm1d):
                small.set_submodule(name, _batchnorm(module, kept[layer.linear]))
    return small


def _folded_shift(model: nn.Module, layer: DenseLayer, keep: Tensor, stats: dict[str, UnitStats]) -> Tensor | None:
    """``W_next[:, removed] @ mean(a_removed)``: what the removed units add on average."""
    removed = removed_units(keep, len(stats[layer.linear].mean))
    if removed.numel() == 0:
        return None
    weight = model.get_submodule(layer.consumer).weight.detach().double().cpu()
    return weight[:, removed] @ stats[layer.linear].mean[removed]


def removed_units(keep: Tensor, units: int) -> Tensor:
    mask = torch.ones(units, dtype=torch.bool)
    mask[keep] = False
    return torch.nonzero(mask).flatten()


def _lipschitz(module: nn.Module) -> Tensor | float:
    if isinstance(module, nn.BatchNorm1d):
        scale = (module.running_var.detach().double().cpu() + module.eps).rsqrt()
        return scale * module.weight.detach().double().cpu().abs() if module.weight is not None else scale
    return LIPSCHITZ[type(module)](module)


def deviation_bound(
    model: nn.Module, chain: DenseChain, kept: dict[str, Tensor], stats: dict[str, UnitStats]
) -> Tensor:
    """Per-output bound on ``|rebuild_dense(...)(x) - model(x)|`` for every measured sample ``x``.

    Removed units add ``|W_next[:, j]| max |a_j - mean_j|``; a feature's bound is carried through
    each per-unit module by its Lipschitz constant and through each Linear by absolute weights.
    """
    bound = None  # bound on the change of the kept units of the previous layer
    previous: DenseLayer | None = None
    for layer in [*chain.layers, None]:
        name = layer.linear if layer is not None else chain.head
        weight = model.get_submodule(name).weight.detach().double().cpu().abs()
        rows = kept[name] if layer is not None else torch.arange(weight.shape[0])
        change = torch.zeros(len(rows), dtype=torch.float64)
        if previous is not None:
            keep = kept[previous.linear]
            removed = removed_units(keep, weight.shape[1])
            change = weight[rows][:, keep] @ bound
            change += weight[rows][:, removed] @ stats[previous.linear].max_deviation[removed]
        if layer is not None:
            for module_name in layer.elementwise:
                factor = _lipschitz(model.get_submodule(module_name))
                change = change * (factor[rows] if isinstance(factor, Tensor) else factor)
        bound, previous = change, layer
    return bound


# --------------------------------------------------------------------------- checks


def check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown unit statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")


def check_epsilon(epsilon: object) -> None:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 (or 'auto' for refine_dense), got {epsilon!r}")
