"""The one interface every search strategy implements.

A strategy is a plain, *deterministic* loop: given the context's seed it proposes
policies and is told their results through ``ctx.evaluate_many`` (or ``ctx.evaluate``),
until ``ctx.remaining()`` reaches 0. It keeps no state outside that loop.

That is what makes a search resumable: the study caches every finished candidate by
its policy, so re-running a strategy from the start replays the same proposals, gets
the stored results back instantly (without spending budget), and carries on where the
killed run stopped. A strategy must therefore draw all randomness from ``ctx.rng`` (or
generators seeded from ``ctx.seed``) and never from global state or the clock.

Latency travels with the context, not with the space: ``ctx.latency_model`` estimates a policy's
latency on the search's target (lookup tables; for latency targets and budgets, passed to the cost
functions of :mod:`autocompress.search.ladders` and :func:`~autocompress.search.optimize.optimize_policy`),
and a strategy that times layers itself (``targeted-lowrank``) has ``ctx.model``, ``ctx.example_input``
and ``ctx.latency_settings`` to build its own table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from torch import nn

from autocompress.calls import Example
from autocompress.cost import CostReport
from autocompress.policy import Policy
from autocompress.search.objectives import Constraint, Objective, Record
from autocompress.space import SearchSpace

if TYPE_CHECKING:
    from autocompress.hardware.policy_latency import PolicyLatency


class SearchContext(Protocol):
    """What a strategy sees of the search (implemented by :class:`autocompress.search.study.Study`'s runner)."""

    space: SearchSpace
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    budget: int  # real evaluations allowed, in total, over every resume
    seed: int
    rng: np.random.Generator  # seeded from `seed`; the strategy's only source of randomness
    elastic: Any  # an autocompress.elastic.ElasticSpace when the search has a supernet (apq), else None
    model: nn.Module  # the search's model, the original every policy applies to (never changed)
    #: the search's latency settings (``runtime``, ``threads``, ``batch``, ``repeats``, ``estimate``); None: none given
    latency_settings: dict[str, Any] | None
    #: a policy's latency (ms) on the search's target from its lookup table, for latency targets and budgets
    #: (``search(..., latency={"estimate": True})`` or ``search(..., latency_model=...)``); None without
    latency_model: PolicyLatency | None

    @property
    def example_input(self) -> Example:
        """One sample of the task's inputs, as the model takes them (a tensor, a tuple or keyword tensors)."""

    def remaining(self) -> int:
        """Real evaluations left (cached results do not count)."""

    def evaluate(self, policy: Policy, **tags: Any) -> Record:
        """Evaluate one policy (or return its stored record); tags are stored with it."""

    def evaluate_many(self, policies: Sequence[Policy], **tags: Any) -> list[Record]:
        """Evaluate several policies, in parallel when the search has workers.

        Returns one record per policy, in order. Policies beyond the remaining budget are
        not evaluated: their records have state "skipped". A failed evaluation comes back
        with state "failed" and its error; the search goes on.
        """

    def cost(self, policy: Policy) -> CostReport:
        """Analytic cost of a policy (no evaluation, ~0.1 ms)."""

    @property
    def original(self) -> Record:
        """The uncompressed model's record (metric_original, original costs); free."""

    def history(self) -> list[Record]:
        """Every record of the study so far (all strategies, all runs)."""

    def log(self, message: str) -> None:
        """A line for the progress display."""

    def status(self, text: str) -> None:
        """What the strategy is doing between evaluations, shown beside the progress bar ("" clears it)."""

    def kept(self, key: str) -> Any:
        """A JSON value the strategy kept in the study under ``key`` (None when there is none)."""

    def keep(self, key: str, value: Any) -> None:
        """Keep a JSON value in the study, so that a resumed run finds work that is not an evaluation
        (e.g. apq's cheap labels) done: the same value, not recomputed."""


class Strategy(ABC):
    """Proposes policies and is told their results; constructor arguments are its hyperparameters."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, ctx: SearchContext) -> None:
        """Search until ``ctx.remaining() == 0`` (or the strategy is done)."""


def feasible(record: Record, constraints: Sequence[Constraint]) -> bool:
    return record.ok and all(c.satisfied(record.values) for c in constraints)
