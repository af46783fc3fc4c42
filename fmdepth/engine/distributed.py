"""Processes, devices and precision of the training loop: ``torchrun`` (``env://``; gloo on CPU,
nccl on CUDA), ``train.device`` and ``train.amp``, and the collectives the loop needs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from fmdepth.core.system import StepOutput


@dataclass
class DistInfo:
    """This process's place in the run (world size 1 without ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed:
            dist.barrier()

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on every rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=comm_device(device))
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0.5)

    def mean_across(self, value: float, device: torch.device) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=comm_device(device))
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


def comm_device(device: torch.device) -> torch.device:
    """Where collective tensors live: the training device for nccl, the CPU for gloo."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def init_distributed(device_kind: str) -> DistInfo:
    """Join the ``torchrun`` process group (``WORLD_SIZE`` > 1), or a single-process :class:`DistInfo`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, False)
    backend = "nccl" if device_kind == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank, world, local_rank, True)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``train.device`` -> torch.device (``auto``: CUDA when available, else CPU)."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"config key 'train.device': '{spec}' requested but no CUDA device is "
                             f"available; use train.device=cpu or auto")
        if spec == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise ValueError(f"config key 'train.device': expected auto, cpu, cuda or cuda:N, got '{spec}'")


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """``train.amp`` -> autocast dtype (None = full precision); errors where unsupported."""
    if amp == "none":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("config key 'train.amp': fp16 mixed precision needs a CUDA device "
                             f"(training runs on {device}); use train.amp=bf16 or none")
        return torch.float16
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("config key 'train.amp': this GPU does not support bf16; use fp16 or none")
        return torch.bfloat16
    raise ValueError(f"config key 'train.amp': expected none, bf16 or fp16, got '{amp}'")


class StepModule(nn.Module):
    """Routes ``training_step`` through ``forward`` so DDP sees (and synchronises) the step."""

    def __init__(self, system: nn.Module) -> None:
        super().__init__()
        self.system = system

    def forward(self, batch, step: int, want_images: bool) -> StepOutput:
        return self.system.training_step(batch, step, want_images=want_images)


def wrap_ddp(system: nn.Module, info: DistInfo, device: torch.device, find_unused: bool) -> nn.Module:
    """:class:`StepModule` around ``system``, inside ``DistributedDataParallel`` when distributed."""
    model: nn.Module = StepModule(system)
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=find_unused)
    return model
