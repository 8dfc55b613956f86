"""``nsga2``: Optuna's NSGA-II sampler over the policy genes.

Each generation asks ``population`` candidates from an in-memory Optuna study driven by
``NSGAIISampler`` (seeded), evaluates them through the search context (in parallel, and
stored in the persistent study), and tells it the results. The in-memory study is rebuilt
on every run, so a resumed search replays the same generations from the stored results.
Constraints of the search are passed to the sampler as constraint violations.
"""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from autocompress.search.strategies.base import SearchContext, Strategy


class NSGA2Strategy(Strategy):
    name = "nsga2"

    def __init__(self, population: int = 16, crossover_prob: float = 0.9, mutation_prob: float | None = None) -> None:
        if population < 2:
            raise ValueError(f"population must be >= 2, got {population}")
        self.population = population
        self.crossover_prob = crossover_prob
        self.mutation_prob = mutation_prob

    def run(self, ctx: SearchContext) -> None:
        genes = ctx.space.genes
        if not genes:
            ctx.log("nsga2: the search space has no gene")
            return
        names = [f"{g.layer}:{g.field}" for g in genes]
        distributions = {n: CategoricalDistribution(list(g.choices)) for n, g in zip(names, genes, strict=True)}
        sampler = optuna.samplers.NSGAIISampler(
            population_size=self.population,
            crossover_prob=self.crossover_prob,
            mutation_prob=self.mutation_prob,
            seed=ctx.seed,
        )
        inner = optuna.create_study(directions=[o.direction for o in ctx.objectives], sampler=sampler)
        generation = 0
        while ctx.remaining() > 0:
            trials = [inner.ask(distributions) for _ in range(self.population)]
            policies = [ctx.space.decode([t.params[n] for n in names]) for t in trials]
            records = ctx.evaluate_many(policies, phase="evolution", generation=generation)
            for trial, record in zip(trials, records, strict=True):
                if record.ok:
                    for constraint in ctx.constraints:
                        trial.set_constraint(str(constraint), min(constraint.violation(record.values), 1e9))
                    inner.tell(trial, record.objective_values(ctx.objectives))
                else:
                    inner.tell(trial, state=TrialState.FAIL)
            if all(r.state == "skipped" for r in records):
                return
            generation += 1
