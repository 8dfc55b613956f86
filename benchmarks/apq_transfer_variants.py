"""APQ (issue 6): predictor transfers tried besides ResidualTransfer, on the labels apq.py stored.

    python benchmarks/apq.py --threads 2 --seed S --sections predictor   # for S in 0 1 2 3, once
    python benchmarks/apq_transfer_variants.py --threads 2

Reads ``runs/apq/labels-seed{S}-e10-fp300-q250-qat20.npz`` (300 full-precision labels, 150
quantized labels to train on, 100 held out) and, with apq.py's protocol (the first n of a
permutation of the 150 seeded ``[draw, 23]``, draws 0-4; Kendall τ on the 100 held out), scores
each quantization-aware predictor with n = 10, 25 and 38 quantized labels:

- ``residual``: :class:`~autocompress.predict.ResidualTransfer` on a full-precision GP (kept);
- ``joint GP``: one GP on the full-precision and the quantized labels together, with a column
  that is 1 on a quantized label (a multi-fidelity GP through its input);
- ``co-kriging``: ``y = m + ρ·source(x) + δ(x)`` with δ a GP over the architecture (the
  source GP's length scales, one common factor learnt), the bits and the source's prediction,
  m and ρ by generalized least squares: 5 hyper-parameters for n labels;
- ``residual + size``: the residual correction also sees log(Σ depth·(channels·width)²·kernel)
  (a parameter count of the convs);
- ``residual, k cheap labels``: the same transfer with the first k of the 300 cheap labels.

Then the held-out residuals (quantized label − the full-precision GP's prediction) by stage and
bit-width: where quantization loses accuracy. Writes
benchmarks/results/apq_transfer_variants.{json,md} (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

from autocompress.predict import AccuracyPredictor, ResidualTransfer, ranking_metrics
from autocompress.threads import single_threaded

RESULTS = Path(__file__).parent / "results"
CHANNELS = (32, 64, 128)  # apq.py's ElasticCNN1d
BITS = (4, 5, 6, 8)
STEP_COLUMNS = slice(9, 12)  # features: (depth, width, kernel) per stage, then 2^-bits per stage


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernets", type=int, nargs="+", default=[0, 1, 2, 3], help="apq.py --seed of each")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 38])
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs/apq"))
    parser.add_argument("--out", type=Path, default=RESULTS / "apq_transfer_variants")
    return parser.parse_args(argv)


def load_labels(runs: Path, seed: int) -> dict[str, np.ndarray]:
    path = runs / f"labels-seed{seed}-e10-fp300-q250-qat20.npz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python benchmarks/apq.py --seed {seed} --sections predictor` first")
    return dict(np.load(path))


class CoKriging:
    """``y = m + ρ·s(x) + δ(x)``; δ ~ GP(0, σ² exp(-½(|Δa|²/κ² + |Δb|²/l_b² + Δs²/l_s²))) + noise.

    a: the architecture columns standardized and divided by the source GP's length scales (so the
    source's view of which genes matter is kept, scaled by one factor κ); b: the quantization
    steps × 16; s: the source's prediction. m, ρ by GLS; σ², κ, l_b, l_s, noise by maximum
    marginal likelihood (L-BFGS-B, 5 starts)."""

    def __init__(self, source: AccuracyPredictor, seed: int) -> None:
        self.source, self.seed = source, seed
        self.scales = np.asarray(source.model_.kernel_.k1.k2.length_scale)[:9]

    def _parts(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.source._z(X)[:, :9] / self.scales, X[:, STEP_COLUMNS] * 16.0, np.asarray(self.source.predict(X))

    def _kernel(self, theta: np.ndarray, A: tuple, B: tuple) -> np.ndarray:
        sig2, kappa, lb, ls = np.exp(theta[:4])
        d = (((A[0][:, None] - B[0][None]) ** 2).sum(-1) / kappa**2 + ((A[1][:, None] - B[1][None]) ** 2).sum(-1) / lb**2
             + (A[2][:, None] - B[2][None]) ** 2 / (ls * self.s_scale) ** 2)
        return sig2 * np.exp(-0.5 * d)

    def _solve(self, theta: np.ndarray, P: tuple, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        K = self._kernel(theta, P, P) + (np.exp(theta[4]) + 1e-8) * np.eye(len(y))
        L = np.linalg.cholesky(K)
        inv = lambda v: np.linalg.solve(L.T, np.linalg.solve(L, v))  # noqa: E731
        H = np.column_stack([np.ones(len(y)), P[2]])
        A = H.T @ inv(H) + 1e-8 * np.eye(2)
        beta = np.linalg.solve(A, inv(H).T @ y)
        alpha = inv(y - H @ beta)
        nll = 0.5 * (y - H @ beta) @ alpha + np.log(np.diag(L)).sum() + 0.5 * np.linalg.slogdet(A)[1]
        return nll, beta, alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> CoKriging:
        self.P = self._parts(X)
        self.s_scale = max(float(self.P[2].std()), 1e-6)
        v = max(float(y.var()), 1e-6)
        bounds = [(np.log(v) - 7, np.log(v) + 5), (np.log(0.1), np.log(100)), (np.log(0.05), np.log(100)),
                  (np.log(0.05), np.log(100)), (np.log(v) - 9, np.log(v) + 1)]
        low, high = np.array(bounds).T
        rng = np.random.default_rng(self.seed)
        start = np.log([v, 1.0, 1.0, 1.0, 0.2 * v])

        def nll(theta: np.ndarray) -> float:
            try:
                return self._solve(theta, self.P, y)[0]
            except np.linalg.LinAlgError:
                return 1e10

        fits = [minimize(nll, np.clip(start + (rng.normal(0, 1, 5) if i else 0), low, high), method="L-BFGS-B",
                         bounds=bounds) for i in range(5)]
        self.theta = min(fits, key=lambda r: r.fun).x
        _, self.beta, self.alpha = self._solve(self.theta, self.P, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        Q = self._parts(X)
        return np.column_stack([np.ones(len(X)), Q[2]]) @ self.beta + self._kernel(self.theta, Q, self.P) @ self.alpha


class JointGP:
    """One GP on the cheap and the dear labels, a last column 1 on the dear (quantized) ones."""

    def __init__(self, fp_X: np.ndarray, fp_y: np.ndarray, seed: int) -> None:
        self.fp_X, self.fp_y, self.seed = fp_X, fp_y, seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> JointGP:
        A = np.vstack([np.column_stack([self.fp_X, np.zeros(len(self.fp_X))]), np.column_stack([X, np.ones(len(X))])])
        self.gp = AccuracyPredictor("gp", seed=self.seed).fit(A, np.concatenate([self.fp_y, y]))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.gp.predict(np.column_stack([X, np.ones(len(X))]))


class SizedResidual:
    """ResidualTransfer's correction with one more input: log of the convs' parameter count."""

    def __init__(self, source: AccuracyPredictor, seed: int) -> None:
        self.source, self.seed = source, seed

    @staticmethod
    def _inputs(X: np.ndarray, base: np.ndarray) -> np.ndarray:
        params = sum(X[:, 3 * s] * (c * X[:, 3 * s + 1]) ** 2 * X[:, 3 * s + 2] for s, c in enumerate(CHANNELS))
        return np.column_stack([X[:, STEP_COLUMNS], base, np.log(params)])

    def fit(self, X: np.ndarray, y: np.ndarray) -> SizedResidual:
        base = self.source.predict(X)
        self.correction = AccuracyPredictor("gp", seed=self.seed).fit(self._inputs(X, base), y - base)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        base = self.source.predict(X)
        return base + self.correction.predict(self._inputs(X, base))


CHEAP = (100, 150, 200)  # fewer cheap labels for the residual transfer


def variants(data: dict[str, np.ndarray], seed: int) -> dict[str, object]:
    """name -> fit(X, y, draw) returning a fitted predictor."""
    source = AccuracyPredictor("gp", seed=seed).fit(data["fp_X"], data["fp_y"])
    fewer = {k: AccuracyPredictor("gp", seed=seed).fit(data["fp_X"][:k], data["fp_y"][:k]) for k in CHEAP}
    out = {
        "residual": lambda X, y, d: ResidualTransfer(source, seed=d).fit(X, y),
        "joint GP": lambda X, y, d: JointGP(data["fp_X"], data["fp_y"], d).fit(X, y),
        "co-kriging": lambda X, y, d: CoKriging(source, d).fit(X, y),
        "residual + size": lambda X, y, d: SizedResidual(source, d).fit(X, y),
    }
    for k, small in fewer.items():
        out[f"residual, {k} cheap labels"] = lambda X, y, d, small=small: ResidualTransfer(small, seed=d).fit(X, y)
    return out | {"_source": source}


def residuals_by_bits(data: dict[str, np.ndarray], source: AccuracyPredictor) -> list[list[float]]:
    """Mean (quantized label − the full-precision GP's prediction) per stage and bit-width, on every quantized label."""
    residual = data["q_y"] - source.predict(data["q_X"])
    bits = np.round(-np.log2(data["q_X"][:, STEP_COLUMNS])).astype(int)
    return [[float(residual[bits[:, s] == b].mean()) for b in BITS] for s in range(bits.shape[1])]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = {"command": "python benchmarks/apq_transfer_variants.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
              "sizes": args.sizes, "draws": args.draws, "supernets": {}}
    for seed in args.supernets:
        data = load_labels(args.runs, seed)
        pool_X, pool_y, test_X, test_y = data["q_X"][:150], data["q_y"][:150], data["q_X"][150:], data["q_y"][150:]
        with single_threaded():
            fits = variants(data, seed)
        source = fits.pop("_source")
        taus: dict[str, dict[str, float]] = {}
        for name, fit in fits.items():
            taus[name] = {}
            for n in args.sizes:
                scores = []
                for draw in args.draws:
                    picked = np.random.default_rng([draw, 23]).permutation(150)[:n]
                    predictor = fit(pool_X[picked], pool_y[picked], draw)
                    scores.append(ranking_metrics(test_y, predictor.predict(test_X))["kendall_tau"])
                taus[name][str(n)] = float(np.mean(scores))
            print(f"supernet {seed + 1} {name}: " + ", ".join(f"{n}: {t:.3f}" for n, t in taus[name].items()), flush=True)
        result["supernets"][str(seed)] = {"tau": taus, "residuals": residuals_by_bits(data, source)}
    result["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    seeds = list(result["supernets"])
    names = list(result["supernets"][seeds[0]]["tau"])
    lines = [
        "# APQ: predictor transfers tried besides ResidualTransfer",
        "",
        f"Command `{result['command'].strip()}`; {result['date']}; {result['machine']}; {result['seconds']:.0f} s. "
        "Labels stored by `benchmarks/apq.py --seed S` (supernet S + 1); apq.py's protocol: Kendall τ on the 100 held-out "
        f"quantized labels, mean over draws {result['draws']} of the n training labels.",
        "",
        "| predictor | " + " | ".join(f"τ, {n} quantized labels (supernet {' / '.join(str(int(s) + 1) for s in seeds)})"
                                      for n in result["sizes"]) + " |",
        "|---|" + "---:|" * len(result["sizes"]),
    ]
    for name in names:
        cells = [" / ".join(f"{result['supernets'][s]['tau'][name][str(n)]:.3f}" for s in seeds) for n in result["sizes"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Where quantization loses accuracy: mean residual (quantized label − the full-precision GP's "
              "prediction, points) of all 250 quantized labels by the bit-width of each stage "
              f"(supernet {' / '.join(str(int(s) + 1) for s in seeds)}):", "",
              "| stage | " + " | ".join(f"{b} bits" for b in BITS) + " |", "|---|" + "---:|" * len(BITS)]
    for stage in range(len(result["supernets"][seeds[0]]["residuals"])):
        cells = [" / ".join(f"{result['supernets'][s]['residuals'][stage][i]:+.2f}" for s in seeds) for i in range(len(BITS))]
        lines.append(f"| {stage + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
