"""Per-layer latency lookup tables and the latency estimator built on them (APQ-style).

FLOPs are not speed: a layer's latency depends on its shape in ways that only a
measurement on the target shows. A :class:`LatencyTable` times each *layer
configuration* once on a target and caches it in a file, so that the latency of any
policy's model is estimated in milliseconds without running it:

    estimate(model) = sum of table[config of each Conv/Linear layer] + overhead

- **Configuration** (:class:`LayerConfig`): layer type, in/out channels (features),
  kernel, stride, padding, dilation, groups, bias, the per-sample input shape and, on
  ``ort-cpu``, whether it runs in int8. A factorized layer contributes its 2-3 factor layers.
  On ``ort-cpu`` a fake-quantized layer at 8 bits or fewer (weights and inputs) is timed in
  int8, as :func:`autocompress.export.export_int8` deploys it (static QDQ int8, which ONNX
  Runtime runs as QLinearConv / QGemm: every bit-width up to 8 runs as int8); on the other
  targets, which run fake quantization in float, it is timed as its float layer.
- **Timing**: a fresh layer of that configuration (random weights: latency does not
  depend on values; an int8 one with its input quantized and its output dequantized) alone
  on the target at the target's batch size, minus the latency of
  an identity graph on the same input (the runtime's per-call cost, ~0.02 ms on ONNX
  Runtime: small layers would otherwise be counted several times over); for ``ort-cpu``
  the layer is exported to ONNX and run by ONNX Runtime.
- **Calibration** (:meth:`LatencyTable.calibrate`), once per *original* model: what the
  layer sum misses (activations, pooling, normalization, per-node dispatch, fusions).
  Simplest: a constant overhead, whole-model latency minus its layer sum. Better, with a
  few models derived from it measured whole: ``whole ≈ a · Σ layer + b · Σ call + c``
  fitted by non-negative least squares (small layers in a graph cost less than alone, and
  pay part of the per-call cost), with its own scale ``a8`` for int8 layers when some of
  the models measured have them (int8 layers in a graph skip most of the quantize /
  dequantize steps that timing one alone includes); else ``a8 = a``. Every estimate for a
  model derived from that original uses its coefficients. (Fitting relative errors instead
  was no better in one run on the APQ supernet: 12.3 % median error against 10.5 %.)
- **Cache**: one JSON file per target fingerprint (runtime, settings, CPU model, library
  versions) under ``<cache>/latency/``; written atomically; an unreadable file is ignored
  with a warning and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from autocompress.export import LatencyResult, batched
from autocompress.hardware.targets import Target, measure, parse_target
from autocompress.layers import COMPRESSED
from autocompress.trace import as_inputs
from autocompress.transforms.quantize import INT8_BITS, QuantWrapper, runs_in_int8


@dataclass(frozen=True)
class LayerConfig:
    """Everything about a Conv1d/Conv2d/Linear call that its latency depends on."""

    type: str  # "Conv1d", "Conv2d", "Linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    input_shape: tuple[int, ...] = ()  # per sample, without the batch dim
    int8: bool = False  # run in int8 (ort-cpu tables only)

    @property
    def key(self) -> str:
        fields = asdict(self)
        if not self.int8:
            del fields["int8"]  # the keys of float layers are those of tables written before int8 entries
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def build(self) -> nn.Module:
        """A fresh layer of this configuration (seeded random weights); an int8 one fake-quantized at 8 bits."""
        torch.manual_seed(0)
        if self.type == "Linear":
            layer: nn.Module = nn.Linear(self.in_channels, self.out_channels, bias=self.bias)
        else:
            conv = nn.Conv1d if self.type == "Conv1d" else nn.Conv2d
            layer = conv(self.in_channels, self.out_channels, self.kernel, stride=self.stride, padding=self.padding,
                         dilation=self.dilation, groups=self.groups, bias=self.bias)
        return QuantWrapper(layer, INT8_BITS, INT8_BITS).eval() if self.int8 else layer

    def describe(self) -> str:
        if self.type == "Linear":
            return f"Linear {self.in_channels}->{self.out_channels} on {list(self.input_shape)}{' int8' if self.int8 else ''}"
        kernel = "x".join(map(str, self.kernel))
        extra = f" stride {'x'.join(map(str, self.stride))}" if any(s != 1 for s in self.stride) else ""
        extra += f" groups {self.groups}" if self.groups != 1 else ""
        extra += " int8" if self.int8 else ""
        return f"{self.type} {self.in_channels}->{self.out_channels} k{kernel}{extra} on {list(self.input_shape)}"


def config_of(module: nn.Module, input_shape: tuple[int, ...], int8: bool = False) -> LayerConfig:
    """The :class:`LayerConfig` of a Conv1d/Conv2d/Linear ``module`` called on per-sample ``input_shape``."""
    if isinstance(module, nn.Linear):
        return LayerConfig("Linear", module.in_features, module.out_features, bias=module.bias is not None,
                           input_shape=tuple(input_shape), int8=int8)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if isinstance(module.padding, str):
            raise ValueError(f"padding={module.padding!r} convs are not in the lookup table; give explicit padding")
        return LayerConfig(type(module).__name__, module.in_channels, module.out_channels, tuple(module.kernel_size),
                           tuple(module.stride), tuple(module.padding), tuple(module.dilation), module.groups,
                           module.bias is not None, tuple(input_shape), int8)
    raise TypeError(f"no lookup-table configuration for {type(module).__name__}; allowed: Conv1d, Conv2d, Linear")


def int8_layer_ids(model: nn.Module) -> set[int]:
    """``id`` of every layer that :func:`autocompress.export.export_int8` runs in int8: the float layer
    of each fake-quantized one with static input ranges and weights and inputs at 8 bits or fewer."""
    return {id(m.layer) for m in model.modules() if isinstance(m, QuantWrapper) and not m.act_quant.dynamic
            and runs_in_int8(m.weight_bits, m.act_bits)}


def layer_configs(model: nn.Module, example_input: Tensor | tuple, *, int8: bool = False
                  ) -> list[tuple[str, LayerConfig]]:
    """(name, configuration) of every Conv1d/Conv2d/Linear call of one forward, in call order.

    A layer called twice appears twice. ``int8``: mark the layers that the int8 file runs in int8
    (:func:`int8_layer_ids`). The model runs once in eval mode under ``no_grad``; every module's
    mode is restored.
    """
    calls: list[tuple[str, LayerConfig]] = []
    handles = []
    low = int8_layer_ids(model) if int8 else set()
    wrapped = {id(m.layer) for m in model.modules() if isinstance(m, QuantWrapper)}
    for name, module in model.named_modules():
        # a fake-quantized layer is called through its wrapper (which runs the layer's weights itself)
        layer = module.layer if isinstance(module, QuantWrapper) else module
        if isinstance(module, QuantWrapper) or (isinstance(module, COMPRESSED) and id(module) not in wrapped):
            def hook(_mod: nn.Module, args: tuple, _out: object, name: str = name, layer: nn.Module = layer) -> None:
                calls.append((name, config_of(layer, tuple(args[0].shape[1:]), id(layer) in low)))

            handles.append(module.register_forward_hook(hook))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(*as_inputs(example_input))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return calls


@dataclass
class LatencyEstimate:
    """A model's estimated latency on a target, in milliseconds."""

    total_ms: float
    layers: list[tuple[str, LayerConfig, float]]  # (name, configuration, table ms) per call
    overhead_ms: float

    @property
    def layers_ms(self) -> float:
        return sum(ms for _, _, ms in self.layers)


@dataclass
class LatencyTable:
    """Cached per-layer timings on one target; see the module docstring.

    ``path``: the cache file (default ``<cache>/latency/<fingerprint digest>.json``;
    ``None`` via ``cache=False`` keeps everything in memory). ``timer``: how a single
    layer is timed, ``(module, inputs, target) -> LatencyResult``; the default measures on
    the target (tests pass a stub).
    """

    target: Target
    path: Path | None = None
    timer: object = None
    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    overheads: dict[str, dict[str, float]] = field(default_factory=dict)  # calibration per original
    measured: int = 0  # layer timings taken (not from the cache) by this object

    @classmethod
    def open(cls, target: Target | str, path: str | Path | None = None, *, cache: bool = True,
             timer: object = None) -> LatencyTable:
        target = parse_target(target)
        if target.runtime == "ort-cpu-int8":
            raise ValueError("lookup tables time fp32 and static int8 layers; ort-cpu-int8 (dynamic int8) latencies "
                             "are measured whole (latency: {estimate: false}); allowed runtimes for tables: ort-cpu, "
                             "torch-cpu, torch-cuda")
        if cache and path is None:
            from autocompress.files import cache_dir

            digest = hashlib.sha256(json.dumps(target.fingerprint(), sort_keys=True).encode()).hexdigest()[:16]
            path = cache_dir() / "latency" / f"{target.runtime}-{digest}.json"
        table = cls(target, Path(path) if cache and path is not None else None, timer)
        table._load()
        return table

    @property
    def times_int8(self) -> bool:
        """Whether fake-quantized layers are timed in int8 (``ort-cpu``) rather than as float layers."""
        return self.target.runtime == "ort-cpu"

    # ---------------------------------------------------------------- lookups
    def layer_ms(self, config: LayerConfig) -> float:
        """The median latency (ms) of one ``config`` layer on the target, measured once and cached."""
        entry = self.entries.get(config.key)
        if entry is None:
            inputs = (torch.randn(self.target.batch, *config.input_shape),)
            timer = self.timer or time_layer
            result: LatencyResult = timer(config.build(), inputs, self.target)
            call: LatencyResult = timer(nn.Identity(), inputs, self.target)
            entry = {"median_ms": result.median_ms, "p10_ms": result.p10_ms, "p90_ms": result.p90_ms,
                     "call_ms": call.median_ms, "repeats": result.repeats}
            self.entries[config.key] = entry
            self.measured += 1
            self._save()
        return max(0.0, float(entry["median_ms"]) - float(entry["call_ms"]))

    def calibrate(self, model: nn.Module, example_input: Tensor | tuple,
                  derived: Sequence[nn.Module] = ()) -> dict[str, float]:
        """Fit how table sums map to whole-model latency for ``model`` and models ``derived`` from it.

        Without ``derived``: ``whole = Σ layer + overhead`` with the overhead measured on
        ``model`` (scale 1, per-call term 0). With ``derived`` models (e.g. 5-10 random
        policies' models, measured once): ``whole ≈ a · Σ layer + b · Σ call + c`` fitted by
        non-negative least squares on all of them, where ``call`` is each layer's per-call
        cost, since in a graph a layer pays part of the call cost that timing it alone
        subtracts, and fusions shrink small layers; int8 layers get their own scale
        (``scale_int8``) when some calibration model has them, else the float one. Stored per
        original; returns the coefficients (and the fit's median relative error on the
        calibration models).
        """
        rows, wholes, signature = [], [], None
        for candidate in [model, *derived]:
            configs = layer_configs(candidate, example_input, int8=self.times_int8)
            signature = signature or layers_signature(configs)  # the original's, the first candidate
            rows.append([sum(self.layer_ms(c) for _, c in configs if not c.int8),
                         sum(self.layer_ms(c) for _, c in configs if c.int8),
                         sum(self.call_ms(c) for _, c in configs), 1.0])
            wholes.append(self._whole_ms(candidate, example_input))
        A, y = np.array(rows), np.array(wholes)
        with_int8 = bool(A[:, 1].any())
        if derived:
            from scipy.optimize import nnls

            columns = [0, 1, 2, 3] if with_int8 else [0, 2, 3]
            solved, _ = nnls(A[:, columns], y)
            a, a8, b, c = solved if with_int8 else (solved[0], solved[0], solved[1], solved[2])
        else:
            a, b = 1.0, 0.0
            a8 = a
            c = float(y[0] - A[0, 0] - A[0, 1])
        fit = A @ np.array([a, a8, b, c])
        coefficients = {"scale": float(a), "scale_int8": float(a8), "per_call": float(b), "overhead_ms": float(c),
                        "calibration_models": len(rows), "int8_models": int(np.count_nonzero(A[:, 1])),
                        "calibration_error": float(np.median(np.abs(fit / y - 1)))}
        self.overheads[signature] = coefficients
        self._save()
        return coefficients

    def call_ms(self, config: LayerConfig) -> float:
        """The runtime's per-call cost measured with ``config``'s layer (an identity on its input), ms."""
        self.layer_ms(config)
        return float(self.entries[config.key]["call_ms"])

    def estimate(self, model: nn.Module, example_input: Tensor | tuple, *, original: nn.Module | None = None
                 ) -> LatencyEstimate:
        """Estimated latency of ``model`` from the table and the calibration of ``original``.

        ``original``: the model ``model`` was derived from (calibrated on first use with the
        overhead alone, unless :meth:`calibrate` was called with derived models); default
        ``model`` itself.
        """
        configs = layer_configs(model, example_input, int8=self.times_int8)
        reference = configs if original is None else layer_configs(original, example_input, int8=self.times_int8)
        return self.estimate_calls(configs, reference, calibrate=original if original is not None else model,
                                   example_input=example_input)

    def estimate_calls(self, calls: list[tuple[str, LayerConfig]], reference: list[tuple[str, LayerConfig]], *,
                       calibrate: nn.Module | None = None, example_input: Tensor | tuple | None = None
                       ) -> LatencyEstimate:
        """:meth:`estimate` from the layer calls of a model (:func:`layer_configs`) and of its original
        (``reference``), with the original's calibration (computed on ``calibrate`` when missing)."""
        signature = layers_signature(reference)
        if signature not in self.overheads:
            if calibrate is None:
                raise ValueError("no calibration for this original model; pass calibrate= the original model")
            self.calibrate(calibrate, example_input)
        k = self.overheads[signature]
        layers = [(name, config, self.scaled_ms(config, k)) for name, config in calls]
        return LatencyEstimate(sum(ms for _, _, ms in layers) + k["overhead_ms"], layers, k["overhead_ms"])

    def scaled_ms(self, config: LayerConfig, coefficients: dict[str, float]) -> float:
        """One layer's share of a calibrated estimate: its table time scaled, plus its per-call share."""
        scale = coefficients.get("scale_int8", coefficients["scale"]) if config.int8 else coefficients["scale"]
        return scale * self.layer_ms(config) + coefficients["per_call"] * self.call_ms(config)

    # ---------------------------------------------------------------- internals
    def _whole_ms(self, model: nn.Module, example_input: Tensor | tuple) -> float:
        timer = self.timer or time_layer
        return float(timer(model, batched(example_input, self.target.batch), self.target).median_ms)

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("fingerprint") != self.target.fingerprint():
                raise ValueError("its fingerprint is another target's")
            self.entries = {str(k): dict(v) for k, v in data["layers"].items()}
            self.overheads = {str(k): {n: float(x) for n, x in v.items()} for k, v in data.get("overheads", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            warnings.warn(f"ignoring unusable latency table {self.path} ({error}); it will be rebuilt", stacklevel=3)
            self.entries, self.overheads = {}, {}

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"fingerprint": self.target.fingerprint(), "target": self.target.to_dict(),
                "layers": self.entries, "overheads": self.overheads}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def time_layer(module: nn.Module, inputs: tuple[Tensor, ...], target: Target) -> LatencyResult:
    """Latency of ``module`` alone on ``target`` (inputs already at the target's batch size).

    A fake-quantized layer on ``ort-cpu`` runs as int8 between a quantize of its input and a
    dequantize of its output, as ONNX Runtime fuses it in a network (QLinearConv / QGemm).
    """
    if target.runtime == "ort-cpu" and isinstance(module, QuantWrapper):
        from autocompress.export import deployed_int8, measure_ort_latency

        with tempfile.TemporaryDirectory(prefix="autocompress-lut-") as folder:
            path = deployed_int8(module, Path(folder) / "layer.onnx", inputs, float_outputs=False)
            return measure_ort_latency(path, inputs, threads=target.threads, warmup=target.warmup,
                                       repeats=target.repeats)
    return measure(module, inputs, target)


def layers_signature(configs: list[tuple[str, LayerConfig]]) -> str:
    return hashlib.sha256("|".join(c.key for _, c in configs).encode()).hexdigest()[:16]
