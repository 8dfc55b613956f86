"""ODF2NNA's epsilon sweep stored as a Study (search/refine_study.py) and `autocompress refine --storage`."""

import pytest
from test_units import _mlp, _snapshot, _task, one_thread, wide_console  # noqa: F401 - autouse fixtures: one thread, wide console
from typer.testing import CliRunner

from autocompress import cli, count_cost
from autocompress.policy import Policy
from autocompress.search import refine_study
from autocompress.search.pareto import non_dominated
from autocompress.search.refine import refine_dense, sweep_epsilon
from autocompress.search.refine_study import stored_points, sweep_study
from autocompress.search.study import Study

runner = CliRunner()
GRID = [0.0, 0.3, 0.6, 0.9]


def test_every_distinct_refined_model_is_a_record_valued_like_a_search(tmp_path):
    model, task = _mlp(), _task()
    before = _snapshot(model)
    study = sweep_study(model, task, tmp_path / "s.db", epsilons=GRID, retrain_epochs=0.5)
    assert _snapshot(model) == before
    points = {tuple(p.hidden): p for p, _ in sweep_epsilon(model, task, GRID, retrain_epochs=0.5)}
    records = study.completed()
    assert sorted(tuple(r.tags["hidden"]) for r in records) == sorted(points)  # one per distinct set of units
    original = count_cost(model, task.example_input(1))
    for r in records:
        point = points[tuple(r.tags["hidden"])]
        small, _ = refine_dense(model, task, r.tags["epsilon"], retrain_epochs=0.5)
        cost = count_cost(small, task.example_input(1))
        assert r.tags["strategy"] == "refine" and r.tags["epsilon"] == min(e for e in GRID if tuple(
            refine_dense(model, task, e).report.hidden) == tuple(r.tags["hidden"]))
        assert r.values["params"] == cost.params == point.params
        assert r.values["params_ratio"] == pytest.approx(cost.params / original.params)
        assert r.values["flops_ratio"] == pytest.approx(cost.flops / original.flops)
        assert r.values["metric"] == pytest.approx(point.metric)  # the same retraining, seeded
        assert r.values["metric_before_finetune"] == pytest.approx(point.metric_before_retrain)
        assert r.values["accuracy_drop"] == pytest.approx(r.values["metric_original"] - r.values["metric"])
    front = {tuple(r.tags["hidden"]) for r in study.pareto_front()}
    mask = non_dominated([[r.values["params"], r.values["metric"]] for r in records], ["minimize", "maximize"])
    assert front == {tuple(r.tags["hidden"]) for r, on in zip(records, mask, strict=True) if on}
    assert study.meta["original"]["params"] == original.params and study.meta["refine"]["retrain_epochs"] == 0.5
    stored = stored_points(study)  # what choose_epsilon reads back: the same points, ascending, front marked
    assert [tuple(p.hidden) for p in stored] == [tuple(r.tags["hidden"]) for r in sorted(records, key=lambda r: r.tags["epsilon"])]
    assert {tuple(p.hidden) for p in stored if p.on_front} == front
    for p in stored:
        assert (p.params, p.metric, p.loss_gap) == pytest.approx((points[tuple(p.hidden)].params, points[tuple(p.hidden)].metric,
                                                                  points[tuple(p.hidden)].loss_gap))


def test_a_stopped_sweep_resumes_without_retraining_what_is_stored(tmp_path, monkeypatch):
    model, task = _mlp(), _task()
    first = sweep_study(model, task, tmp_path / "s.db", epsilons=GRID[:2], retrain_epochs=0.5)
    stored = {tuple(r.tags["hidden"]) for r in first.completed()}
    swept = []
    real = refine_study.sweep_epsilon
    monkeypatch.setattr(refine_study, "sweep_epsilon", lambda m, t, eps, **kw: swept.append(eps[0]) or real(m, t, eps, **kw))
    again = sweep_study(model, task, tmp_path / "s.db", epsilons=GRID, retrain_epochs=0.5)
    assert swept == [0.6, 0.9]  # only the epsilons whose units were not stored yet
    assert stored <= {tuple(r.tags["hidden"]) for r in again.completed()} and len(again.completed()) == len(stored) + 2
    swept.clear()
    sweep_study(model, task, tmp_path / "s.db", epsilons=GRID, retrain_epochs=0.5)
    assert swept == []


def test_a_sweep_is_never_mixed_with_other_settings_or_a_search(tmp_path):
    model, task = _mlp(), _task()
    sweep_study(model, task, tmp_path / "s.db", epsilons=[0.3], retrain_epochs=0.5)
    with pytest.raises(ValueError, match=r"holds a sweep of other settings .*'retrain_epochs': \(0.5, 1.0\)"):
        sweep_study(model, task, tmp_path / "s.db", epsilons=[0.3], retrain_epochs=1.0)
    with pytest.raises(ValueError, match="holds a sweep of other settings .*'model'"):
        sweep_study(_mlp(seed=1), task, tmp_path / "s.db", epsilons=[0.3], retrain_epochs=0.5)
    search = Study.open(tmp_path / "s.db", "search", objectives=["accuracy", "params"])
    search.enqueue(Policy(), {})
    with pytest.raises(ValueError, match="holds a search, not an epsilon sweep"):
        sweep_study(model, task, tmp_path / "s.db", "search", epsilons=[0.3])
    with pytest.raises(ValueError, match="epsilon"):
        sweep_study(model, task, tmp_path / "s.db", "other", epsilons=[-1.0])
    with pytest.raises(ValueError, match="retrain_epochs must be >= 0"):
        sweep_study(model, task, tmp_path / "s.db", "other", epsilons=[0.3], retrain_epochs=-1)


def test_cli_refine_storage_sweeps_chooses_and_its_study_has_a_front_but_no_export(tmp_path):
    db = str(tmp_path / "refine.db")
    result = runner.invoke(cli.app, ["refine", "--zoo", "wine-mlp", "--retrain-epochs", "0.5", "--storage", db])
    assert result.exit_code == 0, result.output
    assert "Pareto front (accuracy, params) marked" in result.output and "chosen from the sweep: epsilon" in result.output
    study = Study.open(db, "refine")
    chosen = float(result.output.split("chosen from the sweep: epsilon ")[1].split()[0])
    assert f"epsilon {chosen:g}" in result.output  # the refined model printed is the chosen one
    assert any(r.tags["epsilon"] == chosen for r in study.completed())
    front = runner.invoke(cli.app, ["front", db, "--plot", str(tmp_path / "front.png")])
    assert front.exit_code == 0, front.output
    assert (tmp_path / "front.png").stat().st_size > 0 and "refine" in front.output
    export = runner.invoke(cli.app, ["export", db, "--trial", "0", "--out", str(tmp_path / "x")])
    assert export.exit_code == 2 and "holds an epsilon sweep of `autocompress refine`" in export.output


def test_sweep_study_is_exported():
    import autocompress as ac

    assert ac.sweep_study is sweep_study
