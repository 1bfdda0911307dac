"""The calibration report's table and target checks (bench/baselines.py, bench/calibrate.py)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baselines import summary_rows, table  # noqa: E402
from bench.calibrate import checks  # noqa: E402
from estm_ref.baselines.run import PUBLISHED_AE, BaselineRun  # noqa: E402


def _run(ae_auc_by_type: dict[str, float]) -> BaselineRun:
    """Scores whose AUC per type is exactly the given fraction (10 normals, 10 anomalies)."""
    run = BaselineRun()
    rows = {"autoencoder": [], "mahalanobis": [], "rms": []}
    for machine_type, auc in ae_auc_by_type.items():
        wins = int(round(auc * 100))  # of the 10 x 10 anomaly-normal pairs
        normals = [float(i) for i in range(10)]
        # anomaly a lies just above `beat` normals; the beats add up to `wins`
        anomalies = [min(10, max(0, wins - 10 * (9 - a))) - 0.5 for a in range(10)]
        for name, lab_scores in rows.items():
            lab_scores += [(machine_type, "00", 0, s) for s in normals]
            lab_scores += [(machine_type, "00", 1, s if name == "autoencoder" else 20.0)
                           for s in anomalies]
    run.scores = rows
    return run


def test_summary_rows_put_published_figures_beside_and_checks_judge_them():
    published = {t: auc / 100 for t, (auc, _) in PUBLISHED_AE.items()}
    rows = summary_rows(_run({t: round(a, 2) for t, a in published.items()}))
    assert [r["machine_type"] for r in rows] == sorted(PUBLISHED_AE, key=str.lower) + ["Average"]
    for r in rows[:-1]:
        assert abs(r["ae_auc"] - r["published_ae_auc"]) <= 1.0
        assert r["mahalanobis_auc"] == 100.0
    results = dict(checks(rows))
    assert len(results) == 6 + 1 + 2
    assert all(ok for what, ok in results.items() if what.startswith("AE"))
    assert not any(ok for what, ok in results.items() if what.startswith("Mahalanobis"))
    assert "| fan " in table(rows) and "65.16 / 52.59" in table(rows)


def test_checks_fail_a_type_more_than_six_points_off():
    aucs = {t: a / 100 for t, (a, _) in PUBLISHED_AE.items()}
    aucs["valve"] = 0.40  # 26.46 points under: 4.41 under on average
    results = checks(summary_rows(_run(aucs)))
    failed = [what for what, ok in results if not ok]
    assert any(w.startswith("AE valve") for w in failed)
    assert any(w.startswith("AE average") for w in failed)


def test_auc_noise_matches_sklearn_and_hanley_mcneil():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from bench.auc_noise import empirical_auc, hanley_mcneil_sd, type_auc_draws

    rng = np.random.default_rng(3)
    anomalous = rng.integers(0, 6, (5, 7)).astype(float)  # small integers: many ties
    normal = rng.integers(0, 6, (5, 9)).astype(float)
    expected = [roc_auc_score([1] * 7 + [0] * 9, np.concatenate([a, n]))
                for a, n in zip(anomalous, normal)]
    np.testing.assert_allclose(empirical_auc(anomalous, normal), expected)

    one_id = type_auc_draws(0.75, 1, 30, 30, 4000, rng)
    assert abs(one_id.mean() - 0.75) < 0.005
    assert abs(one_id.std() / hanley_mcneil_sd(0.75, 30, 30) - 1.0) < 0.1
    four_ids = type_auc_draws(0.75, 4, 30, 30, 4000, rng)  # independent IDs: sd halves
    assert abs(four_ids.std() / (hanley_mcneil_sd(0.75, 30, 30) / 2.0) - 1.0) < 0.1
