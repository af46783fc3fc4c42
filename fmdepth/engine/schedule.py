"""The learning-rate schedule of the training loop: linear warm-up (``optim.warmup_steps``), then
either step decay at epoch milestones (``optim.schedule: step``; ``optim.decay_epochs``,
``optim.decay_gamma``) or a cosine from the base rate to ``optim.final_lr_factor`` of it over the
run's budget (``optim.schedule: cosine``)."""
from __future__ import annotations

import math
import time
from typing import Dict, Optional, Sequence

import torch

SCHEDULES = ("step", "cosine")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then 1."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def lr_factor(step: int, warmup_steps: int, decay_epochs: Sequence[int], gamma: float,
              steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, times
    ``gamma ** (number of milestones in decay_epochs <= current epoch)``, where the current epoch
    is ``step // steps_per_epoch``.

    >>> lr_factor(0, 4, [2], 0.1, 10), lr_factor(3, 4, [2], 0.1, 10), lr_factor(20, 4, [2], 0.1, 10)
    (0.25, 1.0, 0.1)
    """
    epoch = step // max(1, steps_per_epoch)
    return warmup_factor(step, warmup_steps) * gamma ** sum(1 for m in decay_epochs if epoch >= m)


def cosine_factor(progress: float, final: float) -> float:
    """Cosine from 1 (``progress`` 0) to ``final`` (``progress`` >= 1).

    >>> cosine_factor(0.0, 0.05), cosine_factor(0.5, 0.05), cosine_factor(2.0, 0.05)
    (1.0, 0.525, 0.05)
    """
    p = min(1.0, max(0.0, progress))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * p))


class LRSchedule:
    """Sets every param group's ``lr`` to ``initial_lr`` times the schedule's factor.

    ``schedule="step"``: :func:`lr_factor`. ``schedule="cosine"``: the warm-up times
    :func:`cosine_factor` of the budget's progress -- ``step / total_steps`` when ``total_steps``
    is given, else the seconds since :meth:`start_clock` over ``budget_seconds`` (a time-budgeted
    run: the cosine spans this invocation's budget, so a resumed time-budgeted run starts a new
    cosine). ``state_dict()`` holds only the step, so checkpoints stay plain data.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int,
                 decay_epochs: Sequence[int], gamma: float, steps_per_epoch: int,
                 schedule: str = "step", final_factor: float = 0.05, total_steps: int = 0,
                 budget_seconds: float = 0.0) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule: unknown '{schedule}'; known: {', '.join(SCHEDULES)}")
        if schedule == "cosine" and not (total_steps > 0 or budget_seconds > 0):
            raise ValueError("optim.schedule: cosine needs a budget (train.max_steps, train.max_minutes "
                             "or train.epochs)")
        self.optimizer = optimizer
        self.warmup_steps = int(warmup_steps)
        self.decay_epochs = list(decay_epochs)
        self.gamma = float(gamma)
        self.steps_per_epoch = int(steps_per_epoch)
        self.schedule, self.final_factor = schedule, float(final_factor)
        self.total_steps, self.budget_seconds = int(total_steps), float(budget_seconds)
        self._t0: Optional[float] = None
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.step_count = 0
        self._apply()

    def start_clock(self) -> None:
        """Start the time budget of a cosine over ``budget_seconds`` (the loop calls it at its start)."""
        self._t0 = time.time()

    def progress(self) -> float:
        if self.total_steps > 0:
            return self.step_count / self.total_steps
        return 0.0 if self._t0 is None else (time.time() - self._t0) / self.budget_seconds

    def factor(self) -> float:
        if self.schedule == "cosine":
            return warmup_factor(self.step_count, self.warmup_steps) * cosine_factor(self.progress(),
                                                                                     self.final_factor)
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
