"""The learning task: logistic regression in numpy on scikit-learn's breast-cancer data."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

FEATURES = 30
SEED = 7  # fixes the data split only (never any key)


@lru_cache(maxsize=4)
def _dataset() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = data.data
    # Public reference ranges (in practice: published clinical ranges) scale every feature into [-1, 1].
    lo, hi = x.min(axis=0), x.max(axis=0)
    return (x - (lo + hi) / 2.0) / ((hi - lo) / 2.0), data.target.astype(np.float64)


def load_partition(partition: int, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """Training client ``partition`` of ``partitions``: a fixed, disjoint share of the patients."""
    x, y = _dataset()
    order = np.random.default_rng(SEED).permutation(len(y))
    rows = np.array_split(order, partitions)[partition]
    return x[rows], y[rows]


def initial_model() -> dict[str, np.ndarray]:
    return {"w": np.zeros(FEATURES), "b": np.zeros(1)}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def train(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, np.ndarray]:
    """Full-batch gradient descent with a small L2 penalty (deterministic)."""
    w, b = np.array(model["w"], dtype=np.float64), float(model["b"][0])
    for _ in range(epochs):
        p = _sigmoid(x @ w + b)
        w -= 0.5 * (x.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.5 * float(np.mean(p - y))
    return {"w": w, "b": np.array([b])}


def evaluate(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(log loss, accuracy)."""
    p = np.clip(_sigmoid(x @ model["w"] + model["b"][0]), 1e-12, 1 - 1e-12)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return loss, float(np.mean((p > 0.5) == y))
