"""The synthetic DCASE 2020 Task 2 generator: layout, format, determinism, what the clips carry."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sf = pytest.importorskip("soundfile", reason="the WAV reader and writer need soundfile")
librosa = pytest.importorskip("librosa", reason="the ID-separability check uses librosa's mel")

from estm_ref.cli.main import main
from estm_ref.data import build_class_list, scan_roots
from estm_ref.synth.config import SynthConfig
from estm_ref.synth.generate import ID_JITTER, LOUDNESS_DBFS, N_LEVELS, generate, id_params
from estm_ref.synth.machines import MACHINE_TYPES, MACHINES, factory_noise

MODELS = {name: machine.model for name, machine in MACHINES.items()}

SR = 16000


def wav_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_format_of_full_length_clips(tmp_path):
    summary = generate(tmp_path, seed=1, ids_per_type=2, train_per_id=1, test_per_id=2,
                       types=["fan", "ToyCar"], progress=False)
    expected = {f"{t}/{split}/{name}" for t, ids in [("fan", "00 01"), ("ToyCar", "01 02")]
                for i in ids.split()
                for split, name in [("train", f"normal_id_{i}_00000000.wav"),
                                    ("test", f"normal_id_{i}_00000000.wav"),
                                    ("test", f"anomaly_id_{i}_00000000.wav")]}
    assert set(wav_files(tmp_path)) == expected  # and no temporary files left behind
    for name in expected:
        info = sf.info(str(tmp_path / name))
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == \
            ("WAV", "PCM_16", 16000, 1, 160000), name
    index = scan_roots([tmp_path])
    assert index.unmatched == [] and len(index.clips) == len(expected)
    assert build_class_list(index.clips) == [("ToyCar", "01"), ("ToyCar", "02"),
                                             ("fan", "00"), ("fan", "01")]
    assert summary["n_files"] == len(expected) and summary["clips_per_s"] > 0


def test_test_split_is_half_anomalous_by_default(tmp_path):
    generate(tmp_path, ids_per_type=1, train_per_id=0, test_per_id=5, types=["valve"],
             duration_s=0.2, progress=False)
    clips = scan_roots([tmp_path]).clips
    assert sorted(c.label for c in clips) == [0, 0, 0, 1, 1]


def test_same_seed_gives_identical_bytes_whatever_else_is_generated(tmp_path):
    small = dict(duration_s=0.5, progress=False)
    summary_a = generate(tmp_path / "a", seed=7, ids_per_type=2, train_per_id=3, test_per_id=2,
                         types=["valve", "fan", "ToyConveyor"], **small)
    summary_b = generate(tmp_path / "b", seed=7, ids_per_type=2, train_per_id=3, test_per_id=2,
                         types=["valve", "fan", "ToyConveyor"], jobs=2, **small)  # in 2 processes
    generate(tmp_path / "c", seed=7, ids_per_type=1, train_per_id=1, test_per_id=2,
             types=["ToyConveyor"], **small)
    generate(tmp_path / "d", seed=8, ids_per_type=1, train_per_id=1, test_per_id=2,
             types=["ToyConveyor"], **small)
    a, b, c, d = (wav_files(tmp_path / k) for k in "abcd")
    assert a == b
    for key in ("counts", "faults", "n_files", "n_limited"):
        assert summary_a[key] == summary_b[key], key
    assert c and all(a[name] == data for name, data in c.items())  # a subset, made alone
    assert set(c) == set(d) and all(c[name] != d[name] for name in c)  # the seed matters


@pytest.mark.parametrize("kwargs", [dict(types=["drill"]), dict(types=["fan", "fan"]),
                                    dict(types=[]), dict(ids_per_type=0), dict(ids_per_type=8),
                                    dict(train_per_id=-1), dict(anomaly_fraction=1.5),
                                    dict(anomaly_strength=0.0), dict(seed=-1),
                                    dict(duration_s=0.01), dict(snr_db=float("nan")),
                                    dict(jobs=0)])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate(tmp_path, progress=False, **kwargs)
    assert not any(tmp_path.rglob("*.wav"))


def test_cli(tmp_path, capsys):
    assert main(["--quiet", "synth", "--out", str(tmp_path), "--types", "pump", "--ids-per-type",
                 "1", "--train-per-id", "2", "--test-per-id", "2", "--duration-s", "0.3",
                 "--jobs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pump" in out and "clips/s" in out
    assert len(list((tmp_path / "pump").rglob("*.wav"))) == 4
    assert main(["--quiet", "synth", "--out", str(tmp_path / "x"), "--ids-per-type", "9"]) == 2
    assert main(["--quiet", "synth", "--out", str(tmp_path / "y"), "--jobs", "0"]) == 2


def test_cli_flags_are_built_from_the_config_defaults():
    import argparse
    from dataclasses import fields

    from estm_ref.cli.synth import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", "x"])
    assert SynthConfig(**{f.name: getattr(args, f.name) for f in fields(SynthConfig)}) == \
        SynthConfig()
    args = parser.parse_args(["--out", "x", "--snr-db", "0", "--anomaly-strength", "2.5"])
    assert (args.snr_db, args.anomaly_strength) == (0.0, 2.5)


def _positions(param, values) -> np.ndarray:
    """Values of an ID parameter in level steps from the low end of its range (log steps
    for a log-spaced parameter), independent of `Param.level`."""
    values = np.asarray(values, dtype=np.float64)
    if param.integer:  # integer parameters take the levels' end points, rounded
        return (values - param.lo) / (param.hi - param.lo) * (N_LEVELS - 1)
    span = np.log(param.hi / param.lo) if param.log else param.hi - param.lo
    return (np.log(values / param.lo) if param.log else values - param.lo) / span * N_LEVELS


@pytest.mark.parametrize("seed", range(3))
def test_any_two_ids_differ_by_at_least_half_a_level_step(seed):
    """generate.py's promise: every ID parameter sits on its own level with a jitter of at
    most ID_JITTER (a quarter) of a step, so any two IDs of a type differ in every
    parameter by at least half a step, and every value lies inside the parameter's range."""
    assert ID_JITTER <= 0.25
    for machine_type, machine in MACHINES.items():
        ids = [f"{machine.first_id + i:02d}" for i in range(N_LEVELS)]
        params = [id_params(seed, machine_type, i) for i in ids]
        for p in machine.model.params:
            pos = np.sort(_positions(p, [q[p.name] for q in params]))
            assert pos[0] >= -1e-9 and pos[-1] <= N_LEVELS + 1e-9, (machine_type, p.name)
            assert np.diff(pos).min() >= 0.5 - 1e-9, (machine_type, p.name, np.diff(pos))
    with pytest.raises(ValueError):
        id_params(0, "ToyCar", "00")


@pytest.mark.parametrize("seed", range(4))
def test_the_first_four_ids_span_the_tolerance_range_at_every_seed(seed):
    """Up to four IDs sit on every other level whatever the seed: no two are neighbours
    (at least 1.5 level steps apart with the jitter), and together they cover the range."""
    for machine_type, machine in MACHINES.items():
        params = [id_params(seed, machine_type, f"{machine.first_id + i:02d}") for i in range(4)]
        for p in machine.model.params:
            values = np.array(sorted(q[p.name] for q in params))
            scale = np.log(values / p.lo) if p.log else values - p.lo
            span = np.log(p.hi / p.lo) if p.log else p.hi - p.lo
            assert np.diff(scale).min() >= 1.5 / 7 * span - 1e-9, (machine_type, p.name)
            assert scale[-1] - scale[0] >= 5 / 7 * span - 1e-9, (machine_type, p.name)


# ----------------------------------------------------------------------------- content

def log_mel(x: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=1024, hop_length=512, n_mels=64,
                                         htk=True, norm=None)
    return 10 * np.log10(np.maximum(mel, 1e-10))


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Mean log-mel and RMS of every clip of a small set with all six machine types (20
    training clips per ID: the IDs are units of one product line, close in every parameter)."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=11, ids_per_type=3, train_per_id=20, test_per_id=8, duration_s=2.0,
             progress=False)
    rows = []
    for clip in scan_roots([root]).clips:
        x, _ = sf.read(clip.path, dtype="float32")
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        rows.append((clip, log_mel(x).mean(axis=1), rms))
    return rows


@pytest.mark.slow
def test_loudness_is_normalised_whatever_the_label_or_id(features):
    rms_db = np.array([20 * np.log10(r) for _, _, r in features])
    lo, hi = LOUDNESS_DBFS
    assert rms_db.min() > lo - 0.5 and rms_db.max() < hi + 0.1
    test = [(c.label, r) for c, _, r in features if c.split == "test"]
    labels, rms = np.array(test).T
    auc = roc_auc_score(labels, rms)
    assert 0.3 <= auc <= 0.7, auc  # RMS alone does not find the anomalies


def _per_type_accuracy(features, featurise):
    correct = total = 0
    for machine_type in MACHINE_TYPES:
        rows = [(c, featurise(m, r)) for c, m, r in features if c.machine_type == machine_type]
        train = [(f, c.machine_id) for c, f in rows if c.split == "train"]
        test = [(f, c.machine_id) for c, f in rows if c.split == "test" and c.label == 0]
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(*map(np.array, zip(*train)))
        pred = clf.predict(np.array([f for f, _ in test]))
        correct += int(np.sum(pred == np.array([i for _, i in test])))
        total += len(test)
    return correct / total


@pytest.mark.slow
def test_ids_are_separable_by_spectrum_but_not_by_loudness(features):
    assert _per_type_accuracy(features, lambda mel, rms: mel) >= 0.9  # chance: 1/3
    assert _per_type_accuracy(features, lambda mel, rms: [np.log(rms)]) <= 0.6


@pytest.mark.parametrize("machine_type", MACHINE_TYPES)
def test_anomaly_strength_moves_every_fault_further_from_normal(machine_type):
    """Same random stream and background, fault off / weak / strong: strong changes more."""
    model = MODELS[machine_type]
    p = id_params(0, machine_type, "01")
    n = 2 * SR
    background = 0.5 * factory_noise(np.random.default_rng(9), n, SR)

    def mel(fault, amount):
        x = model.render(np.random.default_rng(5), np.random.default_rng(6), p, n, SR, fault,
                         amount)
        assert x.shape == (n,) and np.isfinite(x).all()
        return log_mel((x / np.sqrt(np.mean(x ** 2)) + background).astype(np.float32))

    def distance(fault, amount):  # of the mean spectrum and of the frame-to-frame spread
        a, b = mel(fault, amount), normal
        return np.abs(a.mean(1) - b.mean(1)).mean() + np.abs(a.std(1) - b.std(1)).mean()

    normal = mel(None, 0.0)
    for fault in model.faults:
        weak, strong = distance(fault, 0.25), distance(fault, 4.0)
        assert strong > 1.5 * weak, (fault, weak, strong)


def test_a_fault_moves_the_unit_parameters_it_names_and_no_others():
    """A worn unit sounds a little like a sibling: the parameters `wear` names move by about
    `steps` ID spacings, up or down as bit j of `directions` says for the j-th of them,
    every other parameter keeps its value."""
    from estm_ref.synth.params import wear

    for machine_type, model in MODELS.items():
        p = id_params(0, machine_type, "01")
        for fault in model.faults:
            named = model.wear[fault]
            assert named, (machine_type, fault)
            for directions in range(1 << len(named)):
                moved = wear(np.random.default_rng(3), model, p, fault, 1.0, directions)
                for param in model.params:
                    a, b = p[param.name], moved[param.name]
                    if param.name not in named:
                        assert a == b, (machine_type, fault, param.name)
                        continue
                    span = np.log(param.hi / param.lo) if param.log else param.hi - param.lo
                    shift = (np.log(b / a) if param.log else b - a) / (span / 7)
                    down = (directions >> named.index(param.name)) & 1
                    assert 0.5 - 1e-9 <= (-shift if down else shift) <= 1.0 + 1e-9, \
                        (machine_type, fault, param.name, directions)
            assert wear(np.random.default_rng(3), model, p, fault, 0.0, 5) == p


def test_an_ids_anomalous_clips_take_the_fault_kinds_and_amounts_evenly():
    """Fault kinds come in turn (no kind more than once ahead of another, whatever the
    number of clips), each kind's amounts spread over SEVERITY, and the first parameter a
    kind wears moves up and down in turn; all of it fixed by (seed, type, ID, index)."""
    from estm_ref.synth.generate import SEVERITY, _fault_plan

    for machine_type, model in MODELS.items():
        for seed, machine_id in ((0, "01"), (5, "03")):
            plan = [_fault_plan(seed, machine_type, machine_id, i) for i in range(40)]
            assert plan == [_fault_plan(seed, machine_type, machine_id, i) for i in range(40)]
            for n in range(1, 41):
                counts = [sum(f == kind for f, _, _ in plan[:n]) for kind in model.faults]
                assert max(counts) - min(counts) <= 1, (machine_type, n, counts)
            for kind in model.faults:
                spreads = sorted(s for f, s, _ in plan if f == kind)
                assert SEVERITY[0] <= spreads[0] and spreads[-1] <= SEVERITY[1]
                gaps = np.diff([SEVERITY[0], *spreads, SEVERITY[1]])
                assert gaps.max() < 3.0 * (SEVERITY[1] - SEVERITY[0]) / len(spreads), gaps
                directions = [d for f, _, d in plan if f == kind]
                assert all((a ^ b) & 1 for a, b in zip(directions, directions[1:]))
        others = [_fault_plan(1, machine_type, "01", i) for i in range(12)]
        assert others != [_fault_plan(0, machine_type, "01", i) for i in range(12)]


def test_wear_names_only_known_faults_and_parameters():
    from dataclasses import replace

    with pytest.raises(ValueError, match="unknown"):
        replace(MODELS["fan"], wear={"imbalance": ("no_such_parameter",)})
    with pytest.raises(ValueError, match="unknown"):
        replace(MODELS["fan"], wear={"no_such_fault": ("shaft_hz",)})
    with pytest.raises(ValueError, match="wear_steps"):
        replace(MODELS["fan"], wear_steps=-1.0)


def test_wear_changes_anomalous_clips_only(monkeypatch):
    """Normal clips do not depend on how far faults move the unit; anomalous clips do."""
    from dataclasses import replace

    from estm_ref.synth import generate as gen

    p = id_params(0, "pump", "01")

    def clip(label, steps):
        pump = MACHINES["pump"]
        monkeypatch.setitem(gen.MACHINES, "pump",
                            replace(pump, model=replace(pump.model, wear_steps=steps)))
        return gen.render_clip(0, "pump", "01", "test", label, 0, p, SR, SR // 2, 6.0, 1.0)[0]

    assert np.array_equal(clip("normal", 0.0), clip("normal", 2.0))
    assert not np.array_equal(clip("anomaly", 0.0), clip("anomaly", 2.0))
