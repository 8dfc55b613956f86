"""Quantization-aware fake quantization of Linear and Conv layers.

* Weights: symmetric, per output channel, ``bits`` in 2..8 (32 = float).
* Activations (the wrapped layer's *input*): asymmetric per tensor, range tracked as an
  exponential moving average while training and fixed in eval (see ``ActivationQuantizer``),
  or *dynamic*: each call's own min/max (ONNX Runtime's dynamic int8, see ``export/dynamic.py``).
* Gradients use the straight-through estimator (STE).

Only elementary ops (div, round, clamp, mul, add) are used, so a model with these
wrappers exports with the legacy ONNX exporter to an fp32 graph that ONNX Runtime runs
with the same outputs. Both round half to even; they can still differ by one
quantization step where a conv sum, accumulated in another order, falls within an ulp of
a rounding boundary before the next quantizer (seen in 2 of 40 random 3-layer models).
Real int8 export is done elsewhere.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autocompress.calls import call_model
from autocompress.layers import COMPRESSED
from autocompress.policy import ALLOWED_BITS, check_bits
from autocompress.task.streamed import to_device
from autocompress.transforms.lowrank import LowRank
from autocompress.transforms.unsupported import UnsupportedLayerError

__all__ = [
    "ALLOWED_BITS",
    "ActivationQuantizer",
    "QuantWrapper",
    "calibrate_activations",
    "check_bits",
    "check_quantizable",
    "fake_quantize_weight",
    "freeze_weights",
    "quantize_layer",
]

FLOAT_BITS = 32
INT8_BITS = 8  # the widest bit-width a static int8 file runs in int8 (ONNX Runtime runs every narrower one as int8)
MOMENTUM = 0.1


def runs_in_int8(weight_bits: int, act_bits: int) -> bool:
    """Whether a layer at these bits runs in int8 in its static int8 file (both at 8 bits or fewer), else fp32."""
    return max(weight_bits, act_bits) <= INT8_BITS


def _needs_grad(x: Tensor) -> bool:
    """Whether ``x`` needs an STE graph (never while exporting to ONNX)."""
    return x.requires_grad and torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export()


def _straight_through(x: Tensor, q: Tensor) -> Tensor:
    """Forward value exactly ``q``, gradient of identity w.r.t. ``x``."""
    if not _needs_grad(x):
        return q
    return (x - x.detach()) + q.detach()


def fake_quantize_weight(w: Tensor, bits: int) -> Tensor:
    """Symmetric per-output-channel (dim 0) fake quantization with an STE gradient.

    ``scale_c = max|w_c| / (2^(bits-1) - 1)``; ``q = clamp(round(w / scale), -qmax, qmax)
    * scale``. All-zero channels stay zero. ``bits == 32`` returns ``w`` itself.
    """
    if check_bits(bits) == FLOAT_BITS:
        return w
    qmax = 2 ** (bits - 1) - 1
    reduce_dims = tuple(range(1, w.dim()))
    absmax = w.detach().abs().amax(dim=reduce_dims, keepdim=True) if reduce_dims else w.abs()
    scale = absmax.detach() / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w.detach() / scale), -qmax, qmax) * scale
    return _straight_through(w, q)


class ActivationQuantizer(nn.Module):
    """Per-tensor asymmetric min/max fake quantization at ``bits`` (32 = identity).

    The range lives in buffers ``min_val``, ``max_val`` and ``initialized`` (change them
    through ``reset()`` or ``load_state_dict``, not in place). The first
    batch seen (in train or eval mode) sets it; later batches in train mode update it as
    an exponential moving average (momentum 0.1); eval mode leaves it fixed. The range
    used always includes 0. The gradient is the STE, zero outside the range (clipped).
    """

    def __init__(self, bits: int = 8, dynamic: bool = False) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        #: True: every call uses its own input's min/max (ONNX Runtime's DynamicQuantizeLinear); nothing tracked
        self.dynamic = dynamic
        self.calibrating = False  # set by calibrate_activations: exact min/max, no quantization
        #: added before rounding (in steps): export's rounding envelope moves values near a boundary
        self.nudge = 0.0
        self.register_buffer("min_val", torch.zeros(()))
        self.register_buffer("max_val", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._known_initialized = False  # caches a True `initialized` (no device sync)

    def extra_repr(self) -> str:
        return f"bits={self.bits}" + (", dynamic" if self.dynamic else "")

    def reset(self) -> None:
        """Forget the tracked range."""
        self.min_val.zero_()
        self.max_val.zero_()
        self.initialized.fill_(False)
        self._known_initialized = False

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._known_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    def _is_initialized(self) -> bool:
        if not self._known_initialized:
            with warnings.catch_warnings():  # a traced model bakes this branch in: fine
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                self._known_initialized = bool(self.initialized)
        return self._known_initialized

    @torch.no_grad()
    def _observe(self, x: Tensor) -> None:
        low, high = torch.aminmax(x.detach())
        low = low.to(device=self.min_val.device, dtype=self.min_val.dtype)
        high = high.to(device=self.max_val.device, dtype=self.max_val.dtype)
        if not self._is_initialized():
            self.min_val.copy_(low)
            self.max_val.copy_(high)
            self.initialized.fill_(True)
            self._known_initialized = True
        elif self.calibrating:
            torch.minimum(self.min_val, low, out=self.min_val)
            torch.maximum(self.max_val, high, out=self.max_val)
        elif self.training:
            self.min_val.lerp_(low, MOMENTUM)
            self.max_val.lerp_(high, MOMENTUM)

    def scale_zero_point(self) -> tuple[Tensor, Tensor]:
        """Current ``(scale, zero_point)``; ``zero_point`` is an integer-valued float."""
        return _scale_zero_point(self.min_val, self.max_val, self.bits)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits == FLOAT_BITS or (self.dynamic and self.calibrating):
            return x
        if self.dynamic:
            return self._quantize(x, *_dynamic_range(x.detach(), self.bits))
        if torch.jit.is_tracing():  # exporting: the range must already be known
            if not self._is_initialized():
                raise RuntimeError(
                    "ActivationQuantizer has no range yet: run calibrate_activations (or one "
                    "forward pass) before exporting"
                )
        elif self.training or self.calibrating or not self._is_initialized():
            self._observe(x)
        if self.calibrating:
            return x
        scale, zero_point = self.scale_zero_point()
        return self._quantize(x, scale.to(device=x.device, dtype=x.dtype), zero_point.to(device=x.device, dtype=x.dtype))

    def _quantize(self, x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
        levels = float(2**self.bits - 1)
        steps = x / scale + self.nudge if self.nudge else x / scale
        q = torch.clamp(torch.round(steps) + zero_point, 0.0, levels)
        out = (q - zero_point) * scale
        if not _needs_grad(x):
            return out
        low, high = (0.0 - zero_point) * scale, (levels - zero_point) * scale
        inside = ((x >= low) & (x <= high)).to(x.dtype)
        return (x - x.detach()) * inside + out.detach()


def _scale_zero_point(low: Tensor, high: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Asymmetric ``(scale, zero_point)`` of the range [low, high] widened to include 0 (as ONNX's
    DynamicQuantizeLinear computes them); ``zero_point`` is an integer-valued float."""
    levels = 2**bits - 1
    low = torch.clamp(low, max=0.0)
    high = torch.clamp(high, min=0.0)
    scale = (high - low) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.clamp(torch.round(-low / scale), 0.0, float(levels))
    return scale, zero_point


def _dynamic_range(x: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """(scale, zero_point) of ``x``'s own range."""
    return _scale_zero_point(x.min(), x.max(), bits)


def check_quantizable(layer: nn.Module, name: str | None = None) -> None:
    """Raise UnsupportedLayerError unless ``layer`` is a plain Linear/Conv1d/Conv2d."""
    label = name or type(layer).__name__
    base = next((t for t in COMPRESSED if isinstance(layer, t)), None)
    if base is None:
        raise UnsupportedLayerError(label, "only Linear, Conv1d and Conv2d can be quantized")
    if type(layer).forward is not base.forward:
        raise UnsupportedLayerError(label, f"{type(layer).__name__} overrides forward")
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        raise UnsupportedLayerError(label, f"padding_mode={layer.padding_mode!r}, only 'zeros'")


#: attributes of the wrapped layer a QuantWrapper answers as the layer itself would
LAYER_ATTRIBUTES = frozenset(
    {"weight", "bias", "in_features", "out_features", "in_channels", "out_channels", "kernel_size",
     "stride", "padding", "dilation", "groups", "padding_mode", "transposed", "output_padding"}
)


class QuantWrapper(nn.Module):
    """A Linear/Conv1d/Conv2d (``self.layer``) with fake-quantized weights and input.

    It answers the wrapped layer's attributes (``weight``, ``bias``, ``in_features``, ``stride``, ...,
    see :data:`LAYER_ATTRIBUTES`) as the layer would: code outside our control reads them.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            layer = self._modules.get("layer")
            if name in LAYER_ATTRIBUTES and layer is not None:
                return getattr(layer, name)
            raise

    def __init__(self, layer: nn.Module, weight_bits: int, act_bits: int, dynamic: bool = False) -> None:
        super().__init__()
        check_quantizable(layer)
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.act_bits = check_bits(act_bits, "act_bits")
        self.layer = layer
        self.act_quant = ActivationQuantizer(self.act_bits, dynamic).to(device=layer.weight.device)
        self.weight_frozen = False  # True: layer.weight already holds its quantized values

    def extra_repr(self) -> str:
        return f"weight_bits={self.weight_bits}, act_bits={self.act_bits}" + (", dynamic" if self.act_quant.dynamic else "")

    def forward(self, x: Tensor) -> Tensor:
        layer = self.layer
        x = self.act_quant(x)
        weight = layer.weight if self.weight_frozen else fake_quantize_weight(layer.weight, self.weight_bits)
        if isinstance(layer, nn.Linear):
            return F.linear(x, weight, layer.bias)
        conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
        return conv(
            x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups
        )


def freeze_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose quantized layers store their weights already quantized.

    Same outputs, no weight quantization at run time: for inference and export only (a
    frozen wrapper no longer trains its weights through the straight-through estimator).
    """
    frozen = copy.deepcopy(model)
    for module in frozen.modules():
        if isinstance(module, QuantWrapper) and not module.weight_frozen:
            with torch.no_grad():
                module.layer.weight.copy_(fake_quantize_weight(module.layer.weight, module.weight_bits))
            module.weight_frozen = True
    return frozen


def quantize_layer(layer: nn.Module, weight_bits: int, act_bits: int, dynamic: bool = False) -> nn.Module:
    """Fake-quantize ``layer`` (a copy; the input is not modified); ``dynamic``: per-call input ranges.

    Returns ``layer`` itself at 32/32. A :class:`LowRank` gets each factor wrapped (a new
    LowRank with the same attributes); a :class:`QuantWrapper` is re-wrapped at the new
    bits; a Linear/Conv1d/Conv2d becomes a :class:`QuantWrapper`.
    """
    check_bits(weight_bits, "weight_bits")
    check_bits(act_bits, "act_bits")
    if weight_bits == FLOAT_BITS and act_bits == FLOAT_BITS:
        return layer
    if isinstance(layer, LowRank):
        factors = [quantize_layer(child, weight_bits, act_bits, dynamic) for child in layer]
        wrapped = LowRank(
            *factors, kind=layer.kind, ranks=layer.ranks, original_type=layer.original_type
        )
        return wrapped.train(layer.training)
    inner = layer.layer if isinstance(layer, QuantWrapper) else layer
    check_quantizable(inner)
    wrapper = QuantWrapper(copy.deepcopy(inner), weight_bits, act_bits, dynamic)
    return wrapper.train(layer.training)


def _first_tensor(batch: object) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], Tensor):
        return batch[0]  # (inputs, targets) pairs from a DataLoader
    raise TypeError(
        f"calibration batches must be tensors or (inputs, ...) tuples, got {type(batch)}"
    )


def calibrate_activations(
    model: nn.Module, batches: Iterable, device: torch.device | str | None = None, *, pairs: bool = True
) -> int:
    """Set every ActivationQuantizer's range to the exact min/max over ``batches``.

    Ranges are reset, then ``model`` runs under ``no_grad`` in eval mode while the
    quantizers record min/max and pass activations through unquantized (the float
    activations are observed). Modes are restored afterwards. ``device`` defaults to the
    model's parameters' device. ``pairs``: a tuple batch is ``(inputs, ...)`` from a DataLoader;
    with ``pairs=False`` every batch is one model input (a tensor, positional tensors or a dict of
    keyword tensors). Returns the number of quantizers calibrated (32-bit ones,
    being identities, are not counted). Raises ValueError if there are quantizers but no
    batches.
    """
    quantizers = [
        m for m in model.modules() if isinstance(m, ActivationQuantizer) and m.bits < FLOAT_BITS
    ]
    if not quantizers:
        return 0
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    modes = {module: module.training for module in model.modules()}
    seen = 0
    try:
        model.eval()
        for quantizer in quantizers:
            quantizer.reset()
            quantizer.calibrating = True
        with torch.no_grad():
            for batch in batches:
                inputs = _first_tensor(batch) if pairs and not isinstance(batch, Mapping) else batch
                call_model(model, to_device(inputs, device))
                seen += 1
    finally:
        for quantizer in quantizers:
            quantizer.calibrating = False
        for module, training in modes.items():
            module.training = training
    if seen == 0:
        raise ValueError("calibrate_activations got no batches; give at least one input batch")
    return len(quantizers)
