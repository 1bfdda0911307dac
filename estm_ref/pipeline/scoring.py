"""Anomaly scores of clips: the one scoring path of `estm test`, `estm score` and training's
decision thresholds.

`score_batch` is the single place a clip's score is computed (the model's own-class
-log p, `estm_ref.model.own_class_nll`); `score_dataset` runs it over a dataset,
`score_files` over single WAV files, `fit_thresholds` fits the gamma decision thresholds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from estm_ref.config import Config
from estm_ref.data import load_clip
from estm_ref.errors import InputError
from estm_ref.model import own_class_nll
from estm_ref.pipeline.metrics import gamma_threshold
from estm_ref.pipeline.run_dir import load_run, thresholds_key
from estm_ref.runtime import autocast_for, resolve_device

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"id_(\d{2})")


@dataclass
class Scored:
    scores: np.ndarray  # (n_clips,) anomaly scores, higher = more anomalous
    embeddings: np.ndarray  # (n_clips, d_model) fused embeddings


@torch.no_grad()
def score_batch(model, wave: torch.Tensor, cls: torch.Tensor, cfg: Config,
                with_margin: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """wave: (batch, clip_samples), cls: (batch,) -> (scores (batch,) float64, embeddings
    (batch, d_model) float32), on the model's device. The margin, when on, is applied to the
    clip's own class as in training."""
    with autocast_for(cfg.train.amp, wave.device):
        out = model(wave, cls if with_margin else None)
    return own_class_nll(out.logits, cls), out.embedding.float()


@torch.no_grad()
def score_dataset(model, dataset, cfg: Config, device: torch.device, with_margin: bool = True,
                  progress: bool = True, desc: str = "scoring") -> Scored:
    """Anomaly score and fused embedding of every clip of a `ClipDataset`."""
    from tqdm.auto import tqdm

    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(cfg.train.batch_size, 64),
                                         num_workers=cfg.train.num_workers)
    scores, embeddings = [], []
    for wave, cls, _, _ in tqdm(loader, desc=desc, disable=not progress, leave=False,
                                unit="batch"):
        score, embedding = score_batch(model, wave.to(device), cls.to(device), cfg, with_margin)
        scores.append(score.cpu())
        embeddings.append(embedding.cpu())
    if not scores:
        return Scored(np.zeros(0), np.zeros((0, 0)))
    return Scored(torch.cat(scores).numpy(), torch.cat(embeddings).numpy())


def fit_thresholds(model, train_set, cfg: Config, dev: torch.device, progress: bool,
                   val_set=None) -> dict:
    """Gamma-fit decision thresholds per (type, id) from normal training-clip scores.

    With a held-out slice (`val_fraction` > 0) the fit uses its clips, whose scores are
    not lowered by the model having been fitted to them; an ID with fewer than two
    held-out clips uses its training clips instead, and the log says which IDs did.
    """
    def scores_by_id(dataset, desc: str) -> dict[str, list[float]]:
        scored = score_dataset(model, dataset, cfg, dev, progress=progress, desc=desc)
        by_id: dict[str, list[float]] = {}
        for clip, score in zip(dataset.clips, scored.scores):
            by_id.setdefault(thresholds_key(clip.machine_type, clip.machine_id), []).append(float(score))
        return by_id

    fitted: dict[str, list[float]] = {}
    if val_set is not None:
        fitted = {k: v for k, v in scores_by_id(val_set, "held-out scores").items() if len(v) >= 2}
        log.info("decision thresholds fitted on held-out clips for %d ID(s)", len(fitted))
    fallback = sorted({thresholds_key(c.machine_type, c.machine_id) for c in train_set.clips}
                      - set(fitted))
    if fallback:  # training clips are scored only when some ID needs them
        if val_set is not None:
            log.warning("fewer than 2 held-out clips: thresholds from training clips for %s",
                        ", ".join(fallback))
        training = scores_by_id(train_set, "training scores")
        fitted.update((key, training[key]) for key in fallback)
    return {key: gamma_threshold(scores) for key, scores in sorted(fitted.items())}


def identify(path: Path, machine_type: str | None, machine_id: str | None) -> tuple[str, str]:
    """(type, id): given explicitly, else the type from the folder `<type>/<split>/file.wav`
    and the id from `id_XX` in the file name."""
    if machine_type is None:
        machine_type = path.resolve().parent.parent.name
    if machine_id is None:
        match = ID_PATTERN.search(path.name)
        if match is None:
            raise InputError(f"{path}: no id_XX in the file name; pass --id")
        machine_id = match.group(1)
    return machine_type, machine_id


def score_files(run_dir: Path, files: Sequence[Path], machine_type: str | None = None,
                machine_id: str | None = None, device: str = "auto",
                with_margin: bool = True) -> list[dict]:
    """Score, threshold and decision of each file. A file that cannot be scored (unreadable,
    unknown machine, bad name) gets an "error" entry instead; the others are still scored."""
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    index = {c: i for i, c in enumerate(run.class_list)}
    results = []
    for path in map(Path, files):
        try:
            key = identify(path, machine_type, machine_id)
            if key not in index:
                known = ", ".join(f"{t}/id_{i}" for t, i in run.class_list)
                raise InputError(f"{path}: the model was not trained on {key[0]}/id_{key[1]} "
                                 f"(it knows {known})")
            wave = torch.from_numpy(load_clip(path, run.cfg.features))[None].to(dev)
        except InputError as err:
            results.append({"file": str(path), "error": str(err)})
            continue
        cls = torch.tensor([index[key]], device=dev)
        score = float(score_batch(run.model, wave, cls, run.cfg, with_margin)[0][0])
        threshold = run.thresholds.get(thresholds_key(*key))
        results.append({"file": str(path), "machine_type": key[0], "machine_id": key[1],
                        "score": score, "threshold": threshold,
                        "decision": None if threshold is None else int(score > threshold)})
    return results
