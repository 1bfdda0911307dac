"""`estm train`: one model for all machines, cross-entropy over ArcFace logits (SPEC §5).

Single process by default; under `torchrun --nproc_per_node N` the same command trains
with DistributedDataParallel (gloo on CPU, NCCL on CUDA), rank 0 logging and writing.
The global batch is `batch_size`, split evenly over the ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from estm_ref import checkpoint as ckpt_io
from estm_ref.config import (Config, add_config_arguments, load_toml, overrides_from_args,
                             with_overrides)

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.csv"
CONFIG_NAME = "config.json"
THRESHOLDS_NAME = "thresholds.json"
METRIC_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "clips_per_s",
                 "seconds"]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, failed parity check, bad run folder)."""


@dataclass
class Dist:
    """Where this process sits in a (possibly one-process) distributed run."""

    world_size: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available (torch {torch.__version__})")
    return device


def _init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Dist(world_size=dist.get_world_size(), rank=dist.get_rank()), device


def autocast_for(cfg: Config, device: torch.device):
    """bf16 autocast on CUDA under amp="auto"; "bf16" forces it, "off" disables it."""
    amp = cfg.train.amp
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def lr_lambda(cfg: Config):
    """Per-epoch multiplier of the base lr: linear warm-up, then constant or cosine."""
    epochs, warmup = cfg.train.epochs, cfg.train.warmup_epochs

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        if cfg.train.schedule == "constant":
            return 1.0
        progress = (epoch - warmup) / max(1, epochs - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    existing = [n for n in (ckpt_io.CHECKPOINT_NAME, METRICS_NAME, CONFIG_NAME)
                if (run_dir / n).exists()]
    if resume:
        if not (run_dir / ckpt_io.CHECKPOINT_NAME).exists():
            raise TrainingError(f"--resume: no {ckpt_io.CHECKPOINT_NAME} in {run_dir}")
        return
    if existing and not force:
        raise TrainingError(f"{run_dir} already holds a run ({', '.join(existing)}); "
                            "pass --resume to continue it or --force to start over")
    for name in existing:
        (run_dir / name).unlink()
    (run_dir / THRESHOLDS_NAME).unlink(missing_ok=True)


def _split_validation(clips, fraction: float, seed: int):
    """A seeded held-out slice of training normals per (type, id); never test data."""
    if fraction <= 0:
        return list(clips), []
    gen = torch.Generator().manual_seed(seed)
    by_class: dict[tuple[str, str], list] = {}
    for c in clips:
        by_class.setdefault((c.machine_type, c.machine_id), []).append(c)
    train, val = [], []
    for key in sorted(by_class):
        group = by_class[key]
        order = torch.randperm(len(group), generator=gen).tolist()
        n_val = int(round(fraction * len(group)))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def build_model(cfg: Config, n_classes: int, device: torch.device):
    from estm_ref.model import ESTM

    return ESTM(cfg.features, cfg.model, n_classes).to(device)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on parameters marked `_no_weight_decay` (the SSM's
    A_log and D, as in Mamba), `weight_decay` on the rest."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def check_kernel_parity(cfg: Config, device: torch.device) -> None:
    """On CUDA with the Triton scan, prove kernel == reference on this device first."""
    from estm_ref.scan import resolve_backend

    if device.type != "cuda" or resolve_backend(cfg.model.scan_backend, device) != "triton":
        return
    from estm_ref.scan.parity import check_parity

    ok, report = check_parity(device)
    log.info("scan parity self-check on %s:\n%s", device, report)
    if not ok:
        raise TrainingError("the Triton selective scan does not match the reference on "
                            f"{device}; refusing to train. Report:\n{report}\n"
                            "Train with --scan-backend ref to use the PyTorch reference.")


def train(cfg: Config, data_roots: Sequence[Path | str], run_dir: Path | str,
          device: str = "auto", resume: bool = False, force: bool = False,
          progress: bool = True, cache_dir: Path | None = None,
          epoch_overrides: dict | None = None) -> dict:
    """Train (or resume) a run in `run_dir`. Returns a summary dict; its "model" is the trained
    module (unwrapped from DDP). See the module docstring."""
    from estm_ref.data import ClipDataset, build_class_list, scan_roots, summary_table

    run_dir = Path(run_dir)
    ddp, dev = _init_distributed(resolve_device(device))
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _check_run_dir(run_dir, resume, force)
    ddp.barrier()

    state = None
    if resume:
        state = ckpt_io.load(run_dir / ckpt_io.CHECKPOINT_NAME)
        saved = Config.from_dict(state["config"])
        cfg = with_overrides(saved, {"train": epoch_overrides} if epoch_overrides else {})
        class_list = [tuple(c) for c in state["class_list"]]
    torch.manual_seed(cfg.train.seed)
    if cfg.train.batch_size % ddp.world_size:
        raise TrainingError(f"batch_size {cfg.train.batch_size} does not split over "
                            f"{ddp.world_size} processes")
    if ddp.is_main:
        log.info("config:\n%s", json.dumps(cfg.to_dict(), indent=2))
        (run_dir / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    index = scan_roots(data_roots)
    train_clips = index.select(split="train")
    if not train_clips:
        raise TrainingError(f"no training clips under {', '.join(map(str, data_roots))}")
    if state is None:
        class_list = build_class_list(train_clips)
    if ddp.is_main:
        log.info("training data:\n%s", summary_table(train_clips))
    train_clips, val_clips = _split_validation(train_clips, cfg.train.val_fraction, cfg.train.seed)
    cache = None
    if cfg.train.cache_audio:
        cache = Path(cache_dir) if cache_dir is not None else run_dir / "cache"
    datasets = {}
    for rank_turn in (True, False):  # rank 0 builds the audio cache; the others reuse it
        if ddp.is_main == rank_turn:
            datasets["train"] = ClipDataset(train_clips, class_list, cfg.features, cache_dir=cache,
                                            progress=progress and ddp.is_main)
            if val_clips:
                datasets["val"] = ClipDataset(val_clips, class_list, cfg.features,
                                              cache_dir=cache, progress=progress and ddp.is_main)
        ddp.barrier()
    skipped = sum(len(d.skipped) for d in datasets.values())
    if skipped and ddp.is_main:
        log.warning("%d bad training file(s) skipped (listed above)", skipped)

    model = build_model(cfg, len(class_list), dev)
    from estm_ref.scan import resolve_backend

    backend = resolve_backend(cfg.model.scan_backend, dev)
    if ddp.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %.2f M parameters, %d classes, scan backend %s on %s, %d process(es)",
                 n_params / 1e6, len(class_list), backend, dev, ddp.world_size)
    check_kernel_parity(cfg, dev)

    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt_io.set_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        if ddp.is_main:
            log.info("resuming %s after epoch %d of %d", run_dir, start_epoch, cfg.train.epochs)
    net = model
    if ddp.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)

    sampler = torch.utils.data.DistributedSampler(
        datasets["train"], num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True,
        seed=cfg.train.seed, drop_last=False)
    loader = torch.utils.data.DataLoader(
        datasets["train"], batch_size=cfg.train.batch_size // ddp.world_size, sampler=sampler,
        num_workers=cfg.train.num_workers, pin_memory=dev.type == "cuda",
        persistent_workers=cfg.train.num_workers > 0)

    last = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        sampler.set_epoch(epoch)
        last = _train_epoch(net, loader, optimizer, cfg, dev, epoch, ddp, progress)
        if "val" in datasets:
            last.update(_validate(model, datasets["val"], cfg, dev))
        last["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if ddp.is_main:
            _append_metrics(run_dir / METRICS_NAME, last)
            ckpt_io.atomic_save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": {},  # bf16 autocast needs no scaler
                "rng": ckpt_io.rng_state(), "epoch": epoch + 1, "config": cfg.to_dict(),
                "class_list": [list(c) for c in class_list],
            }, run_dir / ckpt_io.CHECKPOINT_NAME)
        ddp.barrier()

    if ddp.is_main:
        thresholds = fit_thresholds(model, datasets["train"], cfg, dev, progress,
                                    val_set=datasets.get("val"))
        (run_dir / THRESHOLDS_NAME).write_text(json.dumps(thresholds, indent=2) + "\n")
    ddp.barrier()
    return {"run_dir": str(run_dir), "epochs": cfg.train.epochs, "classes": len(class_list),
            "skipped_files": skipped, "last_epoch": last, "backend": backend, "model": model}


def _train_epoch(net, loader, optimizer, cfg: Config, dev: torch.device, epoch: int,
                 ddp: Dist, progress: bool) -> dict:
    from tqdm.auto import tqdm

    net.train()
    total_loss = total_correct = total_clips = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
               disable=not (progress and ddp.is_main), unit="batch")
    for step, (wave, cls, _, _) in enumerate(bar):
        wave = wave.to(dev, non_blocking=True)
        cls = cls.to(dev, non_blocking=True)
        with autocast_for(cfg, dev):
            out = net(wave, cls)
        loss = F.cross_entropy(out.logits.float(), cls)
        check = loss.detach().clone()
        if ddp.world_size > 1:  # every rank must stop together
            dist.all_reduce(check)
        if not torch.isfinite(check):
            raise TrainingError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step "
                                f"{step + 1}; the checkpoint of the last finished epoch is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        optimizer.step()
        n = cls.numel()
        total_loss += loss.item() * n
        with torch.no_grad():  # accuracy of the plain cosine classifier, without the margin
            head = getattr(net, "module", net).head
            total_correct += (head.cosine(out.embedding).argmax(-1) == cls).sum().item()
        total_clips += n
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{total_loss / total_clips:.4f}",
                        acc=f"{total_correct / total_clips:.3f}",
                        clips_s=f"{total_clips * ddp.world_size / elapsed:.1f}")
    totals = torch.tensor([total_loss, total_correct, total_clips], dtype=torch.float64)
    if ddp.world_size > 1:
        dist.all_reduce(totals)
    seconds = time.perf_counter() - start
    loss_sum, correct, clips = totals.tolist()
    metrics = {"epoch": epoch + 1, "loss": loss_sum / clips, "accuracy": correct / clips,
               "clips_per_s": clips / seconds, "seconds": seconds}
    if ddp.is_main:
        log.info("epoch %d/%d: loss %.4f, accuracy %.3f, %.1f clips/s", epoch + 1,
                 cfg.train.epochs, metrics["loss"], metrics["accuracy"], metrics["clips_per_s"])
    return metrics


@torch.no_grad()
def _validate(model, dataset, cfg: Config, dev: torch.device) -> dict:
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size)
    loss_sum = correct = n = 0.0
    for wave, cls, _, _ in loader:
        wave, cls = wave.to(dev), cls.to(dev)
        with autocast_for(cfg, dev):
            out = model(wave, cls)
        logits = out.logits.float()
        loss_sum += F.cross_entropy(logits, cls, reduction="sum").item()
        correct += (model.head.cosine(out.embedding).argmax(-1) == cls).sum().item()
        n += cls.numel()
    return {"val_loss": loss_sum / n, "val_accuracy": correct / n}


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k, ""))
                    for k in METRIC_FIELDS})


def fit_thresholds(model, train_set, cfg: Config, dev: torch.device, progress: bool,
                   val_set=None) -> dict:
    """Gamma-fit decision thresholds per (type, id) from normal training-clip scores.

    With a held-out slice (`val_fraction` > 0) the fit uses its clips, whose scores are
    not lowered by the model having been fitted to them; an ID with fewer than two
    held-out clips uses its training clips instead, and the log says which IDs did.
    """
    from estm_ref.evaluate import score_dataset
    from estm_ref.metrics import gamma_threshold

    def scores_by_id(dataset, desc: str) -> dict[str, list[float]]:
        scored = score_dataset(model, dataset, cfg, dev, progress=progress, desc=desc)
        by_id: dict[str, list[float]] = {}
        for clip, score in zip(dataset.clips, scored.scores):
            by_id.setdefault(f"{clip.machine_type}/id_{clip.machine_id}", []).append(float(score))
        return by_id

    fitted: dict[str, list[float]] = {}
    if val_set is not None:
        fitted = {k: v for k, v in scores_by_id(val_set, "held-out scores").items() if len(v) >= 2}
        log.info("decision thresholds fitted on held-out clips for %d ID(s)", len(fitted))
    fallback = sorted({f"{c.machine_type}/id_{c.machine_id}" for c in train_set.clips} - set(fitted))
    if fallback:  # training clips are scored only when some ID needs them
        if val_set is not None:
            log.warning("fewer than 2 held-out clips: thresholds from training clips for %s",
                        ", ".join(fallback))
        training = scores_by_id(train_set, "training scores")
        fitted.update((key, training[key]) for key in fallback)
    return {key: gamma_threshold(scores) for key, scores in sorted(fitted.items())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", action="append", required=True, type=Path,
                        help="DCASE 2020 Task 2 root (repeat for dev + additional data)")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--config", type=Path, help="TOML file with [features] [model] [train]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--force", action="store_true", help="overwrite the run in --out")
    parser.add_argument("--cache-dir", type=Path, help="decoded-audio cache (default RUN/cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser)


def config_from_args(args: argparse.Namespace) -> Config:
    base = load_toml(args.config) if args.config else Config()
    return with_overrides(base, overrides_from_args(args))


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from_args(args)
    epoch_overrides = None
    if args.resume:
        extra = {k for section, values in overrides.items() for k in values} - {"epochs"}
        if extra or args.config:
            raise SystemExit(f"--resume continues the saved config; only --epochs may change "
                             f"(got {sorted(extra) or '--config'})")
        epoch_overrides = overrides.get("train")
    cfg = config_from_args(args)
    try:
        summary = train(cfg, args.data_root, args.out, device=args.device, resume=args.resume,
                        force=args.force, progress=not args.no_progress,
                        cache_dir=args.cache_dir, epoch_overrides=epoch_overrides)
    except TrainingError as err:
        log.error("%s", err)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    summary.pop("model")
    log.info("training finished: %s", json.dumps(summary))
    return 0
