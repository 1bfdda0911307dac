"""Training: one model for all machines, cross-entropy over ArcFace logits (docs/design.md, "Training").

Single process by default; under `torchrun --nproc_per_node N` the same call trains with
DistributedDataParallel (gloo on CPU, NCCL on CUDA), rank 0 logging and writing. The
global batch is `batch_size`, split evenly over the ranks.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from estm_ref.config import SMALL_DATA_CLIPS_PER_ID, Config, uses_paper_recipe, with_overrides
from estm_ref.data import ClipDataset, build_class_list, scan_roots, summary_table
from estm_ref.errors import InputError, TrainingError
from estm_ref.model import build_model
from estm_ref.pipeline import run_dir as rd
from estm_ref.pipeline.augment import Augmentation, augment, build_augmentations
from estm_ref.pipeline.training_pass import compute_training_pass, split_validation
from estm_ref.runtime import Dist, autocast_for, init_distributed, resolve_device
from estm_ref.scan import resolve_backend

log = logging.getLogger(__name__)


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
    if device.type != "cuda" or resolve_backend(cfg.model.scan_backend, device) != "triton":
        return
    from estm_ref.scan.parity import check_parity

    ok, report = check_parity(device)
    log.info("scan parity self-check on %s:\n%s", device, report)
    if not ok:
        raise TrainingError("the Triton selective scan does not match the reference on "
                            f"{device}; refusing to train. Report:\n{report}\n"
                            "Train with --scan-backend ref to use the PyTorch reference.")


@dataclass
class Session:
    """Everything one training run holds between its steps."""

    cfg: Config
    run_dir: Path
    ddp: Dist
    device: torch.device
    class_list: list[tuple[str, str]]
    datasets: dict[str, ClipDataset] = field(default_factory=dict)
    state: dict | None = None  # the checkpoint being resumed


def _open_run(cfg: Config, run_dir: Path, device: str, resume: bool, force: bool,
              epoch_overrides: dict | None) -> tuple[Config, Dist, torch.device, dict | None]:
    ddp, dev = init_distributed(resolve_device(device))
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rd.check_run_dir(run_dir, resume, force)
    ddp.barrier()
    state = None
    if resume:
        state = rd.load(run_dir / rd.CHECKPOINT_NAME)
        saved = Config.from_dict(state["config"])
        cfg = with_overrides(saved, {"train": epoch_overrides} if epoch_overrides else {})
    if cfg.train.batch_size % ddp.world_size:
        raise InputError(f"batch_size {cfg.train.batch_size} does not split over "
                         f"{ddp.world_size} processes")
    if ddp.is_main:
        log.info("config:\n%s", json.dumps(cfg.to_dict(), indent=2))
        (run_dir / rd.CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return cfg, ddp, dev, state


def _training_clips(data_roots: Sequence[Path | str]) -> list:
    """The training clips under the roots; found before the run folder is touched, so a
    wrong root leaves no half-made run behind."""
    train_clips = scan_roots(data_roots).select(split="train")
    if not train_clips:
        raise InputError(f"no training clips under {', '.join(map(str, data_roots))}")
    return train_clips


def _load_data(s: Session, train_clips: list, cache_dir: Path | None, progress: bool) -> None:
    if s.state is None:
        s.class_list = build_class_list(train_clips)
    if s.ddp.is_main:
        log.info("training data:\n%s", summary_table(train_clips))
        _warn_if_small_data(train_clips, s.cfg)
    splits = dict(zip(("train", "val"), split_validation(
        train_clips, s.cfg.train.val_fraction, s.cfg.train.seed)))
    cache = None
    if s.cfg.train.cache_audio:
        cache = Path(cache_dir) if cache_dir is not None else s.run_dir / rd.CACHE_NAME
    for rank_turn in (True, False):  # rank 0 builds the audio cache; the others reuse it
        if s.ddp.is_main == rank_turn:
            for name, clips in splits.items():
                if clips or name == "train":
                    s.datasets[name] = ClipDataset(clips, s.class_list, s.cfg.features,
                                                   cache_dir=cache,
                                                   progress=progress and s.ddp.is_main)
        s.ddp.barrier()


def _warn_if_small_data(train_clips, cfg: Config) -> None:
    """The paper's protocol on a few clips per ID memorises the IDs (docs/design.md, "Small data")."""
    per_id = Counter((c.machine_type, c.machine_id) for c in train_clips)
    median = statistics.median(per_id.values())
    if median <= SMALL_DATA_CLIPS_PER_ID and uses_paper_recipe(cfg):
        log.warning("%g training clips per ID (median) with the paper's settings, which are meant "
                    "for about 1,000: consider `estm train --preset small-data` "
                    "(docs/dcase.md)", median)


def _optimiser(s: Session, model: torch.nn.Module):
    """AdamW and its schedule, restored from the checkpoint when resuming; the first epoch."""
    optimizer = torch.optim.AdamW(parameter_groups(model, s.cfg.train.weight_decay),
                                  lr=s.cfg.train.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(s.cfg))
    if s.state is None:
        return optimizer, scheduler, 0
    model.load_state_dict(s.state["model"])
    optimizer.load_state_dict(s.state["optimizer"])
    scheduler.load_state_dict(s.state["scheduler"])
    rd.set_rng_state(s.state["rng"])
    start_epoch = int(s.state["epoch"])
    if s.ddp.is_main:
        log.info("resuming %s after epoch %d of %d", s.run_dir, start_epoch, s.cfg.train.epochs)
    return optimizer, scheduler, start_epoch


def _loader(s: Session):
    sampler = torch.utils.data.DistributedSampler(
        s.datasets["train"], num_replicas=s.ddp.world_size, rank=s.ddp.rank, shuffle=True,
        seed=s.cfg.train.seed, drop_last=False)
    loader = torch.utils.data.DataLoader(
        s.datasets["train"], batch_size=s.cfg.train.batch_size // s.ddp.world_size,
        sampler=sampler, num_workers=s.cfg.train.num_workers,
        pin_memory=s.device.type == "cuda", persistent_workers=s.cfg.train.num_workers > 0)
    return sampler, loader


def _save_epoch(s: Session, model, optimizer, scheduler, epoch: int, metrics: dict) -> None:
    rd.append_metrics(s.run_dir / rd.METRICS_NAME, metrics)
    rd.atomic_save({
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rd.rng_state(), "epoch": epoch + 1, "config": s.cfg.to_dict(),
        "class_list": [list(c) for c in s.class_list],
    }, s.run_dir / rd.CHECKPOINT_NAME)


def train(cfg: Config, data_roots: Sequence[Path | str], run_dir: Path | str,
          device: str = "auto", resume: bool = False, force: bool = False,
          progress: bool = True, cache_dir: Path | None = None,
          epoch_overrides: dict | None = None) -> dict:
    """Train (or resume) a run in `run_dir`. Returns a summary dict; its "model" is the trained
    module (unwrapped from DDP). See the module docstring."""
    run_dir = Path(run_dir)
    train_clips = _training_clips(data_roots)
    cfg, ddp, dev, state = _open_run(cfg, run_dir, device, resume, force, epoch_overrides)
    torch.manual_seed(cfg.train.seed)
    class_list = [tuple(c) for c in state["class_list"]] if state is not None else []
    s = Session(cfg, run_dir, ddp, dev, class_list, state=state)
    _load_data(s, train_clips, cache_dir, progress)
    skipped = sum(len(d.skipped) for d in s.datasets.values())
    if skipped and ddp.is_main:
        log.warning("%d bad training file(s) skipped (listed above)", skipped)

    model = build_model(cfg.features, cfg.model, cfg.train.head_classes(len(s.class_list)), dev)
    backend = resolve_backend(cfg.model.scan_backend, dev)
    if ddp.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        views = (f" x {cfg.train.speed_views} speed views" if cfg.train.speed_views > 1 else "")
        log.info("model: %.2f M parameters, %d classes%s, scan backend %s on %s, %d process(es)",
                 n_params / 1e6, len(s.class_list), views, backend, dev, ddp.world_size)
    check_kernel_parity(cfg, dev)
    optimizer, scheduler, start_epoch = _optimiser(s, model)
    net = model if ddp.world_size == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None)
    sampler, loader = _loader(s)
    augmentations = build_augmentations(cfg.train, cfg.features, len(s.class_list))

    last = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        sampler.set_epoch(epoch)
        last = _train_epoch(net, loader, optimizer, augmentations, cfg, dev, epoch, ddp, progress)
        if "val" in s.datasets:
            last.update(_validate(model, s.datasets["val"], cfg, dev))
        last["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if ddp.is_main:
            _save_epoch(s, model, optimizer, scheduler, epoch, last)
        ddp.barrier()

    if ddp.is_main:
        _save_training_pass(s, model, progress)
    ddp.barrier()
    return {"run_dir": str(run_dir), "epochs": cfg.train.epochs, "classes": len(s.class_list),
            "skipped_files": skipped, "last_epoch": last, "backend": backend, "model": model}


def _save_training_pass(s: Session, model, progress: bool) -> None:
    """The training clips under the final model, kept for the scorers of test and score
    (which fit their decision thresholds on it)."""
    training = compute_training_pass(model, s.datasets["train"], s.datasets.get("val"), s.cfg,
                                     s.device, s.class_list, progress)
    log.info("training clips' embeddings saved to %s", training.save(s.run_dir))


def _train_epoch(net, loader, optimizer, augmentations: list[Augmentation], cfg: Config,
                 dev: torch.device, epoch: int, ddp: Dist, progress: bool) -> dict:
    from tqdm.auto import tqdm

    net.train()
    total_loss = total_correct = total_clips = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
               disable=not (progress and ddp.is_main), unit="batch")
    for step, (wave, cls, _, _) in enumerate(bar):
        wave = wave.to(dev, non_blocking=True)
        cls = cls.to(dev, non_blocking=True)
        batch = augment(augmentations, wave, cls)
        cls = batch.cls
        with autocast_for(cfg.train.amp, dev):
            out = net(batch.wave, cls)
            head = getattr(net, "module", net).head
            other_logits = head(out.embedding, batch.other) if batch.lam < 1 else None
        loss = F.cross_entropy(out.logits.float(), cls)
        if other_logits is not None:  # mixup: the second clip's class, with its weight
            loss = batch.lam * loss + (1.0 - batch.lam) * F.cross_entropy(other_logits.float(),
                                                                          batch.other)
        _stop_unless_finite(loss, epoch, step, ddp)
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


def _stop_unless_finite(loss: torch.Tensor, epoch: int, step: int, ddp: Dist) -> None:
    check = loss.detach().clone()
    if ddp.world_size > 1:  # every rank must stop together
        dist.all_reduce(check)
    if not torch.isfinite(check):
        raise TrainingError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step "
                            f"{step + 1}; the checkpoint of the last finished epoch is kept")


@torch.no_grad()
def _validate(model, dataset, cfg: Config, dev: torch.device) -> dict:
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size)
    loss_sum = correct = n = 0.0
    for wave, cls, _, _ in loader:
        wave, cls = wave.to(dev), cls.to(dev)
        with autocast_for(cfg.train.amp, dev):
            out = model(wave, cls)
        logits = out.logits.float()
        loss_sum += F.cross_entropy(logits, cls, reduction="sum").item()
        correct += (model.head.cosine(out.embedding).argmax(-1) == cls).sum().item()
        n += cls.numel()
    return {"val_loss": loss_sum / n, "val_accuracy": correct / n}
