import io

import pytest
import torch

from autocompress import Evaluator, Policy, SearchSpace
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
