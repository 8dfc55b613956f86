"""Accuracy predictors and informative selection on synthetic (policy, accuracy) arrays and a real space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_search import Net
from scipy import stats

from autocompress.policy import Policy
from autocompress.predict import (
    AccuracyPredictor,
    ResidualTransfer,
    evolve_informative,
    policy_features,
    ranking_metrics,
    select_from_pool,
)
from autocompress.space import SearchSpace


def smooth(X: np.ndarray) -> np.ndarray:
    return 98 - 10 * X[:, 0] ** 2 - 5 * X[:, 1] * X[:, 2] - 3 * np.sin(3 * X[:, 3])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.random((200, 6))
    return X, smooth(X) + rng.normal(0, 0.1, len(X))


@pytest.mark.parametrize("kind", ["gp", "mlp", "ensemble", "rank", "linear", "gbt", "blend", "stack"])
def test_every_predictor_ranks_held_out_policies(data, kind):
    X, y = data
    predictor = AccuracyPredictor(kind, epochs=200, members=2).fit(X[:60], y[:60])
    metrics = ranking_metrics(y[100:], predictor.predict(X[100:]))
    # linear misses the curvature; 60 labels are few for trees
    floor = {"gp": 0.85, "mlp": 0.7, "ensemble": 0.7, "rank": 0.7, "linear": 0.6, "gbt": 0.5, "blend": 0.7, "stack": 0.85}[kind]
    assert metrics["kendall_tau"] > floor and metrics["spearman_rho"] > metrics["kendall_tau"]
    mean, std = predictor.predict(X[100:110], return_std=True)
    assert mean.shape == std.shape == (10,) and np.all(std >= 0)
    assert (std == 0).all() if kind == "mlp" else (std > 0).all()
    assert predictor.score(X[100:], y[100:]) == pytest.approx(metrics["kendall_tau"])


def test_a_linear_truth_is_recovered_with_its_gradient():
    rng = np.random.default_rng(1)
    X = rng.random((40, 3)) * [1, 10, 100]  # columns on very different scales
    y = 90 + 2 * X[:, 0] - 0.5 * X[:, 1] + 0.01 * X[:, 2]
    for kind in ("linear", "gp"):
        predictor = AccuracyPredictor(kind).fit(X, y)
        assert ranking_metrics(y, predictor.predict(X))["rmse"] < 0.05
        np.testing.assert_allclose(predictor.gradient(X[:5]), np.tile([2, -0.5, 0.01], (5, 1)), rtol=0.05, atol=1e-3)


def test_mlp_gradient_matches_finite_differences(data):
    X, y = data
    predictor = AccuracyPredictor("ensemble", epochs=100, members=2).fit(X[:50], y[:50])
    step = 1e-3
    numeric = np.stack([(predictor.predict(X[:4] + step * e) - predictor.predict(X[:4] - step * e)) / (2 * step)
                        for e in np.eye(X.shape[1])], axis=1)
    np.testing.assert_allclose(predictor.gradient(X[:4]), numeric, rtol=1e-2, atol=1e-3)


def test_fitting_is_deterministic_and_works_on_any_width():
    rng = np.random.default_rng(2)
    X, y = rng.random((30, 11)), rng.random(30)
    first = AccuracyPredictor("mlp", epochs=100, seed=3).fit(X, y).predict(X)
    again = AccuracyPredictor("mlp", epochs=100, seed=3).fit(X, y).predict(X)
    np.testing.assert_array_equal(first, again)
    constant = X.copy()
    constant[:, 4] = 0.5  # a gene never varied in the labels: no division by zero
    assert np.isfinite(AccuracyPredictor(epochs=50, members=2).fit(constant, y).predict(X)).all()


def test_bad_input_names_the_problem(data):
    X, y = data
    with pytest.raises(ValueError, match="kind must be"):
        AccuracyPredictor("forest").fit(X, y)
    with pytest.raises(ValueError, match="2-D"):
        AccuracyPredictor().fit(X[0], y[:1])
    with pytest.raises(ValueError, match="rows but y has"):
        AccuracyPredictor().fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        AccuracyPredictor().fit(X, np.where(np.arange(len(y)) == 3, np.nan, y))
    with pytest.raises(RuntimeError, match="not fitted"):
        AccuracyPredictor().predict(X)
    fitted = AccuracyPredictor("linear").fit(X, y)
    with pytest.raises(ValueError, match="fitted on 6"):
        fitted.predict(X[:, :4])


def test_select_from_pool_goes_where_the_predictor_is_unsure():
    rng = np.random.default_rng(3)
    labelled = rng.random((30, 2)) * 0.5  # labels only in the lower-left quarter
    pool = np.concatenate([rng.random((20, 2)) * 0.5, 0.5 + rng.random((5, 2)) * 0.5])
    predictor = AccuracyPredictor("gp").fit(labelled, smooth(np.pad(labelled, ((0, 0), (0, 2)))))
    chosen = select_from_pool(predictor, pool, 5, labelled)
    assert len(set(chosen)) == 5
    assert sum(i >= 20 for i in chosen) >= 4  # the unexplored corner first
    with pytest.raises(ValueError, match="k must be"):
        select_from_pool(predictor, pool, 26, labelled)


def test_evolve_informative_returns_new_legal_policies():
    torch.manual_seed(0)
    space = SearchSpace.from_model(Net(), torch.randn(2, 1, 20), methods=["prune", "quant"])
    rng = np.random.default_rng(0)
    labelled = [space.random_policy(rng) for _ in range(20)]
    X = policy_features(space, labelled)
    y = 90 - 5 * X.mean(1)
    predictor = AccuracyPredictor("gp").fit(X, y)
    picked = evolve_informative(predictor, space, 6, labelled, population=16, generations=3, rng=1)
    keys = {tuple(space.encode(p)) for p in picked}
    assert len(keys) == 6 and not keys & {tuple(space.encode(p)) for p in labelled}
    assert all(space.validate(p) == p for p in picked)
    bits = policy_features(space, [Policy.uniform(space, weight_bits=8, act_bits=32)])
    assert set(bits[0][[i for i, g in enumerate(space.genes) if g.field.endswith("bits")]]) == {3.0, 5.0}


def test_optimize_policy_meets_every_budget_by_exact_count():
    from autocompress.search.ladders import uniform_policy
    from autocompress.search.optimize import optimize_policy

    torch.manual_seed(0)
    space = SearchSpace.from_model(Net(), torch.randn(2, 1, 20), methods=["prune", "quant"])
    rng = np.random.default_rng(0)
    X = policy_features(space, [space.random_policy(rng) for _ in range(60)])
    prune = [i for i, g in enumerate(space.genes) if g.field == "prune"]
    bits = [i for i, g in enumerate(space.genes) if g.field.endswith("bits")]
    y = 98 - 8 * (X[:, prune] ** 2).sum(1) - 2 * np.clip(3 - X[:, bits], 0, None).sum(1)
    predictor = AccuracyPredictor("gp").fit(X, y)
    base = space.cost(Policy()).bitops
    for ratio in np.geomspace(0.3, 0.003, 20):
        result = optimize_policy(predictor, space, float(ratio), cost="bitops")
        assert space.cost(result.policy).bitops == result.cost <= ratio * base
        assert result.cost >= 0.9 * ratio * base  # the budget is filled (accuracy falls with compression here)
        assert result.predicted == pytest.approx(predictor.predict(policy_features(space, [result.policy]))[0])
    start = uniform_policy(space, 0.05, "bitops", ("prune", "weight_bits", "act_bits"))
    chosen = optimize_policy(predictor, space, "bitops_ratio<=0.05")
    assert chosen.predicted >= predictor.predict(policy_features(space, [start]))[0]
    with pytest.raises(ValueError, match="smallest reachable"):
        optimize_policy(predictor, space, "bitops_ratio<=1e-7")


def external_like(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels shaped like another group's ResNet policies: d three-valued genes, additive effects of
    uneven size with a few interactions, accuracies in a narrow band (std ~1.3 points)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, (n, d)).astype(float)
    levels = np.sort(rng.gamma(1.0, 1.0, (d, 3)) * [0, 1, 1], axis=1) * rng.choice([0.2, 1.0], d)[:, None]
    y = -levels[np.arange(d), X.astype(int)].sum(1)
    for i, j in rng.choice(d, (d // 4, 2)):
        y -= 0.3 * X[:, i] * X[:, j]
    return X, 80 + 1.2 * (y - y.mean()) / y.std() + rng.normal(0, 0.6, n)


def test_auto_chooses_by_cross_validation_and_never_a_constant():
    from autocompress.predict import AUTO_KINDS, FEW_LABELS

    X, y = external_like(300, 40, 0)
    fit, held = slice(0, 100), slice(100, None)
    # the old GP (constant x ARD-RBF + white noise) predicted a constant on such labels; ours keeps ridge's trend
    gp = AccuracyPredictor("gp").fit(X[fit], y[fit])
    linear = AccuracyPredictor("linear").fit(X[fit], y[fit])
    assert gp.predict(X[held]).std() > 0.3
    assert gp.score(X[held], y[held]) >= linear.score(X[held], y[held]) - 0.02 > 0.4
    auto = AccuracyPredictor(epochs=200).fit(X[fit], y[fit])
    assert set(auto.cv_scores_) == set(AUTO_KINDS) and auto.cv_scores_[auto.kind_] == max(auto.cv_scores_.values())
    best_single = max(AccuracyPredictor(k, epochs=200).fit(X[fit], y[fit]).score(X[held], y[held]) for k in ("linear", "gp", "gbt", "ensemble"))
    assert auto.score(X[held], y[held]) >= best_single - 0.03
    # too few labels to cross-validate: Bayesian ridge
    assert AccuracyPredictor().fit(X[: FEW_LABELS - 1], y[: FEW_LABELS - 1]).kind_ == "linear"


def test_auto_takes_the_best_cross_validated_candidate_and_scores_the_blend_by_its_average():
    from autocompress.predict.choose import choose_kind

    class Lookup:  # "predicts" a fixed function of the row's label, so each kind's τ is known
        def __init__(self, noise):
            self.noise = noise

        def fit(self, X, y):
            return self

        def predict(self, X):
            return X[:, 0] + self.noise * X[:, 1]

    rng = np.random.default_rng(0)
    y = rng.normal(size=80)
    X = np.stack([y, rng.normal(size=80)], axis=1)
    exact = stats.kendalltau(y, X[:, 0] + 0.5 * X[:, 1]).statistic
    kind, scores = choose_kind(lambda k: {"gp": Lookup(0.55), "gbt": Lookup(0.5)}[k], X, y, kinds=("gp", "gbt"))
    assert kind == "gbt" and scores["gbt"] == pytest.approx(exact) and scores["gbt"] > scores["gp"]
    kind, scores = choose_kind(lambda k: Lookup(0.5), X, y, kinds=("gp", "gbt"))
    assert kind == "gp" and scores["gp"] == scores["gbt"]  # a tie goes to the first
    # "blend" averages its members' out-of-fold predictions: errors of opposite sign cancel, and it ranks perfectly
    kind, scores = choose_kind(lambda k: {"gp": Lookup(1.0), "gbt": Lookup(-1.0)}[k], X, y)
    assert kind == "blend" and scores["blend"] == pytest.approx(1.0) and scores["gp"] < 0.7


def test_a_constant_predictor_is_never_chosen():
    from autocompress.predict.choose import choose_kind

    class Constant:
        def fit(self, X, y):
            self.value = float(np.mean(y))
            return self

        def predict(self, X):
            return np.full(len(X), self.value)

    X, y = external_like(60, 10, 1)
    kind, scores = choose_kind(lambda k: Constant() if k == "gp" else AccuracyPredictor(k), X, y, kinds=("gp", "linear"))
    assert scores["gp"] == -np.inf and kind == "linear"
    kind, scores = choose_kind(lambda k: Constant(), X, y)  # nothing can rank: Bayesian ridge
    assert kind == "linear" and scores == {"gp": -np.inf, "blend": -np.inf}


def test_warm_start_transfers_a_predictor_to_few_labels_of_a_shifted_task(data):
    X, y = data
    rng = np.random.default_rng(1)
    shifted = y - 4 * X[:, 4]  # the "quantized" task: the same landscape plus an effect of one more input
    source = AccuracyPredictor("mlp", epochs=300).fit(X[:150], y[:150])  # many cheap labels
    few = rng.choice(np.arange(150), 15, replace=False)
    transferred = AccuracyPredictor("mlp", epochs=150, lr=0.003).fit(X[few], shifted[few], warm_start=source)
    scratch = AccuracyPredictor("mlp", epochs=300).fit(X[few], shifted[few])
    tau = lambda p: ranking_metrics(shifted[150:], p.predict(X[150:]))["kendall_tau"]  # noqa: E731
    assert tau(transferred) > tau(scratch)
    assert transferred.nets_[0] is not source.nets_[0] and source.predict(X[:2]).shape == (2,)  # the source is kept
    with pytest.raises(ValueError, match="warm_start needs an 'mlp', 'ensemble' or 'rank' predictor"):
        AccuracyPredictor("mlp").fit(X[:10], y[:10], warm_start=AccuracyPredictor("linear").fit(X, y))
    with pytest.raises(ValueError, match="fitted on 6 features; X has 3"):
        AccuracyPredictor("mlp").fit(X[:10, :3], y[:10], warm_start=source)


def test_warm_start_learns_an_input_the_source_never_saw_vary(data):
    X, y = data
    full_precision = X.copy()
    full_precision[:, 5] = 0.0  # e.g. a quantization step: 0 at full precision for every cheap label
    source = AccuracyPredictor("mlp", epochs=300).fit(full_precision[:150], y[:150])
    quantized = y - 20 * X[:, 5]  # the new input now drives the metric
    transferred = AccuracyPredictor("mlp", epochs=300).fit(X[:30], quantized[:30], warm_start=source)
    assert ranking_metrics(quantized[150:], transferred.predict(X[150:]))["kendall_tau"] > 0.7


def test_residual_transfer_learns_the_new_input_from_few_labels_and_keeps_the_source(data):
    X, y = data
    full_precision = X.copy()
    full_precision[:, 5] = 0.0  # the quantization step: constant over the cheap labels
    source = AccuracyPredictor("gp").fit(full_precision[:150], y[:150])
    quantized = y - 10 * X[:, 5] * (1 + (y.max() - y) / 5)  # the new input costs more where the landscape is low
    few = np.random.default_rng(0).choice(150, 12, replace=False)
    transfer = ResidualTransfer(source).fit(X[few], quantized[few])
    assert transfer.columns_.tolist() == [5]  # found from the source's constant column
    tau = lambda p: ranking_metrics(quantized[150:], p.predict(X[150:]))["kendall_tau"]  # noqa: E731
    scratch = AccuracyPredictor("gp").fit(X[few], quantized[few])
    warm = AccuracyPredictor("mlp", epochs=300).fit(
        X[few], quantized[few], warm_start=AccuracyPredictor("mlp", epochs=300).fit(full_precision[:150], y[:150]))
    assert tau(transfer) > 0.9 and tau(transfer) > tau(scratch) + 0.1 and tau(transfer) > tau(warm) + 0.1
    mean, std = transfer.predict(X[150:], return_std=True)
    assert mean.shape == std.shape == (50,) and (std >= 0).all()
    # nothing new to learn: the correction stays near zero, so the source's ranking is kept
    same = ResidualTransfer(source).fit(full_precision[few], source.predict(full_precision[few]))
    assert np.abs(same.predict(full_precision[150:]) - source.predict(full_precision[150:])).max() < 0.05 * y.std()


def test_residual_transfer_rejects_bad_input(data):
    X, y = data
    source = AccuracyPredictor("linear").fit(X, y)
    assert ResidualTransfer(source).fit(X[:10], y[:10]).columns_.tolist() == list(range(6))  # no constant column: all
    with pytest.raises(TypeError, match="fitted predictor with predict"):
        ResidualTransfer(object())
    with pytest.raises(ValueError, match="columns must index the 6 features"):
        ResidualTransfer(source, columns=[6]).fit(X[:10], y[:10])
    with pytest.raises(ValueError, match="source was fitted on 6 features; X has 3"):
        ResidualTransfer(source).fit(X[:10, :3], y[:10])
    with pytest.raises(RuntimeError, match="not fitted yet"):
        ResidualTransfer(source).predict(X)
