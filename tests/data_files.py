"""Small WAV trees for the loader tests: 0.1 s clips, and one bad file per audio rule."""

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from estm_ref.config import FeatureConfig
from estm_ref.data import ClipInfo, scan_roots

SR = 16000
CFG = FeatureConfig(clip_samples=1600)  # 0.1 s keeps every file and cache tiny


def write(path: Path, samples=None, sr=SR, subtype="PCM_16", seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples is None:
        samples = np.random.default_rng(seed).uniform(-0.5, 0.5, 2000)
    sf.write(path, samples, sr, subtype=subtype, format="WAV")
    return path

def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path

def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """A file breaking each audio rule, with the words the error must contain."""
    stereo = np.zeros((2000, 2))
    nan = np.zeros(2000)
    nan[5] = np.nan
    inf = np.zeros(2000)
    inf[7] = np.inf
    tmp_path.mkdir(parents=True, exist_ok=True)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + np.random.default_rng(0).bytes(200))
    text = tmp_path / "text.wav"
    text.write_text("not audio at all\n")
    return {
        "rate": (write(tmp_path / "rate.wav", sr=22050), "sample rate 22050 Hz"),
        "stereo": (write(tmp_path / "stereo.wav", stereo), "2 channels"),
        "empty": (write(tmp_path / "empty.wav", np.zeros(0)), "no samples"),
        "nan": (write(tmp_path / "nan.wav", nan, subtype="FLOAT"), "non-finite"),
        "inf": (write(tmp_path / "inf.wav", inf, subtype="DOUBLE"), "non-finite"),
        "garbage": (garbage, "unreadable"),
        "text": (text, "unreadable"),
        "missing": (tmp_path / "missing.wav", "unreadable"),
    }

def clip_tree(root: Path, n: int = 3) -> list[ClipInfo]:
    for i in range(n):
        write(root / "fan" / "train" / f"normal_id_00_{i:08d}.wav", seed=i)
        write(root / "fan" / "train" / f"normal_id_01_{i:08d}.wav", seed=10 + i)
        write(root / "fan" / "test" / f"anomaly_id_00_{i:08d}.wav", seed=20 + i)
    write(root / "fan" / "test" / "id_01_00000000.wav", seed=30)
    return scan_roots([root]).clips

def add_bad_clips(root: Path) -> list[Path]:
    folder = root / "fan" / "train"
    paths = []
    for k, (src, _) in enumerate(bad_files(root / "src").values()):
        if src.exists():
            dst = folder / f"normal_id_00_{90 + k:08d}.wav"
            os.replace(src, dst)
            paths.append(dst)
    return paths
