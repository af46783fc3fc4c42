"""What the training loop receives: a system, its datasets and its validation.

:class:`Task` is the contract between the task builders (:mod:`fmdepth.tasks`) and the loop
(:mod:`fmdepth.engine.trainer`), which only reads these fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from torch import nn
from torch.utils.data import Dataset

Validate = Callable[[nn.Module, Any, Any], Dict[str, float]]  # (system, loader, device) -> metrics


@dataclass
class Task:
    """Everything the engine needs to train one system.

    Attributes:
        system: an ``nn.Module`` following :class:`fmdepth.core.system.System`.
        train_set: the training ``Dataset``.
        val_set: a validation ``Dataset`` or None (then no validation, no best.pt).
        collate_fn: batches samples (e.g. ``fmdepth.data.collate_depth``); None = torch default.
        validate: ``(system, loader, device) -> {metric: float}`` run on rank 0 with the system
            in eval mode under ``torch.no_grad``; None = no validation.
        best_metric: key of ``validate``'s dict that selects best.pt (e.g. ``"abs_rel"``).
        best_mode: ``"min"`` or ``"max"``: which direction of ``best_metric`` is better.
    """

    system: nn.Module
    train_set: Dataset
    val_set: Optional[Dataset] = None
    collate_fn: Optional[Callable] = None
    validate: Optional[Validate] = None
    best_metric: str = "loss"
    best_mode: str = "min"

    def __post_init__(self) -> None:
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"Task.best_mode must be 'min' or 'max', got {self.best_mode!r}")
