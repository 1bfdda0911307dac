"""How far a machine type's average AUC moves from the choice of test clips alone.
Usage:
    python bench/auc_noise.py                       # the calibration set: 4 IDs x 20 + 20
    python bench/auc_noise.py --test-per-id 200     # 100 normal + 100 anomalous per ID

A detector whose true AUC for a type is exactly the published autoencoder figure still
reports another figure on any finite test set. This simulates that spread: per draw, each
ID gets `normal` and `anomalous` scores from two unit-variance normal distributions whose
means are set so that the true AUC is the target (the equal-variance binormal model,
d' = sqrt(2) * Phi^-1(AUC)); the type's figure is the average of its IDs' empirical AUCs.
It prints per type the standard deviation of that figure, the chance that it falls inside
+-band of the target, and the chance that every type does at every seed (draws taken as
independent). It measures the test-set size, not the generator: units, fault kinds and
the autoencoder's own training add to it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estm_ref.baselines.run import PUBLISHED_AE  # noqa: E402


def empirical_auc(anomalous: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """AUC of each row: (draws, n1) and (draws, n0) scores -> (draws,), ties count half."""
    greater = (anomalous[:, :, None] > normal[:, None, :]).mean(axis=(1, 2))
    ties = (anomalous[:, :, None] == normal[:, None, :]).mean(axis=(1, 2))
    return greater + 0.5 * ties


def type_auc_draws(true_auc: float, n_ids: int, n_normal: int, n_anomalous: int, draws: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(draws,) averages over `n_ids` IDs of the empirical AUC under the binormal model."""
    if not 0.0 < true_auc < 1.0:
        raise ValueError(f"true AUC must be in (0, 1), got {true_auc}")
    if min(n_ids, n_normal, n_anomalous, draws) < 1:
        raise ValueError("IDs, clips and draws must all be at least 1")
    shift = math.sqrt(2.0) * norm.ppf(true_auc)
    per_id = [empirical_auc(rng.normal(shift, 1.0, (draws, n_anomalous)),
                            rng.normal(0.0, 1.0, (draws, n_normal))) for _ in range(n_ids)]
    return np.mean(per_id, axis=0)


def hanley_mcneil_sd(auc: float, n_normal: int, n_anomalous: int) -> float:
    """Hanley & McNeil's (1982) standard error of one empirical AUC."""
    q1, q2 = auc / (2.0 - auc), 2.0 * auc ** 2 / (1.0 + auc)
    variance = (auc * (1.0 - auc) + (n_anomalous - 1) * (q1 - auc ** 2)
                + (n_normal - 1) * (q2 - auc ** 2)) / (n_normal * n_anomalous)
    return math.sqrt(variance)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ids-per-type", type=int, default=4)
    parser.add_argument("--test-per-id", type=int, default=40,
                        help="test clips per ID, half of them anomalous (the synth layout)")
    parser.add_argument("--band", type=float, default=6.0, help="AUC points either side")
    parser.add_argument("--seeds", type=int, default=3, help="independent sets that must all pass")
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_normal = args.test_per_id - args.test_per_id // 2
    n_anomalous = args.test_per_id // 2
    rng = np.random.default_rng(args.seed)
    print(f"{args.ids_per_type} IDs x ({n_normal} normal + {n_anomalous} anomalous) test clips, "
          f"band +-{args.band:g}, {args.draws} draws")
    print(f"{'machine type':<12} {'true AUC':>9} {'sd':>6} {'P(inside)':>10}")
    all_inside = 1.0
    for machine_type, (auc, _) in PUBLISHED_AE.items():
        figures = 100.0 * type_auc_draws(auc / 100.0, args.ids_per_type, n_normal, n_anomalous,
                                         args.draws, rng)
        inside = float(np.mean(np.abs(figures - auc) <= args.band))
        all_inside *= inside ** args.seeds
        print(f"{machine_type:<12} {auc:>9.2f} {figures.std():>6.2f} {inside:>10.3f}")
    print(f"every type inside at {args.seeds} seeds: {all_inside:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
