"""Latency targets and per-layer lookup tables: keys, caching and the estimator (stub timings, no timing asserts)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from autocompress import Policy, SearchSpace, apply_policy
from autocompress.export import LatencyResult, batched
from autocompress.hardware.lut import LatencyTable, LayerConfig, config_of, layer_configs
from autocompress.hardware.targets import Target, measure, parse_target
from autocompress.transforms.quantize import QuantWrapper

CALL_MS, OVERHEAD_MS = 0.02, 0.5


class Counter:
    """A stub timer: latency = 1e-5 ms per parameter of every Conv/Linear + a per-call cost (+ overhead for models)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: tuple, target: Target) -> LatencyResult:
        self.calls += 1
        layers = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
        ms = CALL_MS + sum(1e-5 * sum(p.numel() for p in m.parameters()) for m in layers)
        if len(layers) > 1:
            ms += OVERHEAD_MS
        return LatencyResult("stub", ms, ms, ms, 1, 0, inputs[0].shape[0], target.threads, "cpu")


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv1d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


@pytest.fixture()
def small():
    torch.manual_seed(0)
    return Small(), torch.randn(2, 1, 20)


def test_parse_target_names_and_options():
    assert parse_target("ort-cpu") == Target("ort-cpu", threads=1, batch=32)
    assert parse_target("torch-cpu:threads=2,batch=8") == Target("torch-cpu", threads=2, batch=8)
    assert parse_target(" ort-cpu : batch=1 ").batch == 1
    with pytest.raises(ValueError, match="unknown target runtime 'tpu'; allowed: ort-cpu, ort-cpu-int8, torch-cpu, torch-cuda"):
        parse_target("tpu")
    with pytest.raises(ValueError, match="option 'speed=2' is not KEY=INT with KEY one of threads, batch"):
        parse_target("ort-cpu:speed=2")
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        parse_target("ort-cpu:batch=0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA device"):
            parse_target("torch-cuda")
    assert [x.shape[0] for x in batched(torch.randn(3, 4), 7)] == [7]


def test_layer_configs_follow_the_calls_and_key_what_matters(small):
    model, x = small
    configs = layer_configs(model, x)
    assert [name for name, _ in configs] == ["conv1", "conv2", "fc"]
    conv2 = configs[1][1]
    assert conv2 == LayerConfig("Conv1d", 16, 32, (3,), (2,), (1,), (1,), 1, True, (16, 20))
    assert configs[2][1].input_shape == (320,)
    other_stride = config_of(nn.Conv1d(16, 32, 3, stride=1, padding=1), (16, 20))
    assert other_stride.key != conv2.key and config_of(model.conv2, (16, 20)).key == conv2.key
    built = conv2.build()
    assert config_of(built, (16, 20)) == conv2  # a config rebuilds the same layer
    assert "Conv1d 16->32 k3 stride 2" in conv2.describe()
    assert model.training  # modes restored


def test_factorized_layers_contribute_their_factors(small):
    model, x = small
    space = SearchSpace.from_model(model, x, methods=["lowrank"])
    factored = apply_policy(model, Policy.uniform(space, rank=0.25), space=space)
    names = [name for name, _ in layer_configs(factored, x)]
    assert len(names) > 3 and all(n.split(".")[0] in ("conv1", "conv2", "fc") for n in names)


def test_table_caches_to_a_file_and_never_retimes(tmp_path, small):
    model, x = small
    target = Target("ort-cpu", batch=4)
    path = tmp_path / "t.json"
    timer = Counter()
    first = LatencyTable.open(target, path, timer=timer)
    estimate = first.estimate(model, x)
    assert first.measured == 3 and timer.calls == 3 * 2 + 1  # each layer + its identity baseline, + the whole model
    saved = json.loads(path.read_text())
    assert saved["fingerprint"] == target.fingerprint() and len(saved["layers"]) == 3
    again_timer = Counter()
    again = LatencyTable.open(target, path, timer=again_timer)
    assert again.estimate(model, x).total_ms == pytest.approx(estimate.total_ms)
    assert again_timer.calls == 0 and again.measured == 0
    with pytest.warns(UserWarning, match="fingerprint is another target's"):
        other = LatencyTable.open(Target("ort-cpu", batch=4, threads=2), path, timer=Counter())
    assert other.entries == {}  # the file holds another target's timings: not reused (with a warning)
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring unusable latency table"):
        broken = LatencyTable.open(target, path, timer=Counter())
    assert broken.entries == {}


def test_estimator_sums_layers_plus_the_originals_overhead(small):
    model, x = small
    timer = Counter()
    table = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=timer)
    original = table.estimate(model, x)
    whole = timer(model, (x,), table.target).median_ms
    assert original.total_ms == pytest.approx(whole)  # calibrated on itself
    assert original.overhead_ms == pytest.approx(OVERHEAD_MS + CALL_MS)
    space = SearchSpace.from_model(model, x, methods=["prune"])
    pruned = apply_policy(model, Policy.uniform(space, prune=0.5), space=space)
    estimate = table.estimate(pruned, x, original=model)
    assert estimate.total_ms == pytest.approx(timer(pruned, (x,), table.target).median_ms)  # exact on the stub
    assert estimate.total_ms < original.total_ms


def test_real_onnx_runtime_table_smoke(small):
    model, x = small
    table = LatencyTable.open(Target("ort-cpu", batch=2, warmup=1, repeats=3), cache=False)
    estimate = table.estimate(model, x)
    assert len(estimate.layers) == 3 and all(ms >= 0 for _, _, ms in estimate.layers)
    assert estimate.total_ms > 0
    space = SearchSpace.from_model(model, x, methods=["quant"])
    quantized = apply_policy(model, Policy.uniform(space, weight_bits=8, act_bits=8), space=space)
    int8 = table.estimate(quantized, x, original=model)  # each layer timed as an int8 file (QLinearConv / QGemm)
    assert [c.int8 for _, c, _ in int8.layers] == [True, True, False] and int8.total_ms > 0  # fc: the output layer
    assert table.measured == 5 and measure(quantized, x, table.target).median_ms > 0  # the whole int8 file


class InGraph(Counter):
    """Layers alone cost a full call each; in a whole model each pays half a call, plus 0.3 ms."""

    def __call__(self, module: nn.Module, inputs: tuple, target: Target) -> LatencyResult:
        layers = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
        if len(layers) <= 1:
            return super().__call__(module, inputs, target)
        self.calls += 1
        ms = 0.3 + sum(1e-5 * sum(p.numel() for p in m.parameters()) + 0.5 * CALL_MS for m in layers)
        return LatencyResult("stub", ms, ms, ms, 1, 0, inputs[0].shape[0], target.threads, "cpu")


def test_calibration_on_derived_models_fits_scale_call_share_and_overhead(small):
    model, x = small
    space = SearchSpace.from_model(model, x, methods=["prune", "lowrank"])
    rng = __import__("numpy").random.default_rng(0)
    derived = [apply_policy(model, space.random_policy(rng), space=space) for _ in range(6)]
    timer = InGraph()
    table = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=timer)
    k = table.calibrate(model, x, derived)
    assert (k["scale"], k["per_call"], k["overhead_ms"]) == pytest.approx((1.0, 0.5, 0.3), abs=1e-6)
    assert k["calibration_error"] < 1e-6 and k["calibration_models"] == 7
    unseen = apply_policy(model, space.random_policy(rng), space=space)
    expected = timer(unseen, (x,), table.target).median_ms
    assert table.estimate(unseen, x, original=model).total_ms == pytest.approx(expected)


@pytest.mark.parametrize("zoo", ["mnist1d-cnn", "mnist1d-resnet", "digits-cnn"])
def test_policy_latency_derives_the_built_models_layers_without_building(zoo):
    from collections import Counter as Multiset

    import numpy as np

    from autocompress.hardware.policy_latency import PolicyLatency
    from autocompress.zoo import load_zoo

    entry = load_zoo(zoo, pretrained=False)
    space = SearchSpace.from_model(entry.model, entry.example_input, methods=["prune", "lowrank", "quant"], rank_multiple=8)
    table = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=Counter())
    latency = PolicyLatency(space, entry.model, entry.example_input, table, calibration=2)
    rng = np.random.default_rng(0)
    for _ in range(8):
        policy = space.random_policy(rng)
        built = apply_policy(entry.model, policy, space=space)
        assert Multiset(latency.configs(policy)) == Multiset(c for _, c in layer_configs(built, entry.example_input, int8=True))
        estimate = table.estimate(built, entry.example_input, original=entry.model).total_ms
        assert latency.ms(policy) == pytest.approx(estimate)


def test_latency_budgets_in_the_optimizer_hold_by_the_estimate(small):
    import numpy as np

    from autocompress.hardware.policy_latency import PolicyLatency
    from autocompress.predict import AccuracyPredictor, policy_features
    from autocompress.search.ladders import cost_value
    from autocompress.search.optimize import optimize_policy

    model, x = small
    space = SearchSpace.from_model(model, x, methods=["prune", "lowrank"])
    assert not hasattr(space, "latency_model")  # the latency model is an argument of the cost functions
    with pytest.raises(ValueError, match="a latency budget needs a latency model"):
        cost_value(space, Policy(), "latency")
    latency = PolicyLatency(space, model, x, LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=Counter()),
                            calibration=3)
    rng = np.random.default_rng(0)
    policies = [space.random_policy(rng) for _ in range(30)]
    X = policy_features(space, policies)
    predictor = AccuracyPredictor("gp").fit(X, 98 - 5 * X.sum(1) / X.shape[1])
    base = latency.ms(Policy())
    for budget in ("latency_ratio<=0.96", f"latency<={0.95 * base}ms"):  # the stub overhead is most of it
        result = optimize_policy(predictor, space, budget, cost="flops", fields=("prune", "rank"), latency_model=latency)
        assert result.key == "latency" and latency.ms(result.policy) == result.cost <= result.budget


class Int8Half(InGraph):
    """As :class:`InGraph`, and an int8 layer (fake-quantized at 8 bits or fewer) costs half its float time alone (it is timed
    between a quantize and a dequantize) and a quarter in a whole model."""

    def __call__(self, module: nn.Module, inputs: tuple, target: Target) -> LatencyResult:
        wrappers = [m for m in module.modules() if isinstance(m, QuantWrapper) and max(m.weight_bits, m.act_bits) <= 8]
        if not wrappers:
            return super().__call__(module, inputs, target)
        inner = {id(w.layer) for w in wrappers}  # the others (one of the two at 32 bits) run in float
        floats = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and id(m) not in inner]
        self.calls += 1
        if isinstance(module, QuantWrapper):
            ms = CALL_MS + 0.5 * _stub_ms(module.layer)
        else:
            ms = 0.3 + sum(_stub_ms(m) + 0.5 * CALL_MS for m in floats)
            ms += sum(0.25 * _stub_ms(w.layer) + 0.5 * CALL_MS for w in wrappers)
        return LatencyResult("stub", ms, ms, ms, 1, 0, inputs[0].shape[0], target.threads, "cpu")


def _stub_ms(layer: nn.Module) -> float:
    return 1e-5 * sum(p.numel() for p in layer.parameters())


def test_quantized_layers_are_listed_and_timed_in_int8_on_ort_cpu(small):
    model, x = small
    space = SearchSpace.from_model(model, x, methods=["quant"])
    policy = Policy.from_dict({"layers": {"conv1": {"weight_bits": 4, "act_bits": 8},
                                          "conv2": {"weight_bits": 8, "act_bits": 32}}})
    quantized = apply_policy(model, policy, space=space, example_input=x)
    float_configs = layer_configs(model, x)
    # the wrapped layers are there (a wrapper runs its layer's weights itself: a hook on the layer never fires)
    assert layer_configs(quantized, x) == float_configs
    int8 = layer_configs(quantized, x, int8=True)
    assert [(name, config.int8) for name, config in int8] == [("conv1", True), ("conv2", False), ("fc", False)]
    assert int8[0][1].key != float_configs[0][1].key and '"int8"' not in float_configs[0][1].key
    assert "int8" in int8[0][1].describe() and isinstance(int8[0][1].build(), QuantWrapper)
    table = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=Int8Half())
    assert table.times_int8
    estimate = table.estimate(quantized, x, original=model)
    assert estimate.total_ms < table.estimate(model, x).total_ms
    eager = LatencyTable.open(Target("torch-cpu", batch=4), cache=False, timer=Int8Half())
    assert not eager.times_int8  # torch runs fake quantization in float: timed as the float layers
    assert eager.estimate(quantized, x, original=model).total_ms == pytest.approx(eager.estimate(model, x).total_ms)


def test_calibration_fits_int8_layers_their_own_scale(small):
    import numpy as np

    from autocompress.hardware.policy_latency import PolicyLatency

    model, x = small
    space = SearchSpace.from_model(model, x, methods=["prune", "lowrank", "quant"])  # low rank: call counts vary
    rng = np.random.default_rng(0)
    derived = [apply_policy(model, space.random_policy(rng), space=space) for _ in range(10)]
    timer = Int8Half()
    table = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=timer)
    k = table.calibrate(model, x, derived)
    assert (k["scale"], k["scale_int8"], k["per_call"], k["overhead_ms"]) == pytest.approx((1.0, 0.5, 0.5, 0.3), abs=1e-6)
    assert k["int8_models"] > 0 and k["calibration_error"] < 1e-6
    latency = PolicyLatency(space, model, x, table)
    for _ in range(5):
        policy = space.random_policy(rng)
        built = apply_policy(model, policy, space=space)
        expected = timer(built, (x,), table.target).median_ms
        assert table.estimate(built, x, original=model).total_ms == pytest.approx(expected)
        assert latency.ms(policy) == pytest.approx(expected)  # derived from the policy, without building it
    fp32_only = LatencyTable.open(Target("ort-cpu", batch=4), cache=False, timer=Int8Half())
    k = fp32_only.calibrate(model, x, [apply_policy(model, Policy.uniform(space, prune=0.5), space=space)])
    assert k["scale_int8"] == k["scale"] and k["int8_models"] == 0  # no int8 layer measured: the float scale
