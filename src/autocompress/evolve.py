"""One evolution engine: a population bred generation by generation with the caller's operators.

Every evolutionary loop of the package runs on :func:`run_generations`; what differs between them
is only the operators they give it. One generation is::

    proceed(population, g)?          stop before generation g + 1 (a budget, a stall) -> "proceed"
    parents  = select(population, rng)
    children = vary(parents, rng, g + 1)          crossover, mutation, repair / projection
    born     = evaluate(children, g + 1)          None: stop, nothing survives -> "evaluate"
    population = survive(population, parents, born)

and ``generations`` caps how many are bred (``None``: until ``proceed`` or ``evaluate`` stops
it). The first population is the caller's (drawn, repaired and evaluated as it likes; it counts
as generation 0). Without ``evaluate`` the children are the newborn as they are: a loop whose
fitness depends on the whole population (the informative selection's damping, a non-dominated
rank) scores it in ``select`` instead.

The users and their operators:

- ``search/evolution.py`` (APQ): select the best by predicted fitness; vary: mutants, then
  uniform crossovers of two random parents, each redrawn until feasible; evaluate: one predictor
  call on the children; survive: parents + children.
- ``predict/selection.py`` (``evolve_informative``) and ``strategies/predicted_evolution.py``
  (``predicted_front``): select the best half by acquisition / by non-dominated rank of the
  whole population; vary: :func:`breed`; survive: parents + children (deduplicated for the front).
- ``strategies/genecai.py``: select: roulette-wheel parent pairs; vary: swap crossover, step
  mutation, repeats mutated again; evaluate: real evaluations (None when the budget runs out);
  survive: elites + children; proceed: the phase's budget share and no three generations in a row
  without a new genotype.
- ``strategies/allocate.py``: a (μ, λ) evolution strategy: the population is the archive of
  evaluated allocations, best first; select: the rank-weighted mean of the best; vary: Gaussian
  draws around it projected on the cost budget; evaluate: real evaluations; survive: the archive
  with the newborn, ``σ`` decayed.

The engine draws no random number itself: the operators draw from ``rng`` in the order they are
called, so a run is deterministic given ``rng``. :func:`random_genes`, :func:`mutate_genes`,
:func:`uniform_crossover` and :func:`breed` are operators on vectors of discrete genes (gene ``i``
takes a value of ``choices[i]``), :func:`best_first` the ranking the loops share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

P = TypeVar("P")  # a population
T = TypeVar("T")

STOPS = ("generations", "proceed", "evaluate")


@dataclass(frozen=True)
class Outcome(Generic[P]):
    """The last population, how many generations were bred after the first, and what stopped the run:
    ``"generations"`` (the cap), ``"proceed"`` (it said no) or ``"evaluate"`` (it returned None; the
    population is the one before that generation)."""

    population: P
    generations: int
    stopped: str


def run_generations(
    population: P,
    *,
    select: Callable[[P, np.random.Generator], Any],
    vary: Callable[[Any, np.random.Generator, int], Any],
    survive: Callable[[P, Any, Any], P],
    rng: np.random.Generator,
    evaluate: Callable[[Any, int], Any] | None = None,
    proceed: Callable[[P, int], bool] | None = None,
    generations: int | None = None,
) -> Outcome[P]:
    """Breed ``population`` generation by generation (module docstring); ``vary`` and ``evaluate`` get the
    number of the generation being bred (1, 2, ...), ``proceed`` the number of generations bred so far."""
    if generations is None and proceed is None:
        raise ValueError("run_generations: give generations or proceed, else the run never stops")
    if generations is not None and generations < 0:
        raise ValueError(f"run_generations: generations must be >= 0, got {generations}")
    done = 0
    while True:
        if proceed is not None and not proceed(population, done):
            return Outcome(population, done, "proceed")
        if generations is not None and done >= generations:
            return Outcome(population, done, "generations")
        parents = select(population, rng)
        children = vary(parents, rng, done + 1)
        born = children if evaluate is None else evaluate(children, done + 1)
        if born is None:
            return Outcome(population, done, "evaluate")
        population = survive(population, parents, born)
        done += 1


def best_first(members: Iterable[T], score: Callable[[T], float]) -> list[T]:
    """``members`` by ``score``, highest first; ties keep their order (older first), so the ranking is deterministic."""
    return sorted(members, key=lambda member: -score(member))


def random_genes(choices: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One value of each gene's ``choices``, drawn uniformly (one draw per gene, in order)."""
    return np.array([c[rng.integers(len(c))] for c in choices])


def mutate_genes(vector: np.ndarray, choices: Sequence[np.ndarray], prob: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``vector`` with each gene re-drawn from its ``choices`` with probability ``prob``
    (the draw may give its value back)."""
    child = vector.copy()
    for i in np.flatnonzero(rng.random(len(choices)) < prob):
        child[i] = choices[i][rng.integers(len(choices[i]))]
    return child


def uniform_crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each gene from ``a`` or from ``b``, with probability 1/2."""
    return np.where(rng.random(len(a)) < 0.5, a, b)


def breed(parents: np.ndarray, choices: Sequence[np.ndarray], count: int, mutation: float,
          rng: np.random.Generator) -> np.ndarray:
    """``count`` children of random parent pairs (rows of ``parents``): :func:`uniform_crossover`, then
    :func:`mutate_genes` with probability ``mutation``."""
    children = []
    while len(children) < count:
        a, b = parents[rng.integers(len(parents))], parents[rng.integers(len(parents))]
        children.append(mutate_genes(uniform_crossover(a, b, rng), choices, mutation, rng))
    return np.array(children).reshape(-1, len(choices))
