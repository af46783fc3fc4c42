"""Task wiring (layer 4): ``cfg.task`` -> the builder that makes a :class:`~fmdepth.core.Task`.

Each task lives in ``fmdepth/tasks/<name>.py`` and defines ``build(cfg) -> Task``. Builders are
imported lazily, so ``fmdepth train`` for one task never imports another task's code.
:func:`train` builds the task named by the config and runs the engine's loop on it;
:func:`load_system` (:mod:`fmdepth.tasks.loading`) rebuilds a trained system from a checkpoint.
"""
from __future__ import annotations

import importlib
from typing import Dict, Sequence

from fmdepth.config import ConfigError
from fmdepth.core.task import Task, Validate  # noqa: F401 (re-exported)
from fmdepth.tasks.loading import LoadedSystem, load_system  # noqa: F401 (re-exported)

# task name -> "module:function"
TASK_BUILDERS: Dict[str, str] = {
    "depth": "fmdepth.tasks.depth:build",
    "registration": "fmdepth.tasks.registration:build",
    "semantic": "fmdepth.tasks.semantic:build",
}


# config keys whose values a registry of the code owns (config.py sits below them and cannot ask):
# task -> {config key: "module:NAME" of the registry}
CHOICES: Dict[str, Dict[str, str]] = {
    "registration": {
        "registration.method": "fmdepth.registration:METHODS",
        "registration.similarity": "fmdepth.losses.similarity:SIMILARITIES",
        "registration.modalities": "fmdepth.data.modalities:MODALITIES",
        "registration.translator": "fmdepth.models.registration:TRANSLATORS",
    },
}


def _registry(ref: str) -> Sequence[str]:
    module_name, name = ref.split(":")
    value = importlib.import_module(module_name)
    for part in name.split("."):
        value = getattr(value, part)
    return value


def check_choices(cfg) -> None:
    """Check the config keys of :data:`CHOICES` for ``cfg.task`` against their registries.

    Called by :func:`build_task` (and by ``fmdepth train`` right after reading the config), so a
    bad value stops the run before any work, with the one-line message of the config.

    Raises:
        ConfigError: ``config key 'KEY': ...`` naming the key and the allowed values.
    """
    for key, ref in CHOICES.get(cfg.task, {}).items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        allowed = _registry(ref)
        for v in value if isinstance(value, list) else [value]:
            if v not in allowed:
                raise ConfigError(f"config key '{key}': unknown '{v}'; known: {', '.join(allowed)}")
    if cfg.task == "registration" and cfg.registration.synthetic_generator == "torch":
        fast = _registry("fmdepth.data.synthetic_pairs:FastSyntheticPairDataset.FAST_MODALITIES")
        for m in cfg.registration.modalities:
            if m not in fast:
                raise ConfigError(f"config key 'registration.modalities': modality '{m}' is not available "
                                  f"with synthetic_generator: torch ({', '.join(fast)})")


def build_task(cfg) -> Task:
    """Import ``fmdepth.tasks.<cfg.task>`` and call its ``build(cfg)`` (after :func:`check_choices`)."""
    if cfg.task not in TASK_BUILDERS:
        raise ValueError(f"config key 'task': unknown task '{cfg.task}'; "
                         f"known: {', '.join(TASK_BUILDERS)}")
    check_choices(cfg)
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
