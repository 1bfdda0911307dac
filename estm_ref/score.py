"""`estm score`: anomaly score, threshold and decision for single WAV files."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

ID_PATTERN = re.compile(r"id_(\d{2})")


def identify(path: Path, machine_type: str | None, machine_id: str | None) -> tuple[str, str]:
    """(type, id): given explicitly, else the type from the folder `<type>/<split>/file.wav`
    and the id from `id_XX` in the file name."""
    if machine_type is None:
        machine_type = path.resolve().parent.parent.name
    if machine_id is None:
        match = ID_PATTERN.search(path.name)
        if match is None:
            raise ValueError(f"{path}: no id_XX in the file name; pass --id")
        machine_id = match.group(1)
    return machine_type, machine_id


def score_files(run_dir: Path, files: list[Path], machine_type: str | None = None,
                machine_id: str | None = None, device: str = "auto",
                with_margin: bool = True) -> list[dict]:
    from estm_ref.data import load_clip
    from estm_ref.evaluate import load_run
    from estm_ref.model import own_class_nll
    from estm_ref.train import autocast_for, resolve_device

    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    index = {c: i for i, c in enumerate(run.class_list)}
    results = []
    for path in files:
        key = identify(Path(path), machine_type, machine_id)
        if key not in index:
            known = ", ".join(f"{t}/id_{i}" for t, i in run.class_list)
            raise ValueError(f"{path}: the model was not trained on {key[0]}/id_{key[1]} "
                             f"(it knows {known})")
        wave = torch.from_numpy(load_clip(Path(path), run.cfg.features))[None].to(dev)
        cls = torch.tensor([index[key]], device=dev)
        with torch.no_grad(), autocast_for(run.cfg, dev):
            logits = run.model(wave, cls if with_margin else None).logits
        score = float(own_class_nll(logits, cls)[0])
        threshold = run.thresholds.get(f"{key[0]}/id_{key[1]}")
        results.append({"file": str(path), "machine_type": key[0], "machine_id": key[1],
                        "score": score, "threshold": threshold,
                        "decision": None if threshold is None else int(score > threshold)})
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run folder written by train")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.wav")
    parser.add_argument("--type", dest="machine_type", help="machine type (default: from folder)")
    parser.add_argument("--id", dest="machine_id", help="machine id, e.g. 02 (default: from name)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-margin", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    results = score_files(args.run, args.files, args.machine_type, args.machine_id, args.device,
                          not args.no_margin)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        threshold = "n/a" if r["threshold"] is None else f"{r['threshold']:.4f}"
        decision = {None: "n/a", 0: "normal", 1: "ANOMALY"}[r["decision"]]
        print(f"{r['file']}: {r['machine_type']} id_{r['machine_id']}  score {r['score']:.4f}  "
              f"threshold {threshold}  -> {decision}")
    return 0
