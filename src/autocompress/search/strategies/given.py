"""``given``: evaluate a fixed list of policies, in order (yours, or another study's finalists).

Useful to measure hand-written policies with the search's machinery (persistent, resumable,
parallel workers) and to re-evaluate a study's best candidates with a longer fine-tune
(:func:`autocompress.search.confirm.confirm`). Records are tagged ``phase="given"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autocompress.policy import Policy
from autocompress.search.strategies.base import SearchContext, Strategy


class GivenStrategy(Strategy):
    """Evaluate ``policies`` (Policy objects or their dicts) in order, each once."""

    name = "given"

    def __init__(self, policies: Sequence[Policy | dict[str, Any]]) -> None:
        if not policies:
            raise ValueError("given: policies must be a non-empty list of policies")
        self.policies = [p if isinstance(p, Policy) else Policy.from_dict(p) for p in policies]

    def run(self, ctx: SearchContext) -> None:
        ctx.evaluate_many([ctx.space.validate(p) for p in self.policies], phase="given")
