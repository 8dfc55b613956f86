"""``autocompress worker``: evaluate candidates queued in a shared study (another machine).

The search process queues candidates as WAITING trials; any number of workers, on this or
other machines reaching the same storage (PostgreSQL, or a SQLite file on one machine),
take them one at a time — Optuna gives each to exactly one taker — evaluate them and
store the results. The model, task and evaluator settings come from the configuration the
search stored in the study.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from autocompress.policy import Policy
from autocompress.search.config import ConfigError, load_config
from autocompress.search.evaluation import run_candidate, spec_from_config
from autocompress.search.heartbeat import Heartbeat
from autocompress.search.study import Study


def run_worker(
    storage: str | Path,
    study_name: str,
    *,
    idle_timeout: float = 60.0,
    max_candidates: int | None = None,
    console: Console | None = None,
) -> int:
    """Evaluate queued candidates until the search finishes or nothing comes for ``idle_timeout`` s."""
    console = console or Console()
    study = Study.open(storage, study_name, create=False)
    stored = study.meta.get("config")
    if not stored:
        raise ConfigError(
            f"study {study_name!r} has no stored configuration: start it with `autocompress search CONFIG.yaml`"
        )
    config = load_config(stored)
    spec = spec_from_config(config)
    heartbeat = Heartbeat(study)
    console.print(f"worker ready: taking candidates of study {study_name!r}")
    done, idle_since = 0, time.monotonic()
    try:
        while max_candidates is None or done < max_candidates:
            study.fail_stale()
            trial = study.take_waiting()
            if trial is None:
                if study.meta.get("finished") or time.monotonic() - idle_since > idle_timeout:
                    break
                time.sleep(1.0)
                continue
            heartbeat.add(trial.number)
            values, error, seconds = run_candidate(spec, Policy.from_dict(trial.user_attrs["policy"]))
            stored = study.finish(trial.number, values, error, seconds)
            heartbeat.remove(trial.number)
            idle_since = time.monotonic()
            if not stored:
                console.print(f"candidate #{trial.number} was marked stale meanwhile (clocks out of step?): result dropped")
                continue
            done += 1
            state = "failed: " + error if error else f"{values['metric']:.2f}"
            console.print(f"candidate #{trial.number}: {state} ({seconds:.1f} s)")
    finally:
        heartbeat.close()
    return done
