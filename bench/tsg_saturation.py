"""How binary is the TSG gate? Per machine type, the share of frames whose gate is below
0.05 or above 0.95, and the std over frames of s_n - mu, for tsg_norm "none" (the paper's
formula) and "std" (ours). Usage: python bench/tsg_saturation.py --data-root DIR [--split train]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from estm_ref.config import FeatureConfig  # noqa: E402
from estm_ref.data import load_clip, scan_roots  # noqa: E402
from estm_ref.model.features import log_mel, tsg_gate, tsg_saturation, tsg_statistic  # noqa: E402


def saturation_by_type(roots: list[Path], split: str, max_clips: int) -> list[tuple]:
    cfg = FeatureConfig()
    clips = scan_roots(roots).select(split=split)
    rows = []
    for machine_type in sorted({c.machine_type for c in clips}, key=str.lower):
        chosen = [c for c in clips if c.machine_type == machine_type][:max_clips]
        wave = torch.stack([torch.from_numpy(load_clip(c.path, cfg)) for c in chosen])
        mel = log_mel(wave, cfg)
        s = tsg_statistic(mel)  # (batch, n_frames)
        spread = (s - s.mean(-1, keepdim=True)).std(-1).mean().item()
        sat = {norm: tsg_saturation(tsg_gate(mel, cfg.tsg_alpha, norm)).mean().item()
               for norm in ("none", "std")}
        rows.append((machine_type, len(chosen), spread, sat["none"], sat["std"]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", action="append", required=True, type=Path)
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--max-clips", type=int, default=40, help="clips per machine type")
    args = parser.parse_args()
    print("| machine type | clips | std of s_n - mu | saturated, none | saturated, std |")
    print("|---|---:|---:|---:|---:|")
    for machine_type, n, spread, none, std in saturation_by_type(args.data_root, args.split,
                                                                 args.max_clips):
        print(f"| {machine_type} | {n} | {spread:.2f} | {100 * none:.0f}% | {100 * std:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
