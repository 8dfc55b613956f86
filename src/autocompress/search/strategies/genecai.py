"""``genecai``: GeneCAI (Javaheripi, Samragh, Javidi, Koushanfar, GECCO 2020, arXiv 2004.04249).

The paper's text could not be read here; the details are from its abstract and its official
code (github.com/ACESLabUCSD/GeneCAI: ``utils/genetic_utils.py``, ``utils/utils.py``,
``main.py``), "the code" below.

1. **Genotype**: ``ctx.space.encode/decode``, one gene per layer and field (prune, rank,
   bits): the paper's bijection between compressed models and genotypes.
2. **Valid ranges**: each layer alone at each value (``sensitivity_sweep``); a value is valid
   when its single-layer metric is >= ``metric_original - max_layer_drop`` (the code: ``- 1``)
   and it lowers the cost on its own (the code's rule for SVD ranks). Genes are drawn and
   mutated only within their valid values.
3. **Initial population**, rejection sampling: uniform draws from the valid values, rejected
   when already proposed or when the analytic cost ratio is outside ``cost_window``; with
   ``init_metric_filter``, as in the code, also when the measured metric is below the floor
   (``init_rounds`` re-draws, then the fittest are kept).
4. **Fitness**, the code's ``accuracy_bound_score`` (:func:`genecai_fitness`)::

       saving  = (C0 - C) / C0                     # fitness 0 if saving < 0
       error   = |metric_original - metric| + 1   (+ exp(floor - metric) if metric < floor)
       fitness = exp(coeff * saving) / error       # coeff = 100 in the code

   C: FLOPs in the paper, here the study's first cost objective; ``floor``: the accuracy
   constraint (``metric_floor``, default ``metric_original - max_drop``).
5. **Selection**: roulette wheel on ``fitness - min(fitness)`` (uniform if all equal), parents
   drawn with replacement, paired. **Crossover**: with ``p_cross`` (0.2) per pair, each gene
   swapped with ``p_swap`` (0.2). **Mutation**: with ``p_mutate`` (0.8) per child, each gene
   with ``p_tweak`` (0.05) moved ``1..mutation_range`` places along its valid values, clipped.
6. **Phases**: ``"sequential"`` evolves rank genes (prune at 0), then prune genes on the best
   decomposed genotypes (then bits), like the code's D -> CP; ``"joint"``: all at once.

Each generation is one ``ctx.evaluate_many`` call (parallel), tagged ``phase="evolution",
generation=g, stage=...``; the front is the study's. The generations run on the engine,
:func:`~autocompress.evolve.run_generations`, with the operators of 5. and the stopping rules below. :func:`archive`: non-dominated records.

Where this follows the paper and where it deviates
---------------------------------------------------
- Genes: the code has two Tucker-2 ranks per conv (8 levels; SVD 64) and continuous prune
  rates (Gaussian mutation, sigma 0.2); here one rank ratio per layer, and every gene takes
  the space's discrete choices (prune genes step too). Bits are an extension.
- Valid ranges: the code keeps all values milder than the most aggressive passing one; here
  each swept value is judged alone (equal on monotone curves), unswept ones (coarse sweep)
  by the next more aggressive swept value. One sweep on the original model serves every
  phase (the code re-sweeps pruning on the decomposed model, after fine-tuning it).
- Initial rejection is on analytic cost unless ``init_metric_filter`` (it spends evaluations).
- ``elite`` individuals survive (the code: none, ``elite=0``); a child equal to a genotype
  already proposed is mutated again (up to 20 times): a repeat would cost nothing, teach nothing.
- Runs until the budget is spent (``generations`` caps each phase); ``sequential`` without
  ``generations`` gives each phase an equal share of the budget left after the sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from autocompress.evolve import best_first, run_generations
from autocompress.policy import Policy
from autocompress.search.objectives import COST_KEYS, Objective, Record
from autocompress.search.sensitivity import (
    IDENTITY,
    Curves,
    sensitivity_sweep,
    valid_values,
)
from autocompress.search.strategies.base import SearchContext, Strategy

PHASES = ("joint", "sequential")
STAGES = (("decomposition", ("rank",)), ("pruning", ("prune",)), ("quantization", ("weight_bits", "act_bits")))
MAX_RETRIES = 20
Valid = list[list[float]]  # valid values of every gene, sorted
Key = tuple[float, ...]  # a genotype, hashable


def genecai_fitness(
    metric: float, cost: float, metric_original: float, cost_original: float, metric_floor: float, coeff: float = 100.0
) -> float:
    """GeneCAI's score: ``exp(coeff * saving) / (|drop| + 1 [+ exp(floor - metric)])``; 0 if no saving."""
    saving = (cost_original - cost) / cost_original
    if saving < 0:
        return 0.0
    error = abs(metric_original - metric) + 1.0
    if metric < metric_floor:
        error += math.exp(min(metric_floor - metric, 700.0))
    return math.exp(min(coeff * saving, 700.0)) / error


def roulette(fitness: Sequence[float]) -> np.ndarray:
    """Selection probabilities: ``fitness - min``, normalized (uniform when all are equal)."""
    shifted = np.asarray(fitness, dtype=float) - np.min(fitness)
    total = shifted.sum()
    return shifted / total if total > 0 else np.full(len(shifted), 1.0 / len(shifted))


def archive(records: Sequence[Record], objectives: Sequence[Objective]) -> list[Record]:
    """The non-dominated completed records (objective values in each objective's direction)."""
    points = [(r, np.array([o.sign() * r.values[o.key] for o in objectives])) for r in records if r.ok]
    return [r for r, p in points if not any(np.all(q <= p) and np.any(q < p) for _, q in points)]


class Individual(NamedTuple):
    vector: np.ndarray
    record: Record
    fitness: float


class Parents(NamedTuple):
    pairs: list[tuple[np.ndarray, np.ndarray]]  # (father, mother), drawn by roulette
    count: int  # the children to keep: the population beside the elites


@dataclass(kw_only=True)
class GeneCAIStrategy(Strategy):
    """GeneCAI (module docstring): ``population`` per generation, ``generations`` per phase
    (None: until the budget is spent), ``sweep_fraction``: the sweep's share of the budget."""

    name: ClassVar[str] = "genecai"
    population: int = 20
    generations: int | None = None
    fields: Sequence[str] = ("prune", "rank")
    phases: str = "joint"
    max_layer_drop: float = 1.0
    max_drop: float = 3.0
    metric_floor: float | None = None
    coeff: float = 100.0
    p_cross: float = 0.2
    p_swap: float = 0.2
    p_mutate: float = 0.8
    p_tweak: float = 0.05
    mutation_range: int = 1
    elite: int = 1
    cost: str | None = None
    cost_window: Sequence[float] = (0.0, 1.0)
    init_metric_filter: bool = False
    init_rounds: int = 2
    sweep_fraction: float = 0.5

    def __post_init__(self) -> None:
        rules = {
            f"population >= 2 and 0 <= elite < population (got {self.population}, {self.elite})": self.population >= 2 and 0 <= self.elite < self.population,
            f"phases in {list(PHASES)} (got {self.phases!r})": self.phases in PHASES,
            f"fields a non-empty subset of {list(IDENTITY)} (got {list(self.fields)})": bool(self.fields) and set(self.fields) <= set(IDENTITY),
            f"cost None or one of {list(COST_KEYS)} (got {self.cost!r})": self.cost is None or self.cost in COST_KEYS,
            f"cost_window (low, high) cost ratios (got {self.cost_window})": len(self.cost_window) == 2 and self.cost_window[0] <= self.cost_window[1],
            f"mutation_range >= 1, generations None or >= 0 (got {self.mutation_range}, {self.generations})": self.mutation_range >= 1 and (self.generations or 0) >= 0,
            **{f"{k} in [0, 1] (got {getattr(self, k)})": 0 <= getattr(self, k) <= 1 for k in ("p_cross", "p_swap", "p_mutate", "p_tweak", "sweep_fraction")},
        }
        broken = [rule for rule, ok in rules.items() if not ok]
        if broken:
            raise ValueError(f"genecai: need {'; '.join(broken)}")
        self.fields, self.cost_window = tuple(self.fields), tuple(self.cost_window)

    def cost_key(self, ctx: SearchContext) -> str:
        """``cost``, else the study's first cost objective, else FLOPs (the paper's)."""
        return self.cost or next((o.key for o in ctx.objectives if o.key in COST_KEYS), "flops")

    def valid_ranges(self, ctx: SearchContext, curves: Curves, floor: float, cost: str) -> list[list[float]]:
        """Valid values of every gene (sorted, identity included): see ``sensitivity.valid_values``."""
        return valid_values(ctx, curves, self.fields, floor, cost)

    def fitness(self, record: Record, ctx: SearchContext, cost: str, floor: float) -> float:
        if not record.ok:
            return 0.0
        original = ctx.original.values
        return genecai_fitness(record.values["metric"], record.values[cost], original["metric"], original[cost], floor, self.coeff)

    def run(self, ctx: SearchContext) -> None:
        if ctx.remaining() <= 0:
            return
        cost, metric_original = self.cost_key(ctx), ctx.original.values["metric"]
        floor = metric_original - self.max_drop if self.metric_floor is None else self.metric_floor
        curves = sensitivity_sweep(ctx, self.fields, max_evals=int(self.sweep_fraction * ctx.budget), cost=cost)
        if any(r.state == "skipped" for points in curves.values() for _, r in points):
            ctx.log("genecai: the budget ran out during the sensitivity sweep")
            return
        valid = self.valid_ranges(ctx, curves, metric_original - self.max_layer_drop, cost)
        groups = [("joint", self.fields)] if self.phases == "joint" else [(s, f) for s, f in STAGES if set(f) & set(self.fields)]
        stages = [(s, [i for i, g in enumerate(ctx.space.genes) if g.field in f and len(valid[i]) > 1]) for s, f in groups]
        stages = [(s, active) for s, active in stages if active]
        if not stages:
            ctx.log(f"genecai: no gene of {list(self.fields)} has a valid value besides the identity; nothing to evolve")
            return
        ctx.log(f"genecai: {sum(len(a) for _, a in stages)} genes evolve; valid values per gene: {[len(v) for v in valid]}")
        swept = sum(len(p) for p in curves.values())  # without generations, phases share the budget left
        share = max(self.population, (ctx.budget - swept) // len(stages)) if self.generations is None else None
        run = _Run(ctx, valid, cost, floor)
        bases = [ctx.space.encode(Policy())]
        for number, (stage, active) in enumerate(stages):
            evaluated = self._evolve(run, stage, active, bases, None if number == len(stages) - 1 else share)
            if evaluated is None:
                return
            ranked = {tuple(i.vector): i.vector for i in best_first(evaluated, lambda ind: ind.fitness)}
            bases = list(ranked.values())[: self.population] or bases  # the next phase starts from the best

    def _evolve(self, run: _Run, stage: str, active: list[int], bases: list[np.ndarray], share: int | None) -> list[Individual] | None:
        """One phase on :func:`~autocompress.evolve.run_generations`; every individual it evaluated, or None
        when the budget ran out."""
        proposed, stall, before = len(run.seen), 0, 0
        population = self._initial(run, stage, active, bases)
        if population is None:
            return None
        evaluated = list(population)

        def proceed(population: list[Individual], generation: int) -> bool:
            """Stop after 3 generations in a row without a new genotype, on an empty population, at the phase's share."""
            nonlocal stall, before
            if generation:
                stall = stall + 1 if len(run.seen) == before else 0
                if stall >= 3:
                    run.ctx.log(f"genecai: {stage}: no new genotype in 3 generations; stopping the phase")
                    return False
            before = len(run.seen)
            return bool(population) and (share is None or len(run.seen) - proposed < share)

        def select(population: list[Individual], rng: np.random.Generator) -> Parents:
            """Roulette-wheel parent pairs (with replacement), enough for the children beside the elites."""
            count = self.population - len(population[: self.elite])
            drawn = rng.choice(len(population), size=2 * math.ceil(count / 2), p=roulette([i.fitness for i in population]))
            return Parents([(population[a].vector, population[b].vector) for a, b in zip(drawn[::2], drawn[1::2], strict=True)], count)

        def vary(parents: Parents, rng: np.random.Generator, generation: int) -> list[np.ndarray]:
            """Pairs crossed over, the first ``count`` children mutated, repeats mutated again."""
            children: list[np.ndarray] = []
            for father, mother in parents.pairs:
                children += self._crossover(rng, father, mother, active)
            return [self._unique(run, self._mutate(run, c, active), active) for c in children[: parents.count]]

        def evaluate(children: list[np.ndarray], generation: int) -> list[Individual] | None:
            born = self._evaluate(run, children, stage=stage, generation=generation)
            if born is not None:
                evaluated.extend(born)
            return born

        outcome = run_generations(
            population,
            select=select,
            vary=vary,
            evaluate=evaluate,
            survive=lambda population, parents, born: best_first(population, lambda i: i.fitness)[: self.elite] + born,
            proceed=proceed,
            rng=run.ctx.rng,
            generations=self.generations,
        )
        return None if outcome.stopped == "evaluate" else evaluated

    def _initial(self, run: _Run, stage: str, active: list[int], bases: list[np.ndarray]) -> list[Individual] | None:
        """Rejection-sampled, evaluated initial population (generation 0); None: the budget ran out."""
        ctx, (low, high) = run.ctx, self.cost_window
        base_cost = float(getattr(ctx.cost(Policy()), run.cost))
        kept: list[Individual] = []
        rejected: list[Individual] = []
        rounds = 1 + (self.init_rounds if self.init_metric_filter else 0)
        for round_ in range(rounds):
            vectors, tries = [], 0
            while len(vectors) < self.population - len(kept) and tries < 100 * self.population:
                vector, tries = bases[(len(kept) + len(vectors)) % len(bases)].copy(), tries + 1
                for i in active:
                    vector[i] = run.valid[i][ctx.rng.integers(len(run.valid[i]))]
                ratio = getattr(ctx.cost(ctx.space.decode(vector)), run.cost) / base_cost
                if tuple(vector) not in run.seen and low <= ratio <= high and ratio < 1.0:
                    run.seen.add(tuple(vector))
                    vectors.append(vector)
            born = self._evaluate(run, vectors, stage=stage, generation=0) if vectors else []
            if born is None:
                return None
            screen = self.init_metric_filter and round_ < rounds - 1
            for ind in born:
                passes = not screen or (ind.record.ok and ind.record.values["metric"] >= run.floor)
                (kept if passes else rejected).append(ind)
            if len(kept) >= self.population or not vectors:
                break
        kept += best_first(rejected, lambda ind: ind.fitness)[: self.population - len(kept)]
        if len(kept) < self.population:
            ctx.log(f"genecai: {stage}: only {len(kept)} initial genotypes passed the rejection sampling")
        return kept

    def _evaluate(self, run: _Run, vectors: list[np.ndarray], **tags: Any) -> list[Individual] | None:
        if run.ctx.remaining() <= 0:
            return None
        records = run.ctx.evaluate_many([run.ctx.space.decode(v) for v in vectors], phase="evolution", **tags)
        if any(r.state == "skipped" for r in records):
            return None
        return [Individual(v, r, self.fitness(r, run.ctx, run.cost, run.floor)) for v, r in zip(vectors, records, strict=True)]

    def _crossover(self, rng: np.random.Generator, father: np.ndarray, mother: np.ndarray, active: list[int]) -> list[np.ndarray]:
        son, daughter = father.copy(), mother.copy()
        if rng.random() <= self.p_cross:
            for i in active:
                if rng.random() < self.p_swap:
                    son[i], daughter[i] = daughter[i], son[i]
        return [son, daughter]

    def _mutate(self, run: _Run, vector: np.ndarray, active: list[int]) -> np.ndarray:
        rng = run.ctx.rng
        if rng.random() < self.p_mutate:
            for i in active:
                if rng.random() <= self.p_tweak:
                    up, offset = rng.random() > 0.5, int(rng.integers(1, self.mutation_range + 1))
                    vector[i] = _step(run.valid[i], vector[i], offset if up else -offset)
        return vector

    def _unique(self, run: _Run, vector: np.ndarray, active: list[int]) -> np.ndarray:
        """Mutate a repeated genotype one gene at a time (up to MAX_RETRIES); record it as seen."""
        for _ in range(MAX_RETRIES):
            if tuple(vector) not in run.seen:
                break
            i = active[int(run.ctx.rng.integers(len(active)))]
            vector[i] = _step(run.valid[i], vector[i], 1 if run.ctx.rng.random() > 0.5 else -1, bounce=True)
        run.seen.add(tuple(vector))
        return vector


@dataclass
class _Run:  # what the phases of one run share
    ctx: SearchContext
    valid: Valid
    cost: str
    floor: float
    seen: set[Key] = field(default_factory=set)  # every genotype proposed


def _step(values: list[float], value: float, offset: int, bounce: bool = False) -> float:
    """``offset`` places along ``values`` from ``value``, clipped at the ends (the code's rule);
    ``bounce``: at an end, one step back the other way instead of staying put."""
    position = values.index(value)
    target = min(max(position + offset, 0), len(values) - 1)
    if bounce and target == position and len(values) > 1:
        target = min(max(position - (1 if offset > 0 else -1), 0), len(values) - 1)
    return values[target]
