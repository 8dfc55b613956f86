"""The GPU paths: fine-tune, evaluate, quantize, export and time a model on CUDA.

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

import pytest
import torch

from autocompress import Evaluator, Policy, SearchSpace, apply_policy
from autocompress.export import export_onnx, onnx_session, run_session
from autocompress.hardware.latency import measure_torch_latency
from autocompress.zoo import load_zoo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def cnn():
    entry = load_zoo("mnist1d-cnn", pretrained=False, seed=0)
    return entry, SearchSpace.from_model(entry.model, entry.example_input)


def test_evaluate_on_cuda_matches_cpu_without_finetune(cnn):
    entry, space = cnn
    policy = Policy.uniform(space, prune=0.5, rank=0.5, weight_bits=8, act_bits=8)
    on_cpu = Evaluator(entry.task, seed=0, device="cpu").evaluate(entry.model, policy, space=space)
    on_gpu = Evaluator(entry.task, seed=0, device="cuda").evaluate(entry.model, policy, space=space)
    # same calibration and weights; only float summation order differs
    assert on_gpu.metric_before_finetune == pytest.approx(on_cpu.metric_before_finetune, abs=1.0)
    assert on_gpu.cost.macs == on_cpu.cost.macs
    assert next(entry.model.parameters()).device.type == "cpu"  # the user's model stays put


def test_finetune_on_cuda_improves_and_leaves_model_on_cpu(cnn):
    entry, space = cnn
    policy = Policy.uniform(space, prune=0.3)
    result = Evaluator(entry.task, finetune_steps=60, seed=0, device="cuda").evaluate(
        entry.model, policy, space=space
    )
    assert result.finetune["steps"] == 60
    assert result.metric_after_finetune > result.metric_before_finetune
    assert next(entry.model.parameters()).device.type == "cpu"


def test_quantized_model_on_cuda_exports_to_matching_onnx(cnn, tmp_path):
    entry, space = cnn
    policy = Policy.uniform(space, prune=0.25, weight_bits=8)
    small = apply_policy(entry.model, policy, space=space).cuda().eval()
    x = entry.example_input.cuda()
    path = export_onnx(small, tmp_path / "m.onnx", x)
    assert next(small.parameters()).device.type == "cuda"  # export copied it to the CPU
    with torch.no_grad():
        expected = small(x).cpu().numpy()
    (got,) = run_session(onnx_session(path), [x.cpu()])
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_cuda_latency_of_a_zoo_model(cnn):
    entry, _ = cnn
    x = entry.example_input.repeat(64, *([1] * (entry.example_input.dim() - 1)))
    result = measure_torch_latency(entry.model, x, device="cuda", warmup=5, repeats=20)
    assert result.device.startswith("cuda")
    assert 0 < result.median_ms < 1000
    assert result.repeats == 20
    assert result.p10_ms <= result.median_ms <= result.p90_ms
