"""Task wiring (layer 4): ``cfg.task`` -> the builder that makes a :class:`~fmdepth.core.Task`.

Each task lives in ``fmdepth/tasks/<name>.py`` and defines ``build(cfg) -> Task``. Builders are
imported lazily, so ``fmdepth train`` for one task never imports another task's code.
:func:`train` builds the task named by the config and runs the engine's loop on it;
:func:`load_system` (:mod:`fmdepth.tasks.loading`) rebuilds a trained system from a checkpoint.
"""
from __future__ import annotations

import importlib
from typing import Dict

from fmdepth.core.task import Task, Validate  # noqa: F401 (re-exported)
from fmdepth.tasks.loading import LoadedSystem, load_system  # noqa: F401 (re-exported)

# task name -> "module:function"
TASK_BUILDERS: Dict[str, str] = {
    "depth": "fmdepth.tasks.depth:build",
    "registration": "fmdepth.tasks.registration:build",
    "semantic": "fmdepth.tasks.semantic:build",
}


def build_task(cfg) -> Task:
    """Import ``fmdepth.tasks.<cfg.task>`` and call its ``build(cfg)``."""
    if cfg.task not in TASK_BUILDERS:
        raise ValueError(f"config key 'task': unknown task '{cfg.task}'; "
                         f"known: {', '.join(TASK_BUILDERS)}")
    module_name, func_name = TASK_BUILDERS[cfg.task].split(":")
    module = importlib.import_module(module_name)
    task = getattr(module, func_name)(cfg)
    if not isinstance(task, Task):
        raise TypeError(f"{module_name}.{func_name} returned {type(task).__name__}, expected Task")
    return task


def train(cfg, run_dir: str, resume: bool = False, progress: bool = True):
    """Build the task named by ``cfg.task`` and train it into ``run_dir`` (works under torchrun).

    Args:
        cfg: the resolved, validated config.
        run_dir: run folder (created); must not hold another run unless ``resume``.
        resume: continue from ``run_dir/checkpoints/last.pt`` (same architecture required).
        progress: show the tqdm bar (rank 0).

    Returns:
        the engine's :class:`~fmdepth.engine.trainer.TrainResult`.
    """
    from fmdepth.engine.trainer import check_run_dir, seed_everything
    from fmdepth.engine.trainer import train as run_loop

    check_run_dir(run_dir, resume)  # fail before building (possibly large) datasets
    seed_everything(cfg.seed)  # the same initial weights for the same seed
    return run_loop(cfg, run_dir, resume=resume, task=build_task(cfg), progress=progress)
