"""Scorers fitted on a run's training pass, with their decision thresholds: the one
scoring path of `estm test` and `estm score`.

`fit_scorers` fits each named scorer of `estm_ref.pipeline.scorers` on the training
clips' pass (`TrainingPass`) and a gamma decision threshold per (type, ID) and scorer;
`Scorers.score` turns a pass of new clips into one scorer's scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from estm_ref.data import clip_key
from estm_ref.pipeline.metrics import gamma_threshold
from estm_ref.pipeline.model_pass import ModelPass
from estm_ref.pipeline.scorers import IdKey, Scorer, group_rows, make_scorer
from estm_ref.pipeline.training_pass import TrainingPass

log = logging.getLogger(__name__)


@dataclass
class Scorers:
    """Scorers fitted on a run's training pass, and their decision thresholds per ID."""

    fitted: dict[str, Scorer]
    thresholds: dict[str, dict[str, float]]  # scorer -> clip_key -> threshold

    def score(self, name: str, keys: Sequence[IdKey], result: ModelPass) -> np.ndarray:
        """(n,) scores of clips of mixed IDs under scorer `name`, each against its own ID."""
        return self.fitted[name].score(result, keys)


def fit_scorers(training: TrainingPass, names: Sequence[str],
                params: Mapping[str, Any] | None = None) -> Scorers:
    """Fit each scorer in `names` (with those of `params` it takes) on the training pass,
    and its gamma decision thresholds: from the held-out clips of an ID where it has at
    least two, else from its training clips (`Scorer.training_scores`)."""
    train_keys, train = training.part(held_out=False)
    held_keys, held = training.part(held_out=True)
    held_rows = {key: rows for key, rows in group_rows(held_keys).items() if len(rows) >= 2}
    train_rows = group_rows(train_keys)
    fallback = [key for key in train_rows if key not in held_rows]
    if training.held_out.any():
        if fallback:
            log.warning("fewer than 2 held-out clips: thresholds from training clips for %s",
                        ", ".join(clip_key(*key) for key in fallback))
        log.info("decision thresholds fitted on held-out clips for %d ID(s)", len(held_rows))
    fitted, thresholds = {}, {}
    for name in names:
        scorer = make_scorer(name, params).fit(train, train_keys)
        fitted[name] = scorer
        scores = {key: scorer.score(held.subset(rows), [key] * len(rows))
                  for key, rows in held_rows.items()}
        scores.update(_training_scores(scorer, train, train_keys, train_rows, fallback))
        thresholds[name] = {clip_key(*key): gamma_threshold(scores[key]) for key in train_rows}
    return Scorers(fitted, thresholds)


def _training_scores(scorer: Scorer, train: ModelPass, keys: Sequence[IdKey],
                     rows: Mapping[IdKey, np.ndarray],
                     wanted: Sequence[IdKey]) -> dict[IdKey, np.ndarray]:
    """{key: the scorer's scores of its own training clips} for the IDs `wanted`."""
    if not wanted:
        return {}
    picked = np.concatenate([rows[key] for key in wanted])
    scores = scorer.training_scores(train.subset(picked), [keys[i] for i in picked])
    ends = np.cumsum([len(rows[key]) for key in wanted])
    return dict(zip(wanted, np.split(scores, ends[:-1])))
