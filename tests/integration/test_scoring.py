"""Scorers end to end: the saved training embeddings, `estm test` with every scorer, `estm
score` agreeing with it, and a run without saved embeddings (on the shared tiny run)."""

import csv
import json
import logging
import shutil

import numpy as np
import pytest
import scipy.stats
from sklearn.covariance import LedoitWolf

from estm_ref.cli.main import main
from estm_ref.pipeline.scorers import SCORERS
from estm_ref.pipeline.run_dir import EMBEDDINGS_NAME

from conftest import TINY_DATA, TINY_IDS, TINY_TRAIN_CLIPS

pytest.importorskip("soundfile", reason="the pipeline reads and writes WAV files")

RUN_FILES = ("checkpoint.pt", "config.json", "metrics.csv")


@pytest.fixture(scope="module")
def tested(tiny_data, tiny_run, tmp_path_factory):
    """`estm test --scorer mahalanobis` on the tiny run: its printed table and scores.csv."""
    out = tmp_path_factory.mktemp("test-mahalanobis")
    args = ["test", "--run", tiny_run, "--data-root", tiny_data, "--out", out, "--no-plots",
            "--no-progress", "--scorer", "mahalanobis"]
    assert main(["--quiet", *map(str, args)]) == 0
    return out, list(csv.DictReader(open(out / "scores.csv")))


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_training_saves_the_training_clips_embeddings_with_the_class_list(tiny_run):
    with np.load(tiny_run / EMBEDDINGS_NAME) as z:
        assert z["embeddings"].shape == (TINY_TRAIN_CLIPS, 32) and np.isfinite(z["embeddings"]).all()
        assert z["class_list"].tolist() == [["fan", "00"], ["fan", "01"], ["slider", "00"],
                                            ["slider", "01"]]
        assert sorted(map(tuple, z["keys"].tolist())).count(("fan", "01")) \
            == TINY_DATA["train_per_id"]
        assert not z["held_out"].any()
        assert all("/train/" in p for p in z["paths"].tolist())
        assert (z["nll"] >= z["nll_no_margin"]).all()  # the margin lowers the own logit


def test_test_prints_every_scorer_and_writes_the_chosen_ones_files(tiny_run, tested, capsys):
    out, rows = tested
    for row in rows:  # the chosen scorer's score is the DCASE one
        assert row["score"] == row["score_mahalanobis"]
        assert {f"score_{name}" for name in SCORERS} <= set(row)
    table = (out / "scorers.md").read_text()
    for name in SCORERS:
        assert name in table
    # decisions: threshold = 90th percentile of a gamma fitted to the training clips' in-sample
    # Mahalanobis scores, recomputed here with scikit-learn's Ledoit-Wolf on the saved embeddings
    with np.load(tiny_run / EMBEDDINGS_NAME) as z:
        keys = [tuple(k) for k in z["keys"].tolist()]
        embeddings = z["embeddings"].astype(np.float64)
    for key in sorted(set(keys)):
        train = _unit(embeddings[[k == key for k in keys]])
        scores = LedoitWolf().fit(train).mahalanobis(train)
        threshold = scipy.stats.gamma.ppf(0.9, *scipy.stats.gamma.fit(scores))
        stem = f"{key[0]}_id_{key[1]}.csv"
        written = dict(csv.reader(open(out / f"anomaly_score_{stem}")))
        decided = dict(csv.reader(open(out / f"decision_result_{stem}")))
        assert written.keys() == decided.keys() and len(written) == TINY_DATA["test_per_id"]
        for name, value in written.items():
            if abs(float(value) - threshold) > 1e-6 * threshold:  # not a tie at the threshold
                assert decided[name] == str(int(float(value) > threshold)), (key, name)


def test_score_gives_the_score_test_gave_for_the_same_clip_and_scorer(tiny_run, tested, capsys):
    _, rows = tested
    fan, slider = rows[0], rows[-1]
    assert fan["machine_type"] != slider["machine_type"]
    for name in SCORERS:
        capsys.readouterr()
        assert main(["--quiet", "score", "--run", str(tiny_run), "--json", "--scorer", name,
                     fan["path"], slider["path"]]) == 0
        results = json.loads(capsys.readouterr().out)
        for row, result in zip((fan, slider), results):
            assert result["scorer"] == name
            # the model sees the clip alone here and in a batch of 8 there: float32 rounding
            assert result["score"] == pytest.approx(float(row[f"score_{name}"]), rel=1e-4,
                                                    abs=1e-6), (name, row["path"])


def test_unknown_scorer_or_bad_k_is_a_one_line_error(tiny_run, tiny_data, caplog):
    wav = next((tiny_data / "fan" / "test").glob("*.wav"))
    assert main(["--quiet", "score", "--run", str(tiny_run), "--scorer", "gmm", str(wav)]) == 2
    assert main(["--quiet", "test", "--run", str(tiny_run), "--data-root", str(tiny_data),
                 "--scorer", "gmm", "--no-plots"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and all("unknown scorer 'gmm'" in e and "\n" not in e for e in errors)
    caplog.clear()
    assert main(["--quiet", "score", "--run", str(tiny_run), "--scorer", "knn", "--k", "0",
                 str(wav)]) == 2
    assert "k must be at least 1" in caplog.text


def test_a_run_without_saved_embeddings_gets_them_from_its_training_clips(tiny_run, tiny_data,
                                                                         tmp_path, caplog):
    old = tmp_path / "old-run"
    old.mkdir()
    for name in RUN_FILES:
        shutil.copy(tiny_run / name, old / name)
    wav = next((tiny_data / "fan" / "test").glob("anomaly_*.wav"))
    assert main(["--quiet", "score", "--run", str(old), "--scorer", "knn", str(wav)]) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "--data-root" in error and EMBEDDINGS_NAME in error and "\n" not in error
    # test clips added to the data folder change nothing: only training clips are used
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    extra = data / "fan" / "test" / "anomaly_id_00_99999999.wav"
    shutil.copy(wav, extra)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["score", "--run", str(old), "--scorer", "knn", "--data-root", str(data),
                     str(wav)]) == 0
    assert "computing them from the training clips" in caplog.text
    with np.load(tiny_run / EMBEDDINGS_NAME) as a, np.load(old / EMBEDDINGS_NAME) as b:
        assert a["keys"].tolist() == b["keys"].tolist()
        assert [p.split("/")[-1] for p in a["paths"]] == [p.split("/")[-1] for p in b["paths"]]
        np.testing.assert_array_equal(a["embeddings"], b["embeddings"])  # same weights, batches
        np.testing.assert_array_equal(a["nll"], b["nll"])
    caplog.clear()  # now saved: the next use reuses it
    with caplog.at_level(logging.INFO):
        assert main(["score", "--run", str(old), "--scorer", "knn", str(wav)]) == 0
    assert "computing" not in caplog.text


@pytest.mark.slow
def test_demo_table_puts_every_scorer_beside_both_baselines_on_the_same_clips(tiny_demo):
    from estm_ref.pipeline.demo import DEMO_BASELINES

    _, _, result = tiny_demo
    header = result["demo_table"].splitlines()[0]
    for name in SCORERS:
        assert f"ESTM {name}" in header
    for label in DEMO_BASELINES.values():
        assert label in header
    # the ESTM columns are the figures `estm test` wrote for each scorer
    written = {(r["scorer"], r["level"]): r for r in csv.DictReader(
        open(result["out_dir"] / "scorers.csv"))}
    average_row = result["demo_table"].splitlines()[-1].split()
    assert average_row[0] == "Average"
    for i, name in enumerate(SCORERS):
        auc = float(average_row[1 + 2 * i])
        assert auc == pytest.approx(100 * float(written[(name, "average")]["auc"]), abs=0.006)
    assert result["baselines_n_test"] == result["n_clips"]  # the same test clips


def test_id_accuracy_bench_counts_the_clips_whose_largest_logit_is_their_own(tiny_run,
                                                                              tiny_data):
    import importlib.util
    from pathlib import Path

    import torch

    path = Path(__file__).resolve().parents[2] / "bench" / "id_accuracy.py"
    spec = importlib.util.spec_from_file_location("id_accuracy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    got = bench.id_accuracy(tiny_run, [tiny_data], device="cpu")
    n_test = TINY_IDS * TINY_DATA["test_per_id"]  # half normal, half anomalous
    assert [n for _, n in got.values()] == [TINY_TRAIN_CLIPS, n_test // 2, n_test // 2]
    # the training clips again, from the embeddings training saved and the head's weights
    weights = torch.load(tiny_run / "checkpoint.pt", weights_only=False)["model"]["head.weight"]
    with np.load(tiny_run / EMBEDDINGS_NAME) as z:
        classes = [tuple(c) for c in z["class_list"].tolist()]
        own = np.array([classes.index(tuple(k)) for k in z["keys"].tolist()])
        predicted = (_unit(z["embeddings"]) @ _unit(weights.numpy()).T).argmax(1)
    assert got["training"][0] == pytest.approx(np.mean(predicted == own))
