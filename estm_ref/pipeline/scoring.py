"""Anomaly scores of clips: the one scoring path of `estm test`, `estm score` and training's
decision thresholds.

`pass_batch` is the single place the model looks at clips: one forward gives the fused
embedding H and the own-class -log p with and without the ArcFace margin
(`estm_ref.model.own_class_nll`). The training clips' pass under the final model is kept
in the run folder (`TrainingPass`, `train_embeddings.npz`); `fit_scorers` fits every
scorer of `estm_ref.pipeline.scorers` on it, with gamma decision thresholds per scorer,
and `anomaly_scores` turns a pass of new clips into one scorer's scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from estm_ref.config import Config
from estm_ref.errors import InputError
from estm_ref.model import own_class_nll
from estm_ref.pipeline.metrics import gamma_threshold
from estm_ref.pipeline.run_dir import thresholds_key
from estm_ref.pipeline.scorers import (DEFAULT_K, DEFAULT_N_CENTRES, FittedScorer, IdKey,
                                       fit_scorer, group_by_id, score_clips)
from estm_ref.runtime import autocast_for

log = logging.getLogger(__name__)

EMBEDDINGS_NAME = "train_embeddings.npz"
ID_PATTERN = re.compile(r"id_(\d{2})")


@dataclass
class ModelPass:
    """What the model gives for n clips."""

    nll: np.ndarray  # (n,) float64 -log p of the own class, margin on the own class
    nll_no_margin: np.ndarray  # (n,) float64 the same without the margin
    embeddings: np.ndarray  # (n, d_model) float32 fused embeddings H

    def nll_for(self, with_margin: bool) -> np.ndarray:
        return self.nll if with_margin else self.nll_no_margin

    @staticmethod
    def concat(passes: Sequence["ModelPass"], d_model: int) -> "ModelPass":
        if not passes:
            return ModelPass(np.zeros(0), np.zeros(0), np.zeros((0, d_model), np.float32))
        return ModelPass(*(np.concatenate([getattr(p, f) for p in passes])
                           for f in ("nll", "nll_no_margin", "embeddings")))


@torch.no_grad()
def pass_batch(model, wave: torch.Tensor, cls: torch.Tensor, cfg: Config) -> ModelPass:
    """wave: (batch, clip_samples), cls: (batch,) on the model's device -> the batch's pass.
    The margin, where applied, sits on the clip's own class as in training."""
    with autocast_for(cfg.train.amp, wave.device):
        out = model(wave)
        with_margin = model.head(out.embedding, cls)
    return ModelPass(own_class_nll(with_margin, cls).cpu().numpy(),
                     own_class_nll(out.logits, cls).cpu().numpy(),
                     out.embedding.float().cpu().numpy())


def pass_dataset(model, dataset, cfg: Config, device: torch.device, progress: bool = True,
                 desc: str = "scoring") -> ModelPass:
    """The pass of every clip of a `ClipDataset`, in its order."""
    from tqdm.auto import tqdm

    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(cfg.train.batch_size, 64),
                                         num_workers=cfg.train.num_workers)
    passes = [pass_batch(model, wave.to(device), cls.to(device), cfg)
              for wave, cls, _, _ in tqdm(loader, desc=desc, disable=not progress, leave=False,
                                          unit="batch")]
    return ModelPass.concat(passes, cfg.model.d_model)


@dataclass
class Scored:
    scores: np.ndarray  # (n_clips,) the paper's nll, higher = more anomalous
    embeddings: np.ndarray  # (n_clips, d_model) fused embeddings


def score_dataset(model, dataset, cfg: Config, device: torch.device, with_margin: bool = True,
                  progress: bool = True, desc: str = "scoring") -> Scored:
    """The paper's score (nll) and the fused embedding of every clip of a `ClipDataset`."""
    result = pass_dataset(model, dataset, cfg, device, progress, desc)
    return Scored(result.nll_for(with_margin), result.embeddings)


def model_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's weights: ties a saved training pass to the weights it came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class TrainingPass:
    """The run's training clips under its final model (no augmentation). Held-out clips
    (`--val-fraction`) are kept apart: scorers are fitted on the others, and decision
    thresholds on them where an ID has at least two."""

    keys: list[IdKey]  # (type, id) per clip
    held_out: np.ndarray  # (n,) bool
    paths: list[str]
    result: ModelPass
    class_list: list[IdKey]
    digest: str  # model_digest of the weights that produced it

    def save(self, run_dir: Path) -> Path:
        path = Path(run_dir) / EMBEDDINGS_NAME
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.array(self.keys, dtype=str).reshape(-1, 2),
                     held_out=self.held_out, paths=np.array(self.paths, dtype=str),
                     nll=self.result.nll, nll_no_margin=self.result.nll_no_margin,
                     embeddings=self.result.embeddings,
                     class_list=np.array(self.class_list, dtype=str).reshape(-1, 2),
                     digest=np.array(self.digest))
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(run_dir: Path) -> "TrainingPass | None":
        path = Path(run_dir) / EMBEDDINGS_NAME
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return TrainingPass([tuple(k) for k in z["keys"].tolist()], z["held_out"],
                                z["paths"].tolist(),
                                ModelPass(z["nll"], z["nll_no_margin"], z["embeddings"]),
                                [tuple(c) for c in z["class_list"].tolist()], str(z["digest"]))

    def bank(self) -> dict[IdKey, np.ndarray]:
        """{(type, id): embeddings} of the clips scorers are fitted on (not held out)."""
        keep = ~self.held_out
        return group_by_id([k for k, h in zip(self.keys, keep) if h], self.result.embeddings[keep])


@dataclass
class Scorers:
    """Scorers fitted on a run's training pass, and their decision thresholds per ID."""

    fitted: dict[str, FittedScorer]
    thresholds: dict[str, dict[str, float]]  # scorer -> thresholds_key -> threshold
    with_margin: bool


def fit_scorers(training: TrainingPass, names: Sequence[str], with_margin: bool = True,
                k: int = DEFAULT_K, n_centres: int = DEFAULT_N_CENTRES,
                seed: int = 0) -> Scorers:
    """Fit each scorer in `names` on the training pass and its gamma decision thresholds:
    from the held-out clips of an ID where it has at least two, else from its training
    clips (knn leaving each clip out of its own neighbours)."""
    bank = training.bank()
    held = group_by_id([k_ for k_, h in zip(training.keys, training.held_out) if h],
                       training.result.embeddings[training.held_out])
    held = {key: x for key, x in held.items() if len(x) >= 2}
    if training.held_out.any():
        fallback = sorted(set(bank) - set(held))
        if fallback:
            log.warning("fewer than 2 held-out clips: thresholds from training clips for %s",
                        ", ".join(thresholds_key(*key) for key in fallback))
        log.info("decision thresholds fitted on held-out clips for %d ID(s)", len(held))
    nll = training.result.nll_for(with_margin)
    fitted, thresholds = {}, {}
    for name in names:
        scorer = fit_scorer(name, bank, k=k, n_centres=n_centres, seed=seed)
        fitted[name] = scorer
        thresholds[name] = {}
        for key in bank:
            mask = np.array([k_ == key for k_ in training.keys])
            if key in held:
                scores = scorer.score(key, held[key], nll[mask & training.held_out])
            elif name == "nll":
                scores = nll[mask & ~training.held_out]
            else:
                scores = scorer.training_scores(key)
            thresholds[name][thresholds_key(*key)] = gamma_threshold(scores)
    return Scorers(fitted, thresholds, with_margin)


def anomaly_scores(scorers: Scorers, name: str, keys: Sequence[IdKey],
                   result: ModelPass) -> np.ndarray:
    """(n,) scores of clips of mixed IDs under scorer `name`: the one function by which
    `estm test` and `estm score` score a clip."""
    return score_clips(scorers.fitted[name], keys, result.embeddings,
                       result.nll_for(scorers.with_margin))


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
