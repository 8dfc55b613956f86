import io

import pytest
import torch

from autocompress import Evaluator, Policy, SearchSpace
from autocompress.search import ConfigError, load_config
from autocompress.transforms.lowrank import LowRank
from autocompress.zoo import load_zoo


@pytest.fixture(scope="module")
def wine():
    entry = load_zoo("wine-mlp", pretrained=True, seed=0)
    return entry, SearchSpace.from_model(entry.model, entry.example_input)


def test_evaluate_reports_metric_before_and_after_finetune(wine):
    entry, space = wine
    policy = Policy.uniform(space, prune=0.5, weight_bits=4, act_bits=8)
    result = Evaluator(entry.task, finetune_epochs=2, seed=0, device="cpu").evaluate(entry.model, policy, space=space)
    assert result.metric_name == "accuracy"
    assert result.metric_original > 80  # the pretrained wine MLP
    assert result.metric_after_finetune is not None
    assert 0 <= result.metric_before_finetune <= 100
    assert result.cost.params < result.original_cost.params
    assert result.cost.bitops < 0.1 * result.original_cost.bitops  # 4x8-bit vs 32x32 on most layers
    assert set(result.times) == {"apply", "calibrate", "evaluate", "finetune"}
    assert result.finetune["steps"] > 0
    assert result.ratios["params"] == pytest.approx(result.cost.params / result.original_cost.params)


def test_evaluate_is_deterministic_and_leaves_the_model_alone(wine):
    entry, space = wine
    buffer = io.BytesIO()
    torch.save(entry.model.state_dict(), buffer)
    policy = Policy.uniform(space, prune=0.3, rank=0.5)
    evaluator = Evaluator(entry.task, finetune_steps=5, distill=0.5, seed=1, device="cpu")
    first = evaluator.evaluate(entry.model, policy, space=space)
    second = evaluator.evaluate(entry.model, policy, space=space)
    assert first.metric_after_finetune == second.metric_after_finetune
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    after = io.BytesIO()
    torch.save(entry.model.state_dict(), after)
    assert after.getvalue() == buffer.getvalue()


def test_no_finetune_budget_skips_finetuning(wine):
    entry, space = wine
    result = Evaluator(entry.task, device="cpu").evaluate(entry.model, Policy.uniform(space), space=space)
    assert result.metric_after_finetune is None
    assert result.metric == result.metric_before_finetune
    assert result.metric == pytest.approx(result.metric_original)  # identity policy


def test_bad_evaluator_arguments(wine):
    entry, _ = wine
    with pytest.raises(ValueError, match="distill must be in \\[0, 1\\]"):
        Evaluator(entry.task, distill=2.0)
    with pytest.raises(TypeError, match="task must be an autocompress.Task"):
        Evaluator("wine")


def test_sequential_freezing_is_an_option_of_the_evaluators_fine_tune(wine):
    entry, space = wine
    policy = Policy.uniform(space, rank=0.5)
    results = {}
    for freeze in ("none", "sequential"):
        evaluator = Evaluator(entry.task, finetune_steps=6, seed=0, device="cpu", freeze=freeze, freeze_period=2)
        results[freeze] = evaluator.evaluate(entry.model, policy, space=space)
    default = Evaluator(entry.task, finetune_steps=6, seed=0, device="cpu").evaluate(entry.model, policy, space=space)
    for key, value in default.model.state_dict().items():
        assert torch.equal(value, results["none"].model.state_dict()[key])  # off: what it always did
    factors = [m for m in results["sequential"].model.modules() if isinstance(m, LowRank)]
    assert factors and all(p.requires_grad for m in factors for p in m.parameters())
    moved = [name for name, value in results["sequential"].model.state_dict().items()
             if not torch.equal(value, results["none"].model.state_dict()[name])]
    assert moved  # the option reached the fine-tune: other weights than joint training
    assert results["sequential"].metric_before_finetune == results["none"].metric_before_finetune


def test_a_search_config_turns_sequential_freezing_on(wine):
    entry, _ = wine
    config = load_config({"zoo": "wine-mlp", "evaluator": {"freeze": "sequential", "freeze_period": 3}})
    kwargs = config.evaluator_kwargs()
    assert (kwargs["freeze"], kwargs["freeze_period"]) == ("sequential", 3)
    evaluator = Evaluator(entry.task, **kwargs)
    assert (evaluator.freeze, evaluator.freeze_period) == ("sequential", 3)
    assert load_config({"zoo": "wine-mlp"}).evaluator_kwargs()["freeze"] == "none"  # off by default
    with pytest.raises(ValueError, match="unknown freeze 'sometimes'; allowed: none, sequential"):
        Evaluator(entry.task, freeze="sometimes")
    with pytest.raises(ConfigError, match="evaluator.freeze: unknown freeze 'joint'; allowed: none, sequential"):
        load_config({"zoo": "wine-mlp", "evaluator": {"freeze": "joint"}})
    with pytest.raises(ConfigError, match="evaluator.freeze_period"):
        load_config({"zoo": "wine-mlp", "evaluator": {"freeze_period": 0}})
