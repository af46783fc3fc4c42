"""The protocol every trainable system implements, and what one training step returns.

The engine (:mod:`fmdepth.engine.trainer`) knows nothing about losses or geometry: it asks a
:class:`System` for one step's loss and logs, for its parameter groups, and for the named models
to store in a checkpoint. Depth (``fmdepth.models.depth``), registration and semantic systems all
follow it.

A system is an ``nn.Module`` with three methods::

    class MySystem(nn.Module):
        def training_step(self, batch, step, want_images=False) -> StepOutput: ...
        def parameter_groups(self) -> list[dict]: ...          # for torch.optim.Adam
        def trainable_models(self) -> dict[str, nn.Module]: ... # saved as checkpoint["models"][name]

Only modules returned by ``trainable_models`` are saved and restored, so every module whose
weights matter (trainable or frozen-after-pretraining) must be listed there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class StepOutput:
    """What :meth:`System.training_step` returns.

    Attributes:
        loss: scalar tensor to back-propagate (the engine skips the step when it is not finite).
        scalars: name -> float, logged to TensorBoard / metrics.jsonl (e.g. per-term losses).
        images: name -> (3, H, W) float tensor in [0, 1]; filled only when ``want_images`` was
            True (the engine asks every ``train.image_every`` steps). (1, H, W) is also accepted
            and shown as grey.
    """

    loss: torch.Tensor
    scalars: Dict[str, float] = field(default_factory=dict)
    images: Dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.loss, torch.Tensor) or self.loss.numel() != 1:
            raise ValueError(
                f"StepOutput.loss must be a scalar tensor, got "
                f"{type(self.loss).__name__}{tuple(getattr(self.loss, 'shape', ()))}")
        for name, img in self.images.items():
            if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] not in (1, 3):
                raise ValueError(f"StepOutput.images['{name}'] must be a (3, H, W) or (1, H, W) "
                                 f"tensor, got {tuple(getattr(img, 'shape', ()))}")


@runtime_checkable
class System(Protocol):
    """Structural type of a trainable system (an ``nn.Module`` with these three methods)."""

    def training_step(self, batch: Any, step: int, want_images: bool = False) -> StepOutput:
        """Forward pass + loss for one batch (already on the system's device).

        Args:
            batch: whatever the task's ``collate_fn`` produced, moved to the device.
            step: global optimizer step (0-based), e.g. for loss schedules.
            want_images: fill ``StepOutput.images`` for TensorBoard this step.
        """
        ...

    def parameter_groups(self) -> List[dict]:
        """Parameter groups for the optimizer (``[{"params": [...]}, ...]``; ``lr`` optional)."""
        ...

    def trainable_models(self) -> Dict[str, nn.Module]:
        """Name -> module for every set of weights saved under ``checkpoint["models"]``."""
        ...


def check_system(system: Any) -> None:
    """Raise ``TypeError`` naming what is missing when ``system`` does not follow :class:`System`."""
    if not isinstance(system, nn.Module):
        raise TypeError(f"a system must be an nn.Module, got {type(system).__name__}")
    missing = [m for m in ("training_step", "parameter_groups", "trainable_models")
               if not callable(getattr(system, m, None))]
    if missing:
        raise TypeError(f"{type(system).__name__} does not implement the System protocol: "
                        f"missing {', '.join(missing)} (see fmdepth/core/system.py)")
