"""Testing a run: score every test clip of a trained run and write the paper's Table I.

Outputs in `<run>/test/` (or --out): results.md / results.csv (Table I, per-ID rows too),
scores.csv (every clip), the DCASE files anomaly_score_<type>_id_XX.csv and
decision_result_<type>_id_XX.csv, roc_<type>.png and tsne.png (with the [plot] extra).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Sequence

from estm_ref.data import ClipDataset, scan_roots
from estm_ref.errors import InputError
from estm_ref.pipeline.metrics import (evaluate_ids, format_score, format_table, summarise_types,
                                       write_dcase_files, write_results_csv)
from estm_ref.pipeline.run_dir import load_run, thresholds_key
from estm_ref.pipeline.scoring import score_dataset
from estm_ref.runtime import resolve_device

log = logging.getLogger(__name__)


def test_run(run_dir: Path | str, data_roots: Sequence[Path | str], out_dir: Path | None = None,
             device: str = "auto", per_id: bool = False, with_margin: bool = True,
             plots: bool = True, progress: bool = True) -> dict:
    """Score the test clips under `data_roots` with the run's model; write and return results."""
    if plots:
        from estm_ref.pipeline.plots import require_matplotlib

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
        raise InputError(f"no test clips of known machines under {', '.join(map(str, data_roots))}")
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
        threshold = run.thresholds.get(thresholds_key(machine_type, machine_id), math.inf)
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
        from estm_ref.pipeline.plots import plot_roc_curves, plot_tsne

        labelled = [i for i, c in enumerate(clips) if c.label is not None]
        figures += plot_roc_curves(out_dir, [clips[i] for i in labelled], scored.scores[labelled])
        figures.append(plot_tsne(out_dir / "tsne.png", clips, scored.embeddings,
                                 seed=run.cfg.train.seed))
    return {"table": table, "types": types, "average": average, "ids": id_results,
            "out_dir": out_dir, "figures": figures, "n_clips": len(clips),
            "skipped_files": len(dataset.skipped), "unlabelled": sum(c.label is None for c in clips)}
