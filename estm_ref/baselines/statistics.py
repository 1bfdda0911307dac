"""Detectors on clip-level statistics, as a scale for how much of an anomaly the clip
statistics carry (none is part of ESTM).

Features: per mel band, the mean and the std over frames of the clip's log-mel in dB
(2 x n_mels values).
- `mahalanobis_scores`: per (type, ID), the squared Mahalanobis distance to that ID's
  training clips, with their mean and Ledoit-Wolf covariance of the features as they are;
  fitted on that ID's clips alone, so no other ID or type changes its scores. Close to the
  frame-statistics detectors of the DCASE 2020 technical reports.
- `id_classifier_scores`: multinomial logistic regression over all (type, ID) classes on
  the features standardised with all training clips (`standardise`), scored like ESTM:
  -log p of the clip's own class (a linear ID-classification surrogate).
- `rms_scores`: per ID, how far the clip's loudness (dB RMS) lies from that ID's training
  clips, in training standard deviations. Loudness alone should say nothing.
"""

from __future__ import annotations

import numpy as np

from estm_ref.gaussian import Gaussian


def clip_statistics(log_mels: np.ndarray) -> np.ndarray:
    """log_mels: (n_clips, n_mels, n_frames) -> (n_clips, 2 * n_mels): mean and std over frames."""
    x = np.asarray(log_mels, dtype=np.float64)
    return np.concatenate([x.mean(-1), x.std(-1, ddof=1)], axis=1)


def standardise(train_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    return (train_x - mean) / std, (test_x - mean) / std


def _check_known(train_y: np.ndarray, test_y: np.ndarray) -> None:
    unknown = sorted(set(np.unique(test_y)) - set(np.unique(train_y)))
    if unknown:
        raise ValueError(f"test classes without training clips: {unknown}")


def _per_class(train_x, train_y, test_x, test_y, fit_and_score) -> np.ndarray:
    """Scores of each test row by `fit_and_score(training rows, test rows)` of its own class."""
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    _check_known(train_y, test_y)
    scores = np.empty(len(test_y))
    for cls in np.unique(test_y):
        try:
            scores[test_y == cls] = fit_and_score(train_x[train_y == cls], test_x[test_y == cls])
        except ValueError as err:
            raise ValueError(f"class {cls}: {err}") from err
    return scores


def mahalanobis_scores(train_x, train_y, test_x, test_y) -> np.ndarray:
    """Squared Mahalanobis distance of each test clip to its own ID's training clips, under
    their mean and Ledoit-Wolf covariance (`estm_ref.gaussian.Gaussian`)."""
    return _per_class(train_x, train_y, test_x, test_y, lambda ref, x: Gaussian.fit(ref).score(x))


def id_classifier_scores(train_x, train_y, test_x, test_y, c: float = 1.0) -> np.ndarray:
    """-log p(own class) of each test clip under a logistic regression fitted on training
    clips. With a single class the score is 0 for every clip."""
    from sklearn.linear_model import LogisticRegression

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    _check_known(train_y, test_y)
    if len(np.unique(train_y)) < 2:
        return np.zeros(len(test_y))
    clf = LogisticRegression(C=c, max_iter=5000).fit(train_x, train_y)
    log_p = clf.predict_log_proba(test_x)
    column = {cls: i for i, cls in enumerate(clf.classes_)}
    return -log_p[np.arange(len(test_y)), [column[y] for y in test_y]]


def rms_scores(train_db, train_y, test_db, test_y) -> np.ndarray:
    """|dB RMS - the ID's training mean| / the ID's training std, per test clip."""
    return _per_class(train_db, train_y, test_db, test_y,
                      lambda ref, x: np.abs(x - ref.mean()) / (ref.std() + 1e-9))
