import json

import pytest
import torch

from autocompress import Evaluator, Policy, SearchSpace, apply_policy, load, save

from toy_models import ResidualDW


def test_save_and_load_rebuild_the_same_model(tmp_path):
    model = ResidualDW().eval()
    x = torch.randn(3, 1, 40)
    space = SearchSpace.from_model(model, x[:1])
    policy = Policy.uniform(space, prune=0.5, rank=0.5, weight_bits=4, act_bits=8)
    small = apply_policy(model, policy, space=space).eval()
    with torch.no_grad():
        small(x)  # initialise activation ranges
        expected = small(x)
    save(small, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["meta.json", "policy.json", "state_dict.pt"]
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["cost"]["params"] == space.cost(policy).params
    rebuilt = load(tmp_path / "m", model)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)


def test_save_an_eval_result_keeps_its_metrics(tmp_path):
    from autocompress.zoo import load_zoo

    entry = load_zoo("wine-mlp", pretrained=True)
    space = SearchSpace.from_model(entry.model, entry.example_input)
    result = Evaluator(entry.task, device="cpu").evaluate(entry.model, Policy.uniform(space, prune=0.5), space=space)
    save(result, tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["metric_before_finetune"] == result.metric_before_finetune
    rebuilt = load(tmp_path / "r", entry.model)
    x = entry.task.val[0]
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.model.eval()(x))


def test_errors(tmp_path):
    model = ResidualDW()
    with pytest.raises(ValueError, match="not made by apply_policy"):
        save(model, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="meta.json is missing"):
        load(tmp_path, model)
    small = apply_policy(model, {"stem": {"prune": 0.5}}, torch.randn(1, 1, 40))
    save(small, tmp_path / "s")
    other = torch.nn.Sequential(torch.nn.Conv1d(1, 16, 3, padding=1))
    with pytest.raises(Exception, match="stem"):
        load(tmp_path / "s", other)
