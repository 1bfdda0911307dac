"""The learning curve's results: its CSV, Markdown tables and plot, from the finished points
of a work folder (`bench/learning_curve.py`, which runs the points)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from bench.auc_noise import type_auc_draws
from bench.common import Stamp, import_pyplot, markdown_table, result_path, write_csv, write_markdown
from estm_ref.pipeline.scorers import DEFAULT_SCORER

PRESET = "small-data"
BASELINES = {"autoencoder": "baseline autoencoder", "mahalanobis": "baseline mahalanobis"}
STATISTICS = BASELINES["mahalanobis"]  # the per-ID statistics detector ESTM is measured against
RESULT_NAME = "result.json"
COLUMNS = ["clips_per_id", "seed", "detector", "machine_type", "auc", "pauc", "train_s", "epochs",
           "train_accuracy", "id_acc_training", "id_acc_normal_test", "id_acc_anomalous_test",
           "commit", "test_set"]
NOISE_DRAWS = 2000


def estm_detector(scorer: str) -> str:
    return f"ESTM {scorer}{'*' if scorer == DEFAULT_SCORER else ''}"


def finished_points(work: Path) -> list[dict]:
    points = [json.loads(p.read_text()) for p in (work / "points").glob(f"*/{RESULT_NAME}")]
    return sorted(points, key=lambda p: (p["clips_per_id"], p["seed"]))


def csv_rows(points: list[dict]) -> list[dict]:
    rows = []
    for p in points:
        ids = p["estm"]["id_accuracy"]
        for detector, d in p["detectors"].items():
            extra = {}
            if detector.startswith("ESTM"):
                extra = {"train_accuracy": p["estm"]["train_accuracy"],
                         "id_acc_training": ids["training"],
                         "id_acc_normal_test": ids["normal test"],
                         "id_acc_anomalous_test": ids["anomalous test"]}
            for machine_type, (auc, pauc) in [*d["types"].items(), ("Average", d["average"])]:
                rows.append({"clips_per_id": p["clips_per_id"], "seed": p["seed"],
                             "detector": detector, "machine_type": machine_type, "auc": auc,
                             "pauc": pauc, "train_s": d["train_s"], "epochs": d["epochs"],
                             "commit": p["commit"][:12], "test_set": p["test_set"], **extra})
    return rows


def auc_sd(auc_pct: float, settings: dict) -> float:
    """bench/auc_noise.py's spread (points) of one type's AUC at this test size. The draws
    are seeded by the inputs, so a figure does not move when other points join the report."""
    n_anomalous = settings["test_per_id"] // 2
    true = min(max(auc_pct / 100.0, 0.001), 0.999)
    rng = np.random.default_rng([round(100 * auc_pct), settings["ids_per_type"],
                                 settings["test_per_id"]])  # the AUC as the tables show it
    draws = type_auc_draws(true, settings["ids_per_type"], settings["test_per_id"] - n_anomalous,
                           n_anomalous, NOISE_DRAWS, rng)
    return 100.0 * float(draws.std())


def difference_table(points: list[dict], settings: dict) -> str:
    """ESTM's default scorer minus the statistics detector, per type and on average, each
    with the noise sd of that difference (the two figures' test-set spreads combined as
    if independent)."""
    estm = estm_detector(DEFAULT_SCORER)
    types = list(settings["types"])
    rows = []
    for p in points:
        a, b = p["detectors"][estm], p["detectors"][STATISTICS]
        cells, variances = [], []
        for t in types:
            var = auc_sd(a["types"][t][0], settings) ** 2 + auc_sd(b["types"][t][0], settings) ** 2
            variances.append(var)
            cells.append(f"{a['types'][t][0] - b['types'][t][0]:+.2f} ± {math.sqrt(var):.2f}")
        avg_sd = math.sqrt(sum(variances)) / len(types)
        rows.append([p["clips_per_id"], p["seed"], *cells,
                     f"{a['average'][0] - b['average'][0]:+.2f} ± {avg_sd:.2f}"])
    return markdown_table(["clips / ID", "seed", *types, "Average"], rows)


def detectors_of(points: list[dict]) -> list[str]:
    return list(dict.fromkeys(d for p in points for d in p["detectors"]))


def curve_table(points: list[dict]) -> str:
    """Average AUC per detector and point size: mean over seeds (each seed's value)."""
    sizes = sorted({p["clips_per_id"] for p in points})
    rows = []
    for detector in detectors_of(points):
        cells = []
        for n in sizes:
            values = [p["detectors"][detector]["average"][0] for p in points
                      if p["clips_per_id"] == n and detector in p["detectors"]]
            each = f" ({', '.join(f'{v:.2f}' for v in values)})" if len(values) > 1 else ""
            cells.append(f"{np.mean(values):.2f}{each}" if values else "-")
        rows.append([detector, *cells])
    return markdown_table(["detector", *(f"{n} clips / ID" for n in sizes)], rows)


def point_tables(points: list[dict], settings: dict) -> str:
    parts = []
    for p in points:
        rows = [[name, *(f"{d['types'][t][0]:.2f} / {d['types'][t][1]:.2f}"
                         for t in settings["types"]),
                 f"{d['average'][0]:.2f} / {d['average'][1]:.2f}", f"{d['train_s']:.0f}",
                 d["epochs"] if d["epochs"] is not None else "-"]
                for name, d in p["detectors"].items()]
        ids = p["estm"]["id_accuracy"]
        parts.append(
            f"### {p['clips_per_id']} clips per ID, seed {p['seed']}\n\n"
            + markdown_table(["detector", *settings["types"], "Average", "train s", "epochs"],
                             rows)
            + f"\n\nESTM training accuracy (last epoch, augmented) "
              f"{100 * p['estm']['train_accuracy']:.1f}%; ID accuracy on training clips "
              f"{100 * ids['training']:.1f}%, normal test clips {100 * ids['normal test']:.1f}%, "
              f"anomalous test clips {100 * ids['anomalous test']:.1f}%. Commit "
              f"{p['commit'][:12]}, test set {p['test_set']}.")
    return "\n\n".join(parts)


def plot(points: list[dict], path: Path) -> Path | None:
    plt = import_pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    all_sizes = sorted({p["clips_per_id"] for p in points})
    for detector in detectors_of(points):
        by_size: dict[int, list[float]] = {}
        for p in points:
            if detector in p["detectors"]:
                by_size.setdefault(p["clips_per_id"], []).append(
                    p["detectors"][detector]["average"][0])
        sizes = sorted(by_size)
        (line,) = ax.plot(sizes, [np.mean(by_size[n]) for n in sizes], marker="o",
                          label=detector)
        for n in sizes:
            ax.scatter([n] * len(by_size[n]), by_size[n], color=line.get_color(), s=10, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xticks(all_sizes, [str(n) for n in all_sizes])  # the measured sizes, not powers of 10
    ax.minorticks_off()
    ax.set_xlabel("training clips per ID")
    ax.set_ylabel("average AUC (%)")
    ax.set_title("ESTM (small-data preset) against the baselines")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(work: Path, settings: dict, out: Path) -> list[Path]:
    points = finished_points(work)
    if not points:
        return []
    stamp = Stamp.collect(torch.device("cpu")).with_extra(
        machine_types=" ".join(settings["types"]), ids_per_type=str(settings["ids_per_type"]),
        test_clips_per_id=f"{settings['test_per_id']} (half anomalous)",
        estm=f"{PRESET} preset, {settings['epochs']} epochs",
        autoencoder=f"official recipe, {settings['ae_epochs']} epochs")
    notes = [f"data seed {settings['data_seed']}, {settings['duration_s']:g} s clips, "
             "the generator at its default difficulty",
             f"* = ESTM's default scorer ({DEFAULT_SCORER})",
             "train_s: ESTM, the sum of its epochs; baselines, reading the clips, fitting and "
             "scoring"]
    csv_path = write_csv(result_path(out, "learning-curve", stamp, False, "csv"), COLUMNS,
                         csv_rows(points), stamp, notes)
    body = "\n\n".join([
        "\n".join(f"- {n}" for n in notes),
        "## Average AUC (%) against training clips per ID\n\nMean over seeds (each seed).\n\n"
        + curve_table(points),
        f"## {estm_detector(DEFAULT_SCORER)} minus the per-ID statistics detector, AUC points\n\n"
        "± the standard deviation of that difference from the choice of test clips alone "
        "(bench/auc_noise.py's binormal model at each measured AUC, the two figures taken "
        "as independent).\n\n" + difference_table(points, settings),
        "## Every point, AUC / pAUC (%)\n\n" + point_tables(points, settings)])
    md_path = write_markdown(result_path(out, "learning-curve", stamp, False, "md"),
                             "Learning curve: ESTM against the baselines", stamp, body)
    written = [csv_path, md_path]
    png = plot(points, result_path(out, "learning-curve", stamp, False, "png"))
    return written + ([png] if png else [])
