"""Checkpoints: one self-describing file, written atomically, read with ``weights_only=True``.

A checkpoint (``RUN_DIR/checkpoints/{last,best}.pt``) is a plain dict::

    {"config": <resolved config dict>, "models": {"depth": state_dict, "pose": ..., ...},
     "optimizer": state_dict, "scheduler": state_dict, "scaler": state_dict | None,
     "step": int, "epoch": int, "batch_in_epoch": int, "version": str,
     "rng": {"world_size": int, "states": [per-rank RNG state]}, "best_metric": float | None}

Every value is a tensor, number, string, list, tuple, dict or None, so
``torch.load(path, weights_only=True)`` reads it without unpickling arbitrary objects. Files are
written to a temporary name in the same folder and renamed with ``os.replace`` so a crash during
saving never leaves a truncated ``last.pt`` behind.
"""
from __future__ import annotations

import os
import pickle
import random
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

REQUIRED_KEYS = ("config", "models", "optimizer", "scheduler", "scaler", "step", "epoch",
                 "version", "rng", "best_metric")


class CheckpointError(ValueError):
    """A file is not a readable fmdepth checkpoint, or does not match the current run."""


# -------------------------------------------------------------------------------- save / load
def save_checkpoint(payload: Mapping[str, Any], path: str) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder + rename).

    Args:
        payload: the checkpoint dict (see the module docstring); must contain ``REQUIRED_KEYS``.
        path: destination file; its folder is created when missing.
    """
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"refusing to save {path}: checkpoint dict lacks {', '.join(missing)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(dict(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Crash or Ctrl-C while writing: drop the partial file, keep the previous checkpoint.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_weights_file(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, one-line errors.

    The one ``torch.load`` of checkpoints and weight files; :func:`load_checkpoint` adds the
    checks of an fmdepth checkpoint on top.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: not a torch file, or it holds objects that are not plain data.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: not an fmdepth checkpoint (it holds objects that cannot be "
                              f"loaded safely with weights_only=True): {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # torch raises many types for junk (IndexError, RuntimeError, EOFError ...)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or another "
                              f"format?): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` and check its keys.

    Args:
        path: a ``.pt`` file written by :func:`save_checkpoint` (e.g. ``RUN_DIR/checkpoints/best.pt``).
        map_location: passed to ``torch.load`` (default ``"cpu"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a torch file, holds objects that are not plain data,
            or is not an fmdepth checkpoint (missing keys are named).
    """
    data = read_weights_file(path, map_location)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an fmdepth checkpoint (expected a dict, got {type(data).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{path}: not an fmdepth checkpoint: missing key(s) {', '.join(missing)}")
    if not isinstance(data["models"], dict) or not data["models"]:
        raise CheckpointError(f"{path}: checkpoint['models'] must be a non-empty dict of state_dicts")
    return data


# ------------------------------------------------------------------------------- compatibility
def check_compatible(ckpt: Mapping[str, Any], config_dict: Mapping[str, Any],
                     models: Mapping[str, torch.nn.Module], path: str = "checkpoint",
                     sections: Optional[List[str]] = None) -> None:
    """Raise :class:`CheckpointError` when ``ckpt`` was not made by the same architecture.

    Compares the task, the architecture sections of the config (``sections``; default: ``model``
    for the depth task, the task's own section otherwise) and every model's state_dict keys and
    tensor shapes. Training settings (``optim``, ``train``, ``data.path`` ...) may differ.
    """
    problems: List[str] = []
    old_cfg = ckpt.get("config") or {}
    task = config_dict.get("task")
    if old_cfg.get("task") != task:
        problems.append(f"task: checkpoint '{old_cfg.get('task')}' vs config '{task}'")
    if sections is None:
        sections = ["model"] if task == "depth" else [str(task)]
    for sec in sections:
        old, new = old_cfg.get(sec), config_dict.get(sec)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    problems.append(f"{sec}.{key}: checkpoint {old.get(key)!r} vs config {new.get(key)!r}")
        elif old != new:
            problems.append(f"{sec}: checkpoint {old!r} vs config {new!r}")
    saved = ckpt.get("models", {})
    for name in sorted(set(saved) | set(models)):
        if name not in saved:
            problems.append(f"model '{name}' is not in the checkpoint")
            continue
        if name not in models:
            problems.append(f"checkpoint has model '{name}' that this config does not build")
            continue
        old_sd, new_sd = saved[name], models[name].state_dict()
        only_old = sorted(set(old_sd) - set(new_sd))
        only_new = sorted(set(new_sd) - set(old_sd))
        if only_old or only_new:
            problems.append(f"model '{name}': parameter names differ (only in checkpoint: "
                            f"{_short(only_old)}; only in config: {_short(only_new)})")
        for key in sorted(set(old_sd) & set(new_sd)):
            a, b = old_sd[key], new_sd[key]
            if hasattr(a, "shape") and hasattr(b, "shape") and tuple(a.shape) != tuple(b.shape):
                problems.append(f"model '{name}': {key} has shape {tuple(a.shape)} in the checkpoint, "
                                f"{tuple(b.shape)} here")
                if len(problems) > 12:
                    break
    if problems:
        raise CheckpointError(
            f"cannot resume from {path}: it was made with a different architecture:\n  - "
            + "\n  - ".join(problems[:12])
            + "\nNothing was overwritten. Resume with the config the run was started with, or "
              "start a new run in another --out folder.")


def _short(items: List[str], n: int = 3) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# ------------------------------------------------------------------------------------ RNG state
def get_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as plain tensors/lists/ints (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [int(version), torch.tensor(internal, dtype=torch.int64),
                   None if gauss is None else float(gauss)],
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached": float(np_cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), int(nps["pos"]),
                         int(nps["has_gauss"]), float(nps["cached"])))
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda])
