"""Launched by test_pipeline under torchrun: trains one epoch of a tiny config and saves the
weights each rank holds in memory (and the seeded initial weights) for the test to compare."""

import sys
from pathlib import Path

import torch

from estm_ref.config import Config, with_overrides
from estm_ref.model import build_model
from estm_ref.pipeline.demo import TINY_CONFIG
from estm_ref.pipeline.train import train


def main(data_root: str, out: str) -> None:
    out_dir = Path(out)
    cfg = with_overrides(Config(), {**TINY_CONFIG, "features": {"clip_samples": 16000},
                                    "train": {**TINY_CONFIG["train"], "epochs": 1,
                                              "cache_audio": False, "seed": 5}})
    summary = train(cfg, [data_root], out_dir / "run", progress=False)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save(summary["model"].state_dict(), out_dir / f"rank{rank}.pt")
    if rank == 0:
        torch.manual_seed(cfg.train.seed)
        n_classes = summary["classes"]
        torch.save(build_model(cfg.features, cfg.model, n_classes, torch.device("cpu")).state_dict(), out_dir / "init.pt")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
