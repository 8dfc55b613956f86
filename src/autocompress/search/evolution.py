"""APQ's evolution over discrete genes, scored by a (predicted) fitness and kept inside a budget.

As in APQ's and Once-for-All's evolution finders (mit-han-lab/apq,
``methods/evolution/evolution_finder.py``): a first population of ``population`` random
feasible individuals; then, for ``iterations`` generations, the best ``parent_ratio ·
population`` are kept as parents, ``mutation_ratio · population`` children are mutants of a
random parent (each gene re-drawn from its choices with probability ``mutate_prob``) and the
rest are uniform crossovers of two random parents. A child outside the budget is redrawn
(from the same parents, up to ``max_tries`` times, then dropped and counted).

The correction (issue 6): the public code builds the crossover children, then appends only
the first ``mutation_numbers`` children of its pool, the mutants, so that crossover never
reaches the population. Here every feasible child, mutant or crossover, joins it.

Deterministic given ``rng``; ``fitness`` is called once per generation on all new individuals. The
loop is the engine's (:func:`~autocompress.evolve.run_generations`), with these operators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autocompress.evolve import (
    best_first,
    mutate_genes,
    random_genes,
    run_generations,
    uniform_crossover,
)


@dataclass(frozen=True)
class Individual:
    vector: np.ndarray
    fitness: float
    origin: str  # "random", "mutation" or "crossover"
    generation: int


@dataclass
class Evolution:
    """The last population (best first) and, per generation, how many children of each origin joined it."""

    population: list[Individual]
    history: list[dict[str, int]]

    def best(self, count: int, key: Callable[[np.ndarray], object] | None = None) -> list[Individual]:
        """The ``count`` fittest distinct individuals (distinct by ``key(vector)``, default the vector:
        e.g. two genotypes that differ only in genes without effect count once)."""
        out: list[Individual] = []
        seen: set = set()
        for individual in self.population:
            identity = key(individual.vector) if key is not None else tuple(individual.vector.tolist())
            if len(out) < count and identity not in seen:
                seen.add(identity)
                out.append(individual)
        return out


def evolve(
    choices: Sequence[Sequence[float]],
    fitness: Callable[[np.ndarray], np.ndarray],
    feasible: Callable[[np.ndarray], bool],
    rng: np.random.Generator,
    *,
    population: int = 100,
    parent_ratio: float = 0.25,
    mutation_ratio: float = 0.5,
    mutate_prob: float = 0.1,
    iterations: int = 500,
    max_tries: int = 100,
) -> Evolution:
    """Maximize ``fitness`` (rows of gene values -> one score each) over vectors whose gene ``i`` takes a
    value of ``choices[i]`` and that are ``feasible``; see the module docstring. An empty population
    means no feasible random individual was found in ``max_tries · population`` draws."""
    check_settings(population, parent_ratio, mutation_ratio, mutate_prob, iterations, max_tries)
    options = [np.asarray(c, dtype=float) for c in choices]
    parents_size = max(1, int(round(parent_ratio * population)))
    mutants = int(round(mutation_ratio * population))
    crossovers = population - parents_size - mutants

    first: list[tuple[np.ndarray, str]] = []
    for _ in range(max_tries * population):
        if len(first) == population:
            break
        vector = random_genes(options, rng)
        if feasible(vector):
            first.append((vector, "random"))
    if not first:
        return Evolution([], [])
    history = [{"random": len(first)}]

    def vary(parents: list[Individual], rng: np.random.Generator, generation: int) -> list[tuple[np.ndarray, str]]:
        """Mutants, then crossovers, each redrawn (up to ``max_tries``) until feasible, else dropped."""
        counts = {"mutation": 0, "crossover": 0, "dropped": 0}
        children: list[tuple[np.ndarray, str]] = []
        for origin, count in (("mutation", mutants), ("crossover", crossovers)):
            for _ in range(count):
                child = None
                for _ in range(max_tries):
                    if origin == "mutation":
                        candidate = mutate_genes(parents[rng.integers(len(parents))].vector, options, mutate_prob, rng)
                    else:
                        a, b = parents[rng.integers(len(parents))], parents[rng.integers(len(parents))]
                        candidate = uniform_crossover(a.vector, b.vector, rng)
                    if feasible(candidate):
                        child = candidate
                        break
                if child is None:
                    counts["dropped"] += 1
                else:
                    children.append((child, origin))
                    counts[origin] += 1
        history.append(counts)
        return children

    outcome = run_generations(
        _scored(first, fitness, 0),
        select=lambda members, rng: _ranked(members)[:parents_size],
        vary=vary,
        evaluate=lambda children, generation: _scored(children, fitness, generation),
        survive=lambda members, parents, born: parents + born,
        rng=rng,
        generations=iterations,
    )
    return Evolution(_ranked(outcome.population), history)


def check_settings(population: int, parent_ratio: float, mutation_ratio: float, mutate_prob: float,
                   iterations: int, max_tries: int) -> None:
    """Raise a ValueError naming every setting of :func:`evolve` out of its range."""
    rules = {
        f"population >= 2 (got {population})": population >= 2,
        f"0 < parent_ratio < 1 (got {parent_ratio})": 0 < parent_ratio < 1,
        f"0 <= mutation_ratio <= 1 - parent_ratio (got {mutation_ratio})": 0 <= mutation_ratio <= 1 - parent_ratio,
        f"mutate_prob in [0, 1] (got {mutate_prob})": 0 <= mutate_prob <= 1,
        f"iterations >= 0 (got {iterations})": iterations >= 0,
        f"max_tries >= 1 (got {max_tries})": max_tries >= 1,
    }
    broken = [rule for rule, ok in rules.items() if not ok]
    if broken:
        raise ValueError(f"evolution: need {'; '.join(broken)}")


def _scored(born: list[tuple[np.ndarray, str]], fitness: Callable[[np.ndarray], np.ndarray],
            generation: int) -> list[Individual]:
    """``born`` (vector, origin) pairs as individuals, scored in one ``fitness`` call."""
    if not born:
        return []
    scores = np.asarray(fitness(np.array([v for v, _ in born])), dtype=float).ravel()
    return [Individual(v, float(s), origin, generation) for (v, origin), s in zip(born, scores, strict=True)]


def _ranked(members: list[Individual]) -> list[Individual]:
    """Best first; ties keep their order (older individuals first), so the ranking is deterministic."""
    return best_first(members, lambda ind: ind.fitness)
