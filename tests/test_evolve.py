"""The evolution engine (evolve.py): the order of its steps, its stops, elitism, determinism and the
optimum of a toy objective; its operators on discrete genes."""

from __future__ import annotations

import numpy as np
import pytest

from autocompress.evolve import (
    Outcome,
    best_first,
    breed,
    mutate_genes,
    random_genes,
    run_generations,
    uniform_crossover,
)

TARGET = np.array([4.0, 0.0, 3.0, 1.0, 2.0, 4.0, 0.0, 2.0])
CHOICES = [np.arange(5.0)] * len(TARGET)  # 5 ** 8 = 390625 genotypes, one optimum: TARGET


def toy(seed: int, generations: int = 40, population: int = 16, best: list[float] | None = None) -> Outcome:
    """Maximize -|v - TARGET|²: the best half survive, children by breed (mutation 0.2)."""
    rng = np.random.default_rng(seed)

    def fitness(rows: np.ndarray) -> np.ndarray:
        return -((rows - TARGET) ** 2).sum(1)

    def proceed(members: list[tuple[float, np.ndarray]], generation: int) -> bool:
        if best is not None:
            best.append(members[0][0])
        return True

    first = [random_genes(CHOICES, rng) for _ in range(population)]
    return run_generations(
        best_first(zip(fitness(np.array(first)), first, strict=True), lambda m: m[0]),
        select=lambda members, rng: members[: population // 2],
        vary=lambda parents, rng, g: breed(np.array([v for _, v in parents]), CHOICES, population - len(parents), 0.2, rng),
        evaluate=lambda children, g: list(zip(fitness(children), children, strict=True)),
        survive=lambda members, parents, born: best_first(parents + born, lambda m: m[0]),
        proceed=proceed,
        rng=rng,
        generations=generations,
    )


def test_the_toy_objective_reaches_its_optimum_and_elitism_never_loses_the_best():
    best: list[float] = []
    outcome = toy(0, best=best)
    assert outcome.generations == 40 and outcome.stopped == "generations"
    fitness, vector = outcome.population[0]
    assert fitness == 0.0 and np.array_equal(vector, TARGET)  # the one optimum of 390625 genotypes
    assert len(best) == 41  # before every generation, and once more before the cap stops it
    assert best[0] < -10 and all(b >= a for a, b in zip(best, best[1:], strict=False))  # elitism: never worse
    assert best.index(0.0) == 30  # found in generation 30 with this seed (the draws are pinned)
    assert len(outcome.population) == 16


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    def trace(seed: int) -> list[tuple[float, ...]]:
        return [(f, *v) for f, v in toy(seed, generations=5).population]

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


def test_one_generation_is_proceed_select_vary_evaluate_survive_in_that_order():
    calls: list[tuple] = []

    def proceed(population, done):  # noqa: ANN001, ANN202
        calls.append(("proceed", population, done))
        return True

    def select(population, rng):  # noqa: ANN001, ANN202
        calls.append(("select", population))
        return population + 1

    def vary(parents, rng, generation):  # noqa: ANN001, ANN202
        calls.append(("vary", parents, generation))
        return parents * 10

    def evaluate(children, generation):  # noqa: ANN001, ANN202
        calls.append(("evaluate", children, generation))
        return children + 2

    def survive(population, parents, born):  # noqa: ANN001, ANN202
        calls.append(("survive", population, parents, born))
        return born

    outcome = run_generations(0, select=select, vary=vary, evaluate=evaluate, survive=survive, proceed=proceed,
                              rng=np.random.default_rng(0), generations=2)
    assert calls == [
        ("proceed", 0, 0), ("select", 0), ("vary", 1, 1), ("evaluate", 10, 1), ("survive", 0, 1, 12),
        ("proceed", 12, 1), ("select", 12), ("vary", 13, 2), ("evaluate", 130, 2), ("survive", 12, 13, 132),
        ("proceed", 132, 2),
    ]
    assert outcome == Outcome(132, 2, "generations")
    # without evaluate the children are the newborn
    plain = run_generations(1, select=lambda p, rng: p, vary=lambda p, rng, g: p + g, survive=lambda p, q, b: b,
                            rng=np.random.default_rng(0), generations=3)
    assert plain == Outcome(1 + 1 + 2 + 3, 3, "generations")


def test_the_run_stops_where_proceed_or_evaluate_says_and_never_without_a_rule():
    def run(**rules):  # noqa: ANN003, ANN202
        return run_generations(0, select=lambda p, rng: p, vary=lambda p, rng, g: g, survive=lambda p, q, born: p + born,
                               rng=np.random.default_rng(0), **rules)

    assert run(proceed=lambda p, done: p < 10) == Outcome(10, 4, "proceed")  # 0 +1 +2 +3 +4
    assert run(proceed=lambda p, done: False, generations=5) == Outcome(0, 0, "proceed")  # proceed is asked first
    assert run(evaluate=lambda children, g: None if g == 3 else children, generations=9) == Outcome(3, 2, "evaluate")
    assert run(generations=0) == Outcome(0, 0, "generations")
    with pytest.raises(ValueError, match="generations or proceed"):
        run()
    with pytest.raises(ValueError, match=">= 0"):
        run(generations=-1)


def test_the_operators_keep_genes_legal_and_draw_deterministically():
    choices = [np.array([0.0, 0.25, 0.5]), np.array([8.0]), np.array([1.0, 0.5])]
    rng = np.random.default_rng(0)
    vectors = np.array([random_genes(choices, rng) for _ in range(200)])
    for i, c in enumerate(choices):
        assert set(vectors[:, i]) == set(c)  # every legal value drawn, nothing else
    a, b = np.array([0.0, 8.0, 1.0]), np.array([0.5, 8.0, 0.5])
    same = mutate_genes(a, choices, 0.0, rng)
    assert np.array_equal(same, a) and same is not a
    mutated = np.array([mutate_genes(a, choices, 1.0, rng) for _ in range(100)])
    assert np.array_equal(a, [0.0, 8.0, 1.0])  # the parent is left alone
    assert set(mutated[:, 0]) == {0.0, 0.25, 0.5} and set(mutated[:, 1]) == {8.0}
    crossed = np.array([uniform_crossover(a, b, rng) for _ in range(100)])
    assert all(row[i] in (a[i], b[i]) for row in crossed for i in range(3))
    assert 30 < (crossed[:, 0] == a[0]).sum() < 70  # each parent with probability 1/2
    children = breed(np.stack([a, b]), choices, 5, 0.3, np.random.default_rng(1))
    assert children.shape == (5, 3) and all(v in choices[i] for row in children for i, v in enumerate(row))
    assert np.array_equal(children, breed(np.stack([a, b]), choices, 5, 0.3, np.random.default_rng(1)))
    assert breed(np.stack([a, b]), choices, 0, 0.3, rng).shape == (0, 3)
    assert best_first([(1, "a"), (3, "b"), (1, "c"), (3, "d")], lambda m: m[0]) == [(3, "b"), (3, "d"), (1, "a"), (1, "c")]
