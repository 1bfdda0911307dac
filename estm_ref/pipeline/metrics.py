"""DCASE 2020 Task 2 metrics and tables: AUC / pAUC per (machine type, ID), means, thresholds.

AUC = roc_auc_score(y, score); pAUC = roc_auc_score(y, score, max_fpr=0.1), sklearn's
McClish-standardised partial AUC, as the DCASE 2020 baseline computes it. Per machine
type: arithmetic mean over its IDs; Average: mean over machine types. An ID whose test
set lacks normals or anomalies has no AUC ("n/a") and is left out of the means.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

MAX_FPR = 0.1
DECISION_QUANTILE = 0.9


@dataclass(frozen=True)
class IdResult:
    machine_type: str
    machine_id: str
    n_normal: int
    n_anomaly: int
    auc: float  # nan when undefined
    pauc: float


@dataclass(frozen=True)
class TypeResult:
    machine_type: str
    auc: float
    pauc: float
    n_ids: int


def auc_pauc(labels: Sequence[int], scores: Sequence[float]) -> tuple[float, float]:
    """(AUC, pAUC at max_fpr 0.1); (nan, nan) unless both classes are present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        return math.nan, math.nan
    if not np.all(np.isfinite(s)):
        raise ValueError("anomaly scores contain NaN or inf")
    return float(roc_auc_score(y, s)), float(roc_auc_score(y, s, max_fpr=MAX_FPR))


def evaluate_ids(rows: Iterable[tuple[str, str, int | None, float]]) -> list[IdResult]:
    """rows: (machine_type, machine_id, label or None, score). Unlabelled rows are skipped."""
    groups: dict[tuple[str, str], tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for machine_type, machine_id, label, score in rows:
        if label is None:
            continue
        ys, ss = groups[(machine_type, machine_id)]
        ys.append(int(label))
        ss.append(float(score))
    results = []
    for (machine_type, machine_id), (ys, ss) in sorted(groups.items()):
        auc, pauc = auc_pauc(ys, ss)
        n_anomaly = int(sum(ys))
        results.append(IdResult(machine_type, machine_id, len(ys) - n_anomaly, n_anomaly, auc, pauc))
    return results


def summarise_types(id_results: Sequence[IdResult]) -> tuple[list[TypeResult], TypeResult]:
    """Per machine type means over its IDs (n/a IDs left out), and the Average row."""
    by_type: dict[str, list[IdResult]] = defaultdict(list)
    for r in id_results:
        by_type[r.machine_type].append(r)
    types = []
    for machine_type in sorted(by_type, key=str.lower):
        valid = [r for r in by_type[machine_type] if not math.isnan(r.auc)]
        types.append(TypeResult(machine_type, _mean([r.auc for r in valid]),
                                _mean([r.pauc for r in valid]), len(valid)))
    valid_types = [t for t in types if not math.isnan(t.auc)]
    average = TypeResult("Average", _mean([t.auc for t in valid_types]),
                         _mean([t.pauc for t in valid_types]), len(valid_types))
    return types, average


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def format_table(types: Sequence[TypeResult], average: TypeResult,
                 id_results: Sequence[IdResult] | None = None, markdown: bool = False) -> str:
    """Table I layout: one row per machine type (optionally per ID), then Average; AUC/pAUC in %."""
    rows: list[tuple[str, str, str]] = []
    for t in types:
        rows.append((t.machine_type, pct(t.auc), pct(t.pauc)))
        if id_results is not None:
            for r in id_results:
                if r.machine_type == t.machine_type:
                    rows.append((f"  id_{r.machine_id}", pct(r.auc), pct(r.pauc)))
    rows.append((average.machine_type, pct(average.auc), pct(average.pauc)))
    header = ("Machine", "AUC (%)", "pAUC (%)")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|"]
        lines += ["| " + " | ".join((name.strip(), a, p)) + " |" for name, a, p in rows]
        return "\n".join(lines)
    width = max(len(header[0]), *(len(r[0]) for r in rows))
    lines = [f"{header[0]:<{width}}  {header[1]:>8}  {header[2]:>8}", "-" * (width + 20)]
    lines += [f"{name:<{width}}  {a:>8}  {p:>8}" for name, a, p in rows]
    return "\n".join(lines)


def write_results_csv(path: Path, types: Sequence[TypeResult], average: TypeResult,
                      id_results: Sequence[IdResult]) -> None:
    """One row per ID, per type and the Average; AUC/pAUC as fractions (empty when n/a)."""
    def num(v: float) -> str:
        return "" if math.isnan(v) else f"{v:.6f}"

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["level", "machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomaly"])
        for r in id_results:
            w.writerow(["id", r.machine_type, r.machine_id, num(r.auc), num(r.pauc), r.n_normal, r.n_anomaly])
        for t in types:
            w.writerow(["type", t.machine_type, "", num(t.auc), num(t.pauc), "", ""])
        w.writerow(["average", "", "", num(average.auc), num(average.pauc), "", ""])


def gamma_threshold(train_scores: Sequence[float], quantile: float = DECISION_QUANTILE) -> float:
    """The DCASE 2020 baseline's decision threshold: a quantile of a gamma fit to normal scores."""
    import scipy.stats

    s = np.asarray(train_scores, dtype=np.float64)
    if s.size < 2 or not np.all(np.isfinite(s)):
        raise ValueError(f"need at least 2 finite training scores to fit a gamma, got {s.size}")
    if np.ptp(s) == 0:
        return float(s[0])
    shape, loc, scale = scipy.stats.gamma.fit(s)
    return float(scipy.stats.gamma.ppf(quantile, shape, loc=loc, scale=scale))


def format_score(score: float) -> str:
    """Nine significant digits: a confident model's tiny scores keep their order."""
    return f"{score:.9g}"


def write_dcase_files(out_dir: Path, machine_type: str, machine_id: str,
                      names: Sequence[str], scores: Sequence[float], threshold: float) -> None:
    """anomaly_score_<type>_id_XX.csv (filename,score) and decision_result_<type>_id_XX.csv
    (filename,0|1), no header, as the DCASE 2020 submission format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{machine_type}_id_{machine_id}.csv"
    with open(out_dir / f"anomaly_score_{stem}", "w", newline="") as f:
        w = csv.writer(f)
        for name, score in zip(names, scores):
            w.writerow([name, format_score(score)])
    with open(out_dir / f"decision_result_{stem}", "w", newline="") as f:
        w = csv.writer(f)
        for name, score in zip(names, scores):
            w.writerow([name, int(score > threshold)])
