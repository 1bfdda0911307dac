"""How much data ESTM needs: AUC against training clips per ID, beside both baselines.

    python bench/learning_curve.py --work DIR [--points 30 100 300] [--seeds 0 1] [--epochs N]

On the calibrated generator at its default difficulty (3 machine types x 3 IDs by default,
one of each sound family), one fixed set of test clips (half anomalous) serves every point;
the training set of a point is the first N training clips of each ID (by clip index), so the
sets are nested: clip i of an ID has the same bytes whatever N (`estm_ref.synth.generate`).
Each point (clips per ID, seed) trains ESTM with the small-data preset, scores the test
clips under every scorer, measures ID accuracy (bench/id_accuracy.py), and runs the official
autoencoder baseline and the per-ID Mahalanobis detector on the same clips. The seed seeds
ESTM's and the autoencoder's training; the data and the Mahalanobis detector do not depend
on it.

Resumable: everything lives under --work. `data/` holds the generated clips and one
symlinked root per point size; `points/n<N>-seed<S>/` one folder per point, with the ESTM run
folder (a killed training resumes from its last finished epoch), each finished stage's
figures as JSON, and `result.json` once the point is done: rerunning skips finished points
and stages. The work folder keeps its data and training settings in `settings.json`; a rerun
with other settings is refused. After every point, the CSV, Markdown and plot in --out are
rewritten from every finished point of the work folder (`learning-curve-<device>.*`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_OUT, git_commit, setup_logging  # noqa: E402
from bench.id_accuracy import id_accuracy  # noqa: E402
from bench.learning_curve_report import (BASELINES, PRESET, RESULT_NAME,  # noqa: E402, F401
                                         estm_detector, write_results)
from estm_ref.baselines.autoencoder import AutoencoderConfig, divergences  # noqa: E402
from estm_ref.baselines.run import run_baselines  # noqa: E402
from estm_ref.config import Config, preset_overrides, with_overrides  # noqa: E402
from estm_ref.data import scan_roots  # noqa: E402
from estm_ref.errors import InputError, TrainingError  # noqa: E402
from estm_ref.pipeline import run_dir as rd  # noqa: E402
from estm_ref.pipeline.evaluate import test_run  # noqa: E402
from estm_ref.pipeline.metrics import evaluate_ids, summarise_types  # noqa: E402
from estm_ref.synth.config import SynthConfig  # noqa: E402
from estm_ref.synth.generate import generate  # noqa: E402

log = logging.getLogger("bench")

DEFAULT_TYPES = ("fan", "slider", "ToyCar")  # one rotating, one cyclic, one toy sound model
ESTM_NAME, BASELINES_NAME, SETTINGS_NAME = "estm.json", "baselines.json", "settings.json"


# ----------------------------------------------------------------------------- settings and data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path,
                        help="folder of the data and of every point's run (kept between runs)")
    parser.add_argument("--points", nargs="+", type=int, default=[30, 100, 300],
                        help="training clips per ID, one point each (default %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="training seeds per point (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"ESTM epochs (default: the {PRESET} preset's)")
    parser.add_argument("--ae-epochs", type=int, default=AutoencoderConfig().epochs,
                        help="autoencoder epochs (official: %(default)s)")
    parser.add_argument("--types", nargs="+", default=list(DEFAULT_TYPES), metavar="TYPE",
                        help=f"machine types (default {' '.join(DEFAULT_TYPES)})")
    parser.add_argument("--ids-per-type", type=int, default=3)
    parser.add_argument("--test-per-id", type=int, default=100,
                        help="test clips per ID, half anomalous (default %(default)s: at 3 IDs a "
                             "type's AUC spreads about 3 points from the test clips alone, 5 "
                             "at 40)")
    parser.add_argument("--data-seed", type=int, default=0, help="generator seed")
    parser.add_argument("--duration-s", type=float, default=SynthConfig().duration_s,
                        help="clip length in seconds (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes that render clips and train the autoencoders")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the results")
    parser.add_argument("--quiet", action="store_true", help="only warnings, errors and tables")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """InputError (one line, exit 2) for anything the run would trip over later."""
    if any(n < 1 for n in args.points) or len(set(args.points)) != len(args.points):
        raise InputError(f"--points must be distinct integers >= 1, got {args.points}")
    if any(s < 0 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        raise InputError(f"--seeds must be distinct integers >= 0, got {args.seeds}")
    for name in ("epochs", "ae_epochs", "jobs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.test_per_id < 2:
        raise InputError(f"--test-per-id must be >= 2 (normal and anomalous clips), "
                         f"got {args.test_per_id}")
    if args.work.exists() and not args.work.is_dir():
        raise InputError(f"--work {args.work} is not a folder")
    synth_config(args, 0)  # the generator checks types, IDs, seed and duration


def synth_config(args: argparse.Namespace, train_per_id: int, test: bool = False) -> SynthConfig:
    return SynthConfig(seed=args.data_seed, ids_per_type=args.ids_per_type,
                       train_per_id=train_per_id, test_per_id=args.test_per_id if test else 0,
                       duration_s=args.duration_s, types=tuple(args.types))


def estm_config(epochs: int, seed: int) -> Config:
    """The small-data preset as it is; only the number of epochs and the seed are set."""
    return with_overrides(with_overrides(Config(), preset_overrides(PRESET)),
                          {"train": {"epochs": epochs, "seed": seed}})


def settings_of(args: argparse.Namespace) -> dict:
    """What every point of one work folder shares."""
    return {"types": list(args.types), "ids_per_type": args.ids_per_type,
            "test_per_id": args.test_per_id, "data_seed": args.data_seed,
            "duration_s": args.duration_s, "preset": PRESET,
            "epochs": args.epochs or preset_overrides(PRESET)["train"]["epochs"],
            "ae_epochs": args.ae_epochs}


def check_settings(work: Path, settings: dict) -> None:
    path = work / SETTINGS_NAME
    if path.exists():
        saved = json.loads(path.read_text())
        differ = [f"{k}: {saved.get(k)!r} there, {v!r} now" for k, v in settings.items()
                  if saved.get(k) != v]
        if differ:
            raise InputError(f"{work} holds a curve with other settings ({'; '.join(differ)}); "
                             "use another --work folder")
        return
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def fingerprint(files: list[Path], root: Path) -> str:
    """sha256 over the files' names and bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare_data(args: argparse.Namespace, work: Path) -> str:
    """Generate the test set once and enough training clips for the largest point; return
    the test set's fingerprint. Markers record what is complete, so a killed generation
    is simply redone (the same bytes)."""
    root = work / "data" / "all"
    test_marker, train_marker = work / "data" / "test.json", work / "data" / "train.json"
    if not test_marker.exists():
        log.info("generating the test set: %d clips per ID", args.test_per_id)
        generate(root, synth_config(args, 0, test=True), progress=not args.no_progress,
                 jobs=args.jobs)
        test_files = [c.path for c in scan_roots(root).select(split="test")]
        test_marker.write_text(json.dumps({"clips": len(test_files),
                                           "sha256": fingerprint(test_files, root)}) + "\n")
    needed = max(args.points)
    have = json.loads(train_marker.read_text())["train_per_id"] if train_marker.exists() else 0
    if have < needed:
        log.info("generating training clips: %d per ID", needed)
        generate(root, synth_config(args, needed), progress=not args.no_progress, jobs=args.jobs)
        train_marker.write_text(json.dumps({"train_per_id": needed}) + "\n")
    return json.loads(test_marker.read_text())["sha256"]


def clip_index(path: Path) -> int:
    """NNNNNNNN of <label>_id_XX_NNNNNNNN.wav."""
    return int(path.stem.rsplit("_", 1)[1])


def point_root(work: Path, clips_per_id: int) -> Path:
    """A data root whose training clips are the first `clips_per_id` of each ID (symlinks)
    and whose test folders are the shared test set's; made once, complete or not at all."""
    data = work / "data"
    root = data / f"n{clips_per_id:04d}"
    if root.exists():
        return root
    staging = data / f".{root.name}.partial"
    if staging.exists():  # left by a killed run; rmtree removes links, not their targets
        shutil.rmtree(staging)
    full = data / "all"
    for clip in scan_roots(full).select(split="train"):
        if clip_index(clip.path) < clips_per_id:
            link = staging / clip.machine_type / "train" / clip.path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(clip.path, link.parent))
    for type_dir in sorted(p for p in full.iterdir() if p.is_dir()):
        (staging / type_dir.name).mkdir(parents=True, exist_ok=True)
        (staging / type_dir.name / "test").symlink_to(os.path.relpath(type_dir / "test",
                                                                      staging / type_dir.name))
    staging.rename(root)
    return root


# ----------------------------------------------------------------------------- one point


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def summary(rows) -> dict:
    """(type, id, label, score) rows -> {"types": {type: [auc, pauc]}, "average": [...]}, in %."""
    types, average = summarise_types(evaluate_ids(rows))
    return {"types": {t.machine_type: [100 * t.auc, 100 * t.pauc] for t in types},
            "average": [100 * average.auc, 100 * average.pauc]}


def epoch_metrics(run: Path) -> list[dict]:
    """metrics.csv, one row per epoch (the last row of an epoch written twice wins)."""
    import csv

    with open(run / rd.METRICS_NAME, newline="") as f:
        rows = {int(r["epoch"]): r for r in csv.DictReader(f)}
    return [rows[e] for e in sorted(rows)]


def train_and_test_estm(args, folder: Path, root: Path, epochs: int, seed: int) -> dict:
    from estm_ref.pipeline.train import train

    run = folder / "estm"
    state = rd.load(run / rd.CHECKPOINT_NAME) if (run / rd.CHECKPOINT_NAME).exists() else None
    done = (state is not None and int(state["epoch"]) >= epochs
            and (run / rd.EMBEDDINGS_NAME).exists())
    if not done:
        if state is not None:
            log.info("%s: resuming ESTM after epoch %d of %d", folder.name, state["epoch"], epochs)
        else:
            log.info("%s: training ESTM (%s preset, %d epochs)", folder.name, PRESET, epochs)
        train(estm_config(epochs, seed), [root], run, device=args.device,
              resume=state is not None, force=state is None, progress=not args.no_progress,
              epoch_overrides={"epochs": epochs} if state is not None else None)
    log.info("%s: scoring the test clips under every scorer", folder.name)
    result = test_run(run, [root], run / rd.TEST_NAME, args.device, plots=False,
                      progress=not args.no_progress)
    accuracy = id_accuracy(run, [root], args.device)
    metrics = epoch_metrics(run)
    return {
        "scorers": {name: {"types": {t.machine_type: [100 * t.auc, 100 * t.pauc] for t in types},
                           "average": [100 * average.auc, 100 * average.pauc]}
                    for name, (_, types, average) in result["scorers"].items()},
        "train_s": sum(float(r["seconds"]) for r in metrics), "epochs": len(metrics),
        "train_accuracy": float(metrics[-1]["accuracy"]),
        "id_accuracy": {name: acc for name, (acc, _) in accuracy.items()},
    }


def run_baseline(args, name: str, root: Path, seed: int) -> dict:
    index = scan_roots(root)
    ae_cfg = AutoencoderConfig(epochs=args.ae_epochs, seed=seed)
    start = time.perf_counter()
    run = run_baselines(index.select(split="train"), index.select(split="test"), ae_cfg, [name],
                        progress=not args.no_progress, jobs=args.jobs)
    return {**summary(run.scores[name]), "train_s": time.perf_counter() - start,
            "epochs": args.ae_epochs if name == "autoencoder" else None}


def run_point(args, work: Path, settings: dict, test_set: str, clips_per_id: int,
              seed: int) -> bool:
    """Finish one point; False when it was already finished."""
    folder = work / "points" / f"n{clips_per_id:04d}-seed{seed}"
    if (folder / RESULT_NAME).exists():
        log.info("%s: finished before, skipped", folder.name)
        return False
    folder.mkdir(parents=True, exist_ok=True)
    root = point_root(work, clips_per_id)
    estm = read_json(folder / ESTM_NAME)
    if estm is None:
        estm = train_and_test_estm(args, folder, root, settings["epochs"], seed)
        write_json(folder / ESTM_NAME, estm)
    baselines = read_json(folder / BASELINES_NAME) or {}
    for name in BASELINES:
        if name not in baselines:
            log.info("%s: baseline %s", folder.name, name)
            baselines[name] = run_baseline(args, name, root, seed)
            write_json(folder / BASELINES_NAME, baselines)
    detectors = {estm_detector(name): {**figures, "train_s": estm["train_s"],
                                       "epochs": estm["epochs"]}
                 for name, figures in estm["scorers"].items()}
    detectors.update({BASELINES[name]: figures for name, figures in baselines.items()})
    write_json(folder / RESULT_NAME, {
        "clips_per_id": clips_per_id, "seed": seed, "commit": git_commit()[0],
        "test_set": test_set[:12], "detectors": detectors,
        "estm": {k: estm[k] for k in ("train_accuracy", "id_accuracy")}})
    log.info("%s: finished; average AUC %s", folder.name, ", ".join(
        f"{name} {d['average'][0]:.2f}" for name, d in detectors.items()))
    return True


# ----------------------------------------------------------------------------- results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    try:
        check_args(args)
        settings = settings_of(args)
        work = args.work
        check_settings(work, settings)
        for line in divergences(AutoencoderConfig(epochs=args.ae_epochs)):
            log.warning("autoencoder differs from the official recipe: %s", line)
        test_set = prepare_data(args, work)
        todo = [(n, s) for n in sorted(args.points) for s in args.seeds]
        new = 0
        for i, (n, seed) in enumerate(todo, 1):
            log.info("point %d of %d: %d clips per ID, seed %d", i, len(todo), n, seed)
            if run_point(args, work, settings, test_set, n, seed):
                new += 1
                for path in write_results(work, settings, args.out):
                    log.info("wrote %s", path)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    log.info("%d point(s) finished now, %d before", new, len(todo) - new)
    if not new:  # nothing new: the tables still go to --out, from the points there are
        for path in write_results(work, settings, args.out):
            log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
