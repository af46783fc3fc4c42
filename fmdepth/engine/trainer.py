"""The training loop shared by every task: one CPU, one GPU or many GPUs through ``torchrun``.

What it does, and nothing about losses or geometry (those live in the task's system):

* Adam over ``system.parameter_groups()`` with linear warm-up and step decay at epoch milestones
  (:func:`lr_factor`), optional gradient clipping, mixed precision (``train.amp``: bf16 on CPU or
  CUDA, fp16 with a ``GradScaler`` on CUDA only).
* Distributed data parallel when started by ``torchrun`` (``env://``; gloo on CPU, nccl on CUDA).
  Only rank 0 writes files (config, logs, TensorBoard, checkpoints) and runs validation.
* Exact resume: the data order is a seeded permutation per epoch (``DistributedSampler`` with
  ``set_epoch``), every sample is loaded under its own seed (so augmentation does not depend on
  worker count or on where a run was interrupted), and a checkpoint stores model/optimizer/
  scheduler/scaler state, the RNG states of every rank and the position inside the epoch; a
  resumed run skips the batches already consumed and reproduces the uninterrupted loss sequence.
* A guard against non-finite losses/gradients (skip the step with a warning; stop after
  ``train.max_bad_steps`` consecutive ones), Ctrl-C writes ``last.pt`` before exiting, and
  ``train.max_steps`` / ``train.max_minutes`` budgets.

Files of a run (``RUN_DIR``)::

    config.yaml              the fully resolved config
    metrics.jsonl            one JSON object per log line (split "train" or "val")
    tensorboard/             tensorboardX events (scalars, images)
    checkpoints/last.pt      written every train.ckpt_every steps / epoch, at the end, on Ctrl-C
    checkpoints/best.pt      the best validation result (Task.best_metric / best_mode)
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from fmdepth import __version__
from fmdepth.config import Config, config_to_dict, save_config
from fmdepth.core.checkpoint import (check_compatible, get_rng_state, load_checkpoint,
                                       save_checkpoint, set_rng_state)
from fmdepth.core.system import StepOutput, check_system
from fmdepth.core.task import Task


class NonFiniteLossError(RuntimeError):
    """Training stopped after ``train.max_bad_steps`` consecutive non-finite losses."""


# ------------------------------------------------------------------------------- LR schedule
def lr_factor(step: int, warmup_steps: int, decay_epochs: Sequence[int], gamma: float,
              steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, times
    ``gamma ** (number of milestones in decay_epochs <= current epoch)``, where the current epoch
    is ``step // steps_per_epoch``.

    >>> lr_factor(0, 4, [2], 0.1, 10), lr_factor(3, 4, [2], 0.1, 10), lr_factor(20, 4, [2], 0.1, 10)
    (0.25, 1.0, 0.1)
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    epoch = step // max(1, steps_per_epoch)
    return warm * gamma ** sum(1 for m in decay_epochs if epoch >= m)


class WarmupStepDecay:
    """Sets every param group's ``lr`` to ``initial_lr * lr_factor(step, ...)``.

    ``state_dict()`` holds only the step, so checkpoints stay plain data.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int,
                 decay_epochs: Sequence[int], gamma: float, steps_per_epoch: int) -> None:
        self.optimizer = optimizer
        self.warmup_steps = int(warmup_steps)
        self.decay_epochs = list(decay_epochs)
        self.gamma = float(gamma)
        self.steps_per_epoch = int(steps_per_epoch)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.step_count = 0
        self._apply()

    def factor(self) -> float:
        return lr_factor(self.step_count, self.warmup_steps, self.decay_epochs, self.gamma,
                         self.steps_per_epoch)

    def _apply(self) -> None:
        f = self.factor()
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> Dict[str, int]:
        return {"step": self.step_count}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.step_count = int(state["step"])
        self._apply()


# ------------------------------------------------------------------------------------ data
class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded permutation per ``set_epoch``) that can start mid-epoch.

    Yields ``(dataset_index, sample_seed)`` pairs: the seed is fixed by (seed, epoch, position in
    the epoch's permutation), so a sample's augmentation is the same whichever worker loads it
    and whether or not the run was interrupted. ``set_start(n)`` skips this rank's first ``n``
    samples of the epoch (the batches a resumed run already trained on).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self):
        indices = list(super().__iter__())  # this rank's share of the epoch's permutation
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) % (2 ** 63) + 7919)
        seeds = torch.randint(0, 2 ** 62, (self.total_size,), generator=g)
        seeds = seeds[self.rank:self.total_size:self.num_replicas].tolist()
        for idx, s in list(zip(indices, seeds))[self.start:]:
            yield idx, s

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class SeededDataset(Dataset):
    """Loads ``dataset[index]`` with python/numpy/torch seeded by the sampler's per-sample seed.

    The caller's RNG state is restored afterwards, so data loading in the main process
    (``num_workers=0``) does not disturb the training RNG stream.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(seed)
        np.random.seed(seed % (2 ** 32))
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, object with ``.to``, or nested dict/list/tuple) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


# ------------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
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


def _init_distributed(device_kind: str) -> DistInfo:
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


class _StepModule(nn.Module):
    """Routes ``training_step`` through ``forward`` so DDP sees (and synchronises) the step."""

    def __init__(self, system: nn.Module) -> None:
        super().__init__()
        self.system = system

    def forward(self, batch, step: int, want_images: bool) -> StepOutput:
        return self.system.training_step(batch, step, want_images=want_images)


# --------------------------------------------------------------------------------- run folder
RUN_FILES = ("config.yaml", "metrics.jsonl", os.path.join("checkpoints", "last.pt"))


def check_run_dir(run_dir: str, resume: bool) -> None:
    """Refuse to start a new run on top of an existing one; require a checkpoint to resume."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise NotADirectoryError(f"--out {run_dir} exists and is not a folder")
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if resume:
        if not os.path.isfile(last):
            raise FileNotFoundError(f"cannot resume: {last} does not exist (start the run without "
                                    f"--resume, or point --out at the run folder to continue)")
        return
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(run_dir, f))]
    if existing:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
            f"it, or choose another --out folder (or delete this one) to start a new run")


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; file paths are those rank 0 wrote)."""

    step: int
    epoch: int
    stop_reason: str  # "epochs" | "max_steps" | "max_minutes"
    best_metric: Optional[float] = None
    last_val: Optional[Dict[str, float]] = None
    last_checkpoint: Optional[str] = None
    best_checkpoint: Optional[str] = None
    train_losses: List[float] = field(default_factory=list)  # per step of this process


# --------------------------------------------------------------------------------- the loop
class Trainer:
    """Trains ``task.system`` according to ``cfg.optim`` / ``cfg.train``; see the module docstring.

    Use :func:`train` unless you need the pieces.
    """

    def __init__(self, cfg: Config, task: Task, run_dir: str, resume: bool = False,
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.task = task
        self.run_dir = run_dir
        self.resume = resume
        self.progress = progress
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        self.last_path = os.path.join(self.ckpt_dir, "last.pt")
        self.best_path = os.path.join(self.ckpt_dir, "best.pt")

        tc = cfg.train
        check_system(task.system)
        dev_kind = "cuda" if (tc.device.startswith("cuda") or
                              (tc.device == "auto" and torch.cuda.is_available())) else "cpu"
        self.dist = _init_distributed(dev_kind)
        self.device = resolve_device(tc.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.amp_dtype = resolve_amp(tc.amp, self.device)
        check_run_dir(run_dir, resume)
        self._barrier()  # every rank checked the folder before rank 0 writes into it

        seed_everything(cfg.seed + self.dist.rank, deterministic=tc.deterministic)
        self.system = task.system.to(self.device)
        self.models = dict(self.system.trainable_models())
        if not self.models:
            raise ValueError(f"{type(self.system).__name__}.trainable_models() returned no models")

        # data
        self.sampler = ResumableSampler(task.train_set, self.dist.world_size, self.dist.rank,
                                        seed=cfg.seed, shuffle=True)
        self.steps_per_epoch = self.sampler.num_samples // tc.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set has {len(task.train_set)} samples "
                             f"({self.sampler.num_samples} per process), fewer than "
                             f"train.batch_size={tc.batch_size}: lower train.batch_size or add data")
        loader_gen = torch.Generator()
        loader_gen.manual_seed(cfg.seed + 1_000 * self.dist.rank)
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            SeededDataset(task.train_set),
            batch_sampler=BatchSampler(self.sampler, tc.batch_size, drop_last=True),
            num_workers=workers, collate_fn=task.collate_fn, worker_init_fn=_worker_init,
            generator=loader_gen, pin_memory=self.device.type == "cuda",
            persistent_workers=False)
        self.val_loader = None
        if task.val_set is not None and task.validate is not None and len(task.val_set) > 0:
            self.val_loader = DataLoader(task.val_set, batch_size=tc.val_batch_size or tc.batch_size,
                                         shuffle=False, num_workers=workers,
                                         collate_fn=task.collate_fn)

        # optimisation
        groups = [dict(g) for g in self.system.parameter_groups()]
        if not groups or not any(p.requires_grad for g in groups for p in g["params"]):
            raise ValueError(f"{type(self.system).__name__}.parameter_groups() has no trainable "
                             f"parameters")
        self.params = [p for g in groups for p in g["params"] if p.requires_grad]
        for g in groups:
            g.setdefault("lr", cfg.optim.lr)
        self.optimizer = torch.optim.Adam(groups, lr=cfg.optim.lr,
                                          weight_decay=cfg.optim.weight_decay)
        self.scheduler = WarmupStepDecay(self.optimizer, cfg.optim.warmup_steps,
                                         cfg.optim.decay_epochs, cfg.optim.decay_gamma,
                                         self.steps_per_epoch)
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None)

        # state
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: Optional[float] = None
        self.bad_steps = 0
        self.last_val: Optional[Dict[str, float]] = None
        self._rng_after_step: Optional[Dict[str, Any]] = None
        if resume:
            self._load_resume()

        self.model = _StepModule(self.system)
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.model,
                             device_ids=[self.device.index] if self.device.type == "cuda" else None,
                             find_unused_parameters=tc.ddp_find_unused)
        self.writer = None
        self.metrics_fh = None

    # ---------------------------------------------------------------------------- helpers
    def _barrier(self) -> None:
        if self.dist.distributed:
            dist.barrier()

    def _all_true(self, flag: bool) -> bool:
        if not self.dist.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0.5)

    def _mean_across(self, value: float) -> float:
        if not self.dist.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.dist.world_size

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _log(self, msg: str) -> None:
        if self.dist.is_main:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)

    # --------------------------------------------------------------------------- resume
    def _load_resume(self) -> None:
        ckpt = load_checkpoint(self.last_path, map_location=self.device)
        check_compatible(ckpt, config_to_dict(self.cfg), self.models, path=self.last_path)
        for name, module in self.models.items():
            module.load_state_dict(ckpt["models"][name])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))
        if self.batch_in_epoch >= self.steps_per_epoch:  # batch size or data changed
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.best = ckpt.get("best_metric")
        rng = ckpt.get("rng") or {}
        states = rng.get("states") or []
        if len(states) == self.dist.world_size:
            set_rng_state(states[self.dist.rank])
        elif states:
            set_rng_state(states[0])
            torch.manual_seed(self.cfg.seed + self.dist.rank + 7 * self.step)
            self._log(f"resume: the checkpoint was written by {len(states)} process(es), this run "
                      f"has {self.dist.world_size}; random streams are re-seeded (data order "
                      f"still continues exactly)")

    # ----------------------------------------------------------------------- checkpoints
    def _payload(self, rng_states: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            "models": {n: m.state_dict() for n, m in self.models.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "version": __version__,
            "rng": {"world_size": len(rng_states), "states": rng_states},
            "best_metric": self.best,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def _gather_rng(self) -> List[Dict[str, Any]]:
        state = get_rng_state()
        if not self.dist.distributed:
            return [state]
        gathered: List[Any] = [None] * self.dist.world_size
        dist.all_gather_object(gathered, state)
        return gathered

    def save(self, best: bool = False) -> None:
        """Write last.pt (and best.pt when ``best``); collective: call on every rank."""
        states = self._gather_rng()
        if self.dist.is_main:
            payload = self._payload(states)
            save_checkpoint(payload, self.last_path)
            if best:
                save_checkpoint(payload, self.best_path)

    # ------------------------------------------------------------------------ validation
    def validate(self) -> bool:
        """Run ``task.validate`` on rank 0; returns True when this is a new best."""
        if self.val_loader is None:
            return False
        improved = False
        if self.dist.is_main:
            rng = get_rng_state()
            self.system.eval()
            try:
                with torch.no_grad():
                    metrics = self.task.validate(self.system, self.val_loader, self.device)
            finally:
                self.system.train()
                set_rng_state(rng)
            metrics = {k: float(v) for k, v in metrics.items()}
            if self.task.best_metric not in metrics:
                raise KeyError(f"validation returned {sorted(metrics)}, without the best_metric "
                               f"'{self.task.best_metric}' its task declared")
            value = metrics[self.task.best_metric]
            if math.isfinite(value) and (
                    self.best is None
                    or (value < self.best if self.task.best_mode == "min" else value > self.best)):
                self.best = value
                improved = True
            self.last_val = metrics
            self._write_metrics({"split": "val", "step": self.step, "epoch": self.epoch, **metrics})
            if self.writer is not None:
                for k, v in metrics.items():
                    self.writer.add_scalar(f"val/{k}", v, self.step)
            self._log(f"val step {self.step}: " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if self.dist.distributed:  # every rank learns rank 0's verdict and best value
            t = torch.tensor([1.0 if improved else 0.0,
                              self.best if self.best is not None else float("nan")],
                             dtype=torch.float64, device=self._comm_device())
            dist.broadcast(t, 0)
            improved = bool(t[0].item() > 0.5)
            self.best = None if math.isnan(t[1].item()) else float(t[1].item())
        return improved

    # --------------------------------------------------------------------------- logging
    def _open_logs(self) -> None:
        if not self.dist.is_main:
            return
        os.makedirs(self.ckpt_dir, exist_ok=True)
        save_config(self.cfg, os.path.join(self.run_dir, "config.yaml"))
        metrics_path = os.path.join(self.run_dir, "metrics.jsonl")
        if self.resume and os.path.isfile(metrics_path):
            # drop lines logged after the checkpoint we resume from (they will be redone)
            with open(metrics_path, encoding="utf-8") as fh:
                lines = [ln for ln in fh if ln.strip()]
            keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= self.step]
            with open(metrics_path, "w", encoding="utf-8") as fh:
                fh.writelines(keep)
        self.metrics_fh = open(metrics_path, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(os.path.join(self.run_dir, "tensorboard"),
                                    purge_step=self.step if self.resume else None)

    def _write_metrics(self, record: Dict[str, Any]) -> None:
        if self.metrics_fh is not None:
            record = {"time": round(time.time(), 3), **record}
            self.metrics_fh.write(json.dumps(record) + "\n")
            self.metrics_fh.flush()

    def _close_logs(self) -> None:
        if self.metrics_fh is not None:
            self.metrics_fh.close()
            self.metrics_fh = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ----------------------------------------------------------------------- one step
    def _train_step(self, batch, want_images: bool):
        """Forward, backward, optimizer step. Returns (StepOutput, ok)."""
        batch = move_to(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.model(batch, self.step, want_images)
        if not isinstance(out, StepOutput):
            raise TypeError(f"{type(self.system).__name__}.training_step must return StepOutput, "
                            f"got {type(out).__name__}")
        loss = out.loss.float()
        loss_ok = self._all_true(bool(torch.isfinite(loss).item()))
        # Backward even for a bad loss so that every DDP rank takes part in the gradient
        # all-reduce; the gradients are discarded below.
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if not loss_ok:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            return out, False, float("nan")
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        if self.scaler is not None:
            # fp16 overflow is routine: the scaler skips the update and lowers its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return out, True, grad_norm
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return out, False, grad_norm
        self.optimizer.step()
        return out, True, grad_norm

    # --------------------------------------------------------------------------- fit
    def fit(self) -> TrainResult:
        tc = self.cfg.train
        total = tc.epochs * self.steps_per_epoch
        if tc.max_steps:
            total = min(total, tc.max_steps)
        self._open_logs()
        from tqdm import tqdm

        bar = tqdm(total=total, initial=min(self.step, total), desc="train", unit="step",
                   dynamic_ncols=True, disable=not (self.progress and self.dist.is_main),
                   file=sys.stderr)
        t0 = time.time()
        window: Dict[str, List[float]] = {}
        losses: List[float] = []
        stop_reason = "epochs" if self.step >= total else ""
        self._rng_after_step = get_rng_state()
        self.system.train()
        restore_sigterm = _sigterm_as_interrupt()
        try:
            while not stop_reason and self.epoch < tc.epochs:
                self.sampler.set_epoch(self.epoch)
                self.sampler.set_start(self.batch_in_epoch * tc.batch_size)
                for batch in self.loader:
                    want_images = tc.image_every > 0 and self.step % tc.image_every == 0
                    out, ok, grad_norm = self._train_step(batch, want_images)
                    loss_value = float(out.loss.detach().float().item())
                    self.step += 1
                    self.batch_in_epoch += 1
                    if ok:
                        self.bad_steps = 0
                        self.scheduler.step()
                        losses.append(loss_value)
                        window.setdefault("loss", []).append(loss_value)
                        window.setdefault("grad_norm", []).append(grad_norm)
                        for k, v in out.scalars.items():
                            window.setdefault(k, []).append(float(v))
                    else:
                        self.bad_steps += 1
                        msg = (f"step {self.step}: non-finite loss or gradient "
                               f"(loss={loss_value}); step skipped "
                               f"({self.bad_steps}/{tc.max_bad_steps} in a row)")
                        warnings.warn(msg, RuntimeWarning, stacklevel=1)
                        if self.bad_steps >= tc.max_bad_steps:
                            raise NonFiniteLossError(
                                f"stopped at step {self.step}: {self.bad_steps} consecutive "
                                f"non-finite losses/gradients (train.max_bad_steps="
                                f"{tc.max_bad_steps}). The weights were not updated by them; the "
                                f"last checkpoint is {self.last_path}. Try a lower optim.lr, "
                                f"optim.grad_clip > 0 or train.amp=none.")
                    self._rng_after_step = get_rng_state()
                    bar.update(1)
                    if self.dist.is_main and want_images and self.writer is not None:
                        for name, img in out.images.items():
                            self.writer.add_image(f"train/{name}",
                                                  img.detach().float().clamp(0, 1).cpu(), self.step)
                    if tc.log_every > 0 and self.step % tc.log_every == 0 and window:
                        self._log_train(window, bar)
                        window = {}

                    epoch_end = self.batch_in_epoch >= self.steps_per_epoch
                    if epoch_end:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    if tc.max_steps and self.step >= tc.max_steps:
                        stop_reason = "max_steps"
                    elif self.epoch >= tc.epochs:
                        stop_reason = "epochs"
                    elif tc.max_minutes and not self._all_true(
                            (time.time() - t0) / 60.0 < tc.max_minutes):
                        stop_reason = "max_minutes"
                    do_val = (tc.val_every > 0 and self.step % tc.val_every == 0) or \
                             (tc.val_every == 0 and epoch_end) or bool(stop_reason)
                    do_ckpt = (tc.ckpt_every > 0 and self.step % tc.ckpt_every == 0) or \
                              (tc.ckpt_every == 0 and epoch_end) or bool(stop_reason)
                    improved = self.validate() if do_val else False
                    if do_ckpt or improved:
                        self.save(best=improved)
                    if stop_reason or epoch_end:
                        break
        except KeyboardInterrupt:
            bar.close()
            if self.dist.is_main:
                # the state after the last completed step (RNG captured then)
                payload = self._payload([self._rng_after_step])
                save_checkpoint(payload, self.last_path)
                self._log(f"interrupted at step {self.step}: wrote {self.last_path}; continue "
                          f"with `fmdepth train ... --out {self.run_dir} --resume`")
            self._close_logs()
            raise
        finally:
            restore_sigterm()
            bar.close()
            self._close_logs()
        return TrainResult(
            step=self.step, epoch=self.epoch, stop_reason=stop_reason or "epochs",
            best_metric=self.best, last_val=self.last_val,
            last_checkpoint=self.last_path if os.path.isfile(self.last_path) else None,
            best_checkpoint=self.best_path if os.path.isfile(self.best_path) else None,
            train_losses=losses)

    def _log_train(self, window: Dict[str, List[float]], bar) -> None:
        means = {k: sum(v) / len(v) for k, v in window.items() if v}
        if "loss" in means:
            means["loss"] = self._mean_across(means["loss"])
        if not self.dist.is_main:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        record = {"split": "train", "step": self.step, "epoch": self.epoch, "lr": lr, **means}
        self._write_metrics(record)
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train/{k}", v, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)
        if "loss" in means:
            bar.set_postfix(loss=f"{means['loss']:.4g}", lr=f"{lr:.2g}")


# ------------------------------------------------------------------------------------ helpers
def _sigterm_as_interrupt():
    """Treat SIGTERM (schedulers, ``kill``) like Ctrl-C during training: last.pt gets written.

    Returns a function restoring the previous handler. No-op outside the main thread.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU + CUDA); optionally make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def train(cfg: Config, run_dir: str, resume: bool = False, task: Optional[Task] = None,
          progress: bool = True) -> TrainResult:
    """Train ``task`` into ``run_dir``; works unchanged under ``torchrun`` (distributed data parallel).

    The loop knows only :mod:`fmdepth.core`'s contract; :func:`fmdepth.tasks.train` builds the
    task named by ``cfg.task`` and calls this.

    Args:
        cfg: the resolved, validated config.
        run_dir: run folder (created); must not hold another run unless ``resume``.
        resume: continue from ``run_dir/checkpoints/last.pt`` (same architecture required).
        task: the :class:`~fmdepth.core.Task` to train (required).
        progress: show the tqdm bar (rank 0).
    """
    if task is None:
        raise TypeError("engine.train needs a task (build one with fmdepth.tasks.build_task(cfg), "
                        "or call fmdepth.tasks.train(cfg, run_dir))")
    trainer = Trainer(cfg, task, run_dir, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        if trainer.dist.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
