"""Search strategies, all behind one interface (base.Strategy) and run on the same Study."""

from __future__ import annotations

import importlib
from typing import Any

from autocompress.search.strategies.base import SearchContext, Strategy

#: name -> "module:class"; modules are imported on use
STRATEGIES = {
    "random": "autocompress.search.strategies.random_search:RandomStrategy",
    "uniform": "autocompress.search.strategies.uniform:UniformStrategy",
    "nsga2": "autocompress.search.strategies.nsga2:NSGA2Strategy",
    "greedy": "autocompress.search.strategies.greedy:GreedyStrategy",
    "genecai": "autocompress.search.strategies.genecai:GeneCAIStrategy",
    "allocate": "autocompress.search.strategies.allocate:AllocateStrategy",
    "given": "autocompress.search.strategies.given:GivenStrategy",
    "seernet": "autocompress.search.strategies.seernet:SeerNetStrategy",
    "predicted": "autocompress.search.strategies.predicted_evolution:PredictedEvolutionStrategy",
    "apq": "autocompress.search.strategies.apq:APQStrategy",
    "targeted-lowrank": "autocompress.search.strategies.targeted_lowrank:TargetedLowRankStrategy",
}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    module, _, attribute = STRATEGIES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build strategy ``name``; a wrong parameter names the ones the strategy takes."""
    cls = strategy_class(name)
    try:
        return cls(**params)
    except TypeError as error:
        import inspect

        allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise ValueError(f"strategy {name!r}: {error}; its parameters: {', '.join(allowed) or 'none'}") from None


__all__ = ["STRATEGIES", "SearchContext", "Strategy", "make_strategy", "strategy_class"]
