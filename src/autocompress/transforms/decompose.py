"""The decompositions behind low-rank factorization, on weight tensors: truncated SVD and Tucker-2.

Tucker-2 is computed by HOSVD followed by a few HOOI sweeps in float64 with
``torch.linalg.eigh`` on the mode Gram matrices. It reaches the same reconstruction error
as ``tensorly.decomposition.partial_tucker`` (HOOI to convergence) several times faster,
and needs no global TensorLy backend switch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autocompress.threads import single_threaded

__all__ = ["svd_factors", "tucker2"]

_HOOI_MAX_ITERS = 10
_HOOI_TOL = 1e-6


def svd_factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(first, second) with ``second @ first`` the best rank-``rank`` approximation."""
    with single_threaded():
        u, s, vh = torch.linalg.svd(weight.detach().to("cpu", torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    return root[:, None] * vh[:rank], u[:, :rank] * root


def _leading_vectors(matrix: Tensor, rank: int) -> Tensor:
    """Top-``rank`` left singular vectors (float64), via eigh of the Gram matrix."""
    _, vectors = torch.linalg.eigh(matrix @ matrix.T)
    return vectors.flip(-1)[:, :rank]


def tucker2(weight: Tensor, rank_in: int, rank_out: int) -> tuple[Tensor, Tensor, Tensor]:
    """Tucker-2 of a conv weight on its (out, in) modes, float64 on CPU.

    Returns ``(u_out (out, rank_out), core (rank_out, rank_in, *k), u_in (in, rank_in))``
    with orthonormal factors: ``weight ~= core x_0 u_out x_1 u_in``. HOSVD init, then
    HOOI sweeps until the captured energy stops growing.
    """
    with single_threaded():
        return _tucker2(weight.detach().to("cpu", torch.float64), rank_in, rank_out)


def _tucker2(w: Tensor, rank_in: int, rank_out: int) -> tuple[Tensor, Tensor, Tensor]:
    n_out, n_in = w.shape[:2]
    mode_out = w.reshape(n_out, -1)
    mode_in = w.transpose(0, 1).reshape(n_in, -1)
    u_out = _leading_vectors(mode_out, rank_out)
    u_in = _leading_vectors(mode_in, rank_in)
    if rank_in < n_in or rank_out < n_out:
        energy = 0.0
        for _ in range(_HOOI_MAX_ITERS):
            proj_in = torch.tensordot(u_in, w, dims=([0], [1]))  # (rank_in, out, *k)
            u_out = _leading_vectors(proj_in.transpose(0, 1).reshape(n_out, -1), rank_out)
            proj_out = torch.tensordot(u_out, w, dims=([0], [0]))  # (rank_out, in, *k)
            u_in = _leading_vectors(proj_out.transpose(0, 1).reshape(n_in, -1), rank_in)
            core = torch.tensordot(u_in, proj_out, dims=([0], [1]))  # (rank_in, rank_out, *k)
            new_energy = float(core.square().sum())
            if new_energy - energy <= _HOOI_TOL * new_energy:
                break
            energy = new_energy
    core = torch.tensordot(torch.tensordot(u_out, w, dims=([0], [0])), u_in, dims=([1], [0]))
    core = core.movedim(-1, 1)  # (rank_out, *k, rank_in) -> (rank_out, rank_in, *k)
    return u_out, core, u_in
