"""One learned regressor per kernel type and precision: a roofline line times gradient-boosted trees.

``log(latency) = log(a + b * MACs + c * bytes) + trees(features)``: the line (non-negative
coefficients, least squares on relative error) carries the smooth growth with size, so
predictions between samples interpolate instead of stepping; scikit-learn's
:class:`~sklearn.ensemble.HistGradientBoostingRegressor` fits the log-residual with
``monotonic_cst`` on the channel-dependent features (:data:`edgeprune.costmodel.space.MONOTONE`).
Both parts are monotone in c_in and c_out within an alignment class, so their sum is.
``random_state`` is fixed, so a file refits to the same model on every machine.
Prediction walks the fitted trees with numpy (:class:`_Forest`): sklearn's own
``predict`` costs about a millisecond per call, and the planner prices layers one by one.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeprune.costmodel.space import FEATURES, feature_matrix, monotonic_cst
from edgeprune.graph.signature import LayerSignature


@dataclass(frozen=True)
class FitConfig:
    """Regressor settings (stored in the device model so a reload refits the same model)."""

    max_iter: int = 120
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    l2_regularization: float = 0.1
    min_samples_leaf: int = 0  # 0: max(2, n // 25)
    seed: int = 0


class KernelRegressor:
    """``log(latency)`` of one kernel type / precision from :data:`FEATURES`."""

    def __init__(self, multiple: int, config: FitConfig = FitConfig()) -> None:
        self.multiple = multiple
        self.config = config
        self._model = None
        self._forest: _Forest | None = None
        self._const: float | None = None
        self._line = (0.0, 0.0, 0.0)
        self.n = 0

    def fit(self, sigs: Sequence[LayerSignature], latency: Sequence[float]) -> KernelRegressor:
        """Fit on measured kernels (``latency``: medians, > 0)."""
        lat = np.maximum(np.asarray(latency, dtype=float), 1e-9)
        self.n = len(lat)
        X = feature_matrix(sigs, self.multiple)
        self._line = _fit_line(X, lat)
        y = np.log(lat) - np.log(self._baseline(X))
        if self.n < 4:  # too few points for trees: the line times a constant
            self._const = float(y.mean()) if self.n else 0.0
            self._model = self._forest = None
            return self
        from sklearn.ensemble import HistGradientBoostingRegressor

        c = self.config
        leaf = c.min_samples_leaf or max(2, self.n // 25)
        self._model = HistGradientBoostingRegressor(
            max_iter=c.max_iter, learning_rate=c.learning_rate, max_leaf_nodes=c.max_leaf_nodes,
            l2_regularization=c.l2_regularization, min_samples_leaf=leaf, monotonic_cst=monotonic_cst(),
            early_stopping=False, random_state=c.seed,
        )
        self._model.fit(X, y)
        self._forest = _Forest(self._model)
        self._const = None
        return self

    def _baseline(self, X: np.ndarray) -> np.ndarray:
        a, b, c = self._line
        i_m, i_b = FEATURES.index("macs"), FEATURES.index("bytes")
        return np.maximum(a + b * X[:, i_m] + c * X[:, i_b], 1e-9)

    def predict(self, sigs: Sequence[LayerSignature]) -> np.ndarray:
        """Predicted latencies (not logs) of ``sigs``."""
        X = feature_matrix(sigs, self.multiple)
        base = self._baseline(X)
        if self._forest is None:
            return base * float(np.exp(self._const or 0.0))
        return base * np.exp(self._forest.predict(X))


def _fit_line(X: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """``y ~ a + b * MACs + c * bytes`` with a, b, c >= 0, least squares on relative error."""
    from scipy.optimize import nnls

    i_m, i_b = FEATURES.index("macs"), FEATURES.index("bytes")
    A = np.stack([np.ones(len(y)), X[:, i_m], X[:, i_b]], axis=1)
    scale = A.max(axis=0)
    scale[scale <= 0] = 1.0
    w = 1.0 / y
    try:
        sol, _ = nnls((A / scale) * w[:, None], y * w)
    except (ValueError, RuntimeError):
        return float(np.median(y)), 0.0, 0.0
    sol = sol / scale
    if sol[0] <= 0 and sol[1] <= 0 and sol[2] <= 0:
        return float(np.median(y)), 0.0, 0.0
    return float(sol[0]), float(sol[1]), float(sol[2])


class _Forest:
    """The fitted HistGradientBoosting trees as stacked numpy arrays, evaluated for all trees at once."""

    def __init__(self, model) -> None:
        trees = [p[0].nodes for p in model._predictors]
        n = max(len(t) for t in trees)
        T = len(trees)
        self.feat = np.zeros((T, n), dtype=np.int64)
        self.thr = np.zeros((T, n))
        self.left = np.zeros((T, n), dtype=np.int64)
        self.right = np.zeros((T, n), dtype=np.int64)
        self.leaf = np.ones((T, n), dtype=bool)
        self.value = np.zeros((T, n))
        for i, t in enumerate(trees):
            k = len(t)
            self.feat[i, :k] = t["feature_idx"]
            self.thr[i, :k] = t["num_threshold"]
            self.left[i, :k] = t["left"]
            self.right[i, :k] = t["right"]
            self.leaf[i, :k] = t["is_leaf"].astype(bool)
            self.value[i, :k] = t["value"]
        self.depth = int(max(t["depth"].max() for t in trees)) + 1
        self.base = float(np.asarray(model._baseline_prediction).ravel()[0])
        self.rows = np.arange(T)[:, None]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Sum of the trees' leaf values plus the baseline, per row of ``X``."""
        node = np.zeros((self.feat.shape[0], len(X)), dtype=np.int64)
        cols = np.arange(len(X))[None, :]
        for _ in range(self.depth):
            f = self.feat[self.rows, node]
            go_left = X[cols, f] <= self.thr[self.rows, node]
            nxt = np.where(go_left, self.left[self.rows, node], self.right[self.rows, node])
            node = np.where(self.leaf[self.rows, node], node, nxt)
        return self.base + self.value[self.rows, node].sum(axis=0)


def cv_error(sigs: Sequence[LayerSignature], latency: Sequence[float], multiple: int, folds: int = 4,
             config: FitConfig = FitConfig()) -> float:
    """Median |relative error| of ``folds``-fold cross-validated predictions (1.0 with too few points).

    An estimate for the adaptive sampler: the folds use at most 40 boosting iterations (cheaper, a little
    pessimistic)."""
    from dataclasses import replace

    config = replace(config, max_iter=min(config.max_iter, 40))
    n = len(sigs)
    if n < max(folds, 6):
        return 1.0
    idx = np.random.default_rng(config.seed).permutation(n)
    y = np.asarray(latency, dtype=float)
    errs = np.empty(n)
    for k in range(folds):
        test = idx[k::folds]
        train = np.setdiff1d(idx, test)
        reg = KernelRegressor(multiple, config).fit([sigs[i] for i in train], y[train])
        errs[test] = np.abs(reg.predict([sigs[i] for i in test]) / y[test] - 1.0)
    return float(np.median(errs))


__all__ = ["FEATURES", "FitConfig", "KernelRegressor", "cv_error"]
