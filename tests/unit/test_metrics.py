"""DCASE metrics, tables, thresholds and decision files, checked against independent computations."""

import csv
import math

import numpy as np
import pytest
import scipy.stats

from estm_ref.pipeline.metrics import (auc_pauc, evaluate_ids, format_table, gamma_threshold,
                              summarise_types, write_dcase_files, write_results_csv)


def _auc_by_pairs(y, s):
    """AUC as the probability that an anomaly outscores a normal (ties count half)."""
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def _pauc_mcclish(y, s, max_fpr=0.1):
    """Partial AUC over FPR in [0, max_fpr] by trapezoids on the ROC, McClish-standardised."""
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0, tps / tps[-1]]
    fpr = np.r_[0, fps / fps[-1]]
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.r_[fpr[:stop], max_fpr]
    t = np.r_[tpr[:stop], np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1])]
    partial = np.trapezoid(t, x) if hasattr(np, "trapezoid") else np.trapz(t, x)
    min_area, max_area = 0.5 * max_fpr ** 2, max_fpr
    return 0.5 * (1 + (partial - min_area) / (max_area - min_area))


def test_auc_pauc_match_independent_computation():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    s = rng.normal(size=100) + 0.8 * y
    auc, pauc = auc_pauc(y, s)
    assert auc == pytest.approx(_auc_by_pairs(y, s), abs=1e-12)
    assert pauc == pytest.approx(_pauc_mcclish(y, s), abs=1e-9)


def test_undefined_auc_is_nan_and_left_out_of_means():
    rows = [("fan", "00", 0, 0.1), ("fan", "00", 1, 0.9), ("fan", "00", 0, 0.2),
            ("fan", "02", 0, 0.3), ("fan", "02", 0, 0.4),  # no anomalies: n/a
            ("pump", "00", 0, 0.5), ("pump", "00", 1, 0.4), ("pump", "00", None, 9.0)]
    ids = evaluate_ids(rows)
    assert [(r.machine_type, r.machine_id) for r in ids] == [("fan", "00"), ("fan", "02"), ("pump", "00")]
    assert ids[0].auc == 1.0 and math.isnan(ids[1].auc) and ids[2].auc == 0.0
    assert ids[2].n_normal == 1 and ids[2].n_anomaly == 1  # the unlabelled clip is not counted
    types, average = summarise_types(ids)
    assert [t.auc for t in types] == [1.0, 0.0]
    assert average.auc == 0.5
    table = format_table(types, average, ids)
    assert "n/a" in table and "100.00" in table and "50.00" in table


def test_type_and_average_are_means_over_ids_then_types():
    rng = np.random.default_rng(1)
    rows, expect = [], {}
    for machine_type, n_ids in (("fan", 3), ("valve", 2)):
        for k in range(n_ids):
            y = np.r_[np.zeros(20, int), np.ones(20, int)]
            s = rng.normal(size=40) + (k + 1) * 0.5 * y
            rows += [(machine_type, f"0{k}", int(a), float(b)) for a, b in zip(y, s)]
            expect.setdefault(machine_type, []).append(_auc_by_pairs(y, s))
    types, average = summarise_types(evaluate_ids(rows))
    for t in types:
        assert t.auc == pytest.approx(np.mean(expect[t.machine_type]))
    assert average.auc == pytest.approx(np.mean([np.mean(v) for v in expect.values()]))


def test_markdown_table_and_csv(tmp_path):
    ids = evaluate_ids([("fan", "00", 0, 0.1), ("fan", "00", 1, 0.9)])
    types, average = summarise_types(ids)
    md = format_table(types, average, ids, markdown=True).splitlines()
    assert md[0] == "| Machine | AUC (%) | pAUC (%) |"
    assert md[-1] == "| Average | 100.00 | 100.00 |"
    write_results_csv(tmp_path / "r.csv", types, average, ids)
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["level"] for r in rows] == ["id", "type", "average"]
    assert float(rows[0]["auc"]) == 1.0


def test_gamma_threshold_recovers_the_true_quantile():
    rng = np.random.default_rng(2)
    scores = scipy.stats.gamma.rvs(3.0, loc=0.0, scale=0.5, size=4000, random_state=rng)
    expected = scipy.stats.gamma.ppf(0.9, 3.0, scale=0.5)
    assert gamma_threshold(scores) == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError):
        gamma_threshold([1.0])


def test_dcase_files(tmp_path):
    write_dcase_files(tmp_path, "ToyCar", "01", ["a.wav", "b.wav", "c.wav"],
                      [0.2, 3.0, 1.234567891e-9], threshold=1.0)
    scores = list(csv.reader(open(tmp_path / "anomaly_score_ToyCar_id_01.csv")))
    decisions = list(csv.reader(open(tmp_path / "decision_result_ToyCar_id_01.csv")))
    # nine significant digits: a confident model's tiny scores keep their order
    assert scores == [["a.wav", "0.2"], ["b.wav", "3"], ["c.wav", "1.23456789e-09"]]
    assert decisions == [["a.wav", "0"], ["b.wav", "1"], ["c.wav", "0"]]
