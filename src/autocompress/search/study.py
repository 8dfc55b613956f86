"""Study: every evaluated candidate of a search, persisted in an Optuna storage.

One Optuna trial per candidate. Its user attributes hold the policy (JSON), a key of the
policy, the measured values (see :mod:`autocompress.search.objectives`), the strategy's
tags, the error of a failed evaluation and the evaluation time; the trial's values are
the study's objectives. The storage is any Optuna RDB URL: a SQLite file by default,
PostgreSQL for workers on several machines.

Candidates are queued as WAITING trials and taken by whoever evaluates them (this
process, its local worker processes, or ``autocompress worker`` on other machines);
Optuna hands each waiting trial to exactly one taker. A trial being evaluated carries a
heartbeat; a RUNNING trial whose heartbeat is older than ``STALE_SECONDS`` belonged to a
killed process and is failed (marked stale), so that its candidate can be evaluated again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from autocompress.policy import Policy
from autocompress.search.objectives import Constraint, Objective, Record, parse_objectives
from autocompress.search.pareto import hypervolume, pareto_front_indices

STALE_SECONDS = 120.0
HEARTBEAT_SECONDS = 15.0
_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
    TrialState.PRUNED: "failed",
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def policy_key(policy: Policy) -> str:
    """Identity of a policy's genes (input spec excluded); identity genes are dropped; a sub-network's ``arch`` counts."""
    layers = {name: genes.model_dump() for name, genes in sorted(policy.layers.items()) if not genes.is_identity}
    identity: object = layers if policy.arch is None else {"arch": list(policy.arch), "layers": layers}
    if policy.activations != "static" and layers:  # the same bits with per-call input ranges are another model
        identity = {"activations": policy.activations, "layers": identity}
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def storage_url(storage: str | Path) -> str:
    """A path becomes a SQLite URL (its folder is created); URLs pass through."""
    text = str(storage)
    if "://" in text:
        if text.startswith("sqlite:///"):
            Path(text.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return text
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{text}"


def open_storage(storage: str | Path) -> optuna.storages.RDBStorage:
    url = storage_url(storage)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


class Study:
    """Records of one search, with its Pareto front, hypervolume and best candidate."""

    def __init__(self, study: optuna.Study, objectives: tuple[Objective, ...], storage: str | Path,
                 backend: optuna.storages.RDBStorage) -> None:  # use Study.open
        self.optuna = study
        self.objectives = objectives
        self.storage = storage  # as given to Study.open (a path or URL)
        self.backend = backend  # the same database as the study's own (cached) storage, through Optuna's public API
        self.study_id = backend.get_study_id_from_name(study.study_name)
        self._trial_ids: dict[int, int] = {}

    def trial_id(self, number: int) -> int:
        """The storage's id of candidate ``number`` (fixed once created)."""
        if number not in self._trial_ids:
            self._trial_ids[number] = self.backend.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return self._trial_ids[number]

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        storage: str | Path,
        name: str = "autocompress",
        objectives: Sequence[str] | None = None,
        create: bool = True,
    ) -> Study:
        """Open (or, with ``create``, create) study ``name``; objectives must match a stored study's."""
        backend = open_storage(storage)
        names = optuna.get_all_study_names(backend)
        if name in names:
            study = optuna.load_study(study_name=name, storage=backend)
            stored = tuple(study.user_attrs.get("objectives", ()))
            if objectives is not None and tuple(objectives) != stored:
                raise ValueError(
                    f"study {name!r} in {storage} was created with objectives {list(stored)}, not {list(objectives)}; "
                    "use another study name"
                )
            return cls(study, parse_objectives(stored), storage, backend)
        if not create:
            known = ", ".join(names) or "none"
            raise ValueError(f"no study {name!r} in {storage}; studies there: {known}")
        if objectives is None:
            raise ValueError("objectives are needed to create a study")
        parsed = parse_objectives(objectives)
        study = optuna.create_study(
            storage=backend, study_name=name, directions=[o.direction for o in parsed], load_if_exists=True
        )
        study.set_user_attr("objectives", list(objectives))
        return cls(study, parsed, storage, backend)

    def set_meta(self, **meta: Any) -> None:
        for key, value in meta.items():
            self.optuna.set_user_attr(key, value)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.optuna.user_attrs)

    # ---------------------------------------------------------------- records
    def records(self, states: Iterable[str] | None = None) -> list[Record]:
        wanted = set(states) if states is not None else None
        optuna_states = None  # filter in the storage too: the search reads these on every step
        if wanted is not None:
            storage_names = wanted | ({"failed"} if "stale" in wanted else set())  # stale trials are FAIL
            optuna_states = tuple(s for s, name in _STATES.items() if name in storage_names)
        out = []
        for trial in self.optuna.get_trials(deepcopy=False, states=optuna_states):
            record = to_record(trial)
            if record is None or (wanted is not None and record.state not in wanted):
                continue
            out.append(record)
        return out

    def completed(self) -> list[Record]:
        return self.records({"complete"})

    def record(self, number: int) -> Record:
        trial = self.optuna.trials[number] if number < len(self.optuna.trials) else None
        record = to_record(trial) if trial is not None else None
        if record is None:
            raise KeyError(f"no candidate #{number} in this study ({len(self.optuna.trials)} trials)")
        return record

    # ---------------------------------------------------------------- writing
    def enqueue(self, policy: Policy, tags: dict[str, Any]) -> None:
        self.optuna.enqueue_trial({}, user_attrs={"policy": policy.to_dict(), "key": policy_key(policy), "tags": tags})

    def take_waiting(self) -> optuna.trial.Trial | None:
        """Take the oldest waiting candidate (atomically), or None if there is none.

        SQLite has no row locks, so two processes could take the same trial; for a SQLite
        file the take is serialized by an exclusive lock on a file beside it.
        """
        with self._take_lock():
            if not self.optuna.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None
            trial = self.optuna.ask()
        if "policy" not in trial.user_attrs:  # another taker emptied the queue first
            trial.set_user_attr("discarded", True)
            self.optuna.tell(trial, state=TrialState.FAIL)
            return None
        trial.set_user_attr("heartbeat", time.time())
        return trial

    @contextlib.contextmanager
    def _take_lock(self) -> Iterator[None]:
        url = str(self.backend.url)
        if not url.startswith("sqlite:///"):
            yield
            return
        with open(url.removeprefix("sqlite:///") + ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def heartbeat(self, numbers: Iterable[int]) -> None:
        """Mark candidates ``numbers`` (RUNNING in this process) alive now."""
        now = time.time()
        for number in numbers:
            self.backend.set_trial_user_attr(self.trial_id(number), "heartbeat", now)

    def finish(self, trial: optuna.trial.Trial | int, values: dict[str, float] | None, error: str | None, seconds: float) -> bool:
        """Store a candidate's result: its values, or the error that failed it.

        Returns False (the result is dropped) when the candidate was meanwhile marked stale
        by another process — its clock ran ahead, or this one could not beat — so that the
        candidate is queued and evaluated again instead of crashing this process.
        """
        try:
            self._finish(trial, values, error, seconds)
        except UpdateFinishedTrialError:
            return False
        return True

    def _finish(self, trial: optuna.trial.Trial | int, values: dict[str, float] | None, error: str | None, seconds: float) -> None:
        number = trial if isinstance(trial, int) else trial.number
        storage, trial_id = self.backend, self.trial_id(number)
        storage.set_trial_user_attr(trial_id, "seconds", seconds)
        if error is None and values is not None:
            objective_values = [values.get(o.key, float("nan")) for o in self.objectives]
            if all(np.isfinite(objective_values)):
                storage.set_trial_user_attr(trial_id, "values", values)
                self.optuna.tell(number, objective_values)
                return
            error = f"non-finite objective values {dict(zip([o.name for o in self.objectives], objective_values, strict=True))}"
        storage.set_trial_user_attr(trial_id, "error", error or "unknown error")
        self.optuna.tell(number, state=TrialState.FAIL)

    def fail_stale(self) -> int:
        """Fail RUNNING candidates whose evaluator stopped beating (killed processes)."""
        count, now = 0, time.time()
        for trial in self.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if now - max(float(trial.user_attrs.get("heartbeat", 0.0)), started) > STALE_SECONDS:
                self.backend.set_trial_user_attr(self.trial_id(trial.number), "stale", True)
                self.optuna.tell(trial.number, state=TrialState.FAIL)
                count += 1
        return count

    # ---------------------------------------------------------------- results
    def _objectives(self, objectives: Sequence[str] | None) -> tuple[Objective, ...]:
        return self.objectives if objectives is None else parse_objectives(list(objectives))

    def points(self, records: Sequence[Record], objectives: Sequence[str] | None = None) -> np.ndarray:
        chosen = self._objectives(objectives)
        return np.array([[r.values.get(o.key, np.nan) for o in chosen] for r in records], dtype=float).reshape(len(records), len(chosen))

    def pareto_front(self, objectives: Sequence[str] | None = None, constraints: Sequence[str | Constraint] = ()) -> list[Record]:
        """The non-dominated completed candidates (among those meeting ``constraints``)."""
        chosen = self._objectives(objectives)
        parsed = [c if isinstance(c, Constraint) else Constraint.parse(c) for c in constraints]
        records = [r for r in self.completed() if all(c.satisfied(r.values) for c in parsed)]
        if not records:
            return []
        index = pareto_front_indices(self.points(records, [o.name for o in chosen]), [o.direction for o in chosen])
        return [records[i] for i in index]

    def default_reference(self, objectives: Sequence[str] | None = None) -> list[float]:
        """Metric 0 for a maximized metric; the original model's value for a cost."""
        chosen = self._objectives(objectives)
        original = self.meta.get("original", {})
        reference = []
        for o in chosen:
            if o.direction == "maximize":
                reference.append(0.0)
            elif o.key in original:
                reference.append(float(original[o.key]))
            else:
                raise ValueError(f"no reference for {o.name!r}: pass reference=[...]")
        return reference

    def hypervolume(self, reference: Sequence[float] | None = None, objectives: Sequence[str] | None = None) -> float:
        chosen = self._objectives(objectives)
        names = [o.name for o in chosen]
        reference = list(reference) if reference is not None else self.default_reference(names)
        records = self.completed()
        if not records:
            return 0.0
        return hypervolume(self.points(records, names), reference, [o.direction for o in chosen])

    def best(self, constraint: str | Sequence[str] = (), objective: str | None = None) -> Record:
        """The candidate meeting every constraint that is best on ``objective``.

        ``objective`` defaults to the study's first cost objective (smallest), or the metric
        when the study has no cost objective. If no candidate meets the constraints, the
        error says how close the nearest came.
        """
        return self.ranked(constraint, objective)[0]

    def ranked(self, constraint: str | Sequence[str] = (), objective: str | None = None) -> list[Record]:
        """Every candidate meeting the constraints, best on ``objective`` first (see :meth:`best`)."""
        texts = [constraint] if isinstance(constraint, str) else list(constraint)
        parsed = [Constraint.parse(t) for t in texts if t]
        chosen = Objective.parse(objective) if objective else next(
            (o for o in self.objectives if o.direction == "minimize"), self.objectives[0]
        )
        records = [r for r in self.completed() if chosen.key in r.values]
        if not records:
            raise LookupError("the study has no completed candidate yet")
        meeting = [r for r in records if all(c.satisfied(r.values) for c in parsed)]
        if not meeting:
            closest = min(records, key=lambda r: sum(c.violation(r.values) for c in parsed))
            gaps = ", ".join(f"{c.key}={closest.values.get(c.key, float('nan')):.4g} (needs {c})" for c in parsed)
            raise LookupError(
                f"no candidate meets {', '.join(map(str, parsed))}; the closest is #{closest.number}: {gaps}"
            )
        return sorted(meeting, key=lambda r: (chosen.sign() * r.values[chosen.key], r.number))


def to_record(trial: optuna.trial.FrozenTrial) -> Record | None:
    attrs = trial.user_attrs
    if "policy" not in attrs:  # a discarded empty trial
        return None
    state = _STATES.get(trial.state, "failed")
    error = attrs.get("error")
    if trial.state == TrialState.FAIL and attrs.get("stale"):
        state, error = "stale", "the process evaluating it stopped"
    return Record(
        number=trial.number,
        policy=Policy.from_dict(attrs["policy"]),
        state=state,
        values=dict(attrs.get("values", {})),
        tags=dict(attrs.get("tags", {})),
        error=error,
        seconds=float(attrs.get("seconds", 0.0)),
    )


def dumps_record(record: Record) -> dict[str, Any]:
    return {
        "number": record.number,
        "state": record.state,
        "values": record.values,
        "tags": record.tags,
        "error": record.error,
        "seconds": record.seconds,
        "policy": record.policy.to_dict(),
    }
