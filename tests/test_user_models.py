"""Models written by others: layers read by their own code, keyword inputs, structured outputs.

Toy models that do what ``transformers`` and torchvision-style code do (read ``conv.stride`` for their
own padding, ``weight.dtype`` for a cast, check a layer's type), so each behaviour is pinned here
without the optional extra; ``test_third_party.py`` runs the real architectures.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.apply import apply_policy
from autocompress.calls import select_output
from autocompress.cost import count_cost
from autocompress.export import export_onnx, onnx_session, run_session
from autocompress.policy import LayerGenes, Policy
from autocompress.quiet import ThirdPartyWarnings
from autocompress.space import SearchSpace
from autocompress.transforms.lowrank import factorize
from autocompress.transforms.quantize import QuantWrapper, quantize_layer


class SamePadConv(nn.Module):
    """TF-style 'same' padding computed from the conv's own attributes (MobileNetV2's, EfficientNet's)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        pads = []
        for size, k, s, d in zip(x.shape[:1:-1], conv.kernel_size[::-1], conv.stride[::-1], conv.dilation[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return conv(F.pad(x, pads))


class PatchEmbed(nn.Module):
    """Reads ``projection.weight.dtype`` and ``in_channels`` (ViT's patch embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, 16, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.projection.in_channels
        return self.projection(x.to(self.projection.weight.dtype)).flatten(2).transpose(1, 2)


class Picky(nn.Module):
    """Code that only works with a real nn.Linear there: the safety net must leave it alone."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.fc) is not nn.Linear:
            raise TypeError("Picky needs an nn.Linear")
        return self.fc(x)


class Vision(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = PatchEmbed()
        self.stem = SamePadConv(3, 8, 3, 2)
        self.picky = Picky()
        self.mlp = nn.Linear(16, 32)
        self.head = nn.Linear(32 + 8, 4)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.mlp(torch.relu(self.picky(self.embed(pixel_values)))).mean(1)
        stem = self.stem(pixel_values).mean((2, 3))
        logits = self.head(torch.cat([tokens, stem], 1))
        return OrderedDict(logits=logits, features=tokens)


@pytest.fixture(scope="module")
def vision() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return Vision().eval(), {"pixel_values": torch.randn(2, 3, 16, 16)}


def test_factorized_and_quantized_layers_answer_like_the_original() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(2, 8, 9, 9)
    attributes = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")
    for replacement in (factorize(conv, 0.5), quantize_layer(conv, 8, 8), quantize_layer(factorize(conv, 0.5), 8, 8)):
        assert {a: getattr(replacement, a) for a in attributes} == {a: getattr(conv, a) for a in attributes}
        assert replacement.weight.shape == conv.weight.shape and replacement.weight.dtype == conv.weight.dtype
        assert torch.equal(replacement.bias, conv.bias)  # the last factor carries the original bias
    lowrank = factorize(conv, 0.5)
    with torch.no_grad():  # the effective weight is the factors' product: the same function
        direct = F.conv2d(x, lowrank.weight, lowrank.bias, lowrank.stride, lowrank.padding, lowrank.dilation)
        torch.testing.assert_close(direct, lowrank(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(AttributeError):
        lowrank.in_features  # noqa: B018 - a conv has no in_features
    linear = factorize(nn.Linear(10, 6), 0.5)
    assert (linear.in_features, linear.out_features, linear.weight.shape) == (10, 6, (6, 10))
    with torch.no_grad():
        x = torch.randn(3, 10)
        torch.testing.assert_close(F.linear(x, linear.weight, linear.bias), linear(x), atol=1e-5, rtol=1e-4)
    wrapped = quantize_layer(nn.Linear(10, 6), 8, 8)
    assert isinstance(wrapped, QuantWrapper) and wrapped.weight is wrapped.layer.weight and wrapped.in_features == 10
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute  # noqa: B018


def test_a_layer_the_model_cannot_run_with_replaced_is_left_alone_and_listed(vision) -> None:
    model, example = vision
    space = SearchSpace.from_model(model, example, output="logits")
    picky = space.layers["picky.fc"]  # pruning keeps it an nn.Linear: only that method is left
    assert picky.methods == ["prune"]
    assert "factorized" in picky.reasons["lowrank"] and "Picky needs an nn.Linear" in picky.reasons["lowrank"]
    assert "quantized" in picky.reasons["quant"] and "Picky needs an nn.Linear" in picky.reasons["quant"]
    without_pruning = SearchSpace.from_model(model, example, output="logits", methods=("lowrank", "quant"))
    assert "picky.fc" not in without_pruning.layers and "Picky needs an nn.Linear" in without_pruning.excluded["picky.fc"]
    # the layers whose own code reads their attributes work with every method
    for name in ("embed.projection", "stem.conv", "mlp"):
        assert {"lowrank", "quant"} <= set(space.layers[name].methods), (name, space.layers[name].reasons)
    rows = {row["layer"]: row for row in without_pruning.describe()}
    assert "Picky needs an nn.Linear" in rows["picky.fc"]["why_not"]
    policy = Policy.uniform(space, prune=0.5, rank=0.5, weight_bits=8, act_bits=8)
    small = apply_policy(model, policy, example, space=space)
    with torch.no_grad():
        assert small(**example)["logits"].shape == (2, 4)
    assert count_cost(small, example).params == space.cost(policy).params


def test_keyword_inputs_and_a_dict_output_go_through_every_step(vision, tmp_path) -> None:
    model, example = vision
    before = copy.deepcopy(model.state_dict())
    space = SearchSpace.from_model(model, example, output="logits")
    assert space.input_names == ("pixel_values",) and space.inputs[0].name == "pixel_values"
    policy = Policy.uniform(space, rank=0.5, weight_bits=8, act_bits=8)
    assert Policy.from_json(policy.to_json()) == policy
    assert set(policy.example_input()) == {"pixel_values"}  # rebuilt as keyword inputs
    small = apply_policy(model, policy)  # the example from the policy's recorded inputs
    path = export_onnx(small, tmp_path / "v.onnx", example, output="logits")
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["pixel_values"] and len(session.get_outputs()) == 1
    with torch.no_grad():
        expected = small(**example)["logits"]
    got = run_session(session, example)[0]
    assert got.shape == (2, 4) and abs(got - expected.numpy()).max() < 0.05 * float(expected.abs().max())
    both = export_onnx(small, tmp_path / "both.onnx", example)  # no selector: every output
    assert len(onnx_session(both).get_outputs()) == 2
    picked = export_onnx(small, tmp_path / "f.onnx", example, output=lambda out: out["features"])
    assert onnx_session(picked).get_outputs()[0].shape[1] == 32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_output_selectors_and_their_errors() -> None:
    output = OrderedDict(logits=torch.ones(1), hidden=torch.zeros(1))
    assert select_output(output, "logits") is output["logits"]
    assert select_output(output, 1) is output["hidden"]
    assert select_output((torch.ones(1), torch.zeros(2)), -1).shape == (2,)
    with pytest.raises(ValueError, match="has no such key; it has: logits, hidden"):
        select_output(output, "scores")
    with pytest.raises(ValueError, match="no item 5"):
        select_output(output, 5)
    with pytest.raises(TypeError, match="output= must be"):
        select_output(output, 1.5)


def test_bad_example_inputs_name_what_is_allowed(vision) -> None:
    model, _ = vision
    with pytest.raises(TypeError, match="must map keyword names to tensors; not tensors: \\['pixel_values'\\]"):
        SearchSpace.from_model(model, {"pixel_values": [1, 2]})
    with pytest.raises(TypeError, match="a tensor, a tuple/list of tensors"):
        SearchSpace.from_model(model, "pixels")
    with pytest.raises(ValueError, match="output='scores'.*it has: logits, features"):
        SearchSpace.from_model(model, {"pixel_values": torch.randn(2, 3, 16, 16)}, output="scores")


class Chatty(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(40):
            warnings.warn("something third-party code says every call", FutureWarning, stacklevel=1)
        return self.b(self.a(x))


def test_third_party_warnings_are_summarised_once() -> None:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        SearchSpace.from_model(Chatty(), torch.randn(2, 8))
    summaries = [r for r in records if issubclass(r.category, ThirdPartyWarnings)]
    assert len(records) == len(summaries) == 1
    message = str(summaries[0].message)
    assert "warnings from third-party code while tracing the model" in message
    count = int(message.split()[0])
    assert count >= 80 and f"{count}x FutureWarning from test_user_models.py" in message


def test_transformers_conv1d_is_a_linear_to_every_method() -> None:
    transformers = pytest.importorskip("transformers")
    from autocompress.layers import is_transposed_linear, to_linear

    torch.manual_seed(0)
    layer = transformers.pytorch_utils.Conv1D(6, 10)  # nf=6 outputs, nx=10 inputs
    x = torch.randn(3, 5, 10)
    assert is_transposed_linear(layer) and not is_transposed_linear(nn.Linear(10, 6))
    linear = to_linear(layer)
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (10, 6)
    with torch.no_grad():
        torch.testing.assert_close(linear(x), layer(x), atol=1e-6, rtol=1e-5)
    model = nn.Sequential(transformers.pytorch_utils.Conv1D(16, 10), nn.ReLU(), transformers.pytorch_utils.Conv1D(4, 16))
    space = SearchSpace.from_model(model, x)
    assert set(space.layers) == {"0"} and space.layers["0"].methods == ["prune", "lowrank", "quant"]
    assert count_cost(model, x).macs == 5 * (10 * 16 + 16 * 4) == space.cost(Policy()).macs
    small = apply_policy(model, Policy(layers={"0": LayerGenes(prune=0.5, rank=0.5)}), x, space=space)
    assert isinstance(small[2], nn.Linear) and small[2].in_features == 8
    assert count_cost(small, x).params == space.cost(Policy(layers={"0": LayerGenes(prune=0.5, rank=0.5)})).params


def test_the_readme_example_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "features.md").read_text()
    section = readme.split("## Models we did not write", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    printed: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "docs/features.md", "exec"), {"print": printed.append})  # noqa: S102
    assert printed and 0.7 < printed[0] < 0.8 and (tmp_path / "bert.onnx").is_file()


def test_a_keyword_input_model_saves_and_loads(vision, tmp_path) -> None:
    from autocompress.saving import load, save

    model, example = vision
    space = SearchSpace.from_model(model, example, output="logits")
    small = apply_policy(model, Policy.uniform(space, prune=0.25, rank=0.5), example, space=space)
    assert small.autocompress_policy.output == "logits"  # recorded: the rebuild prunes what was measured
    save(small, tmp_path / "saved")
    again = load(tmp_path / "saved", model)
    with torch.no_grad():
        torch.testing.assert_close(again(**example)["logits"], small.eval()(**example)["logits"])
