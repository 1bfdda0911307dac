"""Where the work runs: the device, bf16 autocast and the (possibly one-process) distributed
group. Imports nothing of the project but its error type."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from estm_ref.errors import InputError


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
    """"auto" -> cuda when torch sees a GPU, else cpu; "cuda" without one is an InputError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError(f"--device {name}: not a device name ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available (torch {torch.__version__})")
    return device


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (WORLD_SIZE > 1), else a one-process Dist.

    gloo on CPU, NCCL on CUDA, where each rank takes cuda:LOCAL_RANK."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Dist(world_size=dist.get_world_size(), rank=dist.get_rank()), device


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def autocast_for(amp: str, device: torch.device):
    """bf16 autocast on CUDA under amp="auto"; "bf16" forces it, "off" disables it."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
