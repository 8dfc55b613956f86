"""``allocate``: per-layer allocations evolved *on* a cost budget (every candidate fills it).

A search that treats "MACs <= 5 %" as a mere constraint wastes most of its budget: its
candidates land anywhere below the bound (NSGA-II's best at "<= 5 %" sat at 3 % MACs in
our Torch-Pruning comparison) and a model at 3 % is worse than one at 5 %. This strategy
only proposes policies that *fill* each target, and searches how the budget is shared out
between layers:

- **Allocation** ``z`` (one real number per gene of ``fields``): gene ``i`` is set to the
  point ``min(1, s · exp(z_i))`` of its ladder (identity = 0, most aggressive legal value
  = 1; snapped to the nearest legal choice), for one global strength ``s``. ``z = 0`` is
  the uniform policy (every layer at the same point of its ladder — with prune choices in
  steps of 0.01 that is Torch-Pruning's uniform pruning ratio).
- **Projection on the budget**: ``s`` is bisected so that the policy's analytic cost is
  <= the target and as close to it as the legal choices allow. A target that no
  allocation reaches (every gene at its most aggressive value) is reported through
  ``ctx.log`` with the closest reachable cost, and nothing is evaluated for it.
- **Evolution** of ``z`` (a (μ, λ) evolution strategy with recombination, as in
  Hansen's CMA-ES without the covariance update): generation 0 is the uniform policy plus
  ``population - 1`` allocations ``z ~ N(0, σ²)``; each next generation samples around the
  rank-weighted mean of the ``parents`` best so far (by the evaluated metric) with
  ``σ ← σ · sigma_decay``. Proposals that snap to a policy already tried for this target
  are redrawn (up to ``max_redraws``), so every evaluation is a new policy. The generations run
  on :func:`~autocompress.evolve.run_generations`, from an empty archive: the engine's first
  generation is the one tagged 0.

- **Measured latency** (``latency=`` a :class:`~autocompress.hardware.measured_path.MeasuredLatency`):
  a ``latency_ratio`` target is filled by *measurement*, not by an analytic cost: allocation ``z`` is
  projected on a few FLOPs budgets around the one at which the uniform policy measured the target
  (:data:`FLOPS_BRACKET` multiples), those policies are timed whole in one side-by-side run, and the
  least compressed whose measured latency meets the target is the candidate. FLOPs are the wrong
  currency between allocations: on a ``transformers`` ResNet (digits, 32x32) allocations at one FLOPs
  budget measured 0.39x to 0.69x the original's latency, so an allocation evolved on FLOPs favours
  the slow ones. Each run's figures are kept in the study (``ctx.keep``), so a resumed search replays
  the same projections.

It is close to EagleEye (Li et al., ECCV 2020: random layer-wise pruning ratios under a
FLOPs budget, scored after BN re-estimation, the best fine-tuned), with an evolution in
place of pure random sampling and the search's fine-tune proxy in place of BN-only scores.

The budget is shared equally between the reachable targets, the remainder to the loosest, and what a
target leaves unspent (no new allocation to draw) to the next (in ``ctx.budget``, the total over every
resume, so a resumed search makes the same plan); each target's records are tagged
``phase="allocate"``, ``target="<cost>_ratio<=t"`` and ``generation``. Deterministic given
``ctx.seed`` and the stored results, like every strategy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from autocompress.evolve import best_first, run_generations
from autocompress.policy import Policy
from autocompress.search.ladders import (
    LATENCY_KEYS,
    Ladders,
    cost_value,
    gene_ladders,
    policy_json,
    project,
)
from autocompress.search.objectives import COST_KEYS
from autocompress.search.sensitivity import IDENTITY
from autocompress.search.strategies.base import SearchContext, Strategy
from autocompress.search.strategies.greedy import cost_bounds, parse_target


class AllocateStrategy(Strategy):
    """Evolve per-layer allocations projected onto each cost target.

    ``targets``: cost ratios (of ``cost``) or constraints such as ``"macs_ratio<=0.05"``;
    default: the search's own upper-bound constraints on a cost. ``fields``: the genes
    allocated (prune by default; add ``"rank"`` / ``"weight_bits"`` to share the budget
    between methods). ``population``, ``parents``, ``sigma``, ``sigma_decay``: the
    evolution strategy's hyperparameters. ``latency``: a
    :class:`~autocompress.hardware.measured_path.MeasuredLatency`, with which ``latency_ratio``
    targets are filled by measurement (see the module docstring).
    """

    name = "allocate"

    def __init__(
        self,
        targets: Sequence[str | float] | str | float | None = None,
        *,
        cost: str = "flops",
        fields: Sequence[str] = ("prune",),
        population: int = 8,
        parents: int = 3,
        sigma: float = 0.35,
        sigma_decay: float = 0.85,
        max_redraws: int = 20,
        latency: Any = None,
    ) -> None:
        if cost not in COST_KEYS:
            raise ValueError(f"allocate: cost must be one of {list(COST_KEYS)}, got {cost!r}")
        unknown = set(fields) - set(IDENTITY)
        if not fields or unknown:
            raise ValueError(f"allocate: fields must be a non-empty subset of {list(IDENTITY)}, got {list(fields)}")
        if population < 1 or not 1 <= parents <= population:
            raise ValueError(f"allocate: need population >= 1 and 1 <= parents <= population, got {population}, {parents}")
        if sigma < 0 or not 0 < sigma_decay <= 1:
            raise ValueError(f"allocate: need sigma >= 0 and 0 < sigma_decay <= 1, got {sigma}, {sigma_decay}")
        if isinstance(targets, (str, int, float)):
            targets = [targets]
        self.targets = None if targets is None else [parse_target(t, cost) for t in targets]
        self.cost = cost
        self.fields = tuple(fields)
        self.population = population
        self.parents = parents
        self.sigma = sigma
        self.sigma_decay = sigma_decay
        self.max_redraws = max_redraws
        self.latency = latency

    # ------------------------------------------------------------------ run
    def run(self, ctx: SearchContext) -> None:
        targets = self._targets(ctx)
        ladders = gene_ladders(ctx.space, self.fields)
        if not ladders:
            ctx.log(f"allocate: no gene of {list(self.fields)} in this search space; nothing to allocate")
            return
        reachable = []
        for target in targets:
            key, bound, label = target
            if key == MEASURED:  # the uniform policy's measured path says what is in reach
                reached, closest = self.latency.flops_guess(bound) is not None, self.latency.fastest()
            else:
                _, cost, reached = project(ctx.space, ladders, np.zeros(len(ladders)), key, bound, ctx.latency_model)
                closest = cost / cost_value(ctx.space, Policy(), key, ctx.latency_model)
            if reached:
                reachable.append(target)
            else:
                ctx.log(f"allocate: target {label} is not reachable with the legal choices; closest reachable "
                        f"{key.removesuffix('_ratio')}_ratio={closest:.4g}; nothing evaluated for it")
        carry = 0  # what a target leaves unspent (no new allocation to draw) goes to the next one
        for index, (key, bound, label) in enumerate(reachable):
            if ctx.remaining() <= 0:
                return
            share = ctx.budget // len(reachable) + (index < ctx.budget % len(reachable)) + carry
            spent = self._evolve(ctx, ladders, key, bound, label, share, np.random.default_rng([ctx.seed, targets.index((key, bound, label))]))
            carry = share - spent

    def _targets(self, ctx: SearchContext) -> list[tuple[str, float, str]]:
        """(cost key, absolute bound, label) per target, the loosest first."""
        parsed = self.targets
        if parsed is None:
            parsed = cost_bounds(ctx.constraints)
            if not parsed:
                raise ValueError(
                    "allocate: no cost target; give targets=[...] (e.g. ['macs_ratio<=0.05']) "
                    "or a constraint such as 'flops_ratio<=0.25'"
                )
        out = []
        for key, bound, is_ratio in parsed:
            if key in LATENCY_KEYS and is_ratio and self.latency is not None:
                key, base = MEASURED, 1.0
            else:
                base = cost_value(ctx.space, Policy(), key, ctx.latency_model)
            absolute = bound * base if is_ratio else bound
            label = f"{key.removesuffix('_ratio')}_ratio<={bound:g}" if is_ratio else f"{key}<={bound:g}"
            out.append((key, absolute, label))
        return sorted(dict.fromkeys(out), key=lambda t: -t[1] / self._base(ctx, t[0]))

    def _base(self, ctx: SearchContext, key: str) -> float:
        return 1.0 if key == MEASURED else cost_value(ctx.space, Policy(), key, ctx.latency_model)

    def _project(self, ctx: SearchContext, ladders: Ladders, z: np.ndarray, key: str, bound: float) -> tuple[Policy, float, bool]:
        if key != MEASURED:
            return project(ctx.space, ladders, z, key, bound, ctx.latency_model)
        base = ctx.space.cost(Policy()).flops
        guess = self.latency.flops_guess(bound)
        fastest: tuple[Policy, float] | None = None
        for multiples in (FLOPS_BRACKET, FLOPS_FALLBACK):
            options: dict[str, tuple[Policy, float]] = {}
            for multiple in multiples:
                policy, flops, ok = project(ctx.space, ladders, z, "flops", min(1.0, guess * multiple) * base)
                if ok:
                    options.setdefault(policy_json(policy), (policy, flops))
            measured = self._measure(ctx, [p for p, _ in options.values()])
            runs = [(flops, policy, ratio) for (policy, flops), ratio in zip(options.values(), measured, strict=True)]
            meeting = [r for r in runs if r[2] <= bound]
            if meeting:
                _, policy, ratio = max(meeting, key=lambda r: r[0])
                return policy, ratio, True
            for _, policy, ratio in runs:
                if fastest is None or ratio < fastest[1]:
                    fastest = (policy, ratio)
        if fastest is None:
            return Policy(), 1.0, False
        return fastest[0], fastest[1], False

    def _measure(self, ctx: SearchContext, policies: list[Policy]) -> list[float]:
        """Measured latency ratios of ``policies`` (one side-by-side run), kept in the study for a resumed search."""
        if not policies:
            return []
        digest = hashlib.sha1("\n".join(policy_json(p) for p in policies).encode()).hexdigest()[:16]
        stored = ctx.kept(f"allocate-latency-{digest}")
        if stored is not None and len(stored) == len(policies):
            return [float(r) for r in stored]
        ctx.status(f"allocate: measuring {len(policies)} allocations' latency side by side with the original")
        ratios = self.latency.ratios(policies)
        ctx.status("")
        ctx.keep(f"allocate-latency-{digest}", ratios)
        return ratios

    # ------------------------------------------------------------------ evolution
    def _evolve(self, ctx: SearchContext, ladders: list, key: str, bound: float, label: str, share: int, rng: np.random.Generator) -> int:
        """Evaluate up to ``share`` allocations filling ``bound`` (on :func:`~autocompress.evolve.run_generations`:
        the population is the archive of evaluated (metric, z), best first); how many were evaluated."""
        base = self._base(ctx, key)
        dims = len(ladders)
        uniform, cost, _ = self._project(ctx, ladders, np.zeros(dims), key, bound)
        ctx.log(f"allocate: target {label}, uniform policy at {key.removesuffix('_ratio')}_ratio={cost / base:.4g}"
                + (" (measured)" if key == MEASURED else ""))
        seen: set[str] = set()
        sigma, spent = self.sigma, 0

        def select(scored: list[tuple[float, np.ndarray]], rng: np.random.Generator) -> np.ndarray:
            """The rank-weighted mean of the ``parents`` best allocations so far (0 before any)."""
            if not scored:
                return np.zeros(dims)
            top = scored[: self.parents]
            weights = np.log(len(top) + 1) - np.log(np.arange(1, len(top) + 1))
            return np.average(np.stack([z for _, z in top]), axis=0, weights=weights)

        def vary(mean: np.ndarray, rng: np.random.Generator, generation: int) -> list[tuple[Policy, np.ndarray]]:
            """New allocations ``mean + σ·N(0, 1)`` projected on the bound (the uniform one first in the first, tagged 0);
            a draw that snaps to a policy tried already is redrawn, ``size · max_redraws`` draws at most."""
            size = min(self.population, share - spent)
            batch: list[tuple[Policy, np.ndarray]] = []
            if generation == 1:
                batch.append((uniform, np.zeros(dims)))
                seen.add(policy_json(uniform))
            for _ in range(size * self.max_redraws):
                if len(batch) >= size:
                    break
                z = mean + sigma * rng.standard_normal(dims)
                policy, _, ok = self._project(ctx, ladders, z, key, bound)
                if ok and policy_json(policy) not in seen:
                    seen.add(policy_json(policy))
                    batch.append((policy, z))
            if not batch:
                ctx.log(f"allocate: target {label}: no new allocation after {size * self.max_redraws} draws; done")
            return batch

        def evaluate(batch: list[tuple[Policy, np.ndarray]], generation: int) -> list[tuple[float, np.ndarray]] | None:
            """(metric, z) of the completed ones; None when nothing was new or the budget ran out."""
            nonlocal spent
            if not batch:
                return None
            records = ctx.evaluate_many([p for p, _ in batch], phase="allocate", target=label, generation=generation - 1)
            spent += len(batch)
            if any(record.state == "skipped" for record in records):
                return None
            return [(float(record.values["metric"]), z) for (_, z), record in zip(batch, records, strict=True) if record.ok]

        def survive(scored: list[tuple[float, np.ndarray]], mean: np.ndarray,
                    born: list[tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
            """The archive with the newborn, best first; σ decays."""
            nonlocal sigma
            sigma *= self.sigma_decay
            return best_first(scored + born, lambda t: t[0])

        run_generations([], select=select, vary=vary, evaluate=evaluate, survive=survive, rng=rng,
                        proceed=lambda scored, generation: spent < share and ctx.remaining() > 0)
        return spent


#: the key of a latency-ratio target filled by measurement (``latency=``)
MEASURED = "latency_ratio"
#: multiples of the FLOPs ratio at which the uniform policy measured a latency target: an allocation is
#: projected on each and the set timed in one run; the fallback when none of them meets the target
FLOPS_BRACKET = (1.3, 1.15, 1.0, 0.87, 0.75)
FLOPS_FALLBACK = (0.6, 0.45, 0.3)
