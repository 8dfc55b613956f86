"""Gene ladders and allocations projected on a cost budget: where each gene sits between identity and its
most aggressive legal value, the bisected strength that fills a budget, the uniform policy, stratified designs.

An allocation ``z`` (one real number per gene) at global strength ``s`` sets gene ``i`` to the point
``min(1, s · exp(z_i))`` of its ladder (:func:`at_strength`); :func:`project` bisects ``s`` so that the
policy's analytic cost (:func:`cost_value`) fills a bound. The ``allocate`` strategy evolves ``z``;
``seernet``, ``optimize_policy`` and ``compress()`` start from these policies too. A latency cost (ms) is
estimated by the latency model the caller passes (``latency_model``, the search context's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from autocompress.policy import Policy
from autocompress.search.sensitivity import IDENTITY, ladder
from autocompress.space import SearchSpace

if TYPE_CHECKING:
    from autocompress.hardware.policy_latency import PolicyLatency

#: (gene position, identity + legal values from mildest to most aggressive) per gene (:func:`gene_ladders`)
Ladders = list[tuple[int, list[float]]]
#: cost keys :func:`cost_value` estimates with a latency model (ms)
LATENCY_KEYS = ("latency", "latency_ms")


def cost_value(space: SearchSpace, policy: Policy, key: str, latency_model: PolicyLatency | None = None) -> float:
    """``policy``'s analytic cost ``key`` (flops, macs, params, bitops, bytes), or its estimated latency (ms).

    Latency needs ``latency_model`` (a :class:`~autocompress.hardware.policy_latency.PolicyLatency` of
    ``space``; a search's is ``ctx.latency_model``).
    """
    if key in LATENCY_KEYS:
        if latency_model is None:
            raise ValueError("a latency budget needs a latency model: pass latency_model=PolicyLatency(space, model, "
                             "example_input, LatencyTable.open('ort-cpu')) (a search builds one with "
                             "latency={'estimate': True})")
        return float(latency_model.ms(policy))
    return float(getattr(space.cost(policy), key))


def gene_ladders(space: SearchSpace, fields: Sequence[str] = ("prune",)) -> Ladders:
    """(gene position, identity + legal values from mildest to most aggressive) per gene of ``fields``."""
    out = []
    for i, gene in enumerate(space.genes):
        if gene.field in fields:
            steps = ladder(gene.field, gene.choices)
            if steps:
                out.append((i, [IDENTITY[gene.field], *steps]))
    return out


def at_strength(space: SearchSpace, ladders: Ladders, z: np.ndarray | Sequence[float], strength: float) -> Policy:
    """The policy of allocation ``z`` at global ``strength``: gene ``i`` at point ``min(1, strength · exp(z_i))``
    of its ladder (0 = identity, 1 = its most aggressive legal value)."""
    vector = space.encode(Policy())
    weights = np.exp(np.clip(np.asarray(z, dtype=float), -6, 6))
    for (position, values), w in zip(ladders, weights, strict=True):
        vector[position] = values[int(round(min(1.0, strength * w) * (len(values) - 1)))]
    return space.decode(vector)


def project(space: SearchSpace, ladders: Ladders, z: np.ndarray, key: str, bound: float,
            latency_model: PolicyLatency | None = None) -> tuple[Policy, float, bool]:
    """The policy of allocation ``z`` at the largest strength whose analytic ``key`` cost is <= ``bound``.

    Gene ``i`` sits at the point ``min(1, s · exp(z_i))`` of its ladder (snapped); ``s`` is
    bisected. Returns (policy, its cost, reached); not reached: the most aggressive policy
    of ``z`` (every gene at its last ladder value) and its cost, the closest reachable.
    ``latency_model``: what estimates a latency ``key`` (:func:`cost_value`).
    """
    weights = np.exp(np.clip(np.asarray(z, dtype=float), -6, 6))

    def at(strength: float) -> tuple[Policy, float]:
        policy = at_strength(space, ladders, z, strength)
        return policy, cost_value(space, policy, key, latency_model)

    top = 1.0 / float(weights.min())  # every gene at its most aggressive value
    best = at(top)
    if best[1] > bound:
        return best[0], best[1], False
    lo, hi = 0.0, top
    for _ in range(40):
        middle = 0.5 * (lo + hi)
        policy, cost = at(middle)
        if cost <= bound:
            hi = middle
            if cost > best[1]:
                best = (policy, cost)
        else:
            lo = middle
    return best[0], best[1], True


def uniform_policy(space: SearchSpace, ratio: float, cost: str = "flops", fields: Sequence[str] = ("prune",),
                   latency_model: PolicyLatency | None = None) -> Policy:
    """The uniform policy (every gene at the same point of its ladder) filling ``cost`` <= ``ratio`` × original.

    With prune choices in steps of 0.01 this is Torch-Pruning's uniform (local) pruning ratio.
    Raises ValueError with the closest reachable ratio when the target cannot be met.
    ``latency_model``: what estimates a latency ``cost`` (:func:`cost_value`).
    """
    ladders = gene_ladders(space, fields)
    base = cost_value(space, Policy(), cost, latency_model)
    policy, reached_cost, ok = project(space, ladders, np.zeros(len(ladders)), cost, ratio * base, latency_model)
    if not ok:
        raise ValueError(f"{cost}_ratio<={ratio:g} is not reachable with {list(fields)}; closest reachable {reached_cost / base:.4g}")
    return policy


COST_FIELDS = {
    "flops": ("prune", "rank"),
    "macs": ("prune", "rank"),
    "params": ("prune", "rank"),
    "bytes": ("prune", "rank", "weight_bits"),
    "bitops": ("prune", "rank", "weight_bits", "act_bits"),
}


def cost_fields(cost: str) -> tuple[str, ...]:
    """The gene fields that change ``cost`` (bits do not change FLOPs, so a FLOPs search leaves them at 32)."""
    if cost not in COST_FIELDS:
        raise ValueError(f"unknown cost {cost!r}; allowed: {', '.join(COST_FIELDS)}")
    return COST_FIELDS[cost]


def stratified_policies(
    space: SearchSpace,
    ratios: Sequence[float],
    cost: str = "flops",
    fields: Sequence[str] = ("prune",),
    *,
    sigma: float = 0.35,
    rng: np.random.Generator | int | None = None,
    max_redraws: int = 20,
    first_uniform: bool = True,
    latency_model: PolicyLatency | None = None,
) -> list[Policy]:
    """One distinct policy filling each cost ratio of ``ratios`` (in that order), with a random allocation.

    The first is the uniform policy (``z = 0``; unless ``first_uniform`` is false); the others project ``z ~ N(0, sigma²)`` on
    their ratio (:func:`project`), so the set spans the cost range and how layers share it
    out: a design for a predictor's first labels that, unlike random policies, covers the
    cheap end and fills every level. Unreachable ratios are skipped. ``latency_model``: what estimates a
    latency ``cost`` (:func:`cost_value`).
    """
    rng = np.random.default_rng(rng)
    ladders = gene_ladders(space, fields)
    if not ladders:
        return []
    base = cost_value(space, Policy(), cost, latency_model)
    out: list[Policy] = []
    seen: set[str] = set()
    for i, ratio in enumerate(ratios):
        for _ in range(max_redraws):
            z = np.zeros(len(ladders)) if i == 0 and first_uniform else sigma * rng.standard_normal(len(ladders))
            policy, _, ok = project(space, ladders, z, cost, ratio * base, latency_model)
            if not ok:
                break
            if policy_json(policy) not in seen:
                seen.add(policy_json(policy))
                out.append(policy)
                break
    return out


def spread_order(count: int) -> list[int]:
    """0..count-1 ordered so that every prefix spreads over the range: middle, ends, then halves."""
    order: list[int] = []
    if count <= 0:
        return order
    order.append((count - 1) // 2)
    for end in (0, count - 1):
        if end not in order:
            order.append(end)
    segments = [(0, (count - 1) // 2), ((count - 1) // 2, count - 1)]
    while len(order) < count:
        next_segments = []
        for lo, hi in segments:
            if hi - lo > 1:
                middle = (lo + hi) // 2
                if middle not in order:
                    order.append(middle)
                next_segments += [(lo, middle), (middle, hi)]
        if not next_segments:
            break
        segments = next_segments
    return order + [i for i in range(count) if i not in order]


def policy_json(policy: Policy) -> str:
    """The policy's whole JSON, keys sorted: which proposals were drawn already (identity genes count,
    unlike :func:`~autocompress.search.study.policy_key`)."""
    return json.dumps(policy.to_dict(), sort_keys=True)
