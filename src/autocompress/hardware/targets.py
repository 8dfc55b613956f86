"""Named latency targets: where and how a model is timed.

A :class:`Target` is a runtime on a device plus everything that changes a timing: intra-op
threads, batch size, warm-up and repeats. Targets are written as text:

    ort-cpu                      ONNX Runtime, CPU (the default: 1 thread, batch 32); a fake-quantized
                                 model as deployed by deploy.export_int8: its layers at 8 bits or
                                 fewer in static int8 (QDQ), the rest fp32
    ort-cpu-int8                 ONNX Runtime, CPU, the model as export_dynamic_int8 deploys it: its
                                 8-bit layers (dynamic activations) in int8, the rest fp32
    torch-cpu                    PyTorch eager, CPU
    torch-cuda                   PyTorch eager, CUDA (timed with CUDA events)
    ort-cpu:threads=2,batch=1    options after a colon: threads, batch, warmup, repeats

:func:`measure` times a whole model on a target; :meth:`Target.fingerprint` names the
machine and library versions, so that cached timings (the lookup tables) are never reused
on another machine or runtime.
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from autocompress.export import LatencyResult, batched, measure_ort_latency
from autocompress.hardware.latency import measure_torch_latency

RUNTIMES = ("ort-cpu", "ort-cpu-int8", "torch-cpu", "torch-cuda")
_OPTIONS = ("threads", "batch", "warmup", "repeats")


@dataclass(frozen=True)
class Target:
    """A runtime (``ort-cpu``, ``torch-cpu``, ``torch-cuda``) and its timing settings."""

    runtime: str = "ort-cpu"
    threads: int = 1
    batch: int = 32
    warmup: int = 10
    repeats: int = 50

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown target runtime {self.runtime!r}; allowed: {', '.join(RUNTIMES)}")
        for name in _OPTIONS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "warmup" else 1):
                raise ValueError(f"target {name} must be an integer >= {0 if name == 'warmup' else 1}, got {value!r}")
        if self.runtime == "torch-cuda" and not torch.cuda.is_available():
            raise ValueError("target torch-cuda needs a CUDA device and none is available; use ort-cpu or torch-cpu")

    @property
    def name(self) -> str:
        return f"{self.runtime}:threads={self.threads},batch={self.batch}"

    def fingerprint(self) -> dict[str, str]:
        """What a timing depends on besides the model: machine, libraries, runtime settings."""
        info = {
            "runtime": self.runtime,
            "threads": str(self.threads),
            "batch": str(self.batch),
            "machine": platform.machine(),
            "processor": cpu_model(),
            "cores": str(os.cpu_count()),
            "torch": torch.__version__,
        }
        if self.runtime.startswith("ort-cpu"):
            import onnxruntime

            info["onnxruntime"] = onnxruntime.__version__
        if self.runtime == "ort-cpu":
            info["quantized"] = "static int8"  # fake-quantized layers timed in int8 (tables before: as fp32)
        if self.runtime == "torch-cuda":
            info["gpu"] = torch.cuda.get_device_name()
        return info

    def with_options(self, **options: int) -> Target:
        return replace(self, **options)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_target(text: str | Target) -> Target:
    """``"ort-cpu"`` or ``"ort-cpu:threads=2,batch=8"`` -> :class:`Target` (a Target is returned as is)."""
    if isinstance(text, Target):
        return text
    runtime, _, rest = str(text).strip().partition(":")
    options: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _OPTIONS:
            raise ValueError(f"target {text!r}: option {item!r} is not KEY=INT with KEY one of {', '.join(_OPTIONS)}")
        try:
            options[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"target {text!r}: {key.strip()} must be an integer, got {value!r}") from None
    return Target(runtime.strip(), **options)


def target_from_settings(settings: dict, *, repeats: int = 30) -> Target:
    """The :class:`Target` of a search's latency settings (``runtime``, ``threads``, ``batch``, ``repeats``)."""
    return Target(str(settings.get("runtime", "ort-cpu")), threads=int(settings.get("threads", 1)),
                  batch=int(settings.get("batch", 32)), repeats=int(settings.get("repeats", repeats)))


def measure(model: nn.Module, example_input: Tensor | tuple, target: Target | str) -> LatencyResult:
    """Whole-model latency of ``model`` on ``target`` at the target's batch size (model not modified)."""
    target = parse_target(target)
    inputs = batched(example_input, target.batch)
    if target.runtime.startswith("ort-cpu"):
        from autocompress.export import export_dynamic_int8, export_onnx

        with tempfile.TemporaryDirectory() as folder:
            if target.runtime == "ort-cpu-int8":
                path = export_dynamic_int8(model, Path(folder) / "m.onnx", inputs, min_cosine=None).path
            elif static_quantized(model):
                from autocompress.export import deployed_int8

                path = deployed_int8(model, Path(folder) / "m.onnx", inputs)
            else:
                path = export_onnx(model, Path(folder) / "m.onnx", inputs, check=False)
            return measure_ort_latency(path, inputs, threads=target.threads, warmup=target.warmup,
                                       repeats=target.repeats)
    device = "cuda" if target.runtime == "torch-cuda" else "cpu"
    return measure_torch_latency(model, inputs, device=device, threads=target.threads, warmup=target.warmup,
                                 repeats=target.repeats)


def static_quantized(model: nn.Module) -> bool:
    """Whether ``model`` has fake-quantized layers with static input ranges (deployed as static int8)."""
    from autocompress.transforms.quantize import QuantWrapper

    wrappers = [m for m in model.modules() if isinstance(m, QuantWrapper)]
    return bool(wrappers) and not any(m.act_quant.dynamic for m in wrappers)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
