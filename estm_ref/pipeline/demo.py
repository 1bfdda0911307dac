"""The demo (`estm demo`), the embedded default.

The demo generates a small synthetic DCASE 2020 set at the generator's default
difficulty, trains a small ESTM on it (the small-data preset), tests it under every
scorer and, on the same test clips, two baselines that are not ESTM: the official DCASE
2020 autoencoder and a per-ID Mahalanobis distance on clip log-mel statistics
(`estm_ref.baselines`). It prints one table of all of them. Its sizes are chosen to
finish in a few minutes on a 2-core CPU; the paper's protocol is `estm train` with the
defaults on the real data.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from estm_ref.baselines.autoencoder import AutoencoderConfig, divergences
from estm_ref.baselines.run import run_baselines
from estm_ref.config import PRESETS, Config, with_overrides
from estm_ref.data import scan_roots
from estm_ref.pipeline.evaluate import format_scorer_table, summarise_rows, test_run
from estm_ref.pipeline.plots import require_matplotlib
from estm_ref.pipeline.run_dir import CACHE_NAME
from estm_ref.pipeline.train import train
from estm_ref.synth.generate import GENERATOR_VERSION, generate

log = logging.getLogger(__name__)

# Small data for a CPU, at the generator's calibrated difficulty (SynthConfig's anomaly
# strength and SNR); the model and its training are the small-data preset
# (docs/design.md, "Small data"): with the paper's margin m = 0.7 on this few clips the
# embeddings settle where cos(theta + m) is flat.
DEMO_DATA = {"ids_per_type": 4, "train_per_id": 30, "test_per_id": 20}
# 20 epochs instead of the preset's 150, and no speed classes, so that the demo fits its
# budget of about 5 minutes on a 2-core CPU (docs/design.md, "Demo"); speed classes slow
# training and need more epochs than that.
DEMO_CONFIG = {**PRESETS["small-data"],
               "train": {**PRESETS["small-data"]["train"], "epochs": 20, "speed_classes": 0}}
# The official autoencoder recipe trains 100 epochs; the demo's time allows DEMO_AE_EPOCHS
# (its divergence from the recipe is printed with the table).
DEMO_AE_EPOCHS = 10
DEMO_BASELINES = {"autoencoder": "AE baseline", "mahalanobis": "stats Mahalanobis"}
# `--tiny`: an end-to-end check for the test suite, far too small to learn much.
TINY_DATA = {"ids_per_type": 2, "train_per_id": 6, "test_per_id": 4, "types": ["fan", "valve"]}
TINY_CONFIG = {"model": {"d_model": 32, "depth": 1, "d_state": 8, "scan_backend": "ref"},
               "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3}}
TINY_AE_EPOCHS = 1


def demo_config(tiny: bool = False) -> Config:
    return with_overrides(Config(), TINY_CONFIG if tiny else DEMO_CONFIG)


def generate_demo_data(data_dir: Path, tiny: bool, seed: int, progress: bool,
                       jobs: int = 1) -> None:
    # the marker sits beside the data root, not in it: the loader reports stray files
    marker = data_dir.with_name(data_dir.name + ".complete")
    sizes = dict(TINY_DATA if tiny else DEMO_DATA)
    stamp = f"generator={GENERATOR_VERSION} seed={seed} {sorted(sizes.items())}\n"
    if marker.exists() and marker.read_text() == stamp:
        log.info("reusing the synthetic data in %s", data_dir)
        return
    if data_dir.exists():  # a different or unfinished set: start clean
        shutil.rmtree(data_dir)
    marker.unlink(missing_ok=True)
    generate(data_dir, seed=seed, progress=progress, jobs=jobs, **sizes)
    marker.write_text(stamp)


def run_demo(out: Path, tiny: bool = False, overrides: dict | None = None, device: str = "auto",
             progress: bool = True, seed: int = 0) -> dict:
    require_matplotlib()  # the demo draws its figures at the end: fail now, not then
    start = time.perf_counter()
    out = Path(out)
    data_dir, run_dir = out / "data", out / "run"
    # rendering and the autoencoders use every core (worker processes; same results)
    jobs = 1 if tiny else os.cpu_count() or 1
    generate_demo_data(data_dir, tiny, seed, progress, jobs)
    cfg = with_overrides(demo_config(tiny), overrides or {})
    train(cfg, [data_dir], run_dir, device=device, force=True, progress=progress,
          cache_dir=out / CACHE_NAME)
    result = test_run(run_dir, [data_dir], device=device, per_id=False, progress=progress)
    ae_cfg = replace(AutoencoderConfig(), epochs=TINY_AE_EPOCHS if tiny else DEMO_AE_EPOCHS,
                     seed=seed)
    index = scan_roots([data_dir])
    baselines = run_baselines(index.select(split="train"), index.select(split="test"), ae_cfg,
                              tuple(DEMO_BASELINES), progress, jobs)
    tables = {f"ESTM {name}": table for name, table in result["scorers"].items()}
    tables.update((label, summarise_rows(baselines.scores[name]))
                  for name, label in DEMO_BASELINES.items())
    result["demo_table"] = format_scorer_table(tables, f"ESTM {result['scorer']}")
    result["ae_divergences"] = divergences(ae_cfg)
    result["baselines_n_test"] = baselines.n_test
    result["seconds"] = time.perf_counter() - start
    return result
