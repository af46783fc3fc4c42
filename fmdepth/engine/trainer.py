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

The pieces: :mod:`~fmdepth.engine.schedule` (learning rate), :mod:`~fmdepth.engine.sampling`
(data order, sample seeds), :mod:`~fmdepth.engine.distributed` (processes, device, precision),
:mod:`~fmdepth.engine.run_log` (metrics.jsonl, TensorBoard); this module is the loop.

Files of a run (``RUN_DIR``)::

    config.yaml              the fully resolved config
    metrics.jsonl            one JSON object per log line (split "train" or "val")
    tensorboard/             tensorboardX events (scalars, images)
    checkpoints/last.pt      written every train.ckpt_every steps / epoch, at the end, on Ctrl-C
    checkpoints/best.pt      the best validation result (Task.best_metric / best_mode)
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader

from fmdepth import __version__
from fmdepth.config import Config, config_to_dict
from fmdepth.core.checkpoint import (check_compatible, get_rng_state, load_checkpoint,
                                       save_checkpoint, set_rng_state)
from fmdepth.core.system import StepOutput, check_system
from fmdepth.core.task import Task
from fmdepth.engine.distributed import comm_device, init_distributed, resolve_amp, resolve_device, wrap_ddp
from fmdepth.engine.run_log import RunLog
from fmdepth.engine.sampling import ResumableSampler, SeededDataset, move_to, worker_init
from fmdepth.engine.schedule import LRSchedule, lr_factor  # noqa: F401 (lr_factor re-exported)


class NonFiniteLossError(RuntimeError):
    """Training stopped after ``train.max_bad_steps`` consecutive non-finite losses."""




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
        self.dist = init_distributed(dev_kind)
        self.device = resolve_device(tc.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.amp_dtype = resolve_amp(tc.amp, self.device)
        check_run_dir(run_dir, resume)
        self.dist.barrier()  # every rank checked the folder before rank 0 writes into it

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
            num_workers=workers, collate_fn=task.collate_fn, worker_init_fn=worker_init,
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
        tc = cfg.train
        self.total_steps = tc.epochs * self.steps_per_epoch  # the step budget (progress bar, stop)
        if tc.max_steps:
            self.total_steps = min(self.total_steps, tc.max_steps)
        # a time budget without a step limit: the cosine follows the clock
        cosine_steps = 0 if (tc.max_minutes and not tc.max_steps) else self.total_steps
        self.scheduler = LRSchedule(self.optimizer, cfg.optim.warmup_steps, cfg.optim.decay_epochs,
                                    cfg.optim.decay_gamma, self.steps_per_epoch,
                                    schedule=cfg.optim.schedule, final_factor=cfg.optim.final_lr_factor,
                                    total_steps=cosine_steps, budget_seconds=tc.max_minutes * 60.0)
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

        self.model = wrap_ddp(self.system, self.dist, self.device, tc.ddp_find_unused)
        self.logs = RunLog(run_dir)

    # ---------------------------------------------------------------------------- helpers
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
            self.logs.record({"split": "val", "step": self.step, "epoch": self.epoch, **metrics})
            self.logs.scalars("val", metrics, self.step)
            self._log(f"val step {self.step}: " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if self.dist.distributed:  # every rank learns rank 0's verdict and best value
            t = torch.tensor([1.0 if improved else 0.0,
                              self.best if self.best is not None else float("nan")],
                             dtype=torch.float64, device=comm_device(self.device))
            dist.broadcast(t, 0)
            improved = bool(t[0].item() > 0.5)
            self.best = None if math.isnan(t[1].item()) else float(t[1].item())
        return improved

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
        loss_ok = self.dist.all_true(bool(torch.isfinite(loss).item()), self.device)
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
        total = self.total_steps
        if self.dist.is_main:
            self.logs.open(self.cfg, self.resume, self.step)
        from tqdm import tqdm

        bar = tqdm(total=total, initial=min(self.step, total), desc="train", unit="step",
                   dynamic_ncols=True, disable=not (self.progress and self.dist.is_main),
                   file=sys.stderr)
        t0 = time.time()
        self.scheduler.start_clock()
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
                    if self.dist.is_main and want_images:
                        self.logs.images("train", out.images, self.step)
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
                    elif tc.max_minutes and not self.dist.all_true(
                            (time.time() - t0) / 60.0 < tc.max_minutes, self.device):
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
            if self.dist.is_main:
                # the state after the last completed step (RNG captured then)
                payload = self._payload([self._rng_after_step])
                save_checkpoint(payload, self.last_path)
                self._log(f"interrupted at step {self.step}: wrote {self.last_path}; continue "
                          f"with `fmdepth train ... --out {self.run_dir} --resume`")
            raise
        finally:
            restore_sigterm()
            bar.close()
            self.logs.close()
        return TrainResult(
            step=self.step, epoch=self.epoch, stop_reason=stop_reason or "epochs",
            best_metric=self.best, last_val=self.last_val,
            last_checkpoint=self.last_path if os.path.isfile(self.last_path) else None,
            best_checkpoint=self.best_path if os.path.isfile(self.best_path) else None,
            train_losses=losses)

    def _log_train(self, window: Dict[str, List[float]], bar) -> None:
        means = {k: sum(v) / len(v) for k, v in window.items() if v}
        if "loss" in means:
            means["loss"] = self.dist.mean_across(means["loss"], self.device)
        if not self.dist.is_main:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        record = {"split": "train", "step": self.step, "epoch": self.epoch, "lr": lr, **means}
        self.logs.record(record)
        self.logs.scalars("train", {**means, "lr": lr}, self.step)
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
