"""What the model gives for clips: the single place it looks at them outside training.

One forward gives the fused embedding H and the own-class -log p with and without the
ArcFace margin (`estm_ref.model.own_class_nll`); the scorers of `estm_ref.pipeline.scorers`
work on nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from estm_ref.config import Config
from estm_ref.model import own_class_nll
from estm_ref.runtime import autocast_for


@dataclass
class ModelPass:
    """What the model gives for n clips."""

    nll: np.ndarray  # (n,) float64 -log p of the own class, margin on the own class
    nll_no_margin: np.ndarray  # (n,) float64 the same without the margin
    embeddings: np.ndarray  # (n, d_model) float32 fused embeddings H

    def nll_for(self, with_margin: bool) -> np.ndarray:
        return self.nll if with_margin else self.nll_no_margin

    def __len__(self) -> int:
        return len(self.nll)

    def subset(self, index) -> "ModelPass":
        """The clips `index` picks (a boolean mask or positions), in that order."""
        return ModelPass(self.nll[index], self.nll_no_margin[index], self.embeddings[index])

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


def model_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's weights: ties a saved training pass to the weights it came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
