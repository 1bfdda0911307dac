"""How hard is a data set? Two quick detectors on clip-level log-mel statistics, as a scale
for ESTM's Table I on the same data. Usage:
    python bench/baselines.py --data-root DIR [--data-root DIR2 ...]

Features: per mel band, the mean and the std over frames of the log-mel (SPEC front end),
standardised with the training clips' statistics (2 x 128 values per clip).
- "id-classifier": multinomial logistic regression over all (type, ID) classes of the
  training clips, scored like ESTM: -log p of the clip's own class. The same
  self-supervised surrogate with a linear model on time-averaged features.
- "mahalanobis": per (type, ID), the squared Mahalanobis distance to the training clips
  (covariance shrunk towards the identity); needs no other ID.
Neither is part of ESTM; they say how much of the anomaly the clip statistics carry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estm_ref.config import FeatureConfig  # noqa: E402
from estm_ref.data import build_class_list, load_clip, scan_roots  # noqa: E402
from estm_ref.features import log_mel  # noqa: E402
from estm_ref.metrics import evaluate_ids, format_table, summarise_types  # noqa: E402

SHRINK = 0.1  # added to the diagonal of each ID's covariance of standardised features


def clip_statistics(paths: list[Path], cfg: FeatureConfig, batch: int = 32,
                    desc: str = "log-mel statistics") -> np.ndarray:
    """(n_clips, 2 * n_mels): mean and std over frames of each mel band's log-mel."""
    from tqdm.auto import tqdm

    out = []
    for k in tqdm(range(0, len(paths), batch), desc=desc, unit="batch", leave=False):
        wave = torch.stack([torch.from_numpy(load_clip(p, cfg)) for p in paths[k:k + batch]])
        mel = log_mel(wave, cfg)
        out.append(torch.cat([mel.mean(-1), mel.std(-1)], dim=1).numpy())
    return np.concatenate(out).astype(np.float64)


def id_classifier_scores(train_x, train_y, test_x, test_y, c: float = 1.0) -> np.ndarray:
    """-log p(own class) of each test clip under a logistic regression fitted on training clips."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=5000).fit(train_x, train_y)
    log_p = clf.predict_log_proba(test_x)
    column = {cls: i for i, cls in enumerate(clf.classes_)}
    return -log_p[np.arange(len(test_y)), [column[y] for y in test_y]]


def mahalanobis_scores(train_x, train_y, test_x, test_y) -> np.ndarray:
    """Squared Mahalanobis distance of each test clip to its own ID's training clips."""
    scores = np.empty(len(test_y))
    for cls in np.unique(test_y):
        ref = train_x[train_y == cls]
        cov = np.cov(ref, rowvar=False) + SHRINK * np.eye(ref.shape[1])
        d = test_x[test_y == cls] - ref.mean(0)
        scores[test_y == cls] = np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d)
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", action="append", required=True, type=Path)
    parser.add_argument("--per-id", action="store_true", help="add a row per machine ID")
    args = parser.parse_args()

    cfg = FeatureConfig()
    index = scan_roots(args.data_root)
    train, test = index.select(split="train"), index.select(split="test")
    classes = {c: i for i, c in enumerate(build_class_list(train))}
    test = [c for c in test if (c.machine_type, c.machine_id) in classes and c.label is not None]
    if not train or not test:
        print("need training clips and labelled test clips of the same IDs", file=sys.stderr)
        return 2
    train_x = clip_statistics([c.path for c in train], cfg, desc="training clips")
    test_x = clip_statistics([c.path for c in test], cfg, desc="test clips")
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    train_y = np.array([classes[(c.machine_type, c.machine_id)] for c in train])
    test_y = np.array([classes[(c.machine_type, c.machine_id)] for c in test])

    for name, scorer in (("id-classifier", id_classifier_scores),
                         ("mahalanobis", mahalanobis_scores)):
        scores = scorer(train_x, train_y, test_x, test_y)
        ids = evaluate_ids((c.machine_type, c.machine_id, c.label, s) for c, s in zip(test, scores))
        types, average = summarise_types(ids)
        print(f"\n{name} ({len(train)} training clips, {len(test)} test clips):\n")
        print(format_table(types, average, ids if args.per_id else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
