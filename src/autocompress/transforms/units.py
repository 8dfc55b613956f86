"""ODF2NNA for dense networks: keep the useful units, rebuild a smaller MLP from them, retrain.

Balderas, Lastra and Benítez, "Optimizing dense feed-forward neural networks" (Neural Networks
2024, arXiv 2312.10560): a wide MLP is trained; a hidden unit whose output hardly varies over
the data adds (almost) a constant to the next layer, so it is removed and that constant is
folded into the next layer's bias; the useful units, with their learned weights, form a
smaller network, which is retrained briefly.

What is measured. A *unit* is one output feature of a hidden ``Linear`` followed by its
per-unit modules (``BatchNorm1d``, activation, ``Dropout``, in any order); its *output* ``a_j``
is the value the next ``Linear`` reads, in eval mode, over the samples given (the training
inputs of a Task). :func:`measure_units` records per unit the mean, the standard deviation
(population, ddof = 0) and ``max |a_j - mean_j|``. The usefulness *statistic* (higher = more
useful; a unit is removed when its score is below ``epsilon``) is one of :data:`STATISTICS`:

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

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor, nn

from autocompress.cost import count_cost
from autocompress.finetune import evaluate_loss, evaluate_metric, train
from autocompress.search.pareto import non_dominated
from autocompress.task import Task
from autocompress.transforms.apply import set_submodule

__all__ = [
    "DEFAULT_EPSILONS",
    "DEFAULT_STATISTIC",
    "STATISTICS",
    "DenseChain",
    "DenseLayer",
    "DenseStructureError",
    "LayerUnits",
    "RefineReport",
    "Refined",
    "SweepPoint",
    "UnitStats",
    "choose_epsilon",
    "default_loss_tolerance",
    "default_tolerance",
    "dense_chain",
    "deviation_bound",
    "measure_units",
    "rebuild_dense",
    "refine_dense",
    "reinitialized",
    "select_units",
    "sweep_epsilon",
    "unit_scores",
]

STATISTICS = ("std", "std_mean", "std_max", "contribution", "contribution_max")
DEFAULT_STATISTIC = "contribution_max"
#: the epsilon grid of ``epsilon="auto"`` (for the layer-normalised statistics, scores in [0, 1])
DEFAULT_EPSILONS = (
    0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9,
)
_NORMALISED = ("std_max", "contribution_max")
#: ``refine_dense(epsilon="auto")``: the refined model's validation cross-entropy may exceed the original's by this
DEFAULT_LOSS_TOLERANCE = 0.05

#: per-unit modules between two Linear layers and their Lipschitz constants (a bound on |f'|)
_LIPSCHITZ: dict[type, Callable[[nn.Module], float]] = {
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
    t.__name__ for t in _LIPSCHITZ if t not in (nn.Identity, nn.Dropout)
)


class DenseStructureError(ValueError):
    """The model is not a dense feed-forward chain that :func:`refine_dense` can rebuild."""


# --------------------------------------------------------------------------- structure


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
    if isinstance(module, nn.Linear) or type(module) in _LIPSCHITZ:
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
    with _eval_mode(model), torch.no_grad():
        expected = model(example)
        got = _run_chain(model, chain, example)
    if expected.shape != got.shape or not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise DenseStructureError(
            f"{type(model).__name__}'s forward is not its modules applied in registration order "
            f"({', '.join(chain.modules)}); refine_dense rebuilds only such dense chains"
        )


def _run_chain(model: nn.Module, chain: DenseChain, x: Tensor, taps: dict[str, list] | None = None) -> Tensor:
    """Apply the chain's modules in order; record each hidden layer's unit outputs in ``taps``."""
    ends = {layer.elementwise[-1] if layer.elementwise else layer.linear: layer.linear for layer in chain.layers}
    for name in chain.modules:
        x = model.get_submodule(name)(x)
        if taps is not None and name in ends:
            taps[ends[name]].append(x)
    return x


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every submodule's flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
    finally:
        for module, mode in modes:
            module.training = mode


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
    with _eval_mode(model), torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            taps: dict[str, list] = {layer.linear: [] for layer in chain.layers}
            _run_chain(model, chain, inputs[start : start + batch_size].to(device), taps)
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
    _check_statistic(statistic)
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
    _check_epsilon(epsilon)
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
        set_submodule(small, name, new)
    for layer in chain.layers:
        for name in layer.elementwise:
            module = model.get_submodule(name)
            if isinstance(module, nn.BatchNorm1d):
                set_submodule(small, name, _batchnorm(module, kept[layer.linear]))
    return small


def _folded_shift(model: nn.Module, layer: DenseLayer, keep: Tensor, stats: dict[str, UnitStats]) -> Tensor | None:
    """``W_next[:, removed] @ mean(a_removed)``: what the removed units add on average."""
    removed = _removed(keep, len(stats[layer.linear].mean))
    if removed.numel() == 0:
        return None
    weight = model.get_submodule(layer.consumer).weight.detach().double().cpu()
    return weight[:, removed] @ stats[layer.linear].mean[removed]


def _removed(keep: Tensor, units: int) -> Tensor:
    mask = torch.ones(units, dtype=torch.bool)
    mask[keep] = False
    return torch.nonzero(mask).flatten()


def _lipschitz(module: nn.Module) -> Tensor | float:
    if isinstance(module, nn.BatchNorm1d):
        scale = (module.running_var.detach().double().cpu() + module.eps).rsqrt()
        return scale * module.weight.detach().double().cpu().abs() if module.weight is not None else scale
    return _LIPSCHITZ[type(module)](module)


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
            removed = _removed(keep, weight.shape[1])
            change = weight[rows][:, keep] @ bound
            change += weight[rows][:, removed] @ stats[previous.linear].max_deviation[removed]
        if layer is not None:
            for module_name in layer.elementwise:
                factor = _lipschitz(model.get_submodule(module_name))
                change = change * (factor[rows] if isinstance(factor, Tensor) else factor)
        bound, previous = change, layer
    return bound


# --------------------------------------------------------------------------- reports


class LayerUnits(BaseModel):
    """One hidden layer's units: how many were kept, which, and their scores."""

    layer: str
    units: int
    kept: int
    removed: int
    kept_units: list[int]
    score_min: float
    score_median: float
    score_max: float
    removed_score_max: float | None  # the most useful removed unit's score (None: none removed)


class SweepPoint(BaseModel):
    """One epsilon of a sweep: the refined model's size and validation metric."""

    epsilon: float
    params: int
    hidden: list[int]
    metric_before_retrain: float
    metric: float  # after retraining
    loss: float | None = None  # validation task loss after retraining
    on_front: bool = False


class RefineReport(BaseModel):
    """What :func:`refine_dense` measured and did."""

    statistic: str
    epsilon: float
    samples: int
    layers: list[LayerUnits]
    hidden: list[int]
    params_before: int
    params_after: int
    output_bound: float  # max over outputs of :func:`deviation_bound` (before retraining)
    metric_name: str | None = None
    metric_original: float | None = None  # validation split
    metric_before_retrain: float | None = None
    metric_retrained: float | None = None
    retrain_epochs: float = 0.0
    tolerance: float | None = None
    loss_original: float | None = None  # validation task loss of the original
    loss_tolerance: float | None = None
    met_tolerance: bool | None = None
    sweep: list[SweepPoint] = []

    @property
    def params_removed(self) -> float:
        """Fraction of the parameters removed (0-1)."""
        return 1.0 - self.params_after / self.params_before


class Refined(NamedTuple):
    """The refined model and its report (unpack: ``model, report = refine_dense(...)``)."""

    model: nn.Module
    report: RefineReport


# --------------------------------------------------------------------------- refine / sweep


def default_tolerance(task: Task, original_metric: float) -> float:
    """0.5 points for an accuracy (percent); otherwise 1 % of the original metric's magnitude."""
    return 0.5 if task.metric == "accuracy" else 0.01 * abs(original_metric)


def _params(model: nn.Module, example: Tensor) -> int:
    return count_cost(model, example).params


def _layer_report(name: str, score: Tensor, keep: Tensor) -> LayerUnits:
    removed = _removed(keep, len(score))
    return LayerUnits(
        layer=name,
        units=len(score),
        kept=len(keep),
        removed=len(removed),
        kept_units=keep.tolist(),
        score_min=float(score.min()),
        score_median=float(score.median()),
        score_max=float(score.max()),
        removed_score_max=float(score[removed].max()) if removed.numel() else None,
    )


@dataclass
class _Measured:
    """What refining needs, measured once per model: its chain, unit stats and scores."""

    chain: DenseChain
    stats: dict[str, UnitStats]
    scores: dict[str, Tensor]
    example: Tensor


def _measure(model: nn.Module, inputs: Tensor, statistic: str) -> _Measured:
    _check_statistic(statistic)
    chain = dense_chain(model, inputs[:8])
    stats = measure_units(model, inputs, chain)
    return _Measured(chain, stats, unit_scores(model, chain, stats, statistic), inputs[:1].clone())


def _refine_once(model: nn.Module, measured: _Measured, epsilon: float, statistic: str) -> Refined:
    kept = select_units(measured.scores, epsilon)
    small = rebuild_dense(model, measured.chain, kept, measured.stats)
    bound = deviation_bound(model, measured.chain, kept, measured.stats)
    report = RefineReport(
        statistic=statistic,
        epsilon=float(epsilon),
        samples=next(iter(measured.stats.values())).samples,
        layers=[_layer_report(name, measured.scores[name], kept[name]) for name in kept],
        hidden=[len(kept[layer.linear]) for layer in measured.chain.layers],
        params_before=_params(model, measured.example),
        params_after=_params(small, measured.example),
        output_bound=float(bound.max()),
    )
    return Refined(small, report)


def _retrain(model: nn.Module, task: Task, epochs: float, seed: int, lr: float) -> None:
    if epochs > 0:
        train(model, task, epochs=epochs, lr=lr, seed=seed)


def sweep_epsilon(
    model: nn.Module,
    task: Task,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    *,
    statistic: str = DEFAULT_STATISTIC,
    retrain_epochs: float = 5.0,
    lr: float = 1e-3,
    seed: int = 0,
    stop_when: Callable[[SweepPoint], bool] | None = None,
) -> list[tuple[SweepPoint, nn.Module]]:
    """Refine at each epsilon, retrain, measure the validation metric; mark the non-dominated points.

    Unit statistics come from ``task``'s training inputs. Epsilons that keep the same units share
    one refined model. Returns ``(point, retrained model)`` pairs in the order of ``epsilons``,
    stopping after the first point for which ``stop_when(point)`` is true (if given);
    ``point.on_front``: no other point has fewer-or-equal params and a higher-or-equal metric.
    """
    if not epsilons:
        raise ValueError("sweep_epsilon: epsilons is empty; give at least one epsilon >= 0")
    for epsilon in epsilons:
        _check_epsilon(epsilon)
    measured = _measure(model, task.split("train")[0], statistic)
    done: dict[tuple, tuple[SweepPoint, nn.Module]] = {}
    results = []
    for epsilon in epsilons:
        kept = select_units(measured.scores, epsilon)
        key = tuple(tuple(k.tolist()) for k in kept.values())
        if key not in done:
            small, report = _refine_once(model, measured, epsilon, statistic)
            before = evaluate_metric(small, task, "val")
            _retrain(small, task, retrain_epochs, seed, lr)
            point = SweepPoint(
                epsilon=epsilon,
                params=report.params_after,
                hidden=report.hidden,
                metric_before_retrain=before,
                metric=evaluate_metric(small, task, "val"),
                loss=evaluate_loss(small, task, "val"),
            )
            done[key] = (point, small)
        point, small = done[key]
        results.append((point.model_copy(update={"epsilon": float(epsilon)}), small))
        if stop_when is not None and stop_when(results[-1][0]):
            break
    mask = non_dominated(np.array([[p.params, p.metric] for p, _ in results], dtype=float), ["minimize", "maximize"])
    return [(p.model_copy(update={"on_front": bool(on)}), m) for (p, m), on in zip(results, mask, strict=True)]


def choose_epsilon(points: Sequence[SweepPoint], original_metric: float, tolerance: float, *,
                   original_loss: float | None = None, loss_tolerance: float | None = None) -> SweepPoint | None:
    """The point with the largest epsilon that passes: metric at most ``tolerance`` below the original's
    and, with ``loss_tolerance``, validation loss at most ``loss_tolerance`` above ``original_loss``.

    None when no point qualifies.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 (in the metric's units), got {tolerance}")
    good = [p for p in points if passes(p, original_metric, tolerance, original_loss, loss_tolerance)]
    return max(good, key=lambda p: (p.epsilon, -p.params)) if good else None


def passes(point: SweepPoint, original_metric: float, tolerance: float, original_loss: float | None = None,
           loss_tolerance: float | None = None) -> bool:
    """Whether a sweep point is within the metric tolerance (and the loss tolerance, when given)."""
    if point.metric < original_metric - tolerance:
        return False
    if loss_tolerance is None or original_loss is None or point.loss is None:
        return True
    return point.loss <= original_loss + loss_tolerance


def default_loss_tolerance(task: Task) -> float | None:
    """0.05 nats of validation cross-entropy for classification; None (metric only) otherwise."""
    return DEFAULT_LOSS_TOLERANCE if task.is_classification else None


def refine_dense(
    model: nn.Module,
    data: Tensor | Task,
    epsilon: float | str = 0.05,
    *,
    statistic: str = DEFAULT_STATISTIC,
    tolerance: float | None = None,
    loss_tolerance: float | str | None = "auto",
    retrain_epochs: float | None = None,
    epsilons: Sequence[float] | None = None,
    lr: float = 1e-3,
    seed: int = 0,
) -> Refined:
    """Remove the hidden units of a dense ``model`` whose usefulness score is below ``epsilon``.

    ``data``: the inputs the unit statistics are measured on, or a Task (its training inputs;
    then the validation metric is reported and the model can be retrained). ``epsilon``: a
    float >= 0, or ``"auto"`` (needs a Task): :func:`sweep_epsilon` over ``epsilons`` (default
    :data:`DEFAULT_EPSILONS`), each refined model retrained for ``retrain_epochs`` (default 5),
    and the largest epsilon whose validation metric is at most ``tolerance`` below the
    original's (default :func:`default_tolerance`) and whose validation loss is at most
    ``loss_tolerance`` above the original's is chosen (``"auto"``:
    :func:`default_loss_tolerance`, 0.05 nats for classification: on validation sets of a few
    dozen samples accuracy moves in steps of several points and cannot tell a safe refinement
    from one that has lost confidence; the loss can; ``None``: metric only); if none is,
    nothing is removed.
    The sweep runs from the largest epsilon down and stops at the first that qualifies (the
    report's ``sweep`` holds the points evaluated; :func:`sweep_epsilon` gives the whole curve).
    With a float epsilon the model is retrained only when ``retrain_epochs`` > 0 (default 0).
    Returns ``Refined(model, report)``; the input model is never changed.
    """
    task = data if isinstance(data, Task) else None
    inputs = task.split("train")[0] if task is not None else data
    if not isinstance(inputs, Tensor):
        raise TypeError(f"refine_dense: data must be an input tensor or a Task, got {type(data).__name__}")
    _check_statistic(statistic)
    if isinstance(epsilon, str):
        if epsilon != "auto":
            raise ValueError(f"refine_dense: epsilon must be a number >= 0 or 'auto', got {epsilon!r}")
        if task is None:
            raise ValueError("refine_dense: epsilon='auto' needs a Task (it retrains and validates), got a tensor")
        return _refine_auto(model, task, statistic, tolerance, loss_tolerance, retrain_epochs, epsilons, lr, seed)
    _check_epsilon(epsilon)
    retrain_epochs = 0.0 if retrain_epochs is None else retrain_epochs
    if retrain_epochs > 0 and task is None:
        raise ValueError("refine_dense: retrain_epochs > 0 needs a Task to train on, got a tensor")
    small, report = _refine_once(model, _measure(model, inputs, statistic), epsilon, statistic)
    if task is not None:
        report = _with_metrics(report, model, small, task, retrain_epochs, seed, lr)
    return Refined(small, report)


def _with_metrics(report: RefineReport, model: nn.Module, small: nn.Module, task: Task, epochs: float, seed: int, lr: float) -> RefineReport:
    before = evaluate_metric(small, task, "val")
    _retrain(small, task, epochs, seed, lr)
    return report.model_copy(update={
        "metric_name": task.metric_name,
        "metric_original": evaluate_metric(model, task, "val"),
        "metric_before_retrain": before,
        "metric_retrained": evaluate_metric(small, task, "val") if epochs > 0 else None,
        "retrain_epochs": float(epochs),
    })


def _refine_auto(model: nn.Module, task: Task, statistic: str, tolerance: float | None,
                 loss_tolerance: float | str | None, retrain_epochs: float | None,
                 epsilons: Sequence[float] | None, lr: float, seed: int) -> Refined:
    if epsilons is None and statistic not in _NORMALISED:
        raise ValueError(
            f"refine_dense: the default epsilon grid is for the layer-normalised statistics "
            f"({', '.join(_NORMALISED)}); with statistic {statistic!r} pass epsilons=[...]"
        )
    retrain_epochs = 5.0 if retrain_epochs is None else retrain_epochs
    original = evaluate_metric(model, task, "val")
    original_loss = evaluate_loss(model, task, "val")
    tolerance = default_tolerance(task, original) if tolerance is None else tolerance
    if not tolerance >= 0:
        raise ValueError(f"refine_dense: tolerance must be >= 0 (in the metric's units), got {tolerance}")
    if loss_tolerance == "auto":
        loss_tolerance = default_loss_tolerance(task)
    if loss_tolerance is not None and (isinstance(loss_tolerance, str) or not loss_tolerance >= 0):
        raise ValueError(f"refine_dense: loss_tolerance must be a number >= 0, 'auto' or None, got {loss_tolerance!r}")
    grid = list(epsilons if epsilons is not None else DEFAULT_EPSILONS)
    for value in grid:
        _check_epsilon(value)
    # largest epsilon first: the first one within tolerance is the answer, smaller ones need no retraining
    descending = sorted(set(grid), reverse=True)
    sweep = sweep_epsilon(model, task, descending, statistic=statistic, retrain_epochs=retrain_epochs,
                          lr=lr, seed=seed,
                          stop_when=lambda p: passes(p, original, tolerance, original_loss, loss_tolerance))
    points = [p for p, _ in sweep]
    chosen = choose_epsilon(points, original, tolerance, original_loss=original_loss, loss_tolerance=loss_tolerance)
    measured = _measure(model, task.split("train")[0], statistic)
    if chosen is None:  # nothing is good enough: keep every unit, do not retrain
        small, report = _refine_once(model, measured, 0.0, statistic)
        met, retrained = False, None
    else:
        _, report = _refine_once(model, measured, chosen.epsilon, statistic)
        small = next(m for p, m in sweep if p.epsilon == chosen.epsilon)
        met, retrained = True, chosen.metric
    report = report.model_copy(update={
        "metric_name": task.metric_name,
        "metric_original": original,
        "metric_before_retrain": chosen.metric_before_retrain if chosen else original,
        "metric_retrained": retrained,
        "retrain_epochs": float(retrain_epochs) if chosen else 0.0,
        "tolerance": float(tolerance),
        "loss_original": original_loss,
        "loss_tolerance": None if loss_tolerance is None else float(loss_tolerance),
        "met_tolerance": met,
        "sweep": points,
    })
    return Refined(small, report)


def reinitialized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters re-drawn (``reset_parameters``), seeded.

    The same architecture "trained from scratch": the control arm of the ODF2NNA experiment.
    """
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh


# --------------------------------------------------------------------------- checks


def _check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown unit statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")


def _check_epsilon(epsilon: object) -> None:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 (or 'auto' for refine_dense), got {epsilon!r}")
