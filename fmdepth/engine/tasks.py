"""Task registry: ``cfg.task`` -> the builder that makes a :class:`Task`.

Each task lives in ``fmdepth/engine/task_<name>.py`` and defines ``build(cfg) -> Task``. Builders
are imported lazily, so ``fmdepth train`` for one task never imports another task's code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from torch import nn
from torch.utils.data import Dataset

# task name -> "module:function"
TASK_BUILDERS: Dict[str, str] = {
    "depth": "fmdepth.engine.task_depth:build",
    "registration": "fmdepth.engine.task_registration:build",
    "semantic": "fmdepth.engine.task_semantic:build",
}

Validate = Callable[[nn.Module, Any, Any], Dict[str, float]]  # (system, loader, device) -> metrics


@dataclass
class Task:
    """Everything the engine needs to train one system.

    Attributes:
        system: an ``nn.Module`` following :class:`fmdepth.engine.system.System`.
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


def build_task(cfg) -> Task:
    """Import ``fmdepth.engine.task_<cfg.task>`` and call its ``build(cfg)``."""
    if cfg.task not in TASK_BUILDERS:
        raise ValueError(f"config key 'task': unknown task '{cfg.task}'; "
                         f"known: {', '.join(TASK_BUILDERS)}")
    module_name, func_name = TASK_BUILDERS[cfg.task].split(":")
    module = importlib.import_module(module_name)
    task = getattr(module, func_name)(cfg)
    if not isinstance(task, Task):
        raise TypeError(f"{module_name}.{func_name} returned {type(task).__name__}, expected Task")
    return task
