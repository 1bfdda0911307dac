"""A Gaussian fitted to a few vectors: mean and Ledoit-Wolf shrunk covariance, scored by
squared Mahalanobis distance. The statistics baseline fits one per ID on clip statistics,
the `mahalanobis` scorer one per ID on normalised embeddings.

Shapes: x (n, p) rows; `Gaussian.score` (n,) float64, higher = farther from the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ledoit_wolf(xc: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf (2004) shrunk covariance of centred rows xc (n, p), and the shrinkage.

    S = xc^T xc / n, mu = tr(S) / p; the target is mu I and the weight on it is
    min(b2, d2) / d2 with d2 = ||S - mu I||_F^2 / p and
    b2 = (sum_k ||x_k||^4 / n - ||S||_F^2) / (n p), the estimated error of S.
    """
    n, p = xc.shape
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    d2 = ((s - mu * np.eye(p)) ** 2).sum() / p
    b2 = ((np.linalg.norm(xc, axis=1) ** 4).sum() / n - (s ** 2).sum()) / (n * p)
    shrinkage = 0.0 if d2 == 0 else min(b2, d2) / d2
    return (1 - shrinkage) * s + shrinkage * mu * np.eye(p), float(shrinkage)


@dataclass
class Gaussian:
    """mean (p,), precision (p, p) = the inverse Ledoit-Wolf covariance, its shrinkage."""

    mean: np.ndarray
    precision: np.ndarray
    shrinkage: float

    @classmethod
    def fit(cls, x: np.ndarray) -> "Gaussian":
        """Fit to rows x (n, p), n >= 2; ValueError when the covariance cannot be inverted."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) < 2:
            raise ValueError(f"a covariance needs at least 2 vectors, got {len(x)}")
        mean = x.mean(axis=0)
        cov, shrinkage = ledoit_wolf(x - mean)
        try:
            precision = np.linalg.inv(cov)
        except np.linalg.LinAlgError as err:
            raise ValueError("the covariance is singular (all vectors equal?)") from err
        return cls(mean, precision, shrinkage)

    def score(self, x: np.ndarray) -> np.ndarray:
        """(n, p) -> (n,) squared Mahalanobis distance to the mean."""
        d = np.asarray(x, dtype=np.float64) - self.mean
        return np.einsum("ij,ij->i", d @ self.precision, d)
