"""Low-rank factorization of Linear and Conv layers (truncated SVD and Tucker-2).

Every function here is pure: the input layer is never modified, a new module is returned.

* ``nn.Linear(in, out)`` with rank ``r`` becomes ``Linear(in, r, bias=False)`` then
  ``Linear(r, out)`` (truncated SVD, singular values split evenly between the factors).
* A pointwise (1x1) conv becomes two 1x1 convs the same way; the first carries the
  stride and padding, so the output shape is exactly the original one.
* A k x k conv (or a Conv1d with kernel > 1) becomes Tucker-2 on its (out, in) modes:
  ``1x1 in->rank_in``, ``core rank_in->rank_out`` (original kernel, stride, padding,
  dilation), ``1x1 rank_out->out`` (original bias).

The decompositions themselves are in :mod:`autocompress.transforms.decompose`, the shapes of
the factors (without building them) in :mod:`autocompress.transforms.factor_shapes`;
:func:`factor_shapes_of` gives those shapes for an existing layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from autocompress.transforms.decompose import svd_factors, tucker2
from autocompress.transforms.factor_shapes import FactorShape, factor_shapes, rank_from_ratio
from autocompress.transforms.unsupported import UnsupportedLayerError

__all__ = [
    "LowRank",
    "factor_shapes_of",
    "factorize",
    "factorize_conv",
    "factorize_linear",
    "placeholder",
]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d)


class LowRank(nn.Sequential):
    """A factorized layer: 2 or 3 child layers named "0", "1"(, "2") applied in sequence.

    Attributes: ``kind`` ("svd" or "tucker2"), ``ranks`` (tuple of kept ranks) and
    ``original_type`` (class name of the layer it replaces). Input and output shapes are
    those of the original layer, and so are the attributes code outside our control reads:
    ``in_features``/``out_features`` (Linear), ``in_channels``/``out_channels``/``kernel_size``/
    ``stride``/``padding``/``dilation``/``groups``/``padding_mode`` (conv), ``bias`` and ``weight``
    (the effective weight, the product of the factors: read-only).
    """

    def __init__(
        self, *layers: nn.Module, kind: str, ranks: tuple[int, ...], original_type: str
    ) -> None:
        if kind not in ("svd", "tucker2"):
            raise ValueError(f"LowRank kind must be 'svd' or 'tucker2', got {kind!r}")
        if len(layers) not in (2, 3):
            raise ValueError(f"LowRank needs 2 or 3 layers, got {len(layers)}")
        super().__init__(*layers)
        self.kind = kind
        self.ranks = tuple(int(r) for r in ranks)
        self.original_type = original_type

    def extra_repr(self) -> str:
        return f"kind={self.kind}, ranks={self.ranks}, original_type={self.original_type}"

    def __getitem__(self, idx: int | slice) -> nn.Module:  # type: ignore[override]
        if isinstance(idx, slice):  # a slice is no longer a whole factorization
            return nn.Sequential(*list(self)[idx])
        return super().__getitem__(idx)

    # -- the attributes of the layer it replaces (code outside our control reads them) ----------
    def _require(self, conv: bool, name: str) -> None:
        if (self.original_type != "Linear") != conv:
            raise AttributeError(f"'LowRank' of a {self.original_type} has no attribute '{name}'")

    def _conv_attribute(self, name: str) -> object:
        self._require(True, name)
        carrier = self[1] if self.kind == "tucker2" else self[0]  # the factor with the original geometry
        return getattr(carrier, name)

    @property
    def in_features(self) -> int:
        self._require(False, "in_features")
        return self[0].in_features

    @property
    def out_features(self) -> int:
        self._require(False, "out_features")
        return self[-1].out_features

    @property
    def in_channels(self) -> int:
        self._require(True, "in_channels")
        return self[0].in_channels

    @property
    def out_channels(self) -> int:
        self._require(True, "out_channels")
        return self[-1].out_channels

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return self._conv_attribute("kernel_size")

    @property
    def stride(self) -> tuple[int, ...]:
        return self._conv_attribute("stride")

    @property
    def padding(self) -> tuple[int, ...] | str:
        return self._conv_attribute("padding")

    @property
    def dilation(self) -> tuple[int, ...]:
        return self._conv_attribute("dilation")

    @property
    def groups(self) -> int:
        self._require(True, "groups")
        return 1

    @property
    def padding_mode(self) -> str:
        self._require(True, "padding_mode")
        return "zeros"

    @property
    def bias(self) -> Tensor | None:
        return self[-1].bias

    @property
    def weight(self) -> Tensor:
        """The effective weight of the factorized layer (read-only: a product of the factors)."""
        factors = [f.weight for f in self]
        if self.original_type == "Linear":
            return factors[1] @ factors[0]
        if self.kind == "svd":
            first, second = factors
            return (second.flatten(1) @ first.flatten(1)).reshape(second.shape[0], first.shape[1], *first.shape[2:])
        first, core, last = factors
        return torch.einsum("or,rs...,si->oi...", last.flatten(1), core, first.flatten(1))


# ---------------------------------------------------------------------------- shapes


def factor_shapes_of(layer: nn.Module, ratio: float, multiple: int = 1) -> list[FactorShape]:
    """:func:`factor_shapes` for an existing Linear, Conv1d or Conv2d layer."""
    if ratio < 1:
        _check_supported(layer, type(layer).__name__)
    if isinstance(layer, nn.Linear):
        return factor_shapes(
            "Linear",
            layer.in_features,
            layer.out_features,
            ratio,
            multiple,
            has_bias=layer.bias is not None,
        )
    if not isinstance(layer, _CONV_TYPES):
        raise UnsupportedLayerError(type(layer).__name__, "not a Linear, Conv1d or Conv2d")
    return factor_shapes(
        type(layer).__name__,
        layer.in_channels,
        layer.out_channels,
        ratio,
        multiple,
        kernel=layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        has_bias=layer.bias is not None,
    )


# ------------------------------------------------------------------------ factorize


def _check_supported(layer: nn.Module, name: str) -> None:
    if isinstance(layer, nn.Linear):
        base: type[nn.Module] = nn.Linear
    elif isinstance(layer, _CONV_TYPES):
        base = nn.Conv1d if isinstance(layer, nn.Conv1d) else nn.Conv2d
        if layer.groups != 1:
            raise UnsupportedLayerError(name, f"grouped/depthwise conv (groups={layer.groups})")
        if layer.padding_mode != "zeros":
            raise UnsupportedLayerError(name, f"padding_mode={layer.padding_mode!r}, only 'zeros'")
    else:
        raise UnsupportedLayerError(name, "only Linear, Conv1d and Conv2d can be factorized")
    if type(layer).forward is not base.forward:
        raise UnsupportedLayerError(name, f"{type(layer).__name__} overrides forward")
    if isinstance(layer.weight, nn.parameter.UninitializedParameter):
        raise UnsupportedLayerError(name, "weight is not initialized (lazy module)")


def _set(param: Tensor, value: Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.reshape(param.shape))


def _finish(lowrank: LowRank, like: nn.Module) -> LowRank:
    """Match device, dtype, requires_grad and training mode of the original layer."""
    weight = like.weight
    lowrank.to(device=weight.device, dtype=weight.dtype)
    for param in lowrank.parameters():
        param.requires_grad_(weight.requires_grad)
    return lowrank.train(like.training)


def _check_rank(rank: int, full: int, what: str) -> None:
    if not 1 <= rank <= full:
        raise ValueError(f"{what} must be in [1, {full}], got {rank}")


def factorize_linear(layer: nn.Linear, rank: int) -> LowRank:
    """Truncated SVD: ``Linear(in, rank, bias=False)`` then ``Linear(rank, out)``."""
    _check_supported(layer, "Linear")
    _check_rank(rank, min(layer.in_features, layer.out_features), "rank")
    first_w, second_w = svd_factors(layer.weight, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    _set(first.weight, first_w)
    _set(second.weight, second_w)
    if layer.bias is not None:
        _set(second.bias, layer.bias.detach().cpu())
    lowrank = LowRank(first, second, kind="svd", ranks=(rank,), original_type="Linear")
    return _finish(lowrank, layer)


def _pointwise(
    conv: nn.Conv1d | nn.Conv2d, n_in: int, n_out: int, bias: bool, **kw: object
) -> nn.Module:
    return type(conv)(n_in, n_out, 1, bias=bias, **kw)  # type: ignore[arg-type]


def factorize_conv(conv: nn.Conv1d | nn.Conv2d, rank_in: int, rank_out: int) -> LowRank:
    """Factorize a conv: SVD (rank ``rank_out``) if pointwise, Tucker-2 otherwise.

    For a 1x1 conv ``rank_in`` is ignored; the first 1x1 conv carries stride and padding
    (a bias-free conv maps zero padding to zero, so border outputs equal the bias).
    """
    name = type(conv).__name__
    _check_supported(conv, name)
    n_in, n_out = conv.in_channels, conv.out_channels
    has_bias = conv.bias is not None
    if math.prod(conv.kernel_size) == 1:
        _check_rank(rank_out, min(n_in, n_out), "rank_out")
        first_w, second_w = svd_factors(conv.weight.reshape(n_out, n_in), rank_out)
        first = _pointwise(
            conv,
            n_in,
            rank_out,
            False,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
        )
        second = _pointwise(conv, rank_out, n_out, has_bias)
        _set(first.weight, first_w)
        _set(second.weight, second_w)
        layers: tuple[nn.Module, ...] = (first, second)
        kind, ranks = "svd", (rank_out,)
    else:
        _check_rank(rank_in, n_in, "rank_in")
        _check_rank(rank_out, n_out, "rank_out")
        u_out, core_w, u_in = tucker2(conv.weight, rank_in, rank_out)
        first = _pointwise(conv, n_in, rank_in, False)
        core = type(conv)(
            rank_in,
            rank_out,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=False,
        )
        second = _pointwise(conv, rank_out, n_out, has_bias)
        _set(first.weight, u_in.T)
        _set(core.weight, core_w)
        _set(second.weight, u_out)
        layers = (first, core, second)
        kind, ranks = "tucker2", (rank_in, rank_out)
    if has_bias:
        _set(second.bias, conv.bias.detach().cpu())
    return _finish(LowRank(*layers, kind=kind, ranks=ranks, original_type=name), conv)


def _build(shape: FactorShape, like: nn.Module) -> nn.Module:
    if shape.type == "Linear":
        return nn.Linear(shape.in_features, shape.out_features, bias=shape.has_bias)
    return type(like)(
        shape.in_features, shape.out_features, shape.kernel, stride=shape.stride,
        padding=shape.padding, dilation=shape.dilation, bias=shape.has_bias,
    )


def placeholder(layer: nn.Module, name: str | None = None) -> LowRank:
    """A rank-1 factorization of ``layer`` with the factors' shapes but untrained weights.

    Cheap (no decomposition): the search space runs the model once with it to check that the
    model still works with the layer factorized.
    """
    _check_supported(layer, name or type(layer).__name__)
    shapes = factor_shapes_of(layer, 1e-9)
    factors = [_build(shape, layer) for shape in shapes]
    kind = "svd" if len(factors) == 2 else "tucker2"
    ranks = tuple(shape.out_features for shape in shapes[:-1])  # svd: (rank,); tucker2: (rank_in, rank_out)
    return _finish(LowRank(*factors, kind=kind, ranks=ranks, original_type=type(layer).__name__), layer)


def factorize(
    layer: nn.Module, ratio: float, multiple: int = 1, name: str | None = None
) -> nn.Module:
    """Factorize ``layer`` keeping ``ratio`` of its rank(s); ``ratio >= 1`` returns it as is.

    Linear and 1x1 conv: ``rank = rank_from_ratio(min(in, out), ratio, multiple)``.
    k x k conv: ``rank_in``/``rank_out`` from ``in``/``out`` channels the same way.
    ``name`` (the layer's path in its model) is used in :class:`UnsupportedLayerError`.
    """
    if ratio >= 1:
        return layer
    _check_supported(layer, name or type(layer).__name__)
    if isinstance(layer, nn.Linear):
        full = min(layer.in_features, layer.out_features)
        return factorize_linear(layer, rank_from_ratio(full, ratio, multiple))
    assert isinstance(layer, _CONV_TYPES)
    n_in, n_out = layer.in_channels, layer.out_channels
    if math.prod(layer.kernel_size) == 1:
        rank = rank_from_ratio(min(n_in, n_out), ratio, multiple)
        return factorize_conv(layer, rank, rank)
    return factorize_conv(
        layer, rank_from_ratio(n_in, ratio, multiple), rank_from_ratio(n_out, ratio, multiple)
    )
