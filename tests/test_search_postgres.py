"""The multi-worker search on a real PostgreSQL server (started by the tests, see postgres.py).

Skipped, with the reason in the warnings summary, where PostgreSQL or psycopg2 is missing;
AUTOCOMPRESS_TEST_POSTGRES=require (CI) turns that into an error.
"""

import itertools
import os
import re
import subprocess
import sys
import warnings

import optuna
import pytest
import torch
from postgres import REQUIRE_ENV, postgres_server, unavailable_reason
from workers import search_waits_for_worker

from autocompress.search import Study, load_config, search
from autocompress.search import runner as runner_module
from autocompress.search.study import policy_key
from autocompress.zoo import load_zoo

EVALUATOR = {"finetune_steps": 20}
_names = itertools.count()


class PostgresUnavailable(UserWarning):
    """No PostgreSQL test server here: the PostgreSQL search tests are skipped."""


@pytest.fixture(scope="module")
def server():
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "require":
            pytest.fail(f"{REQUIRE_ENV}=require but PostgreSQL cannot run here: {reason}")
        warnings.warn(f"PostgreSQL search tests skipped: {reason}", PostgresUnavailable, stacklevel=1)
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    with postgres_server() as running:
        yield running


@pytest.fixture
def database(server):
    """A fresh database on the test server; its SQLAlchemy URL."""
    return server.create_database(f"autocompress_{os.getpid()}_{next(_names)}")


@pytest.fixture(scope="module")
def wine():
    return load_zoo("wine-mlp", pretrained=True, seed=0)


def _keys(study: Study, state: str = "complete") -> list[str]:
    return [policy_key(r.policy) for r in study.records({state})]


def _assert_each_evaluated_once(study: Study, budget: int) -> None:
    keys = _keys(study)
    assert len(keys) == budget and len(set(keys)) == budget, keys
    # every real candidate completed: none failed, none left running or waiting
    assert {r.state for r in study.records()} == {"complete"}


def test_two_local_workers_on_postgres_evaluate_each_candidate_once(database, wine):
    study = search(wine.model, wine.task, strategy="random", budget=8, storage=database, workers=2,
                   evaluator=EVALUATOR, progress=False)
    _assert_each_evaluated_once(study, 8)
    trials = study.optuna.get_trials()
    assert len(trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # stored in PostgreSQL, not in a local file: another connection reads the same records
    again = Study.open(database, "autocompress", create=False)
    assert sorted(_keys(again)) == sorted(_keys(study))


def test_remote_worker_shares_the_postgres_queue(database, wine, monkeypatch):  # wine: the zoo model cached
    config = {"zoo": "wine-mlp", "strategy": "random", "budget": 8, "storage": database, "study": "shared",
              "evaluator": EVALUATOR}
    parsed = load_config(config)
    study = Study.open(database, "shared", objectives=parsed.objectives)
    study.set_meta(config=parsed.model_dump(mode="json"))
    # two evaluating processes on this machine: one torch thread each (oversubscribed cores crawl)
    worker = subprocess.Popen(
        [sys.executable, "-m", "autocompress.cli", "worker", "--storage", database, "--study", "shared",
         "--idle-timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    search_waits_for_worker(monkeypatch, study, worker)
    try:
        runner_module.search_from_config(parsed, progress=False)
        output, _ = worker.communicate(timeout=120)
    finally:
        worker.kill()
        torch.set_num_threads(threads)
    assert worker.returncode == 0, output
    final = Study.open(database, "shared", create=False)
    _assert_each_evaluated_once(final, 8)
    evaluated = int(re.search(r"evaluated (\d+) candidates", output).group(1))
    assert 1 <= evaluated < 8, output  # the worker took part of the queue, the search the rest
    numbers = [int(n) for n in re.findall(r"candidate #(\d+):", output)]
    assert len(numbers) == evaluated and len(set(numbers)) == evaluated, output
    assert set(numbers) <= {r.number for r in final.completed()}, output


def test_resume_on_postgres_reevaluates_nothing(database, wine):
    first = search(wine.model, wine.task, strategy="random", budget=3, storage=database,
                   evaluator=EVALUATOR, progress=False)
    before = {t.number: (t.values, t.datetime_complete) for t in first.optuna.get_trials()}
    study = search(wine.model, wine.task, strategy="random", budget=6, storage=database,
                   evaluator=EVALUATOR, progress=False)
    _assert_each_evaluated_once(study, 6)
    assert len(study.optuna.get_trials()) == 6  # 3 new trials, none for the 3 already evaluated
    after = {t.number: (t.values, t.datetime_complete) for t in study.optuna.get_trials()}
    assert len(before) == 3 and {n: v for n, v in after.items() if n in before} == before  # untouched
    # a third run with the same budget evaluates nothing
    again = search(wine.model, wine.task, strategy="random", budget=6, storage=database,
                   evaluator=EVALUATOR, progress=False)
    assert len(again.optuna.get_trials()) == 6
