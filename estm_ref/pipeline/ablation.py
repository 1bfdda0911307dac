"""The ablation (`estm ablation`): the paper's Table II grid, backbone (SMamba, TMamba, STMamba) x input
(STgram, ESTgram), trained and tested with one shared config."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from estm_ref.config import FEATURE_NAMES, PATH_NAMES, Config, with_overrides
from estm_ref.pipeline.demo import generate_demo_data
from estm_ref.pipeline.evaluate import test_run
from estm_ref.pipeline.run_dir import CACHE_NAME
from estm_ref.pipeline.train import train

log = logging.getLogger(__name__)

VARIANTS = list(PATH_NAMES.items())  # (paths, Table II name)
FEATURES = list(FEATURE_NAMES.items())  # (features, Table II name)


def run_ablation(out: Path, data_roots: list[Path] | None, base: Config, device: str = "auto",
                 progress: bool = True) -> dict[tuple[str, str], tuple[float, float]]:
    """Train and test every (paths, features) pair with one shared config."""
    out = Path(out)
    if not data_roots:
        data_roots = [out / "data"]
        generate_demo_data(data_roots[0], tiny=False, seed=base.train.seed, progress=progress)
    results = {}
    for paths, _ in VARIANTS:
        for features, _ in FEATURES:
            cfg = with_overrides(base, {"model": {"paths": paths}, "features": {"features": features}})
            run_dir = out / f"{paths}-{features}"
            log.info("ablation: paths=%s features=%s -> %s", paths, features, run_dir)
            train(cfg, data_roots, run_dir, device=device, force=True, progress=progress,
                  cache_dir=out / CACHE_NAME)
            result = test_run(run_dir, data_roots, device=device, plots=False, progress=progress)
            results[(paths, features)] = (result["average"].auc, result["average"].pauc)
    return results


def format_ablation(results: dict[tuple[str, str], tuple[float, float]]) -> str:
    """Table II layout: average AUC / pAUC (%) per backbone variant and input feature."""
    def cell(v: tuple[float, float]) -> str:
        return " / ".join("n/a" if math.isnan(x) else f"{100 * x:.2f}" for x in v)

    head = f"{'Backbone':<10}" + "".join(f"  {name:>15}" for _, name in FEATURES)
    lines = [head, "-" * len(head)]
    for paths, name in VARIANTS:
        lines.append(f"{name:<10}" + "".join(f"  {cell(results[(paths, f)]):>15}"
                                               for f, _ in FEATURES))
    return "\n".join(lines)
