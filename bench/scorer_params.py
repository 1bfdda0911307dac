"""Average AUC / pAUC of a trained run under every scorer and a grid of scorer parameters
(knn's k, the number of k-means centres), from one pass of the model over the test clips.
Usage:
    python bench/scorer_params.py --run RUN --data-root DIR [--k 1 3 5 10] [--n-centres 1 2 4 8]

How the defaults of `estm test --k` and `--n-centres` were chosen (docs/design.md, "Scoring"):
on a development set, never on the data a result is reported for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estm_ref.data import ClipDataset, scan_roots  # noqa: E402
from estm_ref.pipeline.metrics import evaluate_ids, pct, summarise_types  # noqa: E402
from estm_ref.pipeline.run_dir import load_run  # noqa: E402
from estm_ref.pipeline.model_pass import pass_dataset  # noqa: E402
from estm_ref.pipeline.scoring import fit_scorers  # noqa: E402
from estm_ref.pipeline.training_pass import ensure_training_pass  # noqa: E402
from estm_ref.runtime import resolve_device  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data-root", action="append", required=True, type=Path)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--n-centres", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    dev = resolve_device(args.device)
    run = load_run(args.run, dev)
    training = ensure_training_pass(run, args.run, args.data_root, dev, progress=False)
    known = set(run.class_list)
    clips = [c for c in scan_roots(args.data_root).select(split="test")
             if (c.machine_type, c.machine_id) in known and c.label is not None]
    dataset = ClipDataset(clips, run.class_list, run.cfg.features, progress=False)
    result = pass_dataset(run.model, dataset, run.cfg, dev, progress=False)
    keys = [(c.machine_type, c.machine_id) for c in dataset.clips]

    def row(label: str, scores) -> str:
        ids = evaluate_ids((c.machine_type, c.machine_id, c.label, s)
                           for c, s in zip(dataset.clips, scores))
        types, average = summarise_types(ids)
        per_type = "  ".join(f"{t.machine_type} {pct(t.auc)}" for t in types)
        return f"{label:<18} {pct(average.auc):>7} {pct(average.pauc):>7}   {per_type}"

    print(f"{'scorer':<18} {'AUC':>7} {'pAUC':>7}   AUC per type ({len(keys)} test clips)")
    settings = [("nll", "nll", {"margin": True}), ("nll (no margin)", "nll", {"margin": False})]
    settings += [(f"knn k={k}", "knn", {"k": k}) for k in args.k]
    settings += [(f"centres n={n}", "centres", {"n_centres": n, "seed": run.cfg.train.seed})
                 for n in args.n_centres]
    settings.append(("mahalanobis", "mahalanobis", {}))
    for label, name, params in settings:
        print(row(label, fit_scorers(training, [name], params).score(name, keys, result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
