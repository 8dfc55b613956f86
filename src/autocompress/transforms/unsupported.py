"""The error a transform raises for a layer it cannot handle (factorization and quantization both)."""

from __future__ import annotations

__all__ = ["UnsupportedLayerError"]


class UnsupportedLayerError(ValueError):
    """A layer that a transform cannot handle; callers leave such layers uncompressed."""

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        super().__init__(f"{layer}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.layer, self.reason))
