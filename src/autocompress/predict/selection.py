"""Informative sample selection: which policies to label next (SeerNet's second ingredient).

A label is a real evaluation (apply, fine-tune, measure), so the predictor should be
taught where it is unsure, not where it already knows. The acquisition of a policy is
the predictor's uncertainty there (the spread of a deep ensemble or a GP's posterior std),
damped near policies already chosen or labelled so that one batch does not pile up in one
spot:

    acquisition(x) = std(x) · min(1, distance(x, chosen ∪ labelled) / d0)

with ``d0`` the median distance between a candidate and its nearest labelled policy.

- :func:`select_from_pool` picks ``k`` policies of a fixed candidate pool greedily by that
  acquisition (pool-based: the benchmark compares it with random picks on the same labels).
- :func:`evolve_informative` is SeerNet's evolutionary selection: a population of
  encoded policies evolved (on :func:`~autocompress.evolve.run_generations`: the best half by
  acquisition, then :func:`~autocompress.evolve.breed`: uniform crossover, per-gene mutation to
  a legal choice) to maximize the acquisition, ``k`` distinct winners returned as policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autocompress.evolve import breed, random_genes, run_generations
from autocompress.policy import Policy
from autocompress.predict.predictor import AccuracyPredictor, policy_features, vector_features
from autocompress.space import SearchSpace


def acquisition(predictor: AccuracyPredictor, X: np.ndarray, reference: np.ndarray, d0: float | None = None) -> np.ndarray:
    """Uncertainty of each row of ``X``, damped within ``d0`` of the ``reference`` rows (standardized distance)."""
    _, std = predictor.predict(X, return_std=True)
    if len(reference) == 0:
        return std
    distance = _nearest(predictor, X, reference)
    scale = d0 if d0 is not None else float(np.median(distance)) or 1.0
    return std * np.minimum(1.0, distance / scale)


def select_from_pool(predictor: AccuracyPredictor, pool: Any, k: int, labelled: Any = ()) -> list[int]:
    """Indices of ``k`` rows of ``pool`` to label next, most informative first (never a labelled row twice)."""
    pool = np.asarray(pool, dtype=float)
    labelled = np.asarray(labelled, dtype=float).reshape(-1, pool.shape[1])
    if not 0 < k <= len(pool):
        raise ValueError(f"k must be in 1..{len(pool)} (the pool's size), got {k}")
    d0 = float(np.median(_nearest(predictor, pool, labelled))) if len(labelled) else None
    chosen: list[int] = []
    for _ in range(k):
        reference = np.concatenate([labelled, pool[chosen]]) if chosen else labelled
        scores = acquisition(predictor, pool, reference, d0 or None)
        scores[chosen] = -np.inf
        chosen.append(int(np.argmax(scores)))
    return chosen


def evolve_informative(
    predictor: AccuracyPredictor,
    space: SearchSpace,
    k: int,
    labelled: list[Policy] = (),
    *,
    population: int = 64,
    generations: int = 20,
    mutation: float = 0.1,
    fields: Sequence[str] | None = None,
    rng: np.random.Generator | int | None = None,
) -> list[Policy]:
    """``k`` distinct new policies where ``predictor`` (fitted on :func:`policy_features`) is most unsure.

    With ``fields``, only genes of those fields vary; the others stay at their identity value.
    """
    rng = np.random.default_rng(rng)
    seen = {tuple(space.encode(p)) for p in labelled}
    reference = policy_features(space, labelled).reshape(-1, len(space.genes))
    choices = gene_choices(space, fields)

    def select(members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The best half (at least two) by acquisition, scored on the whole population (its damping does depend on it)."""
        fitness = acquisition(predictor, vector_features(space, members), reference)
        return members[np.argsort(-fitness)[: max(2, population // 2)]]

    members = run_generations(
        np.array([random_genes(choices, rng) for _ in range(population)]),
        select=select,
        vary=lambda parents, rng, generation: breed(parents, choices, population - len(parents), mutation, rng),
        survive=lambda members, parents, born: np.concatenate([parents, born]),
        rng=rng,
        generations=generations,
    ).population
    picked: list[Policy] = []
    scores = acquisition(predictor, vector_features(space, members), reference)
    for i in np.argsort(-scores):
        key = tuple(members[i])
        if key not in seen:
            seen.add(key)
            picked.append(space.decode(members[i]))
            reference = np.concatenate([reference, vector_features(space, members[i][None])])
        if len(picked) == k:
            break
    while len(picked) < k:  # the population collapsed: fill with new random policies
        vector = random_genes(choices, rng)
        if tuple(vector) not in seen:
            seen.add(tuple(vector))
            picked.append(space.decode(vector))
    return picked


def gene_choices(space: SearchSpace, fields: Sequence[str] | None = None) -> list[np.ndarray]:
    """Legal encoded values per gene of ``space``; genes outside ``fields`` (when given) only their identity value."""
    identity = space.encode(Policy())
    return [np.asarray(g.choices if fields is None or g.field in fields else [identity[i]], dtype=float)
            for i, g in enumerate(space.genes)]


def _nearest(predictor: AccuracyPredictor, X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance (in the predictor's standardized units) from each row of X to its nearest reference row."""
    if len(reference) == 0:
        return np.full(len(X), np.inf)
    Z, R = predictor._z(np.asarray(X, dtype=float)), predictor._z(np.asarray(reference, dtype=float))
    return np.sqrt(((Z[:, None, :] - R[None, :, :]) ** 2).sum(-1)).min(1)
