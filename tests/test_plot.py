"""Front and curve plots: valid PNGs of the expected size, written headless; bad inputs rejected."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from autocompress.search.pareto import non_dominated
from autocompress.search.plot import DPI, FIGSIZE, plot_curves, plot_front

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_SHAPE = (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI), 4)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.shape == EXPECTED_SHAPE
    assert image[..., :3].std() > 0.01  # something was drawn
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left


def candidates(n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    flops = rng.uniform(0.05, 1.0, n)
    accuracy = 0.9 - 0.3 * (1 - flops) ** 2 - rng.uniform(0, 0.15, n)
    return np.stack([flops, accuracy], axis=1)


def test_plot_front_writes_png(tmp_path: Path) -> None:
    pts = candidates()
    mask = non_dominated(pts, ["minimize", "maximize"])
    labels = [f"#{i}" for i in range(len(pts))]
    out = plot_front(
        pts,
        mask,
        x_label="FLOPs ratio",
        y_label="accuracy",
        path=tmp_path / "sub" / "front.png",
        original=(1.0, 0.9),
        title="front",
        annotate=labels,
    )
    assert out == tmp_path / "sub" / "front.png"
    assert_png(out)


def test_plot_front_log_x_and_nan(tmp_path: Path) -> None:
    pts = candidates()
    pts[3] = np.nan
    mask = non_dominated(pts, ["minimize", "maximize"])
    out = plot_front(
        pts, mask, x_label="FLOPs", y_label="accuracy", path=str(tmp_path / "f.png"), log_x=True
    )
    assert_png(out)
    with pytest.raises(ValueError, match="positive"):
        plot_front(
            pts * [-1, 1], mask, x_label="x", y_label="y", path=tmp_path / "g.png", log_x=True
        )


def test_plot_front_bad_inputs(tmp_path: Path) -> None:
    pts = candidates(10)
    mask = np.ones(10, dtype=bool)
    kwargs = {"x_label": "x", "y_label": "y", "path": tmp_path / "bad.png"}
    with pytest.raises(ValueError, match="shape"):
        plot_front(pts, mask[:9], **kwargs)
    with pytest.raises(ValueError, match="boolean"):
        plot_front(pts, np.arange(10), **kwargs)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plot_front(np.zeros((10, 3)), mask, **kwargs)
    with pytest.raises(ValueError, match="labels"):
        plot_front(pts, mask, annotate=["a"], **kwargs)
    with pytest.raises(ValueError, match="original"):
        plot_front(pts, mask, original=(1.0,), **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "bad.png").exists()


def test_plot_curves_writes_png(tmp_path: Path) -> None:
    x = np.arange(1, 51)
    curves = {
        "random": (x, 1 - 1 / np.sqrt(x), 0.05 * np.ones(50)),
        "nsga2": (x, 1 - 1 / x, None),
    }
    out = plot_curves(
        curves, x_label="evaluations", y_label="hypervolume", path=tmp_path / "hv.png", title="hv"
    )
    assert_png(out)


def test_plot_curves_bad_inputs(tmp_path: Path) -> None:
    x = np.arange(5)
    kwargs = {"x_label": "x", "y_label": "y", "path": tmp_path / "bad.png"}
    with pytest.raises(ValueError, match="mean has 4"):
        plot_curves({"a": (x, np.ones(4), None)}, **kwargs)
    with pytest.raises(ValueError, match="std has 3"):
        plot_curves({"a": (x, np.ones(5), np.ones(3))}, **kwargs)
    with pytest.raises(ValueError, match="empty"):
        plot_curves({}, **kwargs)
