"""The training clips of a run under its final model, kept in the run folder.

Training ends by passing its clips through the final model once (no augmentation) and
saving the embeddings, the own-class -log p and the class list (`TrainingPass`, in
`run_dir.EMBEDDINGS_NAME`); `estm test` and `estm score` fit their scorers on them. A run
folder without them (trained before they were saved) gets them computed on first use
from its training clips (`--data-root`), with a log line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from estm_ref.data import ClipDataset, clip_key, scan_roots
from estm_ref.errors import InputError
from estm_ref.pipeline.model_pass import ModelPass, model_digest, pass_dataset
from estm_ref.pipeline.run_dir import EMBEDDINGS_NAME, Run

log = logging.getLogger(__name__)

IdKey = tuple[str, str]


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

    def part(self, held_out: bool) -> tuple[list[IdKey], ModelPass]:
        """The keys and pass of the held-out clips (True) or of the others (False)."""
        mask = self.held_out == held_out
        return [k for k, m in zip(self.keys, mask) if m], self.result.subset(mask)

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


def split_validation(clips, fraction: float, seed: int):
    """A seeded held-out slice of training normals per (type, id); never test data."""
    if fraction <= 0:
        return list(clips), []
    gen = torch.Generator().manual_seed(seed)
    by_class: dict[tuple[str, str], list] = {}
    for c in clips:
        by_class.setdefault((c.machine_type, c.machine_id), []).append(c)
    train, val = [], []
    for key in sorted(by_class):
        group = by_class[key]
        order = torch.randperm(len(group), generator=gen).tolist()
        n_val = int(round(fraction * len(group)))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def compute_training_pass(model, train_set: ClipDataset, val_set: ClipDataset | None, cfg,
                          device: torch.device, class_list: Sequence[tuple[str, str]],
                          progress: bool = True) -> TrainingPass:
    """Pass the training clips (and the held-out ones) through the model, in dataset order."""
    sets = [(train_set, False, "training clips")]
    if val_set is not None:
        sets.append((val_set, True, "held-out clips"))
    keys, held, paths, passes = [], [], [], []
    for dataset, held_out, desc in sets:
        passes.append(pass_dataset(model, dataset, cfg, device, progress, desc))
        keys += [(c.machine_type, c.machine_id) for c in dataset.clips]
        paths += [str(c.path) for c in dataset.clips]
        held += [held_out] * len(dataset.clips)
    return TrainingPass(keys, np.array(held, dtype=bool), paths,
                        ModelPass.concat(passes, cfg.model.d_model),
                        [tuple(c) for c in class_list], model_digest(model))


def ensure_training_pass(run: Run, run_dir: Path | str, data_roots: Sequence[Path | str] | None,
                         device: torch.device, progress: bool = True) -> TrainingPass:
    """The run's saved training pass; computed from the training clips under `data_roots`
    (and saved) when the run has none or one from other weights."""
    run_dir = Path(run_dir)
    saved = TrainingPass.load(run_dir)
    digest = model_digest(run.model)
    if saved is not None and saved.digest == digest and saved.class_list == run.class_list:
        return saved
    why = "has none" if saved is None else "holds one from other weights"
    if not data_roots:
        raise InputError(f"{run_dir} {why} of the training clips' embeddings ({EMBEDDINGS_NAME}); "
                         "pass --data-root with the run's training data to compute them once")
    log.info("%s %s of the training clips' embeddings (%s): computing them from the training "
             "clips under %s", run_dir, why, EMBEDDINGS_NAME, ", ".join(map(str, data_roots)))
    known = set(run.class_list)
    clips = [c for c in scan_roots(data_roots).select(split="train")
             if (c.machine_type, c.machine_id) in known]
    missing = known - {(c.machine_type, c.machine_id) for c in clips}
    if missing:
        names = ", ".join(clip_key(*key) for key in sorted(missing))
        raise InputError(f"no training clips of {names} under "
                         f"{', '.join(map(str, data_roots))}: the run's scorers need the "
                         "training clips of every ID it was trained on")
    train, val = split_validation(clips, run.cfg.train.val_fraction, run.cfg.train.seed)
    sets = [ClipDataset(c, run.class_list, run.cfg.features, progress=progress) if c else None
            for c in (train, val)]
    training = compute_training_pass(run.model, sets[0], sets[1], run.cfg, device,
                                     run.class_list, progress)
    log.info("saved %d training clips' embeddings to %s", len(training.keys),
             training.save(run_dir))
    return training
