"""Run a strategy on a persistent study: the search context, local worker processes, progress.

``search(model, task, ...)`` opens (or resumes) the study, measures the original model,
and runs the strategy. The strategy sees a :class:`SearchRun` (the ``SearchContext`` of
:mod:`autocompress.search.strategies.base`): ``evaluate_many`` returns stored results for
policies already evaluated (so a resumed search replays the strategy for free), queues
the others in the study and evaluates them here — inline, or on ``workers`` local
processes — while workers on other machines may take queued candidates too. A candidate is
evaluated by :mod:`autocompress.search.evaluation`, on the processes of :mod:`autocompress.search.pool`.
The run also carries the search's latency model (``latency={"estimate": True}`` builds one) and what a
strategy needs to time layers itself: the model, an example input and the latency settings.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from torch import nn

from autocompress.calls import Example, fit_inputs
from autocompress.cost import CostReport
from autocompress.policy import Policy
from autocompress.search.config import SearchConfig
from autocompress.search.evaluation import (
    EvaluationSpec,
    elastic_space,
    original_values,
    run_candidate,
)
from autocompress.search.heartbeat import Heartbeat
from autocompress.search.objectives import Constraint, Objective, Record
from autocompress.search.pool import WorkerPool
from autocompress.search.progress import candidate_line, front_summary, progress_bar
from autocompress.search.strategies import make_strategy
from autocompress.search.strategies.base import Strategy
from autocompress.search.study import HEARTBEAT_SECONDS, Study, policy_key
from autocompress.space import SearchSpace
from autocompress.task import Task

if TYPE_CHECKING:
    from autocompress.hardware.policy_latency import PolicyLatency

KEPT_PREFIX = "kept:"  # study meta keys of what strategies keep (SearchContext.keep)


class SearchRun:
    """The search context a strategy runs in (see strategies/base.py)."""

    def __init__(
        self,
        study: Study,
        spec: EvaluationSpec,
        *,
        strategy_name: str,
        constraints: Sequence[Constraint] = (),
        budget: int,
        seed: int = 0,
        workers: int = 1,
        console: Console | None = None,
        progress: bool = True,
        latency_model: PolicyLatency | None = None,
    ) -> None:
        self.study = study
        self.spec = spec
        self.space = spec.space
        self.elastic = spec.elastic
        self.model = spec.model
        self.latency_settings = spec.latency
        self.latency_model = latency_model
        self.objectives: tuple[Objective, ...] = study.objectives
        self.constraints = tuple(constraints)
        self.budget = int(budget)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.strategy_name = strategy_name
        self.workers = int(workers)
        self.console = console or Console()
        self._cache: dict[str, Record] = {}
        self._pool = WorkerPool(spec, self.workers)
        self._heartbeat = Heartbeat(study)
        self._progress = progress_bar(self.console) if progress else None
        self._task_id = None
        self._original: Record | None = None

    # ---------------------------------------------------------------- context API
    @cached_property
    def example_input(self) -> Example:
        return fit_inputs(self.model, self.spec.task.example_input(1))

    @property
    def original(self) -> Record:
        if self._original is None:
            values = self.study.meta.get("original")
            if values is None:
                values = original_values(self.spec)
                self.study.set_meta(original=values)
            self._original = Record(number=-1, policy=Policy(), state="complete", values=values, tags={"original": True})
        return self._original

    def cost(self, policy: Policy) -> CostReport:
        return self.spec.target(policy)[1].cost(policy)

    def history(self) -> list[Record]:
        return self.study.records()

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"[dim]{message}[/dim]")
        else:
            self.console.print(message)

    def status(self, text: str) -> None:
        if self._progress is not None and self._task_id is not None:
            name = self._progress.tasks[self._task_id].fields["name"]
            self._progress.update(self._task_id, description=f"{name}: {text}" if text else name)

    def kept(self, key: str) -> Any:
        return self.study.meta.get(KEPT_PREFIX + key)

    def keep(self, key: str, value: Any) -> None:
        self.study.set_meta(**{KEPT_PREFIX + key: value})

    def spent(self) -> int:
        """Real evaluations done or under way (stale and discarded candidates do not count)."""
        return sum(1 for r in self.study.records() if r.state in ("complete", "failed", "running", "waiting"))

    def remaining(self) -> int:
        return max(0, self.budget - self.spent())

    def evaluate(self, policy: Policy, **tags: Any) -> Record:
        return self.evaluate_many([policy], **tags)[0]

    def evaluate_many(self, policies: Sequence[Policy], **tags: Any) -> list[Record]:
        tags = {"strategy": self.strategy_name, **tags}
        keys = [policy_key(p) for p in policies]
        active = self._active_keys()  # before the cache: a candidate finishing in between is then in the cache
        self._refresh_cache()
        room = self.remaining()
        wanted: dict[str, Policy] = {}
        for key, policy in zip(keys, policies, strict=True):
            if key in self._cache or key in wanted:
                continue
            if key not in active:
                if room <= 0:
                    continue
                self.study.enqueue(self.spec.target(policy)[1].validate(policy), tags)
                room -= 1
            wanted[key] = policy
        self._drive(wanted, tags)
        out = []
        for key, policy in zip(keys, policies, strict=True):
            record = self._cache.get(key)
            out.append(record if record is not None else Record(number=-1, policy=policy, state="skipped", tags=tags))
        return out

    # ---------------------------------------------------------------- evaluation loop
    def _refresh_cache(self) -> None:
        for record in self.study.records({"complete", "failed"}):
            self._cache.setdefault(policy_key(record.policy), record)

    def _active_keys(self) -> set[str]:
        return {policy_key(r.policy) for r in self.study.records({"waiting", "running"})}

    def _drive(self, wanted: dict[str, Policy], tags: dict[str, Any]) -> None:
        """Evaluate queued candidates until every policy in ``wanted`` has a result.

        Candidates taken by other processes are waited for; one whose taker died (stale)
        is queued again.
        """
        in_flight: dict[Future, int] = {}  # future -> candidate number
        while True:
            self._refresh_cache()
            missing = {k: p for k, p in wanted.items() if k not in self._cache}
            if not missing and not in_flight:
                return
            took = False
            while len(in_flight) < max(1, self.workers):
                trial = self.study.take_waiting()
                if trial is None:
                    break
                took = True
                policy = Policy.from_dict(trial.user_attrs["policy"])
                self._heartbeat.add(trial.number)
                if self.workers <= 1:
                    values, error, seconds = run_candidate(self.spec, policy)
                    self._finish(trial.number, values, error, seconds)
                    break
                future = self._pool.submit(policy)
                in_flight[future] = trial.number
            if in_flight:
                done, _ = wait(list(in_flight), timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    number = in_flight.pop(future)
                    try:
                        values, error, seconds = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker process died
                        values, error, seconds = None, f"worker process failed: {exc}", 0.0
                    self._finish(number, values, error, seconds)
            elif not took:  # the rest is being evaluated elsewhere
                self.study.fail_stale()
                active = self._active_keys()
                self._refresh_cache()  # after `active`: nothing finishing in between is queued again
                for key, policy in missing.items():
                    if key not in active and key not in self._cache:
                        self.study.enqueue(policy, tags)
                time.sleep(0.5)

    def _finish(self, number: int, values: dict | None, error: str | None, seconds: float) -> None:
        stored = self.study.finish(number, values, error, seconds)
        self._heartbeat.remove(number)
        if not stored:
            self.log(f"candidate #{number} was marked stale by another process while it ran: it will run again")
            return
        record = self.study.record(number)
        self._cache.setdefault(policy_key(record.policy), record)
        if error:
            self.log(f"candidate #{number} failed: {error}")
        elif not self.console.is_terminal:  # no live bar outside a terminal: one line per candidate
            self.console.print(candidate_line(record, self.objectives, self.strategy_name), soft_wrap=True)
        self._update_progress()

    # ---------------------------------------------------------------- progress
    def _update_progress(self) -> None:
        if self._progress is None or self._task_id is None:
            return
        done = sum(1 for r in self.study.records() if r.state in ("complete", "failed"))
        self._progress.update(self._task_id, completed=min(done, self.budget), front=front_summary(self.study, self.objectives))

    def finish_queue(self) -> None:
        """Evaluate what a killed run left queued, and wait for candidates still running.

        A candidate whose process died is noticed by its heartbeat (after ``STALE_SECONDS``)
        and queued again. Afterwards ``remaining()`` counts only real results.
        """
        leftovers = {policy_key(r.policy): r.policy for r in self.study.records({"waiting", "running"})}
        if leftovers:
            self.log(f"{len(leftovers)} candidates were queued or running before this run: finishing them first")
            self._drive(leftovers, {"strategy": self.strategy_name})

    def run(self, strategy: Strategy) -> None:
        """Resume-safe: finish the queue a killed run left, then run (replay) the strategy."""
        self.study.fail_stale()
        _ = self.original
        self.study.set_meta(finished=False)
        try:
            if self._progress is not None:
                self._progress.start()
                name = f"search ({strategy.name})"
                self._task_id = self._progress.add_task(name, total=self.budget, front="", name=name)
                self._update_progress()
            self.finish_queue()
            strategy.run(self)
            self.study.set_meta(finished=True)
        finally:
            if self._progress is not None:
                self._progress.stop()
            self._heartbeat.close()
            self._pool.shutdown()


def search(
    model: nn.Module,
    task: Task,
    space: SearchSpace | None = None,
    *,
    objectives: Sequence[str] = ("accuracy", "flops"),
    constraints: Sequence[str] = (),
    strategy: str | Strategy = "genecai",
    strategy_params: dict[str, Any] | None = None,
    budget: int = 100,
    storage: str | Path = "runs/study.db",
    study_name: str = "autocompress",
    seed: int = 0,
    workers: int = 1,
    finetune_epochs: float = 1.0,
    evaluator: dict[str, Any] | None = None,
    latency: dict[str, Any] | None = None,
    progress: bool = True,
    console: Console | None = None,
    config: dict[str, Any] | None = None,
    elastic: nn.Module | None = None,
    latency_model: PolicyLatency | None = None,
) -> Study:
    """Search compression policies of ``model`` on ``task``; returns the (persistent) study.

    Run it again with the same storage and study name to resume: finished candidates are
    not evaluated again. ``budget`` is the total number of real evaluations. ``config``:
    the search configuration (stored in the study, so that ``autocompress worker`` and
    ``autocompress export`` can rebuild the model and task). ``elastic``: an elastic supernet
    (:class:`~autocompress.elastic.ElasticModel`) whose sub-networks policies may name (``Policy.arch``;
    the ``apq`` strategy); ``model`` is then the reference they are compared with, e.g. its largest sub-network.
    ``latency_model``: the lookup-table latency model (:class:`~autocompress.hardware.policy_latency.PolicyLatency`
    of ``space``) that the strategies' latency targets and budgets use; default: built from ``latency`` when it
    says ``estimate: true``, else none.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if "latency" in objectives and latency is None:
        latency = {"batch": 32, "threads": 1}
    space = space or SearchSpace.from_model(model, task.example_input())
    if latency_model is None and latency and latency.get("estimate"):
        from autocompress.hardware.policy_latency import latency_model_for

        latency_model = latency_model_for(space, model, task, latency)  # latency targets for the strategies
    chosen = strategy if isinstance(strategy, Strategy) else make_strategy(strategy, **(strategy_params or {}))
    parsed = [Constraint.parse(c) for c in constraints]
    study = Study.open(storage, study_name, objectives=list(objectives))
    study.set_meta(strategy=chosen.name, seed=seed, budget=budget, config=config)
    settings = {"finetune_epochs": finetune_epochs, "seed": seed, "device": "auto", **(evaluator or {})}
    spec = EvaluationSpec(model=model, task=task, space=space, evaluator=settings, latency=latency)
    if elastic is not None:
        spec.elastic = elastic_space(elastic, task, model, settings)
    SearchRun(
        study, spec, strategy_name=chosen.name, constraints=parsed, budget=budget, seed=seed, workers=workers,
        console=console, progress=progress, latency_model=latency_model,
    ).run(chosen)
    return study


def search_from_config(config: SearchConfig, *, workers: int | None = None, progress: bool = True, console: Console | None = None) -> Study:
    """Run (or resume) the search a validated configuration describes."""
    model, task, space = config.build()
    return search(
        model,
        task,
        space,
        objectives=config.objectives,
        constraints=config.constraints,
        strategy=config.strategy,
        strategy_params=config.strategy_params,
        budget=config.budget,
        storage=config.storage,
        study_name=config.study,
        seed=config.seed,
        workers=workers or config.workers,
        finetune_epochs=config.finetune_epochs,
        evaluator={k: v for k, v in config.evaluator_kwargs().items() if k not in ("finetune_epochs", "seed")},
        latency=config.latency.model_dump() if config.latency else None,
        progress=progress,
        console=console,
        config=config.model_dump(mode="json"),
        elastic=config.load_elastic(),
    )
