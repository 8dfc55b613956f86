"""``predicted``: evolution run on an accuracy predictor; real evaluations only for the most promising.

The first ``initial`` labels are drawn like seernet's (``init="stratified"``: one policy
filling each of a geometric ladder of cost ratios, 0.5 … 0.01; or ``"random"``); only
genes of ``fields`` vary (default: the fields that change the cost). Each round: fit the
predictor (:class:`~autocompress.predict.AccuracyPredictor`, with the uncompressed model as
a free label) on every real result so far; evolve a population of encoded policies *in silico* for
``generations`` (on :func:`~autocompress.evolve.run_generations`) — parents by non-dominated
rank on (optimistic predicted metric, exact analytic cost), uniform crossover, per-gene
mutation to another legal choice; then evaluate for real the ``batch`` new policies spread
evenly in log-cost along the predicted front. The optimistic metric is ``mean + kappa ·
std`` (an upper confidence bound), so that unsure regions get tried. Records are tagged
``phase="predicted"`` and ``round``.

:func:`predicted_front` is the in-silico part, usable by any strategy holding a predictor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autocompress.evolve import breed, random_genes, run_generations
from autocompress.policy import Policy
from autocompress.predict import AccuracyPredictor
from autocompress.predict.predictor import vector_features
from autocompress.predict.selection import gene_choices
from autocompress.search.ladders import cost_fields
from autocompress.search.objectives import COST_KEYS
from autocompress.search.pareto import non_dominated
from autocompress.search.strategies.base import SearchContext, Strategy
from autocompress.search.strategies.seernet import (
    DEFAULT_RATIOS,
    INITS,
    first_labels,
    fit_predictor,
)
from autocompress.space import SearchSpace


def predicted_front(
    predictor: AccuracyPredictor,
    space: SearchSpace,
    cost: str,
    *,
    population: int = 64,
    generations: int = 15,
    mutation: float = 0.1,
    kappa: float = 0.5,
    start: list[Policy] = (),
    fields: Sequence[str] | None = None,
    rng: np.random.Generator | int | None = None,
) -> list[tuple[Policy, float, float]]:
    """(policy, optimistic predicted metric, exact cost) on the predicted non-dominated front, cheapest first.

    With ``fields``, only genes of those fields vary (the others stay at identity).
    """
    rng = np.random.default_rng(rng)
    choices = gene_choices(space, fields)
    members = [space.encode(p) for p in start][:population]
    while len(members) < population:
        members.append(random_genes(choices, rng))
    members = np.array(members)
    cost_cache: dict[tuple, float] = {}

    def costs(vectors: np.ndarray) -> np.ndarray:
        out = []
        for v in vectors:
            key = tuple(v)
            if key not in cost_cache:
                cost_cache[key] = float(getattr(space.cost(space.decode(v)), cost))
            out.append(cost_cache[key])
        return np.array(out)

    def scores(vectors: np.ndarray) -> np.ndarray:
        mean, std = predictor.predict(vector_features(space, vectors), return_std=True)
        return mean + kappa * std

    def select(members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The best half (at least two) by non-dominated rank on (optimistic metric, cost) of the whole population."""
        metric, cost_values = scores(members), costs(members)
        points = np.stack([cost_values, metric], axis=1)
        rank = np.zeros(len(members), dtype=int)
        remaining = np.arange(len(members))
        level = 0
        while len(remaining):  # non-dominated sorting
            mask = non_dominated(points[remaining], ["minimize", "maximize"])
            rank[remaining[mask]] = level
            remaining, level = remaining[~mask], level + 1
        return members[np.argsort(rank, kind="stable")[: max(2, population // 2)]]

    members = run_generations(
        members,
        select=select,
        vary=lambda parents, rng, generation: breed(parents, choices, population - len(parents), mutation, rng),
        survive=lambda members, parents, born: np.unique(np.concatenate([parents, born]), axis=0),
        rng=rng,
        generations=generations,
    ).population
    metric, cost_values = scores(members), costs(members)
    mask = non_dominated(np.stack([cost_values, metric], axis=1), ["minimize", "maximize"])
    front = sorted(zip(members[mask], metric[mask], cost_values[mask], strict=True), key=lambda t: t[2])
    return [(space.decode(v), float(m), float(c)) for v, m, c in front]


def spread_by_cost(candidates: list[tuple[Policy, float]], count: int) -> list[Policy]:
    """Up to ``count`` policies spread evenly in log-cost: the nearest (unused) to each of ``count`` geometric targets."""
    costs = np.log(np.maximum([c for _, c in candidates], 1e-12))
    targets = np.linspace(costs.min(), costs.max(), min(count, len(candidates)))
    chosen: list[int] = []
    for target in targets:
        order = np.argsort(np.abs(costs - target), kind="stable")
        chosen.append(next(int(i) for i in order if int(i) not in chosen))
    return [candidates[i][0] for i in sorted(chosen)]


class PredictedEvolutionStrategy(Strategy):
    """Rounds of: fit a predictor, evolve on it, evaluate the ``batch`` most promising new policies."""

    name = "predicted"

    def __init__(self, *, cost: str = "flops", initial: int = 12, batch: int = 6, kind: str = "auto", kappa: float = 0.5,
                 population: int = 64, generations: int = 15, init: str = "stratified",
                 fields: Sequence[str] | None = None) -> None:
        if cost not in COST_KEYS:
            raise ValueError(f"predicted: cost must be one of {list(COST_KEYS)}, got {cost!r}")
        if initial < 2 or batch < 1:
            raise ValueError(f"predicted: need initial >= 2 and batch >= 1, got {initial}, {batch}")
        if init not in INITS:
            raise ValueError(f"predicted: init must be one of {list(INITS)}, got {init!r}")
        self.cost, self.initial, self.batch, self.kind, self.kappa = cost, initial, batch, kind, kappa
        self.population, self.generations, self.init = population, generations, init
        self.fields = cost_fields(cost) if fields is None else tuple(fields)

    def run(self, ctx: SearchContext) -> None:
        space = ctx.space
        rng = np.random.default_rng([ctx.seed, 5])
        first = first_labels(space, self.initial, self.init, self.cost, self.fields, DEFAULT_RATIOS, rng)
        records = ctx.evaluate_many(first, phase="label")
        round_ = 0
        while ctx.remaining() > 0 and not any(r.state == "skipped" for r in records):
            ok = [r for r in records if r.ok]
            predictor = fit_predictor(space, records, ctx.original.values["metric"], kind=self.kind, seed=ctx.seed,
                                      who="predicted")
            best = sorted(ok, key=lambda r: -r.values["metric"])[: self.population // 4]
            front = predicted_front(predictor, space, self.cost, population=self.population, generations=self.generations,
                                    kappa=self.kappa, start=[r.policy for r in best], fields=self.fields,
                                    rng=np.random.default_rng([ctx.seed, 13, round_]))
            seen = {tuple(space.encode(r.policy)) for r in records}
            fresh = [(p, c) for p, _, c in front if tuple(space.encode(p)) not in seen]
            if not fresh:
                ctx.log("predicted: the predicted front holds no new policy; done")
                return
            picks = spread_by_cost(fresh, self.batch)
            records += ctx.evaluate_many(picks, phase="predicted", round=round_)
            round_ += 1
