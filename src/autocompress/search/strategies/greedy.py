"""``greedy``: per-layer sensitivity curves, then per-layer ratios chosen to meet a cost target.

It follows AIMET's *greedy compression-ratio selection* (AIMET user guide, "AIMET Greedy
Compression Ratio Selection", ``Docs/user_guide/greedy_compression_ratio_selection.rst``
in github.com/quic/aimet), in two steps:

1. **Per-layer exploration** — each layer is compressed alone at every candidate value
   while every other layer is left unmodified, and the model is evaluated: one column of
   the "compression ratio vs. model performance" table per layer
   (:func:`~autocompress.search.sensitivity.sensitivity_sweep`; here one column
   per *gene*, i.e. per ``(layer, field)``). AIMET's optional *monotonic fit* is a running
   minimum along each column here (``monotonic=True``).
2. **Compression-ratio selection** (``method="aimet"``) — "it starts with a constant
   accuracy and finds the corresponding compression ratio for every applicable layer",
   computes the cost of the whole model and binary-searches the accuracy level until the
   target cost is met: the highest level whose policy meets the target wins. Each column
   takes its most aggressive value whose single-layer metric is at least the level. AIMET
   interpolates between candidate ratios; here only the swept values (the space's legal
   choices) are used, and the slack left under the target is then spent (not in AIMET):
   columns step back to milder values while the target still holds, largest single-layer
   metric gain first — otherwise, on a plateau of equal metrics, every target would get
   the most compressed policy.

``method="marginal"`` replaces step 2 by a marginal-cost greedy loop: starting from the
original model, repeatedly take the step ``(gene, more aggressive value)`` with the
smallest single-layer metric loss per unit of (analytic, whole-model) cost saved, until
the target is met.

Then the chosen policy is evaluated for real (``phase="greedy"``), and the same is done for
``extra_targets`` while budget remains, so that greedy contributes a front. A target that
the swept values cannot reach is reported through ``ctx.log`` with the closest reachable
cost, and that closest policy is evaluated. Costs are analytic (``ctx.cost``); values that
do not save cost on their own (e.g. weight bits when the cost is FLOPs) are never swept.

Budget: the sweep (#layers × #values per field, at most ``sweep_fraction`` of the budget;
coarsened beyond, see ``sensitivity.py``) plus one evaluation per target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autocompress.policy import Policy
from autocompress.search.objectives import COST_KEYS, Constraint
from autocompress.search.sensitivity import (
    IDENTITY,
    curve_metrics,
    gene_index,
    monotone,
    sensitivity_sweep,
)
from autocompress.search.strategies.base import SearchContext, Strategy

METHODS = ("aimet", "marginal")
Column = tuple[int, list[float], list[float]]  # gene position, values (mild -> aggressive), metrics


def parse_target(target: str | float, cost: str) -> tuple[str, float, bool]:
    """``"flops_ratio<=0.25"`` / ``"bitops<=1e6"`` / ``"latency_ratio<=0.5"`` / ``0.25`` -> (cost key, bound, bound is a ratio).

    The cost key is one of COST_KEYS or ``"latency"`` (milliseconds, or a ratio of the original's;
    it needs the search's latency model, ``ctx.latency_model``). A number is a ratio of ``cost``.
    """
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        if not 0 < target <= 1:
            raise ValueError(f"a numeric target is a {cost} ratio in (0, 1], got {target}")
        return cost, float(target), True
    constraint = Constraint.parse(target)
    if constraint.cost is None or not constraint.upper:
        raise ValueError(f"target {target!r} must bound a cost from above, e.g. 'latency_ratio<=0.5', "
                         "'flops_ratio<=0.25' or 'params<=1e5'")
    return constraint.cost, constraint.bound, constraint.is_ratio


def cost_bounds(constraints: Sequence[Constraint]) -> list[tuple[str, float, bool]]:
    """The search constraints that bound a cost from above, as :func:`parse_target` triples
    (latency bounds are filled when the search has a latency model, ``ctx.latency_model``)."""
    return [(c.cost, c.bound, c.is_ratio) for c in constraints if c.cost is not None and c.upper]


class GreedyStrategy(Strategy):
    """Sensitivity sweep, then per-layer values meeting cost targets (AIMET-style greedy selection).

    ``target``: the main cost target, ``"<cost>_ratio<=x"``, ``"<cost><=x"`` or a float ratio
    of ``cost``. ``extra_targets``: more ratios (of the same cost) evaluated while budget
    remains. ``fields``: the genes tuned. ``metric_threshold``: single-layer results below
    this metric are never chosen. ``sweep_fraction``: the sweep's share of the budget.
    """

    name = "greedy"

    def __init__(
        self,
        target: str | float = "flops_ratio<=0.25",
        metric_threshold: float | None = None,
        *,
        fields: Sequence[str] = ("prune", "rank", "weight_bits"),
        cost: str = "flops",
        method: str = "aimet",
        extra_targets: Sequence[float] = (0.75, 0.5, 0.35, 0.15, 0.1),
        monotonic: bool = True,
        sweep_fraction: float = 0.8,
    ) -> None:
        if cost not in COST_KEYS:
            raise ValueError(f"greedy: cost must be one of {list(COST_KEYS)}, got {cost!r}")
        if method not in METHODS:
            raise ValueError(f"greedy: method must be one of {list(METHODS)}, got {method!r}")
        unknown = set(fields) - set(IDENTITY)
        if not fields or unknown:
            raise ValueError(f"greedy: fields must be a non-empty subset of {list(IDENTITY)}, got {list(fields)}")
        if not 0 < sweep_fraction <= 1:
            raise ValueError(f"greedy: sweep_fraction must be in (0, 1], got {sweep_fraction}")
        self.cost, self.bound, self.is_ratio = parse_target(target, cost)
        self.extra_targets = tuple(parse_target(float(t), self.cost)[1] for t in extra_targets)
        self.metric_threshold = metric_threshold
        self.fields = tuple(fields)
        self.method = method
        self.monotonic = monotonic
        self.sweep_fraction = sweep_fraction

    # ------------------------------------------------------------------ run
    def run(self, ctx: SearchContext) -> None:
        base = float(getattr(ctx.cost(Policy()), self.cost))
        ratios = [self.bound if self.is_ratio else self.bound / base, *self.extra_targets]
        targets = list(dict.fromkeys(ratios))  # the main target first, duplicates dropped
        if ctx.remaining() <= 0:
            return
        curves = sensitivity_sweep(
            ctx, self.fields, max_evals=int(self.sweep_fraction * ctx.budget), cost=self.cost
        )
        if any(r.state == "skipped" for points in curves.values() for _, r in points):
            ctx.log("greedy: the budget ran out during the sensitivity sweep")
            return
        columns = self.columns(ctx, curves)
        if not columns:
            ctx.log(f"greedy: no gene of {list(self.fields)} saves {self.cost} at an acceptable metric; nothing to select")
            return
        for ratio in targets:
            if ctx.remaining() <= 0:
                return
            vector, reached = self.select(ctx, columns, ratio * base)
            label = f"{self.cost}_ratio<={ratio:g}"
            if reached > ratio * base:
                ctx.log(f"greedy: target {label} is not reachable with the swept values; closest reachable {self.cost}_ratio={reached / base:.4g}")
            else:
                ctx.log(f"greedy: target {label} -> predicted {self.cost}_ratio={reached / base:.4g}")
            record = ctx.evaluate(ctx.space.decode(vector), phase="greedy", target=label)
            if record.state == "skipped":
                return

    def columns(self, ctx: SearchContext, curves: dict) -> list[Column]:
        """One column per swept gene: values and (monotone-fitted) single-layer metrics."""
        index = gene_index(ctx.space)
        columns = []
        for key, points in curve_metrics(curves).items():
            values, metrics = [v for v, _ in points], [m for _, m in points]
            metrics = monotone(metrics) if self.monotonic else metrics
            if self.metric_threshold is not None:  # after the fit: a monotone column keeps a prefix
                kept = [i for i, m in enumerate(metrics) if m >= self.metric_threshold]
                values, metrics = [values[i] for i in kept], [metrics[i] for i in kept]
            if values:
                columns.append((index[key], values, metrics))
        return columns

    def select(self, ctx: SearchContext, columns: list[Column], budget_cost: float) -> tuple[np.ndarray, float]:
        """Genes meeting ``budget_cost`` (or the closest reachable) and their analytic cost."""
        top = ctx.original.values["metric"]
        if not columns:
            identity = ctx.space.encode(Policy())
            return identity, _cost(ctx, identity, self.cost)
        if self.method == "aimet":
            return _select_by_level(ctx, columns, budget_cost, self.cost, top)
        return _select_marginal(ctx, columns, budget_cost, self.cost, top)


def _cost(ctx: SearchContext, vector: np.ndarray, key: str) -> float:
    return float(getattr(ctx.cost(ctx.space.decode(vector)), key))


def _at_level(identity: np.ndarray, columns: list[Column], level: float) -> np.ndarray:
    """Each column at its most aggressive value whose single-layer metric is >= ``level``."""
    vector = identity.copy()
    for position, values, metrics in columns:
        passing = [v for v, m in zip(values, metrics, strict=True) if m >= level]
        if passing:
            vector[position] = passing[-1]
    return vector


def _select_by_level(
    ctx: SearchContext, columns: list[Column], budget_cost: float, key: str, top: float
) -> tuple[np.ndarray, float]:
    """AIMET: binary search for the highest constant accuracy level whose policy meets the cost."""
    identity = ctx.space.encode(Policy())
    levels = sorted({m for _, _, metrics in columns for m in metrics})
    cheapest = _at_level(identity, columns, levels[0])
    cheapest_cost = _cost(ctx, cheapest, key)
    if cheapest_cost > budget_cost:
        return cheapest, cheapest_cost
    # cost is non-increasing as the level falls: find the highest level that meets the budget
    low, high = 0, len(levels) - 1  # levels[low] meets it
    while low < high:
        middle = (low + high + 1) // 2
        if _cost(ctx, _at_level(identity, columns, levels[middle]), key) <= budget_cost:
            low = middle
        else:
            high = middle - 1
    return _relax(ctx, columns, _at_level(identity, columns, levels[low]), budget_cost, key, top)


def _relax(
    ctx: SearchContext, columns: list[Column], vector: np.ndarray, budget_cost: float, key: str, top: float
) -> tuple[np.ndarray, float]:
    """Spend the slack: step columns back to milder values while the cost still fits.

    Each step takes the largest single-layer metric gain (``top``: the original's metric),
    then the smallest cost increase; steps that lose metric are not taken. On a metric
    plateau this keeps a 0.75 target from returning the policy of a 0.1 target.
    """
    while True:
        best: tuple[float, float, np.ndarray] | None = None
        for position, values, metrics in columns:
            if vector[position] not in values:
                continue
            j = values.index(vector[position])
            trial = vector.copy()
            trial[position] = values[j - 1] if j > 0 else IDENTITY[ctx.space.genes[position].field]
            cost = _cost(ctx, trial, key)
            gain = (metrics[j - 1] if j > 0 else top) - metrics[j]
            if cost <= budget_cost and gain >= 0 and (best is None or (-gain, cost) < (-best[0], best[1])):
                best = (gain, cost, trial)
        if best is None:
            return vector, _cost(ctx, vector, key)
        vector = best[2]


def _select_marginal(
    ctx: SearchContext, columns: list[Column], budget_cost: float, key: str, top: float
) -> tuple[np.ndarray, float]:
    """Repeatedly take the step with the least metric loss (from ``top``) per unit of cost saved."""
    vector = ctx.space.encode(Policy())
    current = [-1] * len(columns)  # position on each column's ladder (-1: identity)
    cost = _cost(ctx, vector, key)
    while cost > budget_cost:
        best: tuple[float, float, int, int] | None = None
        for c, (position, values, metrics) in enumerate(columns):
            loss_now = 0.0 if current[c] < 0 else top - metrics[current[c]]
            for j in range(current[c] + 1, len(values)):
                trial = vector.copy()
                trial[position] = values[j]
                saved = cost - _cost(ctx, trial, key)
                if saved <= 0:
                    continue
                score = max(top - metrics[j] - loss_now, 0.0) / saved
                candidate = (score, -saved, c, j)
                if best is None or candidate < best:
                    best = candidate
        if best is None:  # nothing left that saves cost: the closest reachable
            break
        _, _, c, j = best
        vector[columns[c][0]] = columns[c][1][j]
        current[c] = j
        cost = _cost(ctx, vector, key)
    return vector, cost

