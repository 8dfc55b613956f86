"""confirm: the top candidates re-evaluated with a longer fine-tune in a companion study; strategy given."""

from __future__ import annotations

import pytest

from autocompress.policy import Policy
from autocompress.search import confirm, search
from autocompress.search.study import Study, policy_key
from autocompress.zoo import load_zoo


@pytest.fixture(scope="module")
def wine():
    return load_zoo("wine-mlp", pretrained=True, seed=0)


def test_confirm_re_evaluates_the_top_candidates_once(wine, tmp_path):
    study = search(wine.model, wine.task, strategy="random", budget=8, storage=tmp_path / "s.db", progress=False,
                   finetune_epochs=0.0)
    constraint = ["flops_ratio<=0.8"]
    ranked = study.ranked(constraint, "accuracy")
    assert [r.values["metric"] for r in ranked] == sorted((r.values["metric"] for r in ranked), reverse=True)
    assert all(r.values["flops_ratio"] <= 0.8 for r in ranked) and len(ranked) >= 3

    confirmed = confirm(study, wine.model, wine.task, constraints=constraint, top=2, finetune_epochs=1.0, progress=False)
    records = confirmed.completed()
    assert [policy_key(r.policy) for r in records] == [policy_key(r.policy) for r in ranked[:2]]
    assert all(r.tags["phase"] == "given" for r in records)
    for proxy, final in zip(ranked, records, strict=False):  # the same model before fine-tuning, then 1 epoch more
        assert final.values["metric_before_finetune"] == pytest.approx(proxy.values["metric"])
    assert confirmed.meta["confirm_settings"] == {"finetune_epochs": 1.0, "seed": 0}
    assert confirmed.optuna.study_name.startswith(study.optuna.study_name + "/confirm-")
    assert len(study.completed()) == 8  # the searched study is left as it was

    again = confirm(study, wine.model, wine.task, constraints=constraint, top=3, finetune_epochs=1.0, progress=False)
    assert again.optuna.study_name == confirmed.optuna.study_name
    assert [r.number for r in again.completed()][:2] == [r.number for r in records]  # nothing evaluated twice
    assert [policy_key(r.policy) for r in again.completed()] == [policy_key(r.policy) for r in ranked[:3]]
    best = again.best(constraint, objective="accuracy")
    assert best.values["metric"] == max(r.values["metric"] for r in again.completed())

    reopened = Study.open(tmp_path / "s.db", study.optuna.study_name)
    with pytest.raises(LookupError, match="closest"):
        confirm(reopened, wine.model, wine.task, constraints=["flops_ratio<=0.0001"], progress=False)
    with pytest.raises(ValueError, match="top must be"):
        confirm(reopened, wine.model, wine.task, top=0, progress=False)


def test_given_strategy_evaluates_the_policies_in_order(wine, tmp_path):
    policies = [{"layers": {"body.0": {"prune": 0.5}}}, Policy(), {"layers": {"body.0": {"prune": 0.25}}}]
    study = search(wine.model, wine.task, strategy="given", strategy_params={"policies": policies}, budget=3,
                   storage=tmp_path / "g.db", progress=False, finetune_epochs=0.0)
    assert [r.policy.genes("body.0").prune for r in study.completed()] == [0.5, 0.0, 0.25]
    with pytest.raises(ValueError, match="non-empty list"):
        search(wine.model, wine.task, strategy="given", strategy_params={"policies": []}, budget=1,
               storage=tmp_path / "g.db", study_name="empty", progress=False)


def test_the_companion_stores_the_confirmation_settings_for_workers(tmp_path):
    from autocompress.search import load_config, search_from_config

    config = load_config({"zoo": "wine-mlp", "strategy": "random", "budget": 5, "storage": str(tmp_path / "c.db"),
                          "study": "s", "finetune_epochs": 0.0, "evaluator": {"finetune_steps": 3, "lr": 0.002}})
    study = search_from_config(config, progress=False)
    model, task, space = config.build()
    companion = confirm(study, model, task, space, top=2, finetune_epochs=2.0, evaluator={"split": "val"}, seed=4,
                        progress=False)
    stored = load_config(companion.meta["config"])
    assert stored.study == companion.optuna.study_name and stored.strategy == "given" and stored.seed == 4
    assert stored.finetune_epochs == 2.0 and stored.evaluator.finetune_steps is None and stored.evaluator.lr == 0.002
    assert len(stored.strategy_params["policies"]) == 2
