"""The train / test / score pipeline end to end on a tiny synthetic set (reference scan, CPU)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from estm_ref.pipeline import run_dir as ckpt_io
from estm_ref.cli.main import main
from estm_ref.config import Config, with_overrides
from estm_ref.pipeline.demo import TINY_CONFIG

from conftest import TINY_TRAIN

pytest.importorskip("soundfile", reason="the pipeline reads and writes WAV files")

REPO = Path(__file__).resolve().parents[2]


def _estm(*args, env_extra=None, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen([sys.executable, "-m", "estm_ref", "--quiet", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_demo_tiny_end_to_end_and_metrics_recomputed_from_written_files(tiny_demo):
    code, printed, result = tiny_demo
    assert code == 0
    assert "Average" in printed
    results = Path(result["out_dir"])
    # recompute every figure of results.csv from scores.csv, independently of estm_ref.metrics
    by_id = {}
    for row in csv.DictReader(open(results / "scores.csv")):
        by_id.setdefault((row["machine_type"], row["machine_id"]), []).append(
            (int(row["label"]), float(row["score"])))
    table = {(r["level"], r["machine_type"], r["machine_id"]): r
             for r in csv.DictReader(open(results / "results.csv"))}
    type_aucs = {}
    for (machine_type, machine_id), pairs in by_id.items():
        y, s = np.array(pairs).T
        auc, pauc = roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1)
        row = table[("id", machine_type, machine_id)]
        assert float(row["auc"]) == pytest.approx(auc, abs=1e-6)
        assert float(row["pauc"]) == pytest.approx(pauc, abs=1e-6)
        type_aucs.setdefault(machine_type, []).append(auc)
        # the DCASE submission files hold the same scores, one file per (type, id)
        written = list(csv.reader(open(results / f"anomaly_score_{machine_type}_id_{machine_id}.csv")))
        assert sorted(float(v) for _, v in written) == pytest.approx(sorted(s), abs=1e-5)
        decisions = list(csv.reader(open(results / f"decision_result_{machine_type}_id_{machine_id}.csv")))
        assert {d for _, d in decisions} <= {"0", "1"} and len(decisions) == len(pairs)
    average = np.mean([np.mean(v) for v in type_aucs.values()])
    assert float(table[("average", "", "")]["auc"]) == pytest.approx(average, abs=1e-6)
    assert (results / "results.md").read_text().startswith("| Machine |")
    assert (results / "tsne.png").stat().st_size > 0
    assert list(results.glob("roc_*.png"))


def test_run_folder_is_not_overwritten(tiny_data, tmp_path, caplog):
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    args = ["--quiet", "train", "--data-root", str(tiny_data), "--out", str(tmp_path),
            "--epochs", "1", *TINY_TRAIN]
    assert main(args) == 1 and "already holds a run (metrics.csv)" in caplog.text
    assert (tmp_path / "metrics.csv").read_text() == "epoch\n1\n"
    for name in ("checkpoint.pt", "config.json", "train_embeddings.npz"):
        (tmp_path / name).write_text("x")
    ckpt_io.check_run_dir(tmp_path, resume=False, force=True)  # what --force does first
    assert not any((tmp_path / n).exists() for n in ("checkpoint.pt", "metrics.csv",
                                                        "config.json", "train_embeddings.npz"))


def test_resume_without_a_checkpoint_or_with_other_settings_is_bad_input(tiny_data, tmp_path,
                                                                        caplog):
    base = ["--quiet", "train", "--data-root", str(tiny_data), "--out", str(tmp_path / "run")]
    assert main([*base, "--resume"]) == 2 and "no checkpoint.pt" in caplog.text
    assert main([*base, "--resume", "--lr", "0.1"]) == 2
    assert "only --epochs may change (got ['lr'])" in caplog.text


def test_a_root_without_training_clips_leaves_no_run_folder(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    run_dir = tmp_path / "run"
    assert main(["--quiet", "train", "--data-root", str(tmp_path / "empty"), "--out",
                 str(run_dir)]) == 2
    assert "no training clips" in caplog.text and not run_dir.exists()


def _final_weights(run_dir):
    return ckpt_io.load(Path(run_dir) / ckpt_io.CHECKPOINT_NAME)["model"]


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_uninterrupted_weights(tiny_data, tmp_path):
    epochs = ["--epochs", "4", "--seed", "7"]
    assert main(["--quiet", "train", "--data-root", str(tiny_data), "--out", str(tmp_path / "a"),
                 *epochs, *TINY_TRAIN]) == 0

    killed_dir = tmp_path / "b"
    victim = _estm("train", "--data-root", tiny_data, "--out", killed_dir, *epochs, *TINY_TRAIN)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed_dir / ckpt_io.CHECKPOINT_NAME).exists():
        time.sleep(0.05)
    assert (killed_dir / ckpt_io.CHECKPOINT_NAME).exists(), "no checkpoint was written"
    victim.send_signal(signal.SIGKILL)  # mid-way through epoch 2
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert ckpt_io.load(killed_dir / ckpt_io.CHECKPOINT_NAME)["epoch"] < 4

    assert main(["--quiet", "train", "--data-root", str(tiny_data), "--out", str(killed_dir),
                 "--resume", "--no-progress"]) == 0
    a, b = _final_weights(tmp_path / "a"), _final_weights(killed_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_non_finite_loss_stops_with_the_epoch_and_step(tiny_data, tmp_path, monkeypatch):
    from estm_ref import errors
    from estm_ref.pipeline import train as train_mod
    from estm_ref.model import ESTM

    calls = {"n": 0}
    forward = ESTM.forward

    def poisoned(self, waveform, labels=None):
        out = forward(self, waveform, labels)
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2, step 2: 16 training clips, batch 8
            out.logits = out.logits * float("nan")
        return out

    monkeypatch.setattr(ESTM, "forward", poisoned)
    cfg = with_overrides(Config(), {**TINY_CONFIG, "features": {"clip_samples": 16000},
                                    "train": {**TINY_CONFIG["train"], "epochs": 3,
                                              "cache_audio": False}})
    with pytest.raises(errors.TrainingError, match=r"epoch 2, step 2"):
        train_mod.train(cfg, [tiny_data], tmp_path, progress=False)
    assert ckpt_io.load(tmp_path / ckpt_io.CHECKPOINT_NAME)["epoch"] == 1


def test_score_command_and_unknown_machine(tiny_data, tiny_run, capsys, caplog):
    from estm_ref.pipeline.metrics import gamma_threshold

    run_dir = tiny_run
    with np.load(run_dir / ckpt_io.EMBEDDINGS_NAME) as z:  # the paper's (nll) thresholds
        keys = [tuple(k) for k in z["keys"].tolist()]
        thresholds = {f"{t}/id_{i}": gamma_threshold(z["nll"][[k == (t, i) for k in keys]])
                      for t, i in set(keys)}
    assert set(thresholds) == {"fan/id_00", "fan/id_01", "slider/id_00", "slider/id_01"}
    wav = sorted((tiny_data / "fan" / "test").glob("anomaly_id_01_*.wav"))[0]
    capsys.readouterr()
    assert main(["--quiet", "score", "--run", str(run_dir), "--json", "--scorer", "nll",
                 str(wav)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert (result["machine_type"], result["machine_id"]) == ("fan", "01")
    assert result["threshold"] == pytest.approx(thresholds["fan/id_01"])
    assert result["decision"] == int(result["score"] > result["threshold"])
    assert main(["--quiet", "score", "--run", str(run_dir), "--type", "pump", str(wav)]) == 2
    assert "not trained on pump/id_01" in caplog.text


def test_score_reports_bad_files_and_still_scores_the_good_ones(tiny_data, tiny_run, tmp_path,
                                                                capsys, caplog):
    good = sorted((tiny_data / "fan" / "test").glob("normal_id_00_*.wav"))[:2]
    broken = tmp_path / "fan" / "test" / "normal_id_00_99999999.wav"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a wav file")
    missing = tmp_path / "fan" / "test" / "normal_id_00_88888888.wav"
    capsys.readouterr()
    code = main(["--quiet", "score", "--run", str(tiny_run), "--json", str(good[0]), str(broken),
                 str(missing), str(good[1])])
    assert code == 2
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == [str(good[0]), str(broken), str(missing), str(good[1])]
    assert "score" in results[0] and "score" in results[3]
    assert "unreadable" in results[1]["error"] and "unreadable" in results[2]["error"]
    assert "2 of 4 file(s) could not be scored" in caplog.text


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_a_single_process(tiny_data, tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for nproc, out in ((2, tmp_path / "ddp"), (1, tmp_path / "single")):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
             "--master_port", str(29500 + nproc + os.getpid() % 1000), str(worker),
             str(tiny_data), str(out)],
            env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    lr = TINY_CONFIG["train"]["lr"]
    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)
    for name in rank0:
        torch.testing.assert_close(rank1[name], rank0[name], rtol=0, atol=0, msg=name)
        # Adam divides by sqrt(v): where a gradient is ~0 its sign, and so a whole lr-sized
        # step, can flip with the order of float sums. 5% of lr is far below what a wrong
        # global batch gives (whole steps of lr on most elements).
        torch.testing.assert_close(rank0[name], single[name], rtol=0, atol=0.05 * lr, msg=name)
    # the run actually trained: weights moved away from the seeded initialisation
    init = torch.load(tmp_path / "single" / "init.pt", weights_only=True)
    assert any(not torch.equal(init[k], single[k]) for k in init)


@pytest.mark.slow
def test_ablation_grid_trains_and_tests_every_variant(tiny_data, tmp_path, capsys):
    assert main(["--quiet", "ablation", "--data-root", str(tiny_data), "--out", str(tmp_path),
                 "--epochs", "1", *TINY_TRAIN]) == 0
    printed = capsys.readouterr().out
    for name in ("SMamba", "TMamba", "STMamba", "STgram", "ESTgram"):
        assert name in printed
    for paths in ("spectral", "temporal", "both"):
        for features in ("stgram", "estgram"):
            saved = ckpt_io.load(tmp_path / f"{paths}-{features}" / ckpt_io.CHECKPOINT_NAME)
            assert (saved["config"]["model"]["paths"], saved["config"]["features"]["features"]) \
                == (paths, features)
            assert (tmp_path / f"{paths}-{features}" / "test" / "results.csv").exists()


@pytest.mark.parametrize("fraction, held_per_id", [(0.5, 2), (0.25, 1)])
def test_thresholds_come_from_held_out_clips_when_there_are_enough(tiny_data, tmp_path, capsys,
                                                                   fraction, held_per_id):
    """The decision threshold of an ID is the 90th percentile of a gamma fitted to the nll
    scores of its held-out clips where it has two or more, else of its training clips:
    recomputed here with scipy on the scores training wrote, against what `estm score`
    reports."""
    import scipy.stats

    run_dir = tmp_path / "run"
    assert main(["--quiet", "train", "--data-root", str(tiny_data), "--out", str(run_dir),
                 "--epochs", "1", "--val-fraction", str(fraction), *TINY_TRAIN]) == 0
    with np.load(run_dir / ckpt_io.EMBEDDINGS_NAME) as z:
        keys = [tuple(k) for k in z["keys"].tolist()]
        held_out, nll, paths = z["held_out"], z["nll"], z["paths"].tolist()
    assert all("/train/" in p for p in paths)
    by_id = {}
    for key, held, score in zip(keys, held_out, nll):
        by_id.setdefault(key, {True: [], False: []})[bool(held)].append(score)
    assert sorted(len(s[True]) for s in by_id.values()) == [held_per_id] * len(by_id)
    capsys.readouterr()
    assert main(["--quiet", "score", "--run", str(run_dir), "--json", "--scorer", "nll",
                 *paths]) == 0
    results = json.loads(capsys.readouterr().out)
    # the saved scores are those `estm score` gives the same files (batches of 8 vs 16)
    np.testing.assert_allclose([r["score"] for r in results], nll, rtol=1e-4, atol=1e-6)
    for key, scores in by_id.items():
        fit_on = scores[True] if held_per_id >= 2 else scores[False]
        expected = scipy.stats.gamma.ppf(0.9, *scipy.stats.gamma.fit(fit_on))
        reported = [r["threshold"] for r, k in zip(results, keys) if k == key]
        assert reported == pytest.approx([expected] * len(reported), rel=1e-9), key
    with open(run_dir / "metrics.csv") as f:
        assert float(next(csv.DictReader(f))["val_loss"]) > 0


def test_demo_data_is_reused_only_when_made_by_this_generator_version(tmp_path, monkeypatch):
    from estm_ref.pipeline import demo

    calls = []
    monkeypatch.setattr(demo, "generate", lambda out, **kw: (calls.append(kw), out.mkdir()))
    data = tmp_path / "data"
    demo.generate_demo_data(data, tiny=True, seed=0, progress=False)
    demo.generate_demo_data(data, tiny=True, seed=0, progress=False)
    assert len(calls) == 1  # the same settings and version: reused
    monkeypatch.setattr(demo, "GENERATOR_VERSION", demo.GENERATOR_VERSION + 1)
    demo.generate_demo_data(data, tiny=True, seed=0, progress=False)
    assert len(calls) == 2  # made by another version of the generator: made again
