"""The one checkpoint loader: every reader of a checkpoint (predict, evaluate, register, the
start weights of a run, FeatureNet weights) goes through here, and through
:func:`fmdepth.core.checkpoint.load_checkpoint` (``torch.load(..., weights_only=True)``).

* :func:`load_system` rebuilds the trained system a checkpoint describes (its resolved config
  says which task and which architecture) and loads its weights.
* :func:`load_network_state` returns one network's ``state_dict`` from a checkpoint, for
  starting a new run from earlier weights (``model.init_checkpoint``,
  ``semantic.init_checkpoint``).
* :func:`load_feature_weights` reads ``model.feature_weights`` (a stage-1 checkpoint or a bare
  FeatureNet ``state_dict``).

Models do no file I/O: this module reads the files and hands tensors to them.

Example:
    >>> loaded = load_system("runs/fm/checkpoints/best.pt", device="cpu", task="depth",
    ...                      require=("depth",))  # doctest: +SKIP
    >>> disp = loaded.system.predict_disparity(images)   # (B, 3, H, W) -> (B, 1, H, W)
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from fmdepth.config import Config, ConfigError, config_from_dict
from fmdepth.core.checkpoint import CheckpointError, load_checkpoint, read_weights_file

# task -> "module:function" building its system from a config, with no file I/O
SYSTEM_BUILDERS: Dict[str, str] = {
    "depth": "fmdepth.models.depth:build_depth_system",
    "registration": "fmdepth.models.registration:build_registration_system",
    "semantic": "fmdepth.tasks.semantic:build_system",
}


@dataclass
class LoadedSystem:
    """A system rebuilt from a checkpoint, with its weights, in eval mode.

    Attributes:
        system: the ``nn.Module`` (a :class:`~fmdepth.core.system.System`) on the requested device.
        config: the checkpoint's resolved :class:`~fmdepth.config.Config`.
        checkpoint: the raw checkpoint dict (``models``, ``step``, ...; tensors on the CPU).
        path: the file it came from.
    """

    system: nn.Module
    config: Config
    checkpoint: Dict[str, Any]
    path: str


def checkpoint_config(ckpt: Dict[str, Any], path: str) -> Config:
    """The resolved :class:`~fmdepth.config.Config` of a checkpoint (ValueError naming ``path``)."""
    try:
        return config_from_dict(ckpt.get("config") or {})
    except ConfigError as exc:
        raise ValueError(f"{path}: the checkpoint's config is not valid here: {exc}") from None


def _no_missing_network(ckpt: Dict[str, Any], names: Sequence[str], path: str, expected: str) -> None:
    models = ckpt["models"]
    for name in names:
        if name not in models:
            task = (ckpt.get("config") or {}).get("task", "?")
            raise ValueError(f"{path}: checkpoint holds no '{name}' network (task '{task}', models: "
                             f"{', '.join(sorted(models)) or 'none'}); expected {expected}")


def load_system(checkpoint: str, device: Any = "cpu", task: Optional[str] = None,
                require: Optional[Sequence[str]] = None) -> LoadedSystem:
    """Rebuild the system a checkpoint describes and load its weights.

    The architecture comes from the checkpoint's own config; encoders are built without
    ImageNet initialisation and ``model.feature_weights`` is not read (the weights are in the
    checkpoint). Every network the checkpoint holds for the system is loaded strictly;
    networks in ``require`` must be in the checkpoint.

    Args:
        checkpoint: a ``.pt`` written by ``fmdepth train`` or ``fmdepth import-weights``.
        device: where the system goes (``"cpu"``, ``"cuda"``, a ``torch.device``).
        task: the task the caller expects (``"depth"``, ``"registration"``, ``"semantic"``);
            None accepts any.
        require: network names (keys of ``checkpoint["models"]``) that must be present;
            None = every network the system builds.

    Returns:
        :class:`LoadedSystem` with the system in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError (CheckpointError included): not an fmdepth checkpoint, another task, a
            required network missing, or weights that do not fit the config's architecture.
    """
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    expected = f"a {task} checkpoint written by `fmdepth train` with task={task}" if task else \
        "a checkpoint written by `fmdepth train`"
    if require is not None:
        _no_missing_network(ckpt, require, checkpoint, expected)
    cfg = checkpoint_config(ckpt, checkpoint)
    if task is not None and cfg.task != task:
        raise ValueError(f"{checkpoint}: checkpoint of task '{cfg.task}', expected {expected}")
    system = build_system_for_loading(cfg)
    nets = system.trainable_models()
    _no_missing_network(ckpt, list(nets) if require is None else [], checkpoint, expected)
    for name, net in nets.items():
        if name in ckpt["models"]:
            load_strict(net, ckpt["models"][name], checkpoint, name)
    return LoadedSystem(system=system.to(torch.device(device)).eval(), config=cfg, checkpoint=ckpt,
                        path=checkpoint)


def build_system_for_loading(cfg: Config) -> nn.Module:
    """The system of ``cfg.task`` built for loading weights into: no ImageNet download, no start
    checkpoint (the builders read no file: ``model.feature_weights`` is read by the depth task)."""
    if cfg.task not in SYSTEM_BUILDERS:
        raise ValueError(f"config key 'task': no system builder for task '{cfg.task}'")
    bare = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, pretrained="none", init_checkpoint=""),
        semantic=dataclasses.replace(cfg.semantic, pretrained="none", init_checkpoint=""))
    module_name, func_name = SYSTEM_BUILDERS[cfg.task].split(":")
    build = getattr(importlib.import_module(module_name), func_name, None)
    if build is None:
        raise ValueError(f"cannot rebuild a '{cfg.task}' system from a checkpoint: "
                         f"{module_name}.{func_name} is missing")
    return build(bare)


def load_strict(net: nn.Module, state: Dict[str, torch.Tensor], path: str, name: str) -> None:
    """``net.load_state_dict(state, strict=True)`` with a one-line error naming ``path`` and ``name``."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:400]
        raise ValueError(f"{path}: the '{name}' weights do not fit the architecture described by the "
                         f"checkpoint's config ({first})") from None


def load_network_state(path: str, name: str, key: str) -> Dict[str, torch.Tensor]:
    """One network's ``state_dict`` from a checkpoint, for starting a run from it.

    Args:
        path: the checkpoint.
        name: the network (key of ``checkpoint["models"]``, e.g. ``"semantic"``).
        key: the config key that named the file (for the error message).

    Raises:
        FileNotFoundError / ValueError: unreadable, not a checkpoint, or no such network.
    """
    ckpt = load_checkpoint(path)
    if name not in ckpt["models"]:
        raise ValueError(f"{key}: {path} holds no '{name}' model (models: {', '.join(ckpt['models'])})")
    return ckpt["models"][name]


def load_feature_weights(path: str) -> Dict[str, torch.Tensor]:
    """FeatureNet ``state_dict`` from a stage-1 fmdepth checkpoint (``models.feature``) or a bare
    FeatureNet ``state_dict`` file (``model.feature_weights``), read with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds neither.
    """
    try:
        data = read_weights_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"model.feature_weights: file not found: {path!r} (expected a stage-1 "
                                f"checkpoint RUN_DIR/checkpoints/last.pt or a FeatureNet state_dict)") from None
    except CheckpointError as exc:
        raise ValueError(f"model.feature_weights: cannot read {path} with weights_only=True: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        if "feature" not in data["models"]:
            raise ValueError(f"model.feature_weights: checkpoint {path} has no FeatureNet "
                             f"(models: {', '.join(data['models'])}); train stage 1 with loss.mode=featurenet")
        data = data["models"]["feature"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"model.feature_weights: {path} is not a FeatureNet state_dict or fmdepth checkpoint")
    return data


__all__ = ["LoadedSystem", "SYSTEM_BUILDERS", "build_system_for_loading", "checkpoint_config",
           "load_feature_weights", "load_network_state", "load_strict", "load_system"]
