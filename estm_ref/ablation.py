"""`estm ablation`: the paper's Table II grid, backbone (SMamba, TMamba, STMamba) x input
(STgram, ESTgram), trained and tested with one shared config."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from estm_ref.config import Config, add_config_arguments, overrides_from_args, with_overrides
from estm_ref.demo import demo_config, generate_demo_data

log = logging.getLogger(__name__)

VARIANTS = [("spectral", "SMamba"), ("temporal", "TMamba"), ("both", "STMamba")]
FEATURES = [("stgram", "STgram"), ("estgram", "ESTgram")]


def run_ablation(out: Path, data_roots: list[Path] | None, base: Config, device: str = "auto",
                 progress: bool = True) -> dict[tuple[str, str], tuple[float, float]]:
    """Train and test every (paths, features) pair with one shared config."""
    from estm_ref.evaluate import test_run
    from estm_ref.train import train

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
                  cache_dir=out / "cache")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", action="append", type=Path,
                        help="data root(s); default: generate the demo's synthetic set in OUT/data")
    parser.add_argument("--out", type=Path, default=Path("estm-ablation"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--demo-config", action="store_true",
                        help="start from the demo's small config instead of the paper defaults")
    parser.add_argument("--no-progress", action="store_true")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    base = demo_config() if args.demo_config else Config()
    base = with_overrides(base, overrides_from_args(args))
    results = run_ablation(args.out, args.data_root, base, args.device, not args.no_progress)
    print("\nTable II (average AUC / pAUC, %):\n")
    print(format_ablation(results))
    return 0
