"""Search: persistence, resume (also after kill -9), failures, fronts, workers, config errors."""

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import optuna
import pytest
from rich.console import Console
from workers import search_waits_for_worker

import autocompress.search.study as study_module
from autocompress.policy import Policy
from autocompress.search import ConfigError, Study, load_config, search
from autocompress.search import evaluation as evaluation_module
from autocompress.search import runner as runner_module
from autocompress.search.pareto import non_dominated
from autocompress.search.strategies.base import Strategy
from autocompress.search.study import policy_key
from autocompress.zoo import load_zoo


@pytest.fixture(scope="module")
def wine():
    return load_zoo("wine-mlp", pretrained=True, seed=0)


def _keys(study: Study, state: str = "complete") -> list[str]:
    return [policy_key(r.policy) for r in study.records({state})]


def test_search_stores_every_candidate_and_its_front(wine, tmp_path):
    study = search(wine.model, wine.task, strategy="random", budget=8, storage=tmp_path / "s.db", progress=False)
    records = study.completed()
    assert len(records) == 8
    for r in records:
        assert {"metric", "accuracy_drop", "flops", "flops_ratio", "params", "bitops", "bytes"} <= set(r.values)
        assert r.tags["strategy"] == "random" and r.seconds > 0
    points = np.array([[r.values["metric"], r.values["flops"]] for r in records])
    expected = {records[i].number for i in np.flatnonzero(non_dominated(points, ["maximize", "minimize"]))}
    assert {r.number for r in study.pareto_front()} == expected
    assert study.hypervolume() > 0
    # reopened from the file: the same records
    again = Study.open(tmp_path / "s.db", "autocompress", create=False)
    assert [r.values for r in again.completed()] == [r.values for r in records]


def test_resume_reevaluates_nothing(wine, tmp_path):
    first = search(wine.model, wine.task, strategy="random", budget=5, storage=tmp_path / "s.db", progress=False)
    before = {r.number: r.values for r in first.completed()}
    study = search(wine.model, wine.task, strategy="random", budget=9, storage=tmp_path / "s.db", progress=False)
    keys = _keys(study)
    assert len(keys) == 9 and len(set(keys)) == 9
    assert {n: v for n, v in ((r.number, r.values) for r in study.completed()) if n in before} == before
    # a third run with the same budget evaluates nothing
    again = search(wine.model, wine.task, strategy="random", budget=9, storage=tmp_path / "s.db", progress=False)
    assert len(again.records()) == 9


def test_resume_after_kill_9(wine, tmp_path, monkeypatch):
    storage = tmp_path / "k.db"
    script = textwrap.dedent(
        f"""
        from autocompress.zoo import load_zoo
        from autocompress.search import search
        if __name__ == "__main__":
            zoo = load_zoo("wine-mlp")
            search(zoo.model, zoo.task, strategy="random", budget=12, storage={str(storage)!r}, progress=False,
                   evaluator={{"finetune_steps": 40}})
        """
    )
    Study.open(storage, "autocompress", objectives=["accuracy", "flops"])  # schema made before two processes race
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and done < 3:
            time.sleep(0.5)
            if storage.exists():
                try:
                    done = len(Study.open(storage, "autocompress", create=False).completed())
                except Exception:  # noqa: BLE001 - the study may not exist yet
                    done = 0
        assert done >= 3, "the search did not start"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed = Study.open(storage, "autocompress", create=False)
    finished_before = {r.number: r.values for r in killed.completed()}
    # the killed process's RUNNING candidate has stopped beating: count it stale at once
    monkeypatch.setattr(study_module, "STALE_SECONDS", 0.0)
    study = search(wine.model, wine.task, strategy="random", budget=12, storage=storage, progress=False,
                   evaluator={"finetune_steps": 40})
    keys = _keys(study)
    assert len(keys) == 12 and len(set(keys)) == 12  # every candidate evaluated exactly once
    still = {r.number: r.values for r in study.completed() if r.number in finished_before}
    assert still == finished_before
    assert all(r.state in ("complete", "stale") for r in study.records())


def test_failing_evaluation_is_recorded_and_the_search_goes_on(wine, tmp_path, monkeypatch):
    real = evaluation_module.evaluate_values
    calls = {"n": 0}

    def flaky(spec, policy):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        if calls["n"] == 3:
            return {**real(spec, policy), "metric": float("nan")}
        return real(spec, policy)

    monkeypatch.setattr(evaluation_module, "evaluate_values", flaky)
    study = search(wine.model, wine.task, strategy="random", budget=6, storage=tmp_path / "f.db", progress=False)
    failed = study.records({"failed"})
    assert len(failed) == 2 and len(study.completed()) == 4
    errors = sorted(r.error for r in failed)
    assert "RuntimeError: boom" in errors[0] and "non-finite objective values" in errors[1]


def test_best_says_how_close_an_unreachable_constraint_came(wine, tmp_path):
    study = search(wine.model, wine.task, strategy="uniform", budget=4, storage=tmp_path / "b.db", progress=False)
    best = study.best("accuracy_drop<=100")
    assert best.values["flops"] == min(r.values["flops"] for r in study.completed())
    with pytest.raises(LookupError, match=r"no candidate meets flops_ratio<=1e-06; the closest is #\d+: flops_ratio="):
        study.best("flops_ratio<=0.000001")


def test_two_local_workers_evaluate_each_candidate_once(wine, tmp_path):
    study = search(wine.model, wine.task, strategy="random", budget=6, storage=tmp_path / "w.db", workers=2, progress=False)
    keys = _keys(study)
    assert len(keys) == 6 and len(set(keys)) == 6
    trials = study.optuna.get_trials()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_remote_worker_shares_the_queue(tmp_path, monkeypatch):
    storage = tmp_path / "r.db"
    config = {"zoo": "wine-mlp", "strategy": "random", "budget": 12, "storage": str(storage), "study": "shared",
              "evaluator": {"finetune_steps": 30}}
    parsed = load_config(config)
    # the search queues candidates; a separate `autocompress worker` process takes some of them
    study = Study.open(storage, "shared", objectives=parsed.objectives)
    study.set_meta(config=parsed.model_dump(mode="json"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "autocompress.cli", "worker", "--storage", str(storage), "--study", "shared", "--idle-timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        search_waits_for_worker(monkeypatch, study, worker)
        runner_module.search_from_config(parsed, progress=False)
        output, _ = worker.communicate(timeout=120)
    finally:
        worker.kill()
    final = Study.open(storage, "shared", create=False)
    keys = _keys(final)
    assert len(keys) == 12 and len(set(keys)) == 12
    evaluated = int(re.search(r"evaluated (\d+) candidates", output).group(1))
    assert 1 <= evaluated < 12, output  # the worker took part of the queue, the search the rest


def test_config_errors_name_the_field_and_the_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"budgett: unknown key; allowed: zoo, model, task"):
        load_config({"zoo": "wine-mlp", "budgett": 3})
    with pytest.raises(ConfigError, match=r"objectives: .*unknown objective\(s\) \['speed'\]; allowed: accuracy"):
        load_config({"zoo": "wine-mlp", "objectives": ["accuracy", "speed"]})
    with pytest.raises(ConfigError, match=r"strategy: .*unknown strategy 'bayes'; allowed: random, uniform"):
        load_config({"zoo": "wine-mlp", "strategy": "bayes"})
    with pytest.raises(ConfigError, match=r"give either `zoo: <name>` or both"):
        load_config({"objectives": ["accuracy"]})
    with pytest.raises(ConfigError, match=r"constraints: .*not of the form"):
        load_config({"zoo": "wine-mlp", "constraints": ["accuracy about 90"]})
    with pytest.raises(ConfigError, match=r"space.methods.0: Input should be 'prune', 'lowrank' or 'quant'"):
        load_config({"zoo": "wine-mlp", "space": {"methods": ["distill"]}})
    with pytest.raises(ConfigError, match=r"evaluator.lrate: unknown key; allowed: lr, distill"):
        load_config({"zoo": "wine-mlp", "evaluator": {"lrate": 0.1}})
    with pytest.raises(ConfigError, match=r"budget: Input should be greater than or equal to 1"):
        load_config({"zoo": "wine-mlp", "budget": 0})
    bad = tmp_path / "bad.yaml"
    bad.write_text("zoo: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="model: cannot import module 'no_such_module'"):
        load_config({"model": "no_such_module:f", "task": "x:y"}).build()


def test_reopening_with_other_objectives_is_refused(wine, tmp_path):
    search(wine.model, wine.task, strategy="random", budget=2, storage=tmp_path / "o.db", progress=False)
    with pytest.raises(ValueError, match=r"created with objectives \['accuracy', 'flops'\], not \['accuracy', 'params'\]"):
        search(wine.model, wine.task, objectives=("accuracy", "params"), strategy="random", budget=2,
               storage=tmp_path / "o.db", progress=False)


def test_package_level_search_call(wine, tmp_path):
    import autocompress as ac

    study = ac.search(wine.model, wine.task, strategy="random", budget=2, storage=f"sqlite:///{tmp_path}/p.db", progress=False)
    assert isinstance(study, ac.Study) and len(study.completed()) == 2
    assert ac.search.Study is ac.Study  # still the package


def test_candidates_left_queued_by_a_killed_run_are_evaluated(wine, tmp_path):
    storage = tmp_path / "q.db"
    search(wine.model, wine.task, strategy="random", budget=4, storage=storage, progress=False)
    study = Study.open(storage, "autocompress", create=False)
    space = runner_module.SearchSpace.from_model(wine.model, wine.task.example_input())
    for seed in (101, 102, 103):  # what a killed proposer had queued
        study.enqueue(space.random_policy(seed), {"strategy": "random"})
    resumed = search(wine.model, wine.task, strategy="random", budget=7, storage=storage, progress=False)
    assert len(resumed.completed()) == 7
    assert not resumed.records({"waiting", "running"})


def test_uniform_picks_the_same_grid_when_resumed(wine, tmp_path, monkeypatch):
    full = search(wine.model, wine.task, strategy="uniform", budget=6, storage=tmp_path / "full.db", progress=False)
    real, calls = evaluation_module.evaluate_values, {"n": 0}

    def interrupted(spec, policy):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the user stops the search mid-way
        return real(spec, policy)

    monkeypatch.setattr(evaluation_module, "evaluate_values", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(wine.model, wine.task, strategy="uniform", budget=6, storage=tmp_path / "u.db", progress=False)
    monkeypatch.setattr(evaluation_module, "evaluate_values", real)
    monkeypatch.setattr(study_module, "STALE_SECONDS", 0.0)  # the interrupted candidate's process is gone
    resumed = search(wine.model, wine.task, strategy="uniform", budget=6, storage=tmp_path / "u.db", progress=False)
    assert {policy_key(r.policy) for r in resumed.completed()} == {policy_key(r.policy) for r in full.completed()}
    assert len(resumed.completed()) == 6


def test_a_result_for_a_candidate_marked_stale_meanwhile_is_dropped(tmp_path, monkeypatch):
    study = Study.open(tmp_path / "s.db", "x", objectives=["accuracy", "flops"])
    study.enqueue(runner_module.Policy(), {})
    trial = study.take_waiting()
    monkeypatch.setattr(study_module, "STALE_SECONDS", -1.0)  # another process thinks it died
    assert study.fail_stale() == 1
    assert study.finish(trial.number, {"metric": 90.0, "flops": 1.0}, None, 1.0) is False
    assert study.records()[0].state == "stale"


def test_prune_step_is_a_shorthand_for_prune_choices():
    config = load_config({"zoo": "wine-mlp", "space": {"prune_step": 0.05}})
    choices = config.space.kwargs()["prune_choices"]
    assert choices[:3] == [0.0, 0.05, 0.1] and choices[-1] == 0.95 and len(choices) == 20
    both = load_config({"zoo": "wine-mlp", "space": {"prune_step": 0.05, "prune_choices": [0.0, 0.5]}})
    with pytest.raises(ConfigError, match="prune_choices or prune_step"):
        both.space.kwargs()
    with pytest.raises(ConfigError, match="prune_step"):
        load_config({"zoo": "wine-mlp", "space": {"prune_step": 0.9}})


def test_latency_objective_from_the_lookup_table(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    wine = load_zoo("wine-mlp", pretrained=False, seed=0)
    study = search(wine.model, wine.task, strategy="random", budget=3, storage=tmp_path / "l.db",
                   objectives=["accuracy", "latency"], latency={"batch": 4, "repeats": 3, "estimate": True},
                   progress=False)
    values = [r.values["latency_ms"] for r in study.completed()]
    assert len(values) == 3 and all(v > 0 for v in values)
    assert list((tmp_path / "cache" / "latency").glob("ort-cpu-*.json"))  # the table was cached for the next search
    with pytest.raises(ConfigError, match="unknown runtime 'tpu'; allowed: ort-cpu, ort-cpu-int8, torch-cpu, torch-cuda"):
        load_config({"zoo": "wine-mlp", "latency": {"runtime": "tpu"}})


def test_allocate_fills_a_latency_target_estimated_from_the_lookup_table(tmp_path, monkeypatch):
    from test_lut import Counter

    from autocompress.hardware.policy_latency import latency_model_for
    from autocompress.policy import Policy
    from autocompress.space import SearchSpace

    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    # deterministic stub timings (latency ~ parameters): the test checks the plumbing, not this machine's speed
    monkeypatch.setattr("autocompress.hardware.lut.time_layer", Counter())
    entry = load_zoo("mnist1d-cnn", pretrained=False, seed=0)
    space = SearchSpace.from_model(entry.model, entry.example_input, methods=["prune"])
    settings = {"batch": 8, "repeats": 5, "estimate": True}
    study = search(entry.model, entry.task, space, strategy="allocate", strategy_params={"targets": ["latency_ratio<=0.5"]},
                   budget=3, storage=tmp_path / "a.db", finetune_epochs=0.0, objectives=["accuracy", "latency"],
                   latency=settings, progress=False)
    latency = latency_model_for(space, entry.model, entry.task, settings)  # the search's: its cached table and calibration
    base = latency.ms(Policy())
    estimates = [latency.ms(r.policy) for r in study.completed()]
    assert len(estimates) == 3 and all(0.35 * base <= e <= 0.5 * base for e in estimates)  # each fills the target
    seer = search(entry.model, entry.task, space, strategy="seernet", budget=5, storage=tmp_path / "s.db",
                  strategy_params={"targets": ["latency_ratio<=0.5"], "initial": 4, "rounds": 0, "kind": "linear"},
                  finetune_epochs=0.0, progress=False, latency_model=latency)
    optimized = [r for r in seer.completed() if r.tags.get("phase") == "optimize"]
    assert len(optimized) == 1 and latency.ms(optimized[0].policy) <= 0.5 * base
    assert not hasattr(space, "latency_model")  # the latency model travels with the search, not on the space


class _Keeper(Strategy):
    """Keeps a value in the study, says what it does beside the bar, then evaluates one policy."""

    name = "keeper"

    def __init__(self) -> None:
        self.found: list = []
        self.descriptions: list[str] = []

    def run(self, ctx) -> None:  # noqa: ANN001
        self.found.append(ctx.kept("work"))
        ctx.keep("work", {"done": [1, 2.5]})
        ctx.status("measuring 3/7")
        self.descriptions.append(ctx._progress.tasks[ctx._task_id].description)
        ctx.status("")
        self.descriptions.append(ctx._progress.tasks[ctx._task_id].description)
        ctx.evaluate(Policy())


def test_a_strategy_keeps_work_in_the_study_and_shows_its_status(wine, tmp_path):
    strategy, storage = _Keeper(), tmp_path / "k.db"
    quiet = Console(file=io.StringIO())
    study = search(wine.model, wine.task, strategy=strategy, budget=1, storage=storage, console=quiet, finetune_epochs=0)
    assert study.meta[runner_module.KEPT_PREFIX + "work"] == {"done": [1, 2.5]}
    assert strategy.descriptions == ["search (keeper): measuring 3/7", "search (keeper)"]
    search(wine.model, wine.task, strategy=strategy, budget=1, storage=storage, console=quiet, finetune_epochs=0)
    assert strategy.found == [None, {"done": [1, 2.5]}]  # the resumed run finds what the first kept
