"""Anomaly scores of clips from the model's outputs, fitted per (machine type, ID).

Every scorer is a small class in `SCORERS` with its parameters as dataclass fields:
`fit(train, ids)` on training clips, `score(clips, ids)` on new ones, where `train` and
`clips` are the model's pass (`ModelPass`: embeddings H (n, d_model), own-class -log p)
and `ids` the (machine_type, machine_id) of each clip. A field with a `help` in its
metadata is a command-line flag of `estm test` and `estm score`.

`nll` is the paper's score: -log p of the clip's own class under the ArcFace head, with or
without the margin. It fits nothing.

The others (**ours**, the practice of DCASE 2021+ systems) keep the ID classifier for
training but score by distance in its embedding space. Each is fitted per (type, ID) on
that ID's training embeddings only, never on test clips:

- `knn`: mean cosine distance to the k nearest training embeddings of the own ID;
- `centres`: least cosine distance to the k-means centres of the own ID's
  L2-normalised training embeddings (Lloyd's algorithm, k-means++ seeding, seeded);
- `mahalanobis`: squared Mahalanobis distance to a Gaussian fitted to the own ID's
  L2-normalised training embeddings, covariance shrunk by the Ledoit-Wolf formula.

Higher = more anomalous for every scorer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from estm_ref.data import clip_key
from estm_ref.errors import InputError
from estm_ref.gaussian import Gaussian
from estm_ref.pipeline.kmeans import kmeans
from estm_ref.pipeline.model_pass import ModelPass

log = logging.getLogger(__name__)

IdKey = tuple[str, str]

SCORERS: dict[str, type["Scorer"]] = {}  # name -> class, in registration order
DEFAULT_SCORER = "mahalanobis"  # of `estm test` and `estm score` (docs/design.md, "Scoring")


def register(name: str, summary: str):
    """Class decorator: make a `Scorer` subclass a dataclass named `name`, known to the
    pipeline and the command line (`summary`: one line for --help)."""
    def add(cls: type["Scorer"]) -> type["Scorer"]:
        cls.name, cls.summary = name, summary
        SCORERS[name] = dataclass(cls)
        return SCORERS[name]
    return add


def make_scorer(name: str, params: Mapping[str, Any] | None = None) -> "Scorer":
    """An unfitted scorer `name` with those of `params` that are its fields; an
    `InputError` listing the scorers for an unknown name."""
    if name not in SCORERS:
        raise InputError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}")
    cls = SCORERS[name]
    own = {f.name for f in fields(cls) if f.init}
    try:
        return cls(**{k: v for k, v in (params or {}).items() if k in own})
    except ValueError as err:
        raise InputError(f"the {name} scorer: {err}") from err


def parameter(default, help: str | None = None, minimum: int | None = None,
              clips_per_id: bool = False):
    """A scorer parameter; with `help` it is also a command-line flag, with `minimum` a
    smaller value is refused when the scorer is made; `clips_per_id`: the value wants that
    many training clips per ID (fewer are all used, with a warning)."""
    metadata = {"help": help} if help else {}
    metadata.update(minimum=minimum, clips_per_id=clips_per_id)
    return field(default=default, metadata=metadata)


def group_rows(ids: Sequence[IdKey]) -> dict[IdKey, np.ndarray]:
    """{(type, id): positions of its clips}, sorted by key, positions in input order."""
    groups: dict[IdKey, list[int]] = {}
    for i, key in enumerate(ids):
        groups.setdefault(tuple(key), []).append(i)
    return {key: np.array(rows) for key, rows in sorted(groups.items())}


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); a zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n_a, d), (n_b, d) -> (n_a, n_b): 1 - cos of every pair, clipped to [0, 2]."""
    return np.clip(1.0 - normalise(a) @ normalise(b).T, 0.0, 2.0)


@dataclass
class Scorer:
    """The interface; subclasses register themselves with `register(name, summary)`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help

    def __post_init__(self) -> None:
        for f in fields(self):
            low = f.metadata.get("minimum")
            if low is not None and getattr(self, f.name) < low:
                raise ValueError(f"{f.name} must be at least {low}, got {getattr(self, f.name)}")

    def fit(self, train: ModelPass, ids: Sequence[IdKey]) -> "Scorer":
        """Fit on the training clips' pass; returns self."""
        return self

    def score(self, clips: ModelPass, ids: Sequence[IdKey]) -> np.ndarray:
        """(n,) float64 scores of clips of mixed IDs, in input order."""
        raise NotImplementedError

    def training_scores(self, train: ModelPass, ids: Sequence[IdKey]) -> np.ndarray:
        """Scores of the clips the scorer was fitted on, for decision thresholds when no
        held-out clips exist; in-sample unless a scorer says otherwise, so they run lower
        than those of new normal clips, as the nll of fitted clips does."""
        return self.score(train, ids)


@register("nll", "the paper's -log p of the own class")
class Nll(Scorer):
    margin: bool = parameter(True, "nll with the ArcFace margin on the own class")

    def score(self, clips: ModelPass, ids: Sequence[IdKey]) -> np.ndarray:
        if len(ids) != len(clips):
            raise ValueError(f"{len(ids)} ID keys for {len(clips)} clips")
        return np.asarray(clips.nll_for(self.margin), dtype=np.float64).copy()


@dataclass
class PerIdScorer(Scorer):
    """A scorer fitted on each ID's training embeddings alone: subclasses give
    `fit_id(x) -> state` for one ID's (n_train, d_model) embeddings and
    `score_id(state, x) -> (n,)`."""

    states: dict[IdKey, Any] = field(default_factory=dict, init=False, repr=False)
    dim: int | None = field(default=None, init=False, repr=False)

    def fit(self, train: ModelPass, ids: Sequence[IdKey]) -> "PerIdScorer":
        embeddings = _embeddings_of(train, ids)
        groups = group_rows(ids)
        if not groups:
            raise ValueError(f"the {self.name} scorer needs training embeddings of at least one ID")
        wanting = [f.name for f in fields(self) if f.metadata.get("clips_per_id")]
        wanted = max((getattr(self, name) for name in wanting), default=0)
        self.states, self.dim, shrunk = {}, embeddings.shape[1], []
        if not np.all(np.isfinite(embeddings)):
            bad = sorted({tuple(ids[i]) for i in np.flatnonzero(~np.isfinite(embeddings).all(1))})
            raise ValueError(f"{clip_key(*bad[0])}: training embeddings contain NaN or inf")
        for key, rows in groups.items():
            try:
                self.states[key] = self.fit_id(embeddings[rows])
            except ValueError as err:
                raise ValueError(f"{clip_key(*key)}: {err}") from err
            if len(rows) < wanted:
                shrunk.append(f"{clip_key(*key)} ({len(rows)})")
        if shrunk:
            log.warning("%s: fewer training clips than %s = %d for %s; all of them are used",
                        self.name, " and ".join(wanting), wanted, ", ".join(shrunk))
        return self

    def score(self, clips: ModelPass, ids: Sequence[IdKey]) -> np.ndarray:
        embeddings = _embeddings_of(clips, ids)
        if self.dim is not None and embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings have {embeddings.shape[1]} dimensions; the {self.name} "
                             f"scorer was fitted on {self.dim}")
        out = np.empty(len(embeddings))
        for key, rows in group_rows(ids).items():
            out[rows] = self.score_id(self._state_of(key), embeddings[rows])
        return out

    def _state_of(self, key: IdKey) -> Any:
        if key not in self.states:
            known = ", ".join(clip_key(*k) for k in sorted(self.states)) or "none"
            raise ValueError(f"the {self.name} scorer has no training embeddings of "
                             f"{clip_key(*key)} (it knows {known})")
        return self.states[key]

    def fit_id(self, x: np.ndarray) -> Any:
        raise NotImplementedError

    def score_id(self, state: Any, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _embeddings_of(clips: ModelPass, ids: Sequence[IdKey]) -> np.ndarray:
    x = np.asarray(clips.embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n_clips, d_model), got shape {x.shape}")
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} ID keys for {len(x)} embeddings")
    return x


@register("knn", "mean cosine distance to the k nearest training embeddings")
class Knn(PerIdScorer):
    k: int = parameter(5, "neighbours of the knn scorer", minimum=1, clips_per_id=True)

    def fit_id(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        return normalise(x), min(self.k, len(x))

    def score_id(self, state: tuple[np.ndarray, int], x: np.ndarray) -> np.ndarray:
        bank, k = state
        return np.partition(cosine_distances(x, bank), k - 1, axis=1)[:, :k].mean(axis=1)

    def training_scores(self, train: ModelPass, ids: Sequence[IdKey]) -> np.ndarray:
        """Each training clip leaves itself out of its own neighbours (else every score
        would be 0)."""
        out = np.empty(len(ids))
        for key, rows in group_rows(ids).items():
            bank, k = self._state_of(key)
            if len(bank) < 2:
                raise ValueError(f"{clip_key(*key)}: leave-one-out needs 2 training embeddings")
            dist = cosine_distances(bank, bank)
            np.fill_diagonal(dist, np.inf)
            k = min(k, len(bank) - 1)
            out[rows] = np.partition(dist, k - 1, axis=1)[:, :k].mean(axis=1)
        return out


@register("centres", "least cosine distance to the own ID's k-means centres")
class Centres(PerIdScorer):
    n_centres: int = parameter(4, "k-means centres per ID of the centres scorer", minimum=1,
                               clips_per_id=True)
    seed: int = parameter(0)  # the run's seed

    def fit_id(self, x: np.ndarray) -> np.ndarray:
        return kmeans(normalise(x), min(self.n_centres, len(x)), self.seed)

    def score_id(self, state: np.ndarray, x: np.ndarray) -> np.ndarray:
        return cosine_distances(x, state).min(axis=1)


@register("mahalanobis", "squared Mahalanobis distance to the own ID's Gaussian")
class Mahalanobis(PerIdScorer):

    def fit_id(self, x: np.ndarray) -> Gaussian:
        return Gaussian.fit(normalise(x))

    def score_id(self, state: Gaussian, x: np.ndarray) -> np.ndarray:
        return state.score(normalise(x))
