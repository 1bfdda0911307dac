"""`estm test`: score every test clip of a trained run and write the paper's Table I.

Outputs in `<run>/test/` (or --out): results.md / results.csv (Table I, per-ID rows too),
scores.csv (every clip), the DCASE files anomaly_score_<type>_id_XX.csv and
decision_result_<type>_id_XX.csv, roc_<type>.png and tsne.png (with the [plot] extra).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from estm_ref import checkpoint as ckpt_io
from estm_ref.config import Config
from estm_ref.metrics import (evaluate_ids, format_score, format_table, summarise_types,
                              write_dcase_files, write_results_csv)

log = logging.getLogger(__name__)


@dataclass
class Scored:
    scores: np.ndarray  # (n_clips,) anomaly scores, higher = more anomalous
    embeddings: np.ndarray  # (n_clips, d_model) fused embeddings


@dataclass
class Run:
    model: torch.nn.Module
    cfg: Config
    class_list: list[tuple[str, str]]
    thresholds: dict[str, float]
    epoch: int


def load_run(run_dir: Path | str, device: torch.device) -> Run:
    """Rebuild the model of a run folder from its checkpoint (weights_only load)."""
    from estm_ref.train import THRESHOLDS_NAME, build_model

    run_dir = Path(run_dir)
    state = ckpt_io.load(run_dir / ckpt_io.CHECKPOINT_NAME, map_location=device)
    cfg = Config.from_dict(state["config"])
    class_list = [tuple(c) for c in state["class_list"]]
    model = build_model(cfg, len(class_list), device)
    model.load_state_dict(state["model"])
    model.eval()
    epoch = int(state["epoch"])
    if epoch < cfg.train.epochs:
        log.warning("%s holds epoch %d of %d: the run did not finish (train --resume finishes it)",
                    run_dir, epoch, cfg.train.epochs)
    thresholds_path = run_dir / THRESHOLDS_NAME
    thresholds = json.loads(thresholds_path.read_text()) if thresholds_path.exists() else {}
    return Run(model, cfg, class_list, thresholds, epoch)


@torch.no_grad()
def score_dataset(model, dataset, cfg: Config, device: torch.device, with_margin: bool = True,
                  progress: bool = True, desc: str = "scoring") -> Scored:
    """Anomaly score (-log p of the clip's own class) and fused embedding of every clip."""
    from tqdm.auto import tqdm

    from estm_ref.model import own_class_nll
    from estm_ref.train import autocast_for

    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(cfg.train.batch_size, 64),
                                         num_workers=cfg.train.num_workers)
    scores, embeddings = [], []
    for wave, cls, _, _ in tqdm(loader, desc=desc, disable=not progress, leave=False,
                                unit="batch"):
        wave, cls = wave.to(device), cls.to(device)
        with autocast_for(cfg, device):
            out = model(wave, cls if with_margin else None)
        scores.append(own_class_nll(out.logits, cls).cpu())
        embeddings.append(out.embedding.float().cpu())
    if not scores:
        return Scored(np.zeros(0), np.zeros((0, 0)))
    return Scored(torch.cat(scores).numpy(), torch.cat(embeddings).numpy())


def test_run(run_dir: Path | str, data_roots: Sequence[Path | str], out_dir: Path | None = None,
             device: str = "auto", per_id: bool = False, with_margin: bool = True,
             plots: bool = True, progress: bool = True) -> dict:
    """Score the test clips under `data_roots` with the run's model; write and return results."""
    from estm_ref.data import ClipDataset, scan_roots
    from estm_ref.train import resolve_device

    if plots:
        from estm_ref.plots import require_matplotlib

        require_matplotlib()
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "test"
    out_dir.mkdir(parents=True, exist_ok=True)

    test_clips = scan_roots(data_roots).select(split="test")
    known = set(run.class_list)
    unknown = sorted({(c.machine_type, c.machine_id) for c in test_clips} - known)
    if unknown:
        log.warning("test clips of %d (type, id) pair(s) the model was not trained on are "
                    "skipped: %s", len(unknown), ", ".join(f"{t}/id_{i}" for t, i in unknown))
        test_clips = [c for c in test_clips if (c.machine_type, c.machine_id) in known]
    if not test_clips:
        raise ValueError(f"no test clips of known machines under {', '.join(map(str, data_roots))}")
    dataset = ClipDataset(test_clips, run.class_list, run.cfg.features, progress=progress)
    scored = score_dataset(run.model, dataset, run.cfg, dev, with_margin, progress)
    clips = dataset.clips

    with open(out_dir / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "machine_type", "machine_id", "label", "score"])
        for clip, score in zip(clips, scored.scores):
            w.writerow([clip.path, clip.machine_type, clip.machine_id,
                        "" if clip.label is None else clip.label, format_score(score)])
    by_id: dict[tuple[str, str], list[int]] = {}
    for i, clip in enumerate(clips):
        by_id.setdefault((clip.machine_type, clip.machine_id), []).append(i)
    for (machine_type, machine_id), idx in sorted(by_id.items()):
        threshold = run.thresholds.get(f"{machine_type}/id_{machine_id}", math.inf)
        if math.isinf(threshold):
            log.warning("no decision threshold for %s/id_%s in the run; all decisions are 0",
                        machine_type, machine_id)
        write_dcase_files(out_dir, machine_type, machine_id, [clips[i].path.name for i in idx],
                          [float(scored.scores[i]) for i in idx], threshold)

    id_results = evaluate_ids((c.machine_type, c.machine_id, c.label, s)
                              for c, s in zip(clips, scored.scores))
    types, average = summarise_types(id_results)
    table = format_table(types, average, id_results if per_id else None)
    (out_dir / "results.md").write_text(format_table(types, average, id_results, markdown=True) + "\n")
    write_results_csv(out_dir / "results.csv", types, average, id_results)
    figures = []
    if plots and id_results:
        from estm_ref.plots import plot_roc_curves, plot_tsne

        labelled = [i for i, c in enumerate(clips) if c.label is not None]
        figures += plot_roc_curves(out_dir, [clips[i] for i in labelled], scored.scores[labelled])
        figures.append(plot_tsne(out_dir / "tsne.png", clips, scored.embeddings,
                                 seed=run.cfg.train.seed))
    return {"table": table, "types": types, "average": average, "ids": id_results,
            "out_dir": out_dir, "figures": figures, "n_clips": len(clips),
            "skipped_files": len(dataset.skipped), "unlabelled": sum(c.label is None for c in clips)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run folder written by train")
    parser.add_argument("--data-root", action="append", required=True, type=Path,
                        help="root(s) holding <type>/test/*.wav")
    parser.add_argument("--out", type=Path, help="output folder (default RUN/test)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--per-id", action="store_true", help="per-ID rows in the table")
    parser.add_argument("--no-margin", action="store_true",
                        help="score without the ArcFace margin on the own class")
    parser.add_argument("--no-plots", action="store_true", help="skip ROC and t-SNE figures")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    result = test_run(args.run, args.data_root, args.out, args.device, args.per_id,
                      not args.no_margin, not args.no_plots, not args.no_progress)
    print(result["table"])
    print(f"\n{result['n_clips']} clips scored ({result['unlabelled']} unlabelled, "
          f"{result['skipped_files']} bad files skipped); results in {result['out_dir']}")
    for fig in result["figures"]:
        print(f"figure: {fig}")
    return 0
