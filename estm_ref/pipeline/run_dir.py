"""The run folder: every file name in it, the checkpoint (written atomically, loaded with
weights_only=True), the run-folder guard and `load_run`.

A checkpoint holds the model, optimizer and scheduler states, the RNG states, the number
of completed epochs, the full config and the class list, so that `train --resume`
continues an interrupted run to the same result and `test`/`score` rebuild the model.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from estm_ref.config import Config
from estm_ref.errors import InputError, TrainingError
from estm_ref.model import build_model

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
CONFIG_NAME = "config.json"
EMBEDDINGS_NAME = "train_embeddings.npz"  # the training clips under the final model
CACHE_NAME = "cache"  # decoded audio of the training clips (cache_audio)
TEST_NAME = "test"  # `estm test`'s outputs unless --out says otherwise
METRIC_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "clips_per_s",
                 "seconds"]


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then os.replace: a crash
    leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """RNG states in a form that torch.load(weights_only=True) accepts (tensors, ints, lists)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """A folder that holds a run is continued (--resume) or replaced (--force), never mixed."""
    existing = [n for n in (CHECKPOINT_NAME, METRICS_NAME, CONFIG_NAME) if (run_dir / n).exists()]
    if resume:
        if not (run_dir / CHECKPOINT_NAME).exists():
            raise InputError(f"--resume: no {CHECKPOINT_NAME} in {run_dir}")
        return
    if existing and not force:
        raise TrainingError(f"{run_dir} already holds a run ({', '.join(existing)}); "
                            "pass --resume to continue it or --force to start over")
    for name in existing:
        (run_dir / name).unlink()
    (run_dir / EMBEDDINGS_NAME).unlink(missing_ok=True)


def append_metrics(path: Path, row: dict) -> None:
    """One row of metrics.csv per finished epoch (header on the first)."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k, ""))
                    for k in METRIC_FIELDS})


@dataclass
class Run:
    model: torch.nn.Module
    cfg: Config
    class_list: list[tuple[str, str]]
    epoch: int


def load_run(run_dir: Path | str, device: torch.device) -> Run:
    """Rebuild the model of a run folder from its checkpoint (weights_only load)."""
    run_dir = Path(run_dir)
    state = load(run_dir / CHECKPOINT_NAME, map_location=device)
    cfg = Config.from_dict(state["config"])
    class_list = [tuple(c) for c in state["class_list"]]
    model = build_model(cfg.features, cfg.model, cfg.train.head_classes(len(class_list)), device)
    model.load_state_dict(state["model"])
    model.eval()
    epoch = int(state["epoch"])
    if epoch < cfg.train.epochs:
        log.warning("%s holds epoch %d of %d: the run did not finish (train --resume finishes it)",
                    run_dir, epoch, cfg.train.epochs)
    return Run(model, cfg, class_list, epoch)
