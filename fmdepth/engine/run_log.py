"""What a run writes besides checkpoints (rank 0 only): ``config.yaml``, ``metrics.jsonl`` (one
JSON object per log line, split ``train`` or ``val``) and TensorBoard events."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

import torch

from fmdepth.config import save_config


class RunLog:
    """The run folder's logs; every method is a no-op until :meth:`open` (and after :meth:`close`).

    Args:
        run_dir: the run folder.
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.metrics_fh = None
        self.writer = None

    def open(self, cfg, resume: bool, step: int) -> None:
        """Write ``config.yaml``, open ``metrics.jsonl`` and TensorBoard.

        On resume, lines of ``metrics.jsonl`` logged after ``step`` (the checkpoint's) are
        dropped (they will be redone) and TensorBoard purges events after ``step``.
        """
        os.makedirs(os.path.join(self.run_dir, "checkpoints"), exist_ok=True)
        save_config(cfg, os.path.join(self.run_dir, "config.yaml"))
        metrics_path = os.path.join(self.run_dir, "metrics.jsonl")
        if resume and os.path.isfile(metrics_path):
            with open(metrics_path, encoding="utf-8") as fh:
                lines = [ln for ln in fh if ln.strip()]
            keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
            with open(metrics_path, "w", encoding="utf-8") as fh:
                fh.writelines(keep)
        self.metrics_fh = open(metrics_path, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(os.path.join(self.run_dir, "tensorboard"),
                                    purge_step=step if resume else None)

    def record(self, record: Dict[str, Any]) -> None:
        """Append one line (with the time) to ``metrics.jsonl``."""
        if self.metrics_fh is not None:
            record = {"time": round(time.time(), 3), **record}
            self.metrics_fh.write(json.dumps(record) + "\n")
            self.metrics_fh.flush()

    def scalars(self, prefix: str, values: Dict[str, float], step: int) -> None:
        """TensorBoard scalars ``prefix/name``."""
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def images(self, prefix: str, images: Dict[str, torch.Tensor], step: int) -> None:
        """TensorBoard images ``prefix/name``: each (3, H, W), clamped to [0, 1]."""
        if self.writer is not None:
            for name, img in images.items():
                self.writer.add_image(f"{prefix}/{name}", img.detach().float().clamp(0, 1).cpu(), step)

    def close(self) -> None:
        """Close the files (safe to call more than once)."""
        if self.metrics_fh is not None:
            self.metrics_fh.close()
            self.metrics_fh = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

