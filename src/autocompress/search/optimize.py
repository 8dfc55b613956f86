"""Policy optimization against a fitted predictor under a cost budget C0 (SeerNet's third step).

maximize predicted_metric(policy)  subject to  cost(policy) <= C0

1. **Relaxation.** Each optimized gene gets a continuous position ``u ∈ [0, 1]`` along its
   ladder of legal values (identity first, most aggressive last). The predictor's input is
   the features of the ladder values interpolated linearly at ``u``; the cost is the exact
   analytic cost (``space.cost``; of a latency budget, the ``latency_model``'s estimate) at the
   snapped policy plus, per gene, the exact marginal cost of its next ladder step times the
   fractional part — a piecewise-linear interpolation of the true cost whose gradient is that
   marginal cost.
2. **Barrier ascent.** From a strictly feasible start (the uniform policy filling 90 % of the
   budget, :func:`~autocompress.search.ladders.project`), gradient ascent on
   ``predicted/σ_y + μ·log(1 - cost/C0)`` with the predictor's gradient
   (:meth:`AccuracyPredictor.gradient`), an adaptive step (grown by 1.25 on success, halved
   when a step leaves the feasible set or lowers the objective) and μ shrinking by 0.7 every
   10 steps, as the public code's PGD ascends the predicted accuracy under a BOPs threshold.
3. **Projection and exact check.** The positions are rounded to legal values; while the
   exact cost exceeds C0, the gene step with the least predicted loss per unit of cost saved
   is taken; then the budget is filled: steps back to milder values that keep the cost
   <= C0 are taken greedily (best prediction first) while the prediction stays within
   ``FILL_TOLERANCE`` label standard deviations of where the filling began. The returned policy meets C0 by exact count; a C0 that no
   legal policy meets raises ValueError naming the smallest reachable cost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autocompress.policy import Policy
from autocompress.predict.predictor import AccuracyPredictor, vector_features
from autocompress.search.ladders import cost_value, gene_ladders, project
from autocompress.search.strategies.greedy import parse_target
from autocompress.space import SearchSpace

if TYPE_CHECKING:
    from autocompress.hardware.policy_latency import PolicyLatency

FILL_TOLERANCE = 0.05


@dataclass(frozen=True)
class OptimizedPolicy:
    policy: Policy
    predicted: float  # the predictor's metric for the returned (legal) policy
    cost: float  # its exact analytic cost (key below)
    budget: float  # C0, absolute
    key: str  # "flops", "macs", "params", "bitops", "bytes" or "latency" (ms, needs a latency model)
    seconds: float
    steps: int


def optimize_policy(
    predictor: AccuracyPredictor,
    space: SearchSpace,
    budget: str | float,
    *,
    cost: str = "bitops",
    fields: Sequence[str] = ("prune", "weight_bits", "act_bits"),
    steps: int = 100,
    latency_model: PolicyLatency | None = None,
) -> OptimizedPolicy:
    """The legal policy of ``space`` with the best predicted metric whose ``cost`` is <= the budget.

    ``budget``: a ratio of the original's ``cost`` (float) or a constraint such as
    ``"bitops_ratio<=0.05"`` / ``"flops<=2e5"`` / ``"latency_ratio<=0.5"`` (a latency budget needs
    ``latency_model``, a :class:`~autocompress.hardware.policy_latency.PolicyLatency` of ``space``).
    ``predictor`` must be fitted on :func:`~autocompress.predict.policy_features` of ``space``.
    """
    start = time.perf_counter()
    key, bound, is_ratio = parse_target(budget, cost)
    base = cost_value(space, Policy(), key, latency_model)
    limit = bound * base if is_ratio else bound
    ladders = gene_ladders(space, fields)
    if not ladders:
        raise ValueError(f"no gene of {list(fields)} in this search space")
    problem = _Problem(predictor, space, ladders, key, limit, latency_model)
    floor = problem.exact(np.ones(len(ladders)))
    if floor > limit:
        raise ValueError(f"no legal policy meets {key}<={limit:.6g} ({key}_ratio {limit / base:.4g}); "
                         f"the smallest reachable is {key}={floor:.6g} ({key}_ratio {floor / base:.4g})")
    uniform, _, _ = project(space, ladders, np.zeros(len(ladders)), key, 0.9 * limit, latency_model)
    u = problem.positions(uniform)
    u, done = problem.ascend(u, steps)
    index = problem.repair(np.rint(u * problem.last).astype(int))
    vector = problem.vector(index)
    policy = space.decode(vector)
    exact = cost_value(space, policy, key, latency_model)
    assert exact <= limit, (exact, limit)  # repair() guarantees it; never return a policy over budget
    predicted = float(predictor.predict(vector_features(space, vector[None]))[0])
    return OptimizedPolicy(policy, predicted, exact, limit, key, time.perf_counter() - start, done)


class _Problem:
    """The relaxed problem: ladder positions <-> gene vectors, predicted metric, interpolated cost."""

    def __init__(self, predictor: AccuracyPredictor, space: SearchSpace, ladders: list, key: str, limit: float,
                 latency_model: PolicyLatency | None = None) -> None:
        self.predictor, self.space, self.ladders, self.key, self.limit = predictor, space, ladders, key, limit
        self.latency_model = latency_model
        self.identity = space.encode(Policy())
        self.costs_: dict[tuple[int, ...], float] = {}
        self.last = np.array([len(values) - 1 for _, values in ladders], dtype=float)
        self.scale = float(getattr(predictor, "y_scale_", 1.0))
        width = int(self.last.max()) + 1
        self.positions_ = np.array([position for position, _ in ladders])
        # ladder values and their features, padded with the last value
        self.values = np.array([values + [values[-1]] * (width - len(values)) for _, values in ladders], dtype=float)
        feature_rows = np.tile(self.identity, (width, 1))
        for row, (position, _) in enumerate(ladders):
            feature_rows[:, position] = self.values[row]
        self.features_ = vector_features(space, feature_rows).T[self.positions_]  # (genes, width)

    # ---- conversions
    def vector(self, index: np.ndarray) -> np.ndarray:
        vector = self.identity.copy()
        vector[self.positions_] = self.values[np.arange(len(index)), index]
        return vector

    def positions(self, policy: Policy) -> np.ndarray:
        encoded = self.space.encode(policy)[self.positions_]
        index = np.array([int(np.argmin(np.abs(self.values[i, : int(self.last[i]) + 1] - v))) for i, v in enumerate(encoded)])
        return index / np.maximum(self.last, 1)

    def exact(self, u: np.ndarray) -> float:
        index = tuple(np.rint(np.clip(u, 0, 1) * self.last).astype(int).tolist())
        if index not in self.costs_:  # the ascent revisits the same grid points: cost each once
            policy = self.space.decode(self.vector(np.array(index)))
            self.costs_[index] = cost_value(self.space, policy, self.key, self.latency_model)
        return self.costs_[index]

    # ---- relaxed objective pieces
    def features(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated features of the full gene vector, and d feature / d u per optimized gene."""
        t = np.clip(u, 0, 1) * self.last
        low = np.minimum(np.floor(t).astype(int), self.last.astype(int))
        high = np.minimum(low + 1, self.last.astype(int))
        rows = np.arange(len(u))
        lo_f, hi_f = self.features_[rows, low], self.features_[rows, high]
        full = vector_features(self.space, self.identity[None])[0]
        full[self.positions_] = lo_f + (t - low) * (hi_f - lo_f)
        return full, (hi_f - lo_f) * self.last

    def cost(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        """Piecewise-linear cost at ``u`` and its gradient (exact marginal cost of each gene's next step)."""
        t = np.clip(u, 0, 1) * self.last
        low = np.minimum(np.floor(t).astype(int), self.last.astype(int))
        here = self.exact(low / np.maximum(self.last, 1))
        grad = np.zeros(len(u))
        for i in range(len(u)):
            if low[i] < self.last[i]:
                step = low.copy()
                step[i] += 1
                grad[i] = (self.exact(step / np.maximum(self.last, 1)) - here) * self.last[i]
        return here + float(np.dot(grad / np.maximum(self.last, 1), t - low)), grad

    def objective(self, u: np.ndarray, mu: float) -> tuple[float, np.ndarray, float]:
        full, dfeat = self.features(u)
        predicted = float(self.predictor.predict(full[None])[0])
        cost, dcost = self.cost(u)
        slack = 1.0 - cost / self.limit
        if slack <= 0:
            return -np.inf, np.zeros(len(u)), cost
        dpred = self.predictor.gradient(full[None])[0][self.positions_] * dfeat
        value = predicted / self.scale + mu * np.log(slack)
        grad = dpred / self.scale - mu * dcost / (self.limit * slack)
        return value, grad, cost

    # ---- steps
    def ascend(self, u: np.ndarray, steps: int) -> tuple[np.ndarray, int]:
        mu, lr = 1.0, 0.05
        value, grad, _ = self.objective(u, mu)
        done = 0
        for done in range(1, steps + 1):
            norm = float(np.linalg.norm(grad)) or 1.0
            trial = np.clip(u + lr * grad / norm, 0, 1)
            trial_value, trial_grad, _ = self.objective(trial, mu)
            if np.isfinite(trial_value) and trial_value >= value:
                u, value, grad, lr = trial, trial_value, trial_grad, min(lr * 1.25, 0.5)
            else:
                lr *= 0.5
                if lr < 1e-4:
                    break
            if done % 10 == 0:
                mu *= 0.7
                value, grad, _ = self.objective(u, mu)
        return u, done

    def predict_index(self, index: np.ndarray) -> float:
        return float(self.predict_indices([index])[0])

    def predict_indices(self, indices: list[np.ndarray]) -> np.ndarray:
        vectors = np.stack([self.vector(index) for index in indices])
        return np.asarray(self.predictor.predict(vector_features(self.space, vectors)), dtype=float)

    def repair(self, index: np.ndarray) -> np.ndarray:
        """Legal ladder indices meeting the budget exactly, then greedy improvements that keep it."""
        last = self.last.astype(int)

        def cost_of(ix: np.ndarray) -> float:
            return self.exact(ix / np.maximum(self.last, 1))

        cost = cost_of(index)
        while cost > self.limit:  # step more aggressive: least predicted loss per unit of cost saved
            trials, savings = [], []
            for i in np.flatnonzero(index < last):
                trial = index.copy()
                trial[i] += 1
                saved = cost - cost_of(trial)
                if saved > 0:
                    trials.append(trial)
                    savings.append(saved)
            if not trials:  # cannot happen when the most aggressive policy meets the budget
                index = last.copy()
                break
            predicted = self.predict_indices([index, *trials])
            index = trials[int(np.argmin((predicted[0] - predicted[1:]) / np.array(savings)))]
            cost = cost_of(index)
        # fill: step milder while the budget holds and the prediction stays within FILL_TOLERANCE
        # (of the labels' std) of where the fill began; compressing less is not worse in truth,
        # and a predictor's small non-monotone wiggles should not leave the budget unused
        floor = self.predict_index(index) - FILL_TOLERANCE * self.scale
        while True:
            trials = []
            for i in np.flatnonzero(index > 0):
                trial = index.copy()
                trial[i] -= 1
                if cost_of(trial) <= self.limit:
                    trials.append(trial)
            if not trials:
                return index
            predicted = self.predict_indices(trials)  # one predictor call for every candidate step
            best = int(np.argmax(predicted))
            if predicted[best] < floor:
                return index
            index = trials[best]
