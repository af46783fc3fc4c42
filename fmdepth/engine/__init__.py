"""THE training loop, shared by every trainable task (:mod:`fmdepth.engine.trainer`).

``train(cfg, run_dir, task, resume=False)``: AMP, DDP via torchrun, exact resume, TensorBoard,
validation, budgets. It knows only :mod:`fmdepth.core`'s contract (``System``, ``StepOutput``,
``Task``, checkpoints); the task builders that make a ``Task`` from a config live above it in
:mod:`fmdepth.tasks`.

Modules: ``trainer`` (the loop, checkpoints, resume, validation), ``schedule`` (learning rate),
``sampling`` (resumable data order, per-sample seeds), ``distributed`` (torchrun, device, AMP),
``run_log`` (metrics.jsonl, TensorBoard).
"""
from .trainer import NonFiniteLossError, TrainResult, seed_everything, train  # noqa: F401
