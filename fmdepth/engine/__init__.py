"""The training engine, shared by every trainable task.

* :mod:`fmdepth.engine.system`: the ``System`` protocol and ``StepOutput``.
* :mod:`fmdepth.engine.tasks`: ``Task`` and the registry ``cfg.task`` -> ``task_<name>.build``.
* :mod:`fmdepth.engine.checkpoint`: atomic, ``weights_only``-loadable checkpoints.
* :mod:`fmdepth.engine.trainer`: the loop (``train(cfg, run_dir, resume=False)``): AMP, DDP via
  torchrun, exact resume, TensorBoard, validation, budgets.
* ``task_depth`` / ``task_registration`` / ``task_semantic``: the task builders.
"""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: F401
from .system import StepOutput, System  # noqa: F401
from .tasks import Task, build_task  # noqa: F401
