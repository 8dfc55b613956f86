"""Atomic file writes (a killed process never leaves a half-written file behind), the cache
directory, and the fingerprint of a model's weights that keys stored results."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from torch import nn


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are plain readable files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def weights_digest(model: nn.Module) -> str:
    """A short fingerprint of ``model``'s weights and buffers (names and values), so that stored
    results are never mixed with another model's."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """``$AUTOCOMPRESS_CACHE`` or ``~/.cache/autocompress`` (created on demand)."""
    root = os.environ.get("AUTOCOMPRESS_CACHE") or Path.home() / ".cache" / "autocompress"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
