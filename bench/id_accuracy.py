"""ID accuracy of a trained run: the share of clips whose largest logit is their own
(type, ID) class, on the training clips, the normal test clips and the anomalous test clips.
Usage:
    python bench/id_accuracy.py --run RUN --data-root DIR

An ID classifier that generalises puts nearly every normal test clip on its own ID; one
far below its training accuracy has learnt its training clips rather than its units
(docs/design.md, "Small data"). With speed classes a clip counts as right only when its largest
logit is its own ID at its recorded speed. The logits are the plain cosine logits, without
the ArcFace margin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estm_ref.data import ClipDataset, scan_roots  # noqa: E402
from estm_ref.pipeline.run_dir import load_run  # noqa: E402
from estm_ref.pipeline.model_pass import pass_dataset  # noqa: E402
from estm_ref.runtime import resolve_device  # noqa: E402


@torch.no_grad()
def own_class_hits(run, dataset: ClipDataset, device: torch.device) -> np.ndarray:
    """(n_clips,) bool: the clip's largest logit is its own class (the scoring pass's
    embeddings through the head's cosine logits)."""
    embeddings = pass_dataset(run.model, dataset, run.cfg, device, progress=False).embeddings
    logits = run.model.head.cosine(torch.from_numpy(embeddings).to(device))
    index = {key: i for i, key in enumerate(run.class_list)}
    own = np.array([index[(c.machine_type, c.machine_id)] for c in dataset.clips], dtype=int)
    return logits.argmax(-1).cpu().numpy() == own


def id_accuracy(run_dir: Path, data_roots: list[Path], device: str = "auto") -> dict[str, tuple]:
    """{'training' | 'normal test' | 'anomalous test': (accuracy, n_clips)} over the clips of
    the (type, ID) classes the run knows; accuracy is nan where there is no clip."""
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    known = set(run.class_list)
    index = scan_roots(data_roots)
    test = index.select(split="test")
    groups = {"training": index.select(split="train"),
              "normal test": [c for c in test if c.label == 0],
              "anomalous test": [c for c in test if c.label == 1]}
    out = {}
    for name, clips in groups.items():
        clips = [c for c in clips if (c.machine_type, c.machine_id) in known]
        dataset = ClipDataset(clips, run.class_list, run.cfg.features, progress=False)
        hits = own_class_hits(run, dataset, dev)
        out[name] = (float(hits.mean()) if len(hits) else float("nan"), len(hits))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data-root", action="append", required=True, type=Path)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    for name, (accuracy, n) in id_accuracy(args.run, args.data_root, args.device).items():
        print(f"{name:<15} {accuracy:6.3f}  ({n} clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
