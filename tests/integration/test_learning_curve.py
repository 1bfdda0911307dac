"""bench/learning_curve.py end to end on a tiny curve: every detector in the results, nested
training sets over one test set, finished points skipped and a killed training resumed."""

import csv
import logging
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import learning_curve  # noqa: E402
from bench import learning_curve_report as report  # noqa: E402
from estm_ref.pipeline import run_dir as rd  # noqa: E402
from estm_ref.pipeline.scorers import SCORERS  # noqa: E402

pytest.importorskip("soundfile", reason="the curve generates WAV files")

TINY = ["--types", "fan", "--ids-per-type", "2", "--test-per-id", "4", "--duration-s", "1",
        "--ae-epochs", "1", "--jobs", "1", "--no-progress"]


def curve(work: Path, out: Path, *flags: str) -> int:
    return learning_curve.main(["--work", str(work), "--out", str(out), *TINY, *flags])


def csv_rows(out: Path) -> list[dict]:
    (path,) = out.glob("learning-curve-*.csv")
    return list(csv.DictReader(line for line in path.read_text().splitlines()
                               if not line.startswith("#")))


@pytest.mark.slow  # about 30 s on 2 CPU cores: two points, each generating, training and testing
def test_a_tiny_curve_has_every_detector_and_a_rerun_skips_its_points(tmp_path, caplog, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert curve(work, out, "--points", "2", "3", "--seeds", "0", "--epochs", "1") == 0
    detectors = {learning_curve.estm_detector(name) for name in SCORERS} \
        | set(learning_curve.BASELINES.values())
    rows = csv_rows(out)
    for n in ("2", "3"):
        for machine_type in ("fan", "Average"):
            got = {r["detector"] for r in rows
                   if r["clips_per_id"] == n and r["machine_type"] == machine_type}
            assert got == detectors, (n, machine_type)
    assert all(0.0 <= float(r["auc"]) <= 100.0 and r["epochs"] != "" for r in rows
               if not r["detector"].endswith("baseline mahalanobis"))
    assert len({r["test_set"] for r in rows}) == 1
    (md,) = out.glob("learning-curve-*.md")
    assert all(d in md.read_text() for d in detectors)

    # nested training sets, one test set: the 2 are the first 2 of the 3, the tests the same
    data = work / "data"
    small, large = ({p.name: p.resolve() for p in (data / f"n000{n}").glob("fan/train/*.wav")}
                    for n in (2, 3))
    assert len(small) == 4 and len(large) == 6 and small.items() <= large.items()
    tests = {(data / f"n000{n}" / "fan" / "test").resolve() for n in (2, 3)}
    assert tests == {(data / "all" / "fan" / "test").resolve()}

    point = work / "points" / "n0003-seed0"
    stamps = {p: p.stat().st_mtime_ns for p in (point / learning_curve.RESULT_NAME,
                                                point / "estm" / rd.CHECKPOINT_NAME)}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert curve(work, out, "--points", "3", "--seeds", "0", "--epochs", "1") == 0
    assert "n0003-seed0: finished before, skipped" in caplog.text
    assert "training ESTM" not in caplog.text
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    capsys.readouterr()
    assert curve(work, out, "--points", "3", "--seeds", "0", "--epochs", "2") == 2
    assert "other settings (epochs: 1 there, 2 now)" in capsys.readouterr().err


@pytest.mark.slow  # about 20 s on 2 CPU cores
def test_a_killed_training_resumes_from_its_last_epoch(tmp_path, caplog):
    work, out = tmp_path / "work", tmp_path / "out"
    args = ("--points", "2", "--seeds", "1", "--epochs", "2")
    assert curve(work, out, *args) == 0
    point = work / "points" / "n0002-seed1"
    run = point / "estm"
    # what a kill after the first of two epochs leaves: its checkpoint, no later stage
    state = torch.load(run / rd.CHECKPOINT_NAME, weights_only=True)
    state["epoch"] = 1
    rd.atomic_save(state, run / rd.CHECKPOINT_NAME)
    metrics = (run / rd.METRICS_NAME).read_text().splitlines()
    (run / rd.METRICS_NAME).write_text("\n".join(metrics[:2]) + "\n")
    for name in (learning_curve.RESULT_NAME, learning_curve.ESTM_NAME):
        (point / name).unlink()
    (run / rd.EMBEDDINGS_NAME).unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert curve(work, out, *args) == 0
    assert "n0002-seed1: resuming ESTM after epoch 1 of 2" in caplog.text
    assert "n0002-seed1: baseline autoencoder" not in caplog.text  # its figures were kept
    assert len((run / rd.METRICS_NAME).read_text().splitlines()) == 3  # header + 2 epochs
    assert {r["epochs"] for r in csv_rows(out) if r["detector"].startswith("ESTM")} == {"2"}


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    assert curve(tmp_path / "w", tmp_path / "o", "--points", "3", "3") == 2
    assert curve(tmp_path / "w", tmp_path / "o", "--epochs", "0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_a_points_spread_does_not_move_when_other_points_join():
    settings = {"types": ["fan", "ToyCar"], "ids_per_type": 2, "test_per_id": 10}

    def point(n: int, estm: float) -> dict:
        def figures(auc: float) -> dict:
            return {"types": {"fan": (auc, 0.0), "ToyCar": (auc - 5.0, 0.0)},
                    "average": (auc - 2.5, 0.0)}
        return {"clips_per_id": n, "seed": 0,
                "detectors": {report.estm_detector(report.DEFAULT_SCORER): figures(estm),
                              report.STATISTICS: figures(80.0)}}

    def row(table: str, n: int) -> list[str]:
        (line,) = [ln for ln in table.splitlines() if ln.startswith(f"| {n} ")]
        return [cell.strip() for cell in line.strip("|").split("|")]

    alone = report.difference_table([point(100, 75.0)], settings)
    joined = report.difference_table([point(30, 70.0), point(100, 75.0)], settings)
    assert row(alone, 100) == row(joined, 100)
    assert row(alone, 100)[2].startswith("-5.00 ± ")
