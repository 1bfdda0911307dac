"""Lloyd's k-means with k-means++ seeding, seeded: the centres of the `centres` scorer."""

from __future__ import annotations

import numpy as np

KMEANS_RESTARTS = 10
KMEANS_MAX_ITER = 300


def kmeans(x: np.ndarray, n_centres: int, seed: int, restarts: int = KMEANS_RESTARTS,
           max_iter: int = KMEANS_MAX_ITER) -> np.ndarray:
    """(n, d) -> (n_centres, d): Lloyd's k-means (squared Euclidean), k-means++ seeding,
    the lowest-inertia of `restarts` seeded runs. An emptied cluster takes the point
    farthest from its centre."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = _kmeans_plus_plus(x, n_centres, rng)
        for _ in range(max_iter):
            dist = _sq_dist(x, centres)
            assign = dist.argmin(axis=1)
            new = centres.copy()
            for c in range(n_centres):
                members = x[assign == c]
                if len(members):
                    new[c] = members.mean(axis=0)
                else:
                    far = dist[np.arange(len(x)), assign].argmax()
                    new[c] = x[far]
                    assign[far] = c
            converged = np.allclose(new, centres, rtol=0.0, atol=1e-12)
            centres = new
            if converged:
                break
        inertia = _sq_dist(x, centres).min(axis=1).sum()
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def _kmeans_plus_plus(x: np.ndarray, n_centres: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, n_centres):
        d2 = _sq_dist(x, np.array(centres)).min(axis=1)
        total = d2.sum()
        if total <= 0:  # every point sits on a centre already
            centres.append(x[rng.integers(len(x))])
            continue
        centres.append(x[rng.choice(len(x), p=d2 / total)])
    return np.array(centres)


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :], 0.0)
