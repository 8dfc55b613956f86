"""ONNX export: outputs match PyTorch, mismatches are caught, the user's model is untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from autocompress.export import ExportMismatchError, export_onnx, onnx_session, run_session
from autocompress.export import fp32 as export
from autocompress.quiet import ThirdPartyWarnings


def small_cnn1d() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 6, 3, padding=1),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 16, 4),
    )


def conv2d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 5))


def with_bn_stats(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics so eval differs from train."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize(
    ("make", "shape"),
    [(small_cnn1d, (2, 2, 16)), (conv2d_net, (2, 3, 8, 8)), (mlp, (4, 12))],
)
def test_export_matches_pytorch_with_dynamic_batch(make, shape, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = with_bn_stats(make()).eval()
    x = torch.randn(*shape)
    path = export_onnx(model, tmp_path / "sub" / "model.onnx", x)
    assert path == tmp_path / "sub" / "model.onnx" and path.is_file()
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["model.onnx"]  # no temp left
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnx_session(path, threads=1)
    x5 = torch.randn(5, *shape[1:])
    (got,) = run_session(session, (x5,))
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x5).numpy(), rtol=1e-4, atol=1e-5)


def test_multiple_inputs_and_outputs(tmp_path: Path) -> None:
    class TwoInTwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.a(x) + self.b(y), self.a(x)

    inputs = (torch.randn(2, 3), torch.randn(2, 4))
    path = export_onnx(TwoInTwoOut(), tmp_path / "two.onnx", inputs)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_0", "input_1"]
    assert [o.name for o in graph.output] == ["output_0", "output_1"]


def test_user_model_untouched(tmp_path: Path) -> None:
    model = with_bn_stats(small_cnn1d())
    model.train()
    model[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", torch.randn(2, 2, 16))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and [m.training for m in model] == [True, False, True, True, True]
    assert all(p.requires_grad for p in model.parameters())


def test_broken_check_raises_useful_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = export.run_session

    def off_by_a_bit(session, inputs):
        return [out + 0.01 for out in real_run(session, inputs)]

    monkeypatch.setattr(export, "run_session", off_by_a_bit)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportMismatchError, match=r"max abs error 0\.01.*max rel error") as info:
        export_onnx(mlp(), target, torch.randn(2, 12))
    assert "'output'" in str(info.value) and "example input" in str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert not target.exists() and list(tmp_path.iterdir()) == []  # nothing written
    export_onnx(mlp(), target, torch.randn(2, 12), check=False)  # check off: written
    assert target.is_file()


def test_trace_that_misses_data_dependent_branch_is_caught(tmp_path: Path) -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if bool(x.mean() > 100) else -x  # frozen into the trace

    with (
        pytest.warns(ThirdPartyWarnings, match=r"1 warnings .*1x TracerWarning from test_export.py"),
        pytest.raises(ExportMismatchError, match="random input of batch size 3"),
    ):
        export_onnx(Branchy(), tmp_path / "b.onnx", torch.full((2, 4), 1000.0))


def test_static_batch(tmp_path: Path) -> None:
    path = export_onnx(mlp(), tmp_path / "s.onnx", torch.randn(2, 12), dynamic_batch=False)
    dim0 = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 2


def test_integer_inputs(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(12, 2))
    export_onnx(model, tmp_path / "e.onnx", torch.randint(0, 20, (2, 3)))


def test_bad_example_input(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="example_input"):
        export_onnx(mlp(), tmp_path / "x.onnx", [1, 2])
    with pytest.raises(ValueError, match="threads"):
        onnx_session(tmp_path / "x.onnx", threads=0)
