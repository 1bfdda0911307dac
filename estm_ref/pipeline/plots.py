"""Figures of `estm test`: ROC curves per machine type and a t-SNE of the fused embeddings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from estm_ref.errors import InputError

log = logging.getLogger(__name__)


def require_matplotlib() -> None:
    """Fail before any long work when figures are asked for but cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as err:
        raise InputError("figures need matplotlib: pip install 'estm-ref[plot]' "
                           "(or pass --no-plots)") from err


def _pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc_curves(out_dir: Path, clips: Sequence, scores: np.ndarray) -> list[Path]:
    """roc_<type>.png: one ROC curve per ID of that machine type (labelled clips only)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    paths = []
    for machine_type in sorted({c.machine_type for c in clips}, key=str.lower):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ids = sorted({c.machine_id for c in clips if c.machine_type == machine_type})
        for machine_id in ids:
            idx = [i for i, c in enumerate(clips)
                   if c.machine_type == machine_type and c.machine_id == machine_id]
            y = np.array([clips[i].label for i in idx])
            if y.min() == y.max():
                continue
            fpr, tpr, _ = roc_curve(y, scores[idx])
            ax.plot(fpr, tpr, label=f"id_{machine_id} (AUC {100 * roc_auc_score(y, scores[idx]):.1f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.axvline(0.1, color="0.8", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate",
               title=f"{machine_type}: ROC per ID", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / f"roc_{machine_type}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_tsne(path: Path, clips: Sequence, embeddings: np.ndarray, seed: int = 0) -> Path:
    """t-SNE of the fused embeddings: colour per (type, id), circles normal, crosses anomaly
    (the paper's Fig. 2 layout)."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    n = len(clips)
    perplexity = float(min(30, max(2, (n - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        embeddings.astype(np.float64))
    keys = sorted({(c.machine_type, c.machine_id) for c in clips})
    # tab20 repeats past 20 keys; the full DCASE set has 41
    cmap = plt.get_cmap("tab20") if len(keys) <= 20 else plt.get_cmap("nipy_spectral", len(keys) + 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    for k, key in enumerate(keys):
        for label, marker in ((0, "o"), (1, "x"), (None, ".")):
            idx = [i for i, c in enumerate(clips)
                   if (c.machine_type, c.machine_id) == key and c.label == label]
            if idx:
                ax.scatter(xy[idx, 0], xy[idx, 1], s=12, marker=marker, color=cmap(k),
                           label=f"{key[0]} id_{key[1]}" if label == 0 else None)
    ax.set(title="t-SNE of fused embeddings (o normal, x anomaly)", xticks=[], yticks=[])
    ax.legend(fontsize=6, ncol=2, loc="best", markerscale=1.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
