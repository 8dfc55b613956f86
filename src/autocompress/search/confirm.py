"""Confirm a study's best candidates with a longer fine-tune (the last rung of successive halving).

A search scores many candidates after a short fine-tune (e.g. 100 steps): cheap, but at
heavy compression that proxy ranks near-equal candidates poorly (a policy that recovers
fast is not the one that ends best). :func:`confirm` takes the ``top`` candidates of a study
that meet the constraints (best proxy metric first), evaluates them again with the final
fine-tune budget, and stores those results in a companion study,
``<name>/confirm-<settings digest>``, in the same storage — so it is persistent, resumable
and parallel like any search (strategy ``given``), and never mixes two fidelities in one
front. The answer is ``confirm(...).best(constraints, objective="accuracy")``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from torch import nn

from autocompress.search.runner import search
from autocompress.search.study import Study, policy_key
from autocompress.space import SearchSpace
from autocompress.task import Task


def confirm_study_name(study: Study | str, settings: dict[str, Any]) -> str:
    """The companion study's name for ``study`` (or its name) and the confirmation's settings."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{study if isinstance(study, str) else study.optuna.study_name}/confirm-{digest}"


def confirm(
    study: Study,
    model: nn.Module,
    task: Task,
    space: SearchSpace | None = None,
    *,
    constraints: Sequence[str] = (),
    top: int = 3,
    objective: str = "accuracy",
    finetune_epochs: float = 5.0,
    evaluator: dict[str, Any] | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    console: Console | None = None,
    elastic: nn.Module | None = None,
    latency: dict[str, Any] | None = None,
) -> Study:
    """Re-evaluate the ``top`` best candidates of ``study`` meeting ``constraints`` with a longer fine-tune.

    ``evaluator``: more Evaluator settings (lr, split, distill, ...); ``finetune_epochs`` and
    ``seed`` are the confirmation's. ``elastic``: the search's supernet, for candidates naming a
    sub-network (the ``apq`` strategy's). ``latency``: latency settings, as for ``search``, to
    measure the confirmed models' latency too. Candidates are ranked by ``objective`` (default the
    metric) as the search measured it. Raises LookupError, saying how close the nearest
    came, when no candidate meets the constraints. Returns the companion study holding the
    confirmed results (run it again: nothing is evaluated twice; a larger ``top`` adds the
    next candidates).
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if study.storage is None:
        raise ValueError("the study does not know its storage; open it with Study.open(storage, name)")
    finalists: list = []
    keys: set[str] = set()
    for record in study.ranked(list(constraints), objective):
        if policy_key(record.policy) not in keys:
            keys.add(policy_key(record.policy))
            finalists.append(record.policy)
        if len(finalists) == top:
            break
    settings = {"finetune_epochs": finetune_epochs, "seed": seed, **(evaluator or {})}
    name = confirm_study_name(study, settings)
    objectives = [o.name for o in study.objectives]
    companion = Study.open(study.storage, name, objectives=objectives)
    done = {policy_key(r.policy) for r in companion.records({"complete", "failed"})}
    fresh = sum(policy_key(p) not in done for p in finalists)
    companion.set_meta(confirms=study.optuna.study_name, confirm_settings=settings)
    budget = max(1, len(done) + fresh)
    return search(
        model, task, space,
        objectives=objectives, strategy="given", strategy_params={"policies": finalists},
        budget=budget, storage=study.storage, study_name=name, seed=seed, workers=workers,
        finetune_epochs=finetune_epochs, evaluator={k: v for k, v in settings.items() if k not in ("finetune_epochs", "seed")},
        progress=progress, console=console, elastic=elastic, latency=latency,
        config=companion_config(study.meta.get("config"), settings, name, finalists, budget),
    )


def companion_config(config: dict | None, settings: dict[str, Any], name: str, finalists: list, budget: int) -> dict | None:
    """The search's stored configuration with the confirmation's evaluator, strategy and name.

    Stored in the companion study so that ``autocompress worker`` and ``export`` rebuild the
    confirmation's evaluation (not the search's shorter one). None when the search stored none.
    """
    if not config:
        return None
    from autocompress.search.config import load_config

    evaluator = {**config.get("evaluator", {}), **{k: v for k, v in settings.items() if k not in ("finetune_epochs", "seed")}}
    evaluator["finetune_steps"] = None  # the confirmation counts epochs
    changed = {**config, "study": name, "seed": settings["seed"], "finetune_epochs": settings["finetune_epochs"],
               "evaluator": evaluator, "strategy": "given", "budget": budget,
               "strategy_params": {"policies": [p.to_dict() for p in finalists]}}
    return load_config(changed).model_dump(mode="json")  # validated: a bad setting fails here, not in a worker
