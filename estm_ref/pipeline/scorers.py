"""Anomaly scores of clips from the model's outputs, fitted per (machine type, ID).

`nll` is the paper's score: -log p of the clip's own class under the ArcFace head (with
or without the margin, chosen in the scoring pass). Its value per clip comes from the
model's logits (`own_class_nll`); the scorer passes it through and fits nothing.

The others (**ours**, the practice of DCASE 2021+ systems) keep the ID classifier for
training but score by distance in its embedding space, the fused embedding H. Each is
fitted per (type, ID) on that ID's training embeddings only, never on test clips:

- `knn`: mean cosine distance to the k nearest training embeddings of the own ID;
- `centres`: least cosine distance to the k-means centres of the own ID's
  L2-normalised training embeddings (Lloyd's algorithm, k-means++ seeding, seeded);
- `mahalanobis`: squared Mahalanobis distance to a Gaussian fitted to the own ID's
  L2-normalised training embeddings, covariance shrunk by the Ledoit-Wolf formula.

Higher = more anomalous for every scorer. Shapes: embeddings (n_clips, d_model);
an ID key is (machine_type, machine_id), e.g. ("fan", "00").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from estm_ref.baselines.statistics import ledoit_wolf
from estm_ref.errors import InputError

log = logging.getLogger(__name__)

IdKey = tuple[str, str]

SCORERS = ("nll", "knn", "centres", "mahalanobis")
EMBEDDING_SCORERS = SCORERS[1:]  # the ones fitted on training embeddings
DEFAULT_SCORER = "mahalanobis"  # of `estm test` and `estm score` (README, "Scoring")
DEFAULT_K = 5  # knn neighbours (README, "Scoring")
DEFAULT_N_CENTRES = 4  # centres per ID (README, "Scoring")
KMEANS_RESTARTS = 10
KMEANS_MAX_ITER = 300


def check_scorer(name: str) -> str:
    """`name` if it is a scorer; else an `InputError` (a ValueError) listing them."""
    if name not in SCORERS:
        raise InputError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}")
    return name


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); a zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n_a, d), (n_b, d) -> (n_a, n_b): 1 - cos of every pair, clipped to [0, 2]."""
    return np.clip(1.0 - normalise(a) @ normalise(b).T, 0.0, 2.0)


@dataclass
class FittedScorer:
    """Per-ID statistics of one scorer, fitted on training embeddings only.

    `score(id_key, embeddings, nll)` scores clips of one ID; `nll` (n_clips,) is needed
    by the `nll` scorer only. `stats[id_key]` holds the fitted arrays.
    """

    name: str
    params: dict
    stats: dict[IdKey, dict[str, np.ndarray]] = field(default_factory=dict)
    dim: int | None = None

    def ids(self) -> list[IdKey]:
        return sorted(self.stats)

    def score(self, id_key: IdKey, embeddings: np.ndarray,
              nll: np.ndarray | None = None) -> np.ndarray:
        """(n_clips,) float64 anomaly scores of clips of machine `id_key`."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (n_clips, d_model), got shape {embeddings.shape}")
        if self.name == "nll":
            if nll is None:
                raise ValueError("the nll scorer needs the clips' -log p from the scoring pass")
            nll = np.asarray(nll, dtype=np.float64)
            if nll.shape != (len(embeddings),):
                raise ValueError(f"nll must be ({len(embeddings)},), got shape {nll.shape}")
            return nll.copy()
        stats = self._stats_of(id_key)
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings have {embeddings.shape[1]} dimensions; the {self.name} "
                             f"scorer was fitted on {self.dim}")
        return _SCORE[self.name](stats, embeddings)

    def training_scores(self, id_key: IdKey) -> np.ndarray:
        """Scores of the ID's own training embeddings, for decision thresholds when no
        held-out clips exist. knn leaves each clip out of its own neighbours (else every
        score would be 0); centres and mahalanobis score in-sample, so these scores run
        lower than those of new normal clips, as the nll of fitted clips does."""
        if self.name == "nll":
            raise ValueError("the nll scorer keeps no embeddings; score the clips with the model")
        stats = self._stats_of(id_key)
        if self.name == "knn":
            bank = stats["bank"]
            if len(bank) < 2:
                raise ValueError(f"{_name(id_key)}: leave-one-out needs 2 training embeddings")
            dist = cosine_distances(bank, bank)
            np.fill_diagonal(dist, np.inf)
            k = min(int(stats["k"]), len(bank) - 1)
            return np.partition(dist, k - 1, axis=1)[:, :k].mean(axis=1)
        return _SCORE[self.name](stats, stats["train"])

    def _stats_of(self, id_key: IdKey) -> dict[str, np.ndarray]:
        key = tuple(id_key)
        if key not in self.stats:
            known = ", ".join(_name(k) for k in self.ids()) or "none"
            raise ValueError(f"the {self.name} scorer has no training embeddings of "
                             f"{_name(key)} (it knows {known})")
        return self.stats[key]


def fit_scorer(name: str, train_embeddings_by_id: Mapping[IdKey, np.ndarray] | None = None,
               k: int = DEFAULT_K, n_centres: int = DEFAULT_N_CENTRES,
               seed: int = 0) -> FittedScorer:
    """Fit scorer `name` per ID on `{(type, id): (n_train, d_model)}` training embeddings.

    k: neighbours of `knn`; n_centres, seed: k-means of `centres`. An ID with fewer
    training clips than k (or n_centres) uses all of them, and the log says so.
    `nll` fits nothing and needs no embeddings.
    """
    check_scorer(name)
    params = {"knn": {"k": k}, "centres": {"n_centres": n_centres, "seed": seed}}.get(name, {})
    fitted = FittedScorer(name, params)
    if name == "nll":
        return fitted
    if k < 1 or n_centres < 1:
        raise ValueError(f"k and n_centres must be at least 1, got k={k}, n_centres={n_centres}")
    if not train_embeddings_by_id:
        raise ValueError(f"the {name} scorer needs training embeddings of at least one ID")
    wanted = {"knn": k, "centres": n_centres}.get(name, 0)
    shrunk = []
    for key in sorted(train_embeddings_by_id):
        x = np.asarray(train_embeddings_by_id[key], dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"{_name(key)}: training embeddings must be a non-empty "
                             f"(n_train, d_model) array, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{_name(key)}: training embeddings contain NaN or inf")
        if fitted.dim is None:
            fitted.dim = x.shape[1]
        elif x.shape[1] != fitted.dim:
            raise ValueError(f"{_name(key)}: {x.shape[1]} dimensions, other IDs have {fitted.dim}")
        fitted.stats[tuple(key)] = _FIT[name](key, x, params)
        if len(x) < wanted:
            shrunk.append(f"{_name(key)} ({len(x)})")
    if shrunk:
        log.warning("%s: fewer training clips than %s = %d for %s; all of them are used",
                    name, "k" if name == "knn" else "n_centres", wanted, ", ".join(shrunk))
    return fitted


def score_clips(scorer: FittedScorer, id_keys: Sequence[IdKey], embeddings: np.ndarray,
                nll: np.ndarray | None = None) -> np.ndarray:
    """Scores of clips of mixed IDs, in input order: each clip scored against its own ID."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if len(id_keys) != len(embeddings):
        raise ValueError(f"{len(id_keys)} ID keys for {len(embeddings)} embeddings")
    out = np.empty(len(id_keys))
    groups: dict[IdKey, list[int]] = {}
    for i, key in enumerate(id_keys):
        groups.setdefault(tuple(key), []).append(i)
    for key, idx in groups.items():
        out[idx] = scorer.score(key, embeddings[idx], None if nll is None else np.asarray(nll)[idx])
    return out


def group_by_id(id_keys: Sequence[IdKey], embeddings: np.ndarray) -> dict[IdKey, np.ndarray]:
    """{(type, id): (n, d_model)} from per-clip keys and a stacked (n_clips, d_model) array."""
    embeddings = np.asarray(embeddings)
    groups: dict[IdKey, list[int]] = {}
    for i, key in enumerate(id_keys):
        groups.setdefault(tuple(key), []).append(i)
    return {key: embeddings[idx] for key, idx in sorted(groups.items())}


# knn ------------------------------------------------------------------------------------

def _fit_knn(key: IdKey, x: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    return {"bank": normalise(x), "k": np.array(min(params["k"], len(x))), "train": x}


def _score_knn(stats: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    k = int(stats["k"])
    dist = cosine_distances(x, stats["bank"])
    return np.partition(dist, k - 1, axis=1)[:, :k].mean(axis=1)


# centres --------------------------------------------------------------------------------

def _fit_centres(key: IdKey, x: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    centres = kmeans(normalise(x), min(params["n_centres"], len(x)), params["seed"])
    return {"centres": centres, "train": x}


def _score_centres(stats: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return cosine_distances(x, stats["centres"]).min(axis=1)


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


# mahalanobis ----------------------------------------------------------------------------

def _fit_mahalanobis(key: IdKey, x: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    z = normalise(x)
    if len(z) < 2:
        raise ValueError(f"{_name(key)}: a covariance needs at least 2 training embeddings, "
                         f"got {len(z)}")
    mean = z.mean(axis=0)
    cov, shrinkage = ledoit_wolf(z - mean)
    try:
        precision = np.linalg.inv(cov)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"{_name(key)}: the training embeddings' covariance is singular "
                         f"(all embeddings equal?)") from err
    return {"mean": mean, "precision": precision, "shrinkage": np.array(shrinkage), "train": x}


def _score_mahalanobis(stats: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    d = normalise(x) - stats["mean"]
    return np.einsum("ij,jk,ik->i", d, stats["precision"], d)


_FIT = {"knn": _fit_knn, "centres": _fit_centres, "mahalanobis": _fit_mahalanobis}
_SCORE = {"knn": _score_knn, "centres": _score_centres, "mahalanobis": _score_mahalanobis}


def _name(key: IdKey) -> str:
    return f"{key[0]}/id_{key[1]}"
