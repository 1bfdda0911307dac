"""All baselines on one set of training and test clips: the official autoencoder (one
model per machine type), per-ID Mahalanobis and the linear ID classifier on clip
statistics, and a loudness-only detector.

    run = run_baselines(train_clips, test_clips, AutoencoderConfig(epochs=20))
    run.scores["autoencoder"]  # [(machine_type, machine_id, label, score), ...] per test clip

Every clip is read once; its log-mel (the autoencoder's front end) feeds every baseline.
A clip that cannot be used (unreadable, wrong format) is skipped and listed in
`run.skipped`, so one bad file does not stop a run over a whole data set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from estm_ref.baselines.autoencoder import (AutoencoderConfig, baseline_log_mel, clip_score,
                                            frame_vectors, train_autoencoder)
from estm_ref.baselines.statistics import (clip_statistics, id_classifier_scores,
                                           mahalanobis_scores, rms_scores, standardise)
from estm_ref.config import FeatureConfig
from estm_ref.data import ClipInfo, load_clip
from estm_ref.processes import process_map
from estm_ref.synth.machines import MACHINES

log = logging.getLogger(__name__)

BASELINES = ("autoencoder", "mahalanobis", "id-classifier", "rms")
# Official autoencoder baseline on the DCASE 2020 Task 2 development set, AUC / pAUC (%),
# per machine type and averaged over the six
PUBLISHED_AE = {name: machine.published_ae for name, machine in MACHINES.items()}
PUBLISHED_AE_AVERAGE = (73.66, 59.67)

Row = tuple[str, str, int, float]  # machine_type, machine_id, label, score


@dataclass
class ClipSet:
    clips: list[ClipInfo]
    log_mels: np.ndarray  # (n_clips, n_mels, n_frames) float32, the autoencoder's front end
    rms_db: np.ndarray  # (n_clips,)


@dataclass
class BaselineRun:
    scores: dict[str, list[Row]] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ae_history: dict[str, list[dict]] = field(default_factory=dict)  # per machine type
    n_train: int = 0
    n_test: int = 0


def read_clips(clips: Sequence[ClipInfo], ae_cfg: AutoencoderConfig, progress: bool = False,
               desc: str = "clips", batch: int = 32) -> tuple[ClipSet, list[tuple[Path, str]]]:
    """Load and featurise clips (16 kHz mono, cropped or tiled to 10 s as everywhere in the
    project); clips that fail `load_clip` are returned as (path, reason) instead."""
    from tqdm.auto import tqdm

    audio_cfg = FeatureConfig()
    kept, skipped, mels, rms = [], [], [], []
    for start in tqdm(range(0, len(clips), batch), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        waves = []
        for clip in clips[start:start + batch]:
            try:
                waves.append(load_clip(clip.path, audio_cfg))
            except ValueError as err:
                skipped.append((clip.path, str(err)))
                continue
            kept.append(clip)
        if not waves:
            continue
        wave = torch.from_numpy(np.stack(waves))
        mels.append(baseline_log_mel(wave, audio_cfg.sample_rate, ae_cfg).float().numpy())
        power = wave.double().square().mean(1)
        rms.append((10.0 * torch.log10(power + 1e-20)).numpy())
    if not kept:
        return ClipSet([], np.zeros((0, ae_cfg.n_mels, 0), np.float32), np.zeros(0)), skipped
    return ClipSet(kept, np.concatenate(mels), np.concatenate(rms)), skipped


def _fit_and_score_type(machine_type: str, train_mels: np.ndarray, test_mels: np.ndarray,
                        cfg: AutoencoderConfig, progress: bool,
                        threads: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Train one type's autoencoder on its training clips' log-mels and score its test
    clips: (scores, history). `threads` sets torch's thread count (in a worker process)."""
    if threads is not None:
        torch.set_num_threads(threads)
    vectors = torch.cat([frame_vectors(torch.from_numpy(m), cfg.frames) for m in train_mels])
    model, history = train_autoencoder(vectors, cfg, progress, desc=f"autoencoder {machine_type}")
    last = history[-1]
    log.info("autoencoder %s: %d vectors, %d epochs, loss %.3f, val_loss %.3f",
             machine_type, len(vectors), cfg.epochs, last["loss"], last["val_loss"])
    scores = np.array([clip_score(model, frame_vectors(torch.from_numpy(m), cfg.frames))
                       for m in test_mels])
    return scores, history


def _autoencoder_scores(train: ClipSet, test: ClipSet, cfg: AutoencoderConfig, progress: bool,
                        history: dict[str, list[dict]], jobs: int = 1) -> np.ndarray:
    """One model per machine type; with `jobs` > 1 the types train in that many worker
    processes of one torch thread each (the same numbers as one thread in-process)."""
    from tqdm.auto import tqdm

    scores = np.full(len(test.clips), np.nan)
    types = sorted({c.machine_type for c in test.clips})
    rows = {t: ([i for i, c in enumerate(train.clips) if c.machine_type == t],
                [i for i, c in enumerate(test.clips) if c.machine_type == t]) for t in types}
    jobs = max(1, min(jobs, len(types)))
    # in workers: one torch thread each and no per-epoch bars (one bar over the types)
    tail = (progress, None) if jobs == 1 else (False, 1)
    tasks = ((t, train.log_mels[rows[t][0]], test.log_mels[rows[t][1]], cfg, *tail)
             for t in types)  # lazily: one type's copy at a time in-process
    done = process_map(_fit_and_score_type, tasks, jobs)
    results = dict(zip(types, tqdm(done, total=len(types), desc="autoencoders", unit="type",
                                   disable=not progress or jobs == 1, leave=False)))
    for t in types:
        scores[rows[t][1]], history[t] = results[t]
    return scores


def run_baselines(train_clips: Sequence[ClipInfo], test_clips: Sequence[ClipInfo],
                  ae_cfg: AutoencoderConfig | None = None, baselines: Sequence[str] = BASELINES,
                  progress: bool = True, jobs: int = 1) -> BaselineRun:
    """Fit every baseline on the normal training clips and score the test clips whose
    (type, ID) has training clips; returns per-clip scores (higher = more anomalous).
    `jobs` > 1 trains that many machine types' autoencoders at a time in worker processes."""
    ae_cfg = ae_cfg or AutoencoderConfig()
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {BASELINES}")
    run = BaselineRun()
    train, skipped = read_clips(train_clips, ae_cfg, progress, "training clips")
    known = {(c.machine_type, c.machine_id) for c in train.clips}
    test_clips = [c for c in test_clips if (c.machine_type, c.machine_id) in known]
    test, skipped_test = read_clips(test_clips, ae_cfg, progress, "test clips")
    run.skipped = skipped + skipped_test
    for path, reason in run.skipped:
        log.warning("skipped %s: %s", path, reason)
    if not train.clips or not test.clips:
        raise ValueError("need readable training clips and test clips of the same IDs")
    run.n_train, run.n_test = len(train.clips), len(test.clips)
    classes = {key: i for i, key in enumerate(sorted(known))}
    train_y = np.array([classes[(c.machine_type, c.machine_id)] for c in train.clips])
    test_y = np.array([classes[(c.machine_type, c.machine_id)] for c in test.clips])
    stats = clip_statistics(train.log_mels), clip_statistics(test.log_mels)
    for name in baselines:
        if name == "autoencoder":
            scores = _autoencoder_scores(train, test, ae_cfg, progress, run.ae_history, jobs)
        elif name == "mahalanobis":
            scores = mahalanobis_scores(stats[0], train_y, stats[1], test_y)
        elif name == "id-classifier":
            train_z, test_z = standardise(*stats)  # over all classes, for the classifier
            scores = id_classifier_scores(train_z, train_y, test_z, test_y)
        else:
            scores = rms_scores(train.rms_db, train_y, test.rms_db, test_y)
        run.scores[name] = [(c.machine_type, c.machine_id, c.label, float(s))
                            for c, s in zip(test.clips, scores)]
    return run

