"""``seernet``: label few informative policies, fit an accuracy predictor, optimize each budget on it.

SeerNet (Wang et al., IJCV 2023, arXiv 2304.06393; code ZiweiWangTHU/SeerNet) in four steps,
every real evaluation going through the study like any other strategy's:

1. ``initial`` random policies are evaluated (``phase="label"``);
2. ``rounds`` times: a predictor (:class:`~autocompress.predict.AccuracyPredictor`, ``kind``)
   is fitted on every label so far and ``batch`` new policies are chosen where it is most
   unsure (:func:`~autocompress.predict.evolve_informative`, SeerNet's evolutionary
   selection) and evaluated (``phase="select"``);
3. the predictor is fitted on all labels and, for every budget C0 in ``targets``, the policy
   maximizing the predicted metric under ``cost <= C0`` is found by
   :func:`~autocompress.predict.optimize.optimize_policy` (relaxed barrier ascent, then
   projection with an exact cost check);
4. each optimized policy is evaluated for real (``phase="optimize"``, ``target=...``).

``targets`` default to the search's cost constraints, else to a geometric ladder of ratios
(0.5 … 0.01) so that the strategy returns a front. Deviations from the paper: the
predictor is the one our benchmark ranks best (``kind="auto"``) rather than always the MLP;
the paper's counterfactual sample weighting is not used; an unreachable target is logged
with the smallest reachable cost and skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autocompress.predict import AccuracyPredictor, evolve_informative, policy_features
from autocompress.predict.optimize import optimize_policy
from autocompress.search.objectives import COST_KEYS
from autocompress.search.strategies.base import SearchContext, Strategy
from autocompress.search.strategies.greedy import cost_bounds, parse_target

DEFAULT_RATIOS = (0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)


class SeerNetStrategy(Strategy):
    """Few informative labels, a predictor, and one optimized policy per cost budget."""

    name = "seernet"

    def __init__(
        self,
        targets: Sequence[str | float] | None = None,
        *,
        cost: str = "flops",
        fields: Sequence[str] = ("prune", "rank", "weight_bits", "act_bits"),
        initial: int = 12,
        rounds: int = 2,
        batch: int = 6,
        kind: str = "auto",
        steps: int = 100,
    ) -> None:
        if cost not in COST_KEYS:
            raise ValueError(f"seernet: cost must be one of {list(COST_KEYS)}, got {cost!r}")
        if initial < 2 or rounds < 0 or batch < 1:
            raise ValueError(f"seernet: need initial >= 2, rounds >= 0, batch >= 1; got {initial}, {rounds}, {batch}")
        self.targets = None if targets is None else [parse_target(t, cost) for t in targets]
        self.cost, self.fields, self.initial, self.rounds, self.batch = cost, tuple(fields), initial, rounds, batch
        self.kind, self.steps = kind, steps

    def run(self, ctx: SearchContext) -> None:
        space = ctx.space
        rng = np.random.default_rng([ctx.seed, 7])
        labelled = ctx.evaluate_many([space.random_policy(rng) for _ in range(self.initial)], phase="label")
        for round_ in range(self.rounds):
            if ctx.remaining() <= 0 or any(r.state == "skipped" for r in labelled):
                return
            predictor = self._fit(ctx, labelled)
            chosen = evolve_informative(predictor, space, self.batch, [r.policy for r in labelled],
                                        rng=np.random.default_rng([ctx.seed, 11, round_]))
            labelled += ctx.evaluate_many(chosen, phase="select", round=round_)
        if any(r.state == "skipped" for r in labelled):
            return
        predictor = self._fit(ctx, labelled)
        for key, bound, is_ratio in self._targets(ctx):
            if ctx.remaining() <= 0:
                return
            label = f"{key}_ratio<={bound:g}" if is_ratio else f"{key}<={bound:g}"
            try:
                result = optimize_policy(predictor, space, label, cost=key, fields=self.fields, steps=self.steps)
            except ValueError as error:
                ctx.log(f"seernet: {error}; skipped")
                continue
            ctx.log(f"seernet: {label} -> predicted {result.predicted:.2f} in {result.seconds:.2f} s")
            record = ctx.evaluate(result.policy, phase="optimize", target=label, predicted=result.predicted)
            if record.state == "skipped":
                return

    def _fit(self, ctx: SearchContext, records: list) -> AccuracyPredictor:
        ok = [r for r in records if r.ok]
        if len(ok) < 2:
            raise RuntimeError("seernet: fewer than 2 successful labels; every labelling evaluation failed")
        X = policy_features(ctx.space, [r.policy for r in ok])
        return AccuracyPredictor(self.kind, seed=ctx.seed).fit(X, [r.values["metric"] for r in ok])

    def _targets(self, ctx: SearchContext) -> list[tuple[str, float, bool]]:
        if self.targets is not None:
            return self.targets
        return cost_bounds(ctx.constraints) or [(self.cost, r, True) for r in DEFAULT_RATIOS]

