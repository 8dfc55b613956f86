"""Shape arithmetic of low-rank factorization (no torch): the layers a factorization creates.

:func:`factor_shapes` describes, without building anything, the layers
:func:`~autocompress.transforms.lowrank.factorize` would create; it is cheap enough for cost
models in a search loop. :func:`rank_from_ratio` is the number of ranks kept for a keep ratio.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from autocompress.transforms.unsupported import UnsupportedLayerError

__all__ = ["FactorShape", "factor_shapes", "rank_from_ratio"]


class FactorShape(NamedTuple):
    """One layer a factorization creates. ``type`` is the torch class name.

    For Linear, ``kernel``/``stride``/``padding``/``dilation`` are empty tuples.
    ``padding`` may be a string ("same"/"valid") when the original conv used one.
    """

    type: str
    in_features: int
    out_features: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    has_bias: bool

    @property
    def num_params(self) -> int:
        """Parameter count of this layer (weights plus bias)."""
        weight = self.out_features * (self.in_features // self.groups) * math.prod(self.kernel)
        return weight + (self.out_features if self.has_bias else 0)


def rank_from_ratio(full: int, ratio: float, multiple: int = 1) -> int:
    """Number of ranks/channels kept out of ``full`` for a keep ``ratio`` in (0, 1].

    ``ceil(ratio * full)`` (with a 1e-9 guard against float noise, so 0.3 * 10 is 3),
    rounded up to a multiple of ``multiple`` (hardware-friendly sizes), clamped to
    ``[1, full]``. Ratios >= 1 keep everything.
    """
    if full < 1:
        raise ValueError(f"full must be >= 1, got {full}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    if ratio >= 1:
        return full
    kept = math.ceil(ratio * full - 1e-9)
    kept = -(-kept // multiple) * multiple
    return max(1, min(full, kept))


def _tuple(value: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * ndim


def factor_shapes(
    layer_type: str,
    in_features: int,
    out_features: int,
    ratio: float,
    multiple: int = 1,
    *,
    kernel: int | tuple[int, ...] = (),
    stride: int | tuple[int, ...] = 1,
    padding: int | tuple[int, ...] | str = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    has_bias: bool = True,
) -> list[FactorShape]:
    """Shapes of the layers ``factorize`` would build, without building them.

    ``layer_type`` is "Linear", "Conv1d" or "Conv2d". With ``ratio >= 1`` the single
    original layer is returned. Raises :class:`UnsupportedLayerError` where ``factorize``
    would (grouped convs, unknown types).
    """
    if layer_type == "Linear":
        ndim = 0
    elif layer_type in ("Conv1d", "Conv2d"):
        ndim = int(layer_type[-2])
    else:
        raise UnsupportedLayerError(layer_type, "only Linear, Conv1d and Conv2d can be factorized")
    kernel_t = _tuple(kernel, ndim) if ndim else ()
    stride_t = _tuple(stride, ndim) if ndim else ()
    dilation_t = _tuple(dilation, ndim) if ndim else ()
    padding_t: tuple[int, ...] | str = (
        () if not ndim else padding if isinstance(padding, str) else _tuple(padding, ndim)
    )
    if ndim and len(kernel_t) != ndim:
        raise ValueError(f"{layer_type} needs a kernel of {ndim} dims, got {kernel!r}")

    if ratio >= 1:
        return [
            FactorShape(
                layer_type,
                in_features,
                out_features,
                kernel_t,
                stride_t,
                padding_t,
                dilation_t,
                groups,
                has_bias,
            )
        ]
    if groups != 1:
        raise UnsupportedLayerError(layer_type, f"grouped/depthwise conv (groups={groups})")

    def shape(
        n_in: int,
        n_out: int,
        k: tuple[int, ...],
        s: tuple[int, ...],
        p: tuple[int, ...] | str,
        d: tuple[int, ...],
        bias: bool,
    ) -> FactorShape:
        return FactorShape(layer_type, n_in, n_out, k, s, p, d, 1, bias)

    ones = (1,) * ndim
    zeros: tuple[int, ...] = (0,) * ndim
    if math.prod(kernel_t) == 1:  # Linear or pointwise conv: SVD
        rank = rank_from_ratio(min(in_features, out_features), ratio, multiple)
        return [
            shape(in_features, rank, kernel_t, stride_t, padding_t, dilation_t, False),
            shape(rank, out_features, kernel_t, ones, zeros, ones, has_bias),
        ]
    rank_in = rank_from_ratio(in_features, ratio, multiple)
    rank_out = rank_from_ratio(out_features, ratio, multiple)
    return [
        shape(in_features, rank_in, ones, ones, zeros, ones, False),
        shape(rank_in, rank_out, kernel_t, stride_t, padding_t, dilation_t, False),
        shape(rank_out, out_features, ones, ones, zeros, ones, has_bias),
    ]
