"""The learning-rate schedule of the training loop: linear warm-up, then step decay at epoch
milestones (``optim.warmup_steps``, ``optim.decay_epochs``, ``optim.decay_gamma``)."""
from __future__ import annotations

from typing import Dict, Sequence

import torch


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
