"""Pareto fronts and hypervolumes against hand-computed values and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from autocompress.search.pareto import (
    hypervolume,
    hypervolume_curve,
    non_dominated,
    normalized_hypervolume,
    pareto_front_indices,
    to_minimization,
)

MIN2 = ["minimize", "minimize"]
MIN3 = ["minimize"] * 3


def brute_non_dominated(pts: np.ndarray) -> np.ndarray:
    """O(n^2) definition, minimization; non-finite rows are never on the front."""
    finite = np.isfinite(pts).all(axis=1)
    a, b = pts[:, None, :], pts[None, :, :]  # dominated[i] if some j: b[j] <= a[i], one strictly
    dominates = (b <= a).all(axis=2) & (b < a).any(axis=2) & finite[None, :]
    return finite & ~dominates.any(axis=1)


def inclusion_exclusion(pts: np.ndarray, ref: np.ndarray) -> float:
    """Volume of the union of boxes [p, ref] by inclusion-exclusion over all subsets."""
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(range(len(pts)), k):
            corner = pts[list(subset)].max(axis=0)
            total += (-1) ** (k + 1) * np.prod(np.clip(ref - corner, 0, None))
    return total


# --------------------------------------------------------------------------- hand-computed


def test_hypervolume_2d_staircase_by_hand() -> None:
    #  y
    #  4 +-----------r          reference r = (4, 4), three points a, b, c:
    #  3 a====+     .           strips of width 1 under the staircase:
    #  2 |    b====+            [1,2) x [3,4] = 1,  [2,3) x [2,4] = 2,  [3,4) x [1,4] = 3
    #  1 |    |    c====        total 6
    #    +----+----+----+ x
    #    1    2    3    4
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(points, [4, 4], MIN2) == pytest.approx(6.0)
    # a single point is its box; a point on the reference's boundary adds nothing
    assert hypervolume([[1.0, 3.0]], [4, 4], MIN2) == pytest.approx(3.0)
    assert hypervolume([[1.0, 4.0], [4.0, 0.0], [5.0, 1.0]], [4, 4], MIN2) == 0.0


def test_hypervolume_accuracy_vs_flops_by_hand() -> None:
    # (accuracy maximized, flops ratio minimized), reference (accuracy 0, flops ratio 1):
    # integrating over flops: [.2,.3) width .7, [.3,.5) width .8, [.5,1] width .9
    # = .07 + .16 + .45 = .68
    points = np.array([[0.9, 0.5], [0.8, 0.3], [0.7, 0.2]])
    assert hypervolume(points, [0.0, 1.0], ["maximize", "minimize"]) == pytest.approx(0.68)
    # the same quantity with the columns swapped
    assert hypervolume(points[:, ::-1], [1.0, 0.0], ["minimize", "maximize"]) == pytest.approx(0.68)


def test_hypervolume_3d_by_hand() -> None:
    # three boxes of volume 6 against r = (4, 4, 4); each pair overlaps in a box of volume 2,
    # all three in the unit box [3, 4]^3: 3 * 6 - 3 * 2 + 1 = 13
    points = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 1.0], [3.0, 1.0, 2.0]])
    assert hypervolume(points, [4, 4, 4], MIN3) == pytest.approx(13.0)
    # a unit cube corner and one point inside it
    assert hypervolume([[0, 0, 0], [0.5, 0.5, 0.5]], [1, 1, 1], MIN3) == pytest.approx(1.0)


def test_hypervolume_1d() -> None:
    assert hypervolume([[0.3], [0.5], [2.0]], [1.0], ["minimize"]) == pytest.approx(0.7)
    assert hypervolume([[0.3], [0.9]], [0.0], ["maximize"]) == pytest.approx(0.9)


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(d: int) -> None:
    rng = np.random.default_rng(d)
    for n in (1, 2, 5, 8):
        pts = rng.random((n, d))
        ref = np.full(d, 1.0)
        assert hypervolume(pts, ref, ["minimize"] * d) == pytest.approx(
            inclusion_exclusion(pts, ref), rel=1e-12, abs=1e-12
        )


def test_hypervolume_with_ties_matches_inclusion_exclusion() -> None:
    rng = np.random.default_rng(7)
    for d in (3, 4):
        pts = rng.integers(0, 3, size=(9, d)).astype(float)  # many ties and duplicates
        ref = np.full(d, 3.0)
        assert hypervolume(pts, ref, ["minimize"] * d) == pytest.approx(
            inclusion_exclusion(pts, ref), rel=1e-12
        )


def test_hypervolume_matches_grid_estimate_2d() -> None:
    rng = np.random.default_rng(1)
    pts = rng.random((40, 2))
    grid = (np.arange(500) + 0.5) / 500  # cell centres of the unit square
    gx, gy = np.meshgrid(grid, grid)
    cells = np.stack([gx.ravel(), gy.ravel()], axis=1)
    covered = np.zeros(len(cells), dtype=bool)
    for p in pts:
        covered |= (cells >= p).all(axis=1)
    assert hypervolume(pts, [1, 1], MIN2) == pytest.approx(covered.mean(), abs=2e-3)


def test_hypervolume_matches_monte_carlo_3d() -> None:
    rng = np.random.default_rng(2)
    pts = rng.random((60, 3)) * [1.0, 2.0, 0.5]
    ref = np.array([1.0, 2.0, 0.5])
    samples = rng.random((100_000, 3)) * ref
    covered = np.zeros(len(samples), dtype=bool)
    for p in pts:
        covered |= (samples >= p).all(axis=1)
    estimate = covered.mean() * ref.prod()
    sigma = ref.prod() * np.sqrt(covered.mean() * (1 - covered.mean()) / len(samples))
    assert abs(hypervolume(pts, ref, MIN3) - estimate) < 4 * sigma


@pytest.mark.parametrize("d", [3, 4])
def test_hypervolume_matches_optuna(d: int) -> None:
    hv_module = pytest.importorskip("optuna._hypervolume")
    rng = np.random.default_rng(10 + d)
    sphere = np.abs(rng.normal(size=(120, d)))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)  # every point on the front
    for pts in (rng.random((150, d)), sphere):
        ref = np.full(d, 1.1)
        expected = hv_module.compute_hypervolume(pts, ref)
        assert hypervolume(pts, ref, ["minimize"] * d) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_invariant_to_order_and_dominated_points(d: int) -> None:
    rng = np.random.default_rng(20 + d)
    pts = rng.random((30, d))
    ref = np.full(d, 1.2)
    directions = ["minimize"] * d
    base = hypervolume(pts, ref, directions)
    assert hypervolume(pts[rng.permutation(len(pts))], ref, directions) == pytest.approx(
        base, rel=1e-12
    )
    worse = pts[rng.integers(0, len(pts), 20)] + rng.random((20, d)) * 0.1  # each dominated
    assert hypervolume(np.vstack([pts, worse, pts[:5]]), ref, directions) == pytest.approx(
        base, rel=1e-12
    )
    outside = np.full((3, d), 0.1)
    outside[:, 0] = [1.2, 1.5, np.inf]  # on or beyond the reference in one objective
    assert hypervolume(np.vstack([pts, outside]), ref, directions) == pytest.approx(base, rel=1e-12)


def test_maximize_equals_negated_minimize() -> None:
    rng = np.random.default_rng(3)
    pts = rng.random((25, 3))
    ref = np.array([0.0, 1.0, 0.0])
    directions = ["maximize", "minimize", "maximize"]
    flipped = pts * [-1, 1, -1]
    expected = hypervolume(flipped, ref * [-1, 1, -1], MIN3)
    assert expected > 0
    assert hypervolume(pts, ref, directions) == pytest.approx(expected, rel=1e-12)
    assert np.array_equal(non_dominated(pts, directions), non_dominated(flipped, MIN3))
    assert np.array_equal(to_minimization(pts, directions), flipped)


def test_nan_and_inf_rows_excluded() -> None:
    pts = np.array([[0.1, 0.1], [np.nan, 0.0], [0.0, np.inf], [-np.inf, 0.5], [0.5, 0.5]])
    assert non_dominated(pts, MIN2).tolist() == [True, False, False, False, False]
    assert hypervolume(pts, [1, 1], MIN2) == pytest.approx(0.81)
    assert non_dominated(np.full((2, 2), np.nan), MIN2).tolist() == [False, False]
    assert hypervolume(np.full((2, 3), np.nan), [1, 1, 1], MIN3) == 0.0


# --------------------------------------------------------------------------- fronts


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_non_dominated_matches_brute_force(d: int) -> None:
    rng = np.random.default_rng(30 + d)
    for _ in range(5):
        pts = rng.integers(0, 4, size=(50, d)).astype(float)  # ties and exact duplicates
        pts[rng.integers(0, 50, 3), rng.integers(0, d, 3)] = np.nan
        assert np.array_equal(non_dominated(pts, ["minimize"] * d), brute_non_dominated(pts))
        cont = rng.random((80, d))
        assert np.array_equal(non_dominated(cont, ["minimize"] * d), brute_non_dominated(cont))


def test_duplicates_both_kept() -> None:
    pts = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    assert non_dominated(pts, MIN2).tolist() == [True, True, True, False, False]
    assert non_dominated(pts, ["maximize", "maximize"]).tolist() == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_pareto_front_indices_sorted_by_first_objective() -> None:
    pts = np.array([[0.9, 0.5], [0.5, 0.9], [0.7, 0.3], [0.8, 0.6], [0.2, 0.1]])
    directions = ["maximize", "minimize"]  # accuracy, flops
    assert pareto_front_indices(pts, directions).tolist() == [4, 2, 0]
    assert pareto_front_indices(np.empty((0, 2)), directions).tolist() == []


# --------------------------------------------------------------------------- derived


def test_normalized_hypervolume() -> None:
    directions = ["maximize", "minimize"]
    pts = np.array([[0.9, 0.5], [0.8, 0.3], [0.7, 0.2]])
    # box [ideal, reference] = [acc 0..1] x [flops 0..1] has volume 1: same as the raw value
    assert normalized_hypervolume(pts, [0, 1], [1, 0], directions) == pytest.approx(0.68)
    # box acc [0.5, 1] x flops [0.2, 1] (volume 0.4), no point beyond the ideal:
    # raw = .02 + .06 + .2 = .28 (widths .2, .3, .4 above acc .5), normalized .28 / .4 = .7
    raw = hypervolume(pts, [0.5, 1.0], directions)
    assert raw == pytest.approx(0.28)
    assert normalized_hypervolume(pts, [0.5, 1.0], [1.0, 0.2], directions) == pytest.approx(0.7)
    # a point at (or beyond) the ideal covers everything; nothing dominating gives 0
    assert normalized_hypervolume([[1.2, -1.0]], [0, 1], [1, 0], directions) == 1.0
    assert normalized_hypervolume([[0.0, 0.5]], [0, 1], [1, 0], directions) == 0.0
    with pytest.raises(ValueError, match="strictly better"):
        normalized_hypervolume(pts, [0, 1], [1, 1], directions)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_curve_equals_prefix_hypervolumes(d: int) -> None:
    rng = np.random.default_rng(40 + d)
    pts = rng.random((40, d))
    pts[5] = np.nan
    pts[7, 0] = 2.0  # outside the reference
    ref = np.full(d, 1.0)
    directions = ["minimize"] * d
    curve = hypervolume_curve(pts, ref, directions)
    expected = [hypervolume(pts[:k], ref, directions) for k in range(1, len(pts) + 1)]
    assert curve.shape == (40,)
    np.testing.assert_allclose(curve, expected, rtol=1e-12, atol=1e-14)
    assert (np.diff(curve) >= 0).all()
    assert hypervolume_curve(np.empty((0, d)), ref, directions).shape == (0,)


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="unknown direction"):
        non_dominated([[1.0, 2.0]], ["minimize", "max"])
    with pytest.raises(ValueError, match="not the string"):
        to_minimization([[1.0]], "minimize")
    with pytest.raises(ValueError, match="empty"):
        to_minimization([[1.0]], [])
    with pytest.raises(ValueError, match="2 direction"):
        hypervolume([[1.0, 2.0, 3.0]], [4, 4], MIN2)
    with pytest.raises(ValueError, match="2-D array"):
        hypervolume(np.zeros((2, 2, 2)), [1, 1], MIN2)
    with pytest.raises(ValueError, match="2-D array"):
        non_dominated([1.0, 2.0], MIN2)
    with pytest.raises(ValueError, match="reference has 3"):
        hypervolume([[1.0, 2.0]], [4, 4, 4], MIN2)
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[1.0, 2.0]], [np.nan, 4], MIN2)
    with pytest.raises(ValueError, match="numeric"):
        to_minimization([["a", "b"]], MIN2)
    assert hypervolume([], [1, 1], MIN2) == 0.0
    assert non_dominated([], MIN2).shape == (0,)
