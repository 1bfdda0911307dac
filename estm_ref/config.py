"""Typed configuration, one dataclass per concern. Defaults are written here once.

Choices the ESTM paper leaves open are marked **(ours)**; docs/design.md
says why each default was taken.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estm_ref.errors import InputError

# Every list of choices, written once; the config checks against them and the command line
# offers them.
TSG_NORMS = ("none", "std")
# feature set -> its channels, stacked in this order (ESTgram and the ablation's STgram)
FEATURE_CHANNELS = {"estgram": ("Mel", "EMel", "Tgram"), "stgram": ("Mel", "Tgram")}
FEATURE_NAMES = {"stgram": "STgram", "estgram": "ESTgram"}  # Table II's column order
FEATURE_SETS = tuple(FEATURE_CHANNELS)
CLS_POSITIONS = ("tail", "head", "middle")
PATH_NAMES = {"spectral": "SMamba", "temporal": "TMamba", "both": "STMamba"}  # Table II's row order
PATHS = ("both", "spectral", "temporal")
SCAN_BACKENDS = ("auto", "ref", "triton")
SCHEDULES = ("constant", "cosine")
AMP_MODES = ("auto", "bf16", "off")

@dataclass
class FeatureConfig:
    """Audio front end (log-mel, TSG gate, Tgram)."""

    sample_rate: int = 16000
    clip_samples: int = 160000  # 10 s; longer clips are cropped, shorter ones tiled
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-10
    tsg_alpha: float = 2.0  # alpha in eq. (1)
    tsg_norm: str = "none"  # "none" (paper) | "std" (ours): divide s_n - mu by std_n(s) + 1e-5
    features: str = "estgram"  # "estgram" (Mel, EMel, Tgram) | "stgram" (Mel, Tgram)

    def __post_init__(self) -> None:
        _check_choice("tsg_norm", self.tsg_norm, TSG_NORMS)
        _check_choice("features", self.features, FEATURE_SETS)

    @property
    def n_frames(self) -> int:
        """Frames of a centred STFT over one clip: 1 + clip_samples // hop (313)."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def n_channels(self) -> int:
        return len(FEATURE_CHANNELS[self.features])


@dataclass
class ModelConfig:
    """The dual-path Mamba backbone and the ArcFace head."""

    d_model: int = 128  # D (ours)
    depth: int = 4  # Mamba blocks per path (ours)
    d_state: int = 16  # N of the SSM (ours)
    expand: int = 2  # E = expand * D (ours)
    d_conv: int = 4  # depthwise causal conv kernel (ours)
    n_time_patches: int = 12  # I
    n_freq_patches: int = 16  # J
    cls_position: str = "tail"  # "tail" (ours) | "head" (paper's figure) | "middle" (Vision Mamba)
    bidirectional: bool = False  # forward + reversed scan per block (ours)
    paths: str = "both"  # "both" (STMamba) | "spectral" (SMamba) | "temporal" (TMamba)
    scan_backend: str = "auto"  # "auto" | "ref" | "triton"
    arcface_margin: float = 0.7  # m (STgram-MFN)
    arcface_scale: float = 30.0  # s (STgram-MFN)

    def __post_init__(self) -> None:
        _check_choice("cls_position", self.cls_position, CLS_POSITIONS)
        _check_choice("paths", self.paths, PATHS)
        _check_choice("scan_backend", self.scan_backend, SCAN_BACKENDS)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return -(-self.d_model // 16)


@dataclass
class TrainConfig:
    """Optimisation and run bookkeeping (paper protocol by default)."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.01
    schedule: str = "constant"  # "constant" | "cosine"
    warmup_epochs: int = 0
    grad_clip: float = 0.0  # 0 disables clipping (ours)
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU) | "bf16" | "off"
    seed: int = 0
    num_workers: int = 0
    val_fraction: float = 0.0  # held-out slice of training normals (never test data)
    cache_audio: bool = True  # decoded int16 cache next to the run
    # augmentation (ours; off in the paper's protocol), see estm_ref.pipeline.augment
    mixup_alpha: float = 0.0  # mix clips and their ArcFace targets, weight ~ Beta(a, a); 0 = off
    mask_mel_bands: int = 0  # silence up to this many adjacent mel bands per clip; 0 = off
    mask_frames: int = 0  # silence up to this many adjacent STFT frames per clip; 0 = off
    time_shift: bool = False  # roll each clip by a random offset (circularly)
    # self-supervised speed classes: a clip played `speed_step` x k faster (k = +-1..+-n) is
    # a class of its own, so the embedding must notice small shifts of speed and frequency
    speed_classes: int = 0  # n shifted views on each side of each ID; 0 = off
    speed_step: float = 0.03  # relative speed change between neighbouring views
    speed_prob: float = 0.5  # share of training clips replaced by a shifted view

    def __post_init__(self) -> None:
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_MODES)
        if self.speed_classes < 0 or not 0.0 < self.speed_step * max(self.speed_classes, 1) < 0.5:
            raise InputError("speed_classes must be >= 0 and speed_step * speed_classes in "
                             f"(0, 0.5), got {self.speed_classes} and {self.speed_step}")
        if not 0.0 <= self.speed_prob <= 1.0:
            raise InputError(f"speed_prob must be in [0, 1], got {self.speed_prob}")

    @property
    def speed_views(self) -> int:
        """Head classes per ID: the clip as recorded and its shifted views."""
        return 1 + 2 * self.speed_classes

    def head_classes(self, n_ids: int) -> int:
        """Classes of the ArcFace head for `n_ids` (type, ID) classes: one per ID and view."""
        return n_ids * self.speed_views


@dataclass
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        unknown = set(data) - {"features", "model", "train"}
        if unknown:
            raise InputError(f"unknown config section(s): {sorted(unknown)}")
        return cls(
            features=_build(FeatureConfig, data.get("features", {}), "features"),
            model=_build(ModelConfig, data.get("model", {}), "model"),
            train=_build(TrainConfig, data.get("train", {}), "train"),
        )


def _build(kind: type, values: dict[str, Any], section: str) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise InputError(f"unknown key(s) in [{section}]: {sorted(unknown)}")
    return kind(**values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")


CHOICES = {"tsg_norm": TSG_NORMS, "features": FEATURE_SETS, "cls_position": CLS_POSITIONS,
           "paths": PATHS, "scan_backend": SCAN_BACKENDS, "schedule": SCHEDULES, "amp": AMP_MODES}

SECTIONS = {"features": FeatureConfig, "model": ModelConfig, "train": TrainConfig}


def load_toml(path: str | Path) -> Config:
    """A config file with optional [features], [model] and [train] tables."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, published as tomli
        import tomli as tomllib

    with open(path, "rb") as f:
        return Config.from_dict(tomllib.load(f))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per config field (e.g. --d-model, --tsg-norm, --lr), default None = not given."""
    for section, kind in SECTIONS.items():
        group = parser.add_argument_group(f"[{section}] config")
        for f in dataclasses.fields(kind):
            flag = "--" + f.name.replace("_", "-")
            default = f.default
            if isinstance(default, bool):
                group.add_argument(flag, dest=f"cfg_{f.name}", default=None,
                                   action=argparse.BooleanOptionalAction, help=f"(default {default})")
            elif f.name in CHOICES:
                group.add_argument(flag, dest=f"cfg_{f.name}", default=None, choices=CHOICES[f.name],
                                   help=f"(default {default})")
            else:
                group.add_argument(flag, dest=f"cfg_{f.name}", default=None, type=type(default),
                                   metavar=type(default).__name__.upper(), help=f"(default {default})")


def overrides_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config fields given on the command line, as {section: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for section, kind in SECTIONS.items():
        for f in dataclasses.fields(kind):
            value = getattr(args, f"cfg_{f.name}", None)
            if value is not None:
                out.setdefault(section, {})[f.name] = value
    return out


def with_overrides(cfg: Config, overrides: dict[str, dict[str, Any]]) -> Config:
    data = cfg.to_dict()
    for section, values in overrides.items():
        data[section].update(values)
    return Config.from_dict(data)


# `estm train --preset NAME`: settings measured for a case the paper's protocol does not fit
# (docs/design.md, "Small data"); flags given beside a preset override it.
SMALL_DATA_CLIPS_PER_ID = 100  # up to this many training clips per ID (median) is small data
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "small-data": {
        "model": {"d_model": 64, "depth": 2, "arcface_margin": 0.2},
        "train": {"epochs": 150, "batch_size": 32, "lr": 2e-3, "time_shift": True,
                  "speed_classes": 2},
    },
}


def preset_overrides(name: str) -> dict[str, dict[str, Any]]:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {section: dict(values) for section, values in PRESETS[name].items()}


def uses_paper_recipe(cfg: Config, preset: str = "small-data") -> bool:
    """Whether every setting `preset` changes still has its default (the paper's) value."""
    default = Config().to_dict()
    given = cfg.to_dict()
    return all(given[section][key] == default[section][key]
               for section, values in PRESETS[preset].items() for key in values)
