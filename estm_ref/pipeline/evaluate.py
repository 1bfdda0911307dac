"""Testing a run: score every test clip under every scorer and write the paper's Table I for
the chosen one; score single files the same way.

Outputs in `<run>/test/` (or --out): scorers.md / scorers.csv (every scorer side by side),
results.md / results.csv (Table I of the chosen scorer, per-ID rows too), scores.csv (every
clip, the chosen score and one column per scorer), the DCASE files
anomaly_score_<type>_id_XX.csv and decision_result_<type>_id_XX.csv of the chosen scorer,
roc_<type>.png and tsne.png (with the [plot] extra).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from estm_ref.data import ClipDataset, clip_key, identify_clip, load_clip, scan_roots
from estm_ref.errors import InputError
from estm_ref.pipeline.metrics import (evaluate_ids, format_score, format_table, pct,
                                       summarise_types, write_dcase_files, write_results_csv)
from estm_ref.pipeline.model_pass import ModelPass, pass_batch, pass_dataset
from estm_ref.pipeline.run_dir import TEST_NAME, Run, load_run
from estm_ref.pipeline.scorers import DEFAULT_SCORER, SCORERS, make_scorer
from estm_ref.pipeline.scoring import Scorers, fit_scorers
from estm_ref.pipeline.training_pass import ensure_training_pass
from estm_ref.runtime import resolve_device

log = logging.getLogger(__name__)


def _scorers_of(run: Run, run_dir, data_roots, dev, names: Sequence[str],
                params: Mapping[str, Any] | None, progress: bool) -> Scorers:
    training = ensure_training_pass(run, run_dir, data_roots, dev, progress)
    try:
        return fit_scorers(training, names, {**(params or {}), "seed": run.cfg.train.seed})
    except ValueError as err:  # too few or non-finite training embeddings, a bad --k
        raise InputError(f"{run_dir}: {err}") from err


def test_run(run_dir: Path | str, data_roots: Sequence[Path | str], out_dir: Path | None = None,
             device: str = "auto", per_id: bool = False, plots: bool = True,
             progress: bool = True, scorer: str = DEFAULT_SCORER,
             scorer_params: Mapping[str, Any] | None = None) -> dict:
    """Score the test clips under `data_roots` with the run's model under every scorer; write
    the chosen scorer's results and DCASE files, and every scorer's table; return them.
    `scorer_params`: parameters of the scorers by name (e.g. {"k": 5, "margin": False})."""
    make_scorer(scorer, scorer_params)  # an unknown name or a bad value fails before any work
    if plots:
        from estm_ref.pipeline.plots import require_matplotlib

        require_matplotlib()
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    scorers = _scorers_of(run, run_dir, data_roots, dev, list(SCORERS), scorer_params, progress)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / TEST_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = _test_set(run, data_roots, progress)
    clips = dataset.clips
    result = pass_dataset(run.model, dataset, run.cfg, dev, progress)
    keys = [(c.machine_type, c.machine_id) for c in clips]
    all_scores = {name: scorers.score(name, keys, result) for name in SCORERS}
    tables = {name: _evaluate(clips, s) for name, s in all_scores.items()}
    _write_outputs(out_dir, clips, keys, all_scores, tables, scorers, scorer)
    id_results, types, average = tables[scorer]
    figures = _plots(out_dir, clips, all_scores[scorer], result, run.cfg.train.seed) \
        if plots and id_results else []
    return {"table": format_table(types, average, id_results if per_id else None),
            "scorer_table": format_scorer_table(tables, scorer, per_id), "scorer": scorer,
            "scorers": tables, "types": types, "average": average, "ids": id_results,
            "scores": all_scores, "out_dir": out_dir, "figures": figures,
            "n_clips": len(clips), "skipped_files": len(dataset.skipped),
            "unlabelled": sum(c.label is None for c in clips)}


def _test_set(run: Run, data_roots: Sequence[Path | str], progress: bool) -> ClipDataset:
    """The test clips under the roots of machines the run was trained on."""
    test_clips = scan_roots(data_roots).select(split="test")
    known = set(run.class_list)
    unknown = sorted({(c.machine_type, c.machine_id) for c in test_clips} - known)
    if unknown:
        log.warning("test clips of %d (type, id) pair(s) the model was not trained on are "
                    "skipped: %s", len(unknown), ", ".join(clip_key(*key) for key in unknown))
        test_clips = [c for c in test_clips if (c.machine_type, c.machine_id) in known]
    if not test_clips:
        raise InputError(f"no test clips of known machines under {', '.join(map(str, data_roots))}")
    return ClipDataset(test_clips, run.class_list, run.cfg.features, progress=progress)


def _write_outputs(out_dir: Path, clips, keys, all_scores: dict, tables: dict, scorers: Scorers,
                   scorer: str) -> None:
    """scores.csv, the chosen scorer's DCASE files and Table I, every scorer's table."""
    scores = all_scores[scorer]
    _write_scores_csv(out_dir / "scores.csv", clips, scores, all_scores)
    for key in sorted(set(keys)):
        idx = [i for i, k_ in enumerate(keys) if k_ == key]
        threshold = scorers.thresholds[scorer].get(clip_key(*key), math.inf)
        write_dcase_files(out_dir, *key, [clips[i].path.name for i in idx],
                          [float(scores[i]) for i in idx], threshold)
    id_results, types, average = tables[scorer]
    (out_dir / "results.md").write_text(
        format_table(types, average, id_results, markdown=True) + "\n")
    write_results_csv(out_dir / "results.csv", types, average, id_results)
    (out_dir / "scorers.md").write_text(
        format_scorer_table(tables, scorer, True, markdown=True) + "\n")
    _write_scorers_csv(out_dir / "scorers.csv", tables)


def _plots(out_dir: Path, clips, scores: np.ndarray, result: ModelPass, seed: int) -> list:
    from estm_ref.pipeline.plots import plot_roc_curves, plot_tsne

    labelled = [i for i, c in enumerate(clips) if c.label is not None]
    figures = plot_roc_curves(out_dir, [clips[i] for i in labelled], scores[labelled])
    return figures + [plot_tsne(out_dir / "tsne.png", clips, result.embeddings, seed=seed)]


def _evaluate(clips, scores: np.ndarray):
    return summarise_rows((c.machine_type, c.machine_id, c.label, s) for c, s in zip(clips, scores))


def summarise_rows(rows) -> tuple:
    """(machine_type, machine_id, label, score) per clip -> (per-ID results, per-type results,
    Average): one entry of `format_scorer_table`'s tables."""
    id_results = evaluate_ids(rows)
    return (id_results, *summarise_types(id_results))


def _write_scores_csv(path: Path, clips, scores: np.ndarray, all_scores: dict) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "machine_type", "machine_id", "label", "score",
                    *(f"score_{name}" for name in all_scores)])
        for i, clip in enumerate(clips):
            w.writerow([clip.path, clip.machine_type, clip.machine_id,
                        "" if clip.label is None else clip.label, format_score(scores[i]),
                        *(format_score(s[i]) for s in all_scores.values())])


def format_scorer_table(tables: dict, chosen: str, per_id: bool = False,
                        markdown: bool = False) -> str:
    """Every scorer's AUC / pAUC (%) side by side, one row per machine type (and ID), then
    Average; the chosen scorer (the DCASE files') marked with *."""
    names = list(tables)
    first_ids, first_types, first_avg = tables[names[0]]
    rows = []
    for t_index, t in enumerate(first_types):
        rows.append((t.machine_type, [(tables[n][1][t_index].auc, tables[n][1][t_index].pauc)
                                      for n in names]))
        if per_id:
            for i, r in enumerate(first_ids):
                if r.machine_type == t.machine_type:
                    rows.append((f"  id_{r.machine_id}",
                                 [(tables[n][0][i].auc, tables[n][0][i].pauc) for n in names]))
    rows.append(("Average", [(tables[n][2].auc, tables[n][2].pauc) for n in names]))
    heads = [f"{n}{'*' if n == chosen else ''}" for n in names]
    if markdown:
        lines = ["| Machine | " + " | ".join(f"{h} AUC | {h} pAUC" for h in heads) + " |",
                 "|---|" + "---:|---:|" * len(names)]
        lines += ["| " + name.strip() + " | " + " | ".join(f"{pct(a)} | {pct(p)}" for a, p in v)
                  + " |" for name, v in rows]
        return "\n".join(lines)
    width = max(len("Machine"), *(len(r[0]) for r in rows))
    top = " " * width + "".join(f"  {h:>17}" for h in heads)
    sub = f"{'Machine':<{width}}" + "  " + "  ".join(f"{'AUC':>8} {'pAUC':>8}" for _ in names)
    lines = [top, sub, "-" * len(sub)]
    lines += [f"{name:<{width}}" + "  " + "  ".join(f"{pct(a):>8} {pct(p):>8}" for a, p in v)
              for name, v in rows]
    return "\n".join(lines)


def _write_scorers_csv(path: Path, tables: dict) -> None:
    def num(v: float) -> str:
        return "" if math.isnan(v) else f"{v:.6f}"

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scorer", "level", "machine_type", "machine_id", "auc", "pauc"])
        for name, (id_results, types, average) in tables.items():
            for r in id_results:
                w.writerow([name, "id", r.machine_type, r.machine_id, num(r.auc), num(r.pauc)])
            for t in types:
                w.writerow([name, "type", t.machine_type, "", num(t.auc), num(t.pauc)])
            w.writerow([name, "average", "", "", num(average.auc), num(average.pauc)])


def score_files(run_dir: Path, files: Sequence[Path], machine_type: str | None = None,
                machine_id: str | None = None, device: str = "auto",
                scorer: str = DEFAULT_SCORER, data_roots: Sequence[Path] | None = None,
                scorer_params: Mapping[str, Any] | None = None) -> list[dict]:
    """Score, threshold and decision of each file under `scorer`, as `test_run` scores it.
    A file that cannot be scored (unreadable, unknown machine, bad name) gets an "error"
    entry instead; the others are still scored."""
    make_scorer(scorer, scorer_params)
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    scorers = _scorers_of(run, run_dir, data_roots, dev, [scorer], scorer_params, False)
    index = {c: i for i, c in enumerate(run.class_list)}
    results = []
    for path in map(Path, files):
        try:
            key = identify_clip(path, machine_type, machine_id)
            if key not in index:
                known = ", ".join(clip_key(*c) for c in run.class_list)
                raise InputError(f"{path}: the model was not trained on {clip_key(*key)} "
                                 f"(it knows {known})")
            wave = torch.from_numpy(load_clip(path, run.cfg.features))[None].to(dev)
        except InputError as err:
            results.append({"file": str(path), "error": str(err)})
            continue
        cls = torch.tensor([index[key]], device=dev)
        score = float(scorers.score(scorer, [key], pass_batch(run.model, wave, cls, run.cfg))[0])
        threshold = scorers.thresholds[scorer].get(clip_key(*key))
        results.append({"file": str(path), "machine_type": key[0], "machine_id": key[1],
                        "scorer": scorer, "score": score, "threshold": threshold,
                        "decision": None if threshold is None else int(score > threshold)})
    return results
