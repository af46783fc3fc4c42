"""What every importer shares: safe reading, strict name mapping, writing an fmdepth checkpoint.

An importer turns a source state_dict into one fmdepth state_dict per network with
:func:`map_state`: every source tensor is either mapped onto exactly one fmdepth tensor of the
same shape or belongs to a short, named list of tensors the source network itself never uses
(e.g. the ImageNet classifier ``fc.*`` that Monodepth2 keeps in its encoder files). Anything else
-- an unknown name, an fmdepth tensor nothing maps onto, a shape that differs -- is collected and
raised together as one :class:`ImportWeightsError` listing the names.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

# source name -> fmdepth name, or None when the name is not part of this network
Rename = Callable[[str], Optional[str]]
# fmdepth name -> (source tensor -> fmdepth tensor), for the few tensors that need more than a copy
Transforms = Mapping[str, Callable[[torch.Tensor], torch.Tensor]]

RESNET_BLOCKS = {  # ResNet depth -> (bottleneck, blocks per layer)
    18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3)),
}


class ImportWeightsError(ValueError):
    """A source file or folder cannot be imported; the message names the file and the problem."""


@dataclass
class ImportReport:
    """What an importer produced, for the command's summary and the checkpoint's ``source``."""

    models: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    config: Dict[str, Any] = field(default_factory=dict)  # resolved fmdepth config dict
    files: Dict[str, str] = field(default_factory=dict)  # source file -> sha256
    dropped: List[str] = field(default_factory=list)  # unused-by-the-source tensors, with why
    notes: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ reading
def sha256(path: str) -> str:
    """Hex sha256 of a file (the one implementation, :func:`fmdepth.data.splits.sha256_file`)."""
    from fmdepth.data.splits import sha256_file

    return sha256_file(path)


def read_torch_file(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming ``path``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ImportWeightsError: a pickle payload that is not plain data (refused, never unpickled),
            or a file torch cannot read at all.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in lines if "global" in ln.lower()), None)
        if detail is None:  # not a pickle stream at all (e.g. "Unsupported operand"): junk
            msg = lines[0].strip()[:160] if lines else type(exc).__name__
            raise ImportWeightsError(f"{path}: not a torch checkpoint ({msg})") from None
        raise ImportWeightsError(f"{path}: refused: it holds Python objects other than tensors and plain "
                                 f"data, which torch.load(weights_only=True) will not unpickle "
                                 f"({detail[:160]})") from None
    except Exception as exc:  # junk, truncated or another format: torch raises many types
        msg = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ImportWeightsError(f"{path}: not a torch checkpoint ({msg})") from None


def tensor_items(data: Mapping[str, Any], path: str, what: str) -> Dict[str, torch.Tensor]:
    """The tensor entries of ``data``; ImportWeightsError when there are none."""
    if not isinstance(data, Mapping):
        raise ImportWeightsError(f"{path}: not a {what} (expected a dict of tensors, got "
                                 f"{type(data).__name__})")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ImportWeightsError(f"{path}: not a {what} (no tensors in it; keys: "
                                 f"{_short(sorted(map(str, data)))})")
    return tensors


# ------------------------------------------------------------------------------------ mapping
def resnet_layers(state: Mapping[str, torch.Tensor], prefix: str, path: str) -> int:
    """ResNet depth (18/34/50/101/152) of the torchvision-named ResNet under ``prefix``."""
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    blocks = []
    for layer in range(1, 5):
        pat = re.compile(rf"^{re.escape(prefix)}layer{layer}\.(\d+)\.")
        idx = {int(m.group(1)) for k in state if (m := pat.match(k))}
        blocks.append(max(idx) + 1 if idx else 0)
    for depth, (bneck, counts) in RESNET_BLOCKS.items():
        if bneck == bottleneck and tuple(blocks) == counts:
            return depth
    raise ImportWeightsError(f"{path}: the tensors under '{prefix}' are not a ResNet18/34/50/101/152 "
                             f"encoder (blocks per layer {blocks}, bottleneck {bottleneck})")


def map_state(source: Mapping[str, torch.Tensor], net: nn.Module, rename: Rename, label: str,
              transforms: Optional[Transforms] = None,
              unused: Iterable[Tuple[str, str]] = (),
              misshaped: Optional[set] = None) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Map ``source`` onto ``net``'s state_dict names.

    Args:
        source: source name -> tensor (only the tensors meant for ``net``).
        net: the fmdepth network (its state_dict gives the names and shapes required).
        rename: source name -> fmdepth name (None = not a name of this network: an error unless
            it matches ``unused``).
        label: e.g. ``"encoder.pth"`` for messages.
        transforms: per fmdepth name, a function applied to the source tensor before the check.
        unused: (regex, why) pairs for source tensors the source network never uses.
        misshaped: a set that receives the fmdepth names whose source tensor had another shape
            (so that callers merging several files do not report them again as missing).

    Returns:
        (state_dict, problems, dropped): problems are messages (unknown names, missing names,
        shape mismatches); dropped lists ``"label: name (why)"`` for the unused tensors.
    """
    own = net.state_dict()
    transforms = transforms or {}
    unused = [(re.compile(p), why) for p, why in unused]
    state: Dict[str, torch.Tensor] = {}
    unknown, shapes, twice = [], [], []
    unused_found: Dict[str, List[str]] = {}
    for name, tensor in source.items():
        target = rename(name)
        if target is None or target not in own:
            why = next((w for p, w in unused if p.fullmatch(name)), None)
            if why is not None:
                unused_found.setdefault(why, []).append(name)
            else:
                unknown.append(name)
            continue
        if target in state:
            twice.append(target)
            continue
        value = transforms[target](tensor) if target in transforms else tensor
        if tuple(value.shape) != tuple(own[target].shape):
            shapes.append(f"{name} {tuple(tensor.shape)} (expected {tuple(own[target].shape)} for {target})")
            if misshaped is not None:
                misshaped.add(target)
            continue
        state[target] = value.detach().clone().to(own[target].dtype)
    # BatchNorm's step counter is a buffer without effect on the output; old files lack it.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    for k in own:
        if k not in state and k.endswith("num_batches_tracked"):
            state[k] = own[k].clone()
    dropped = [f"{label}: {', '.join(names)} ({why})" for why, names in unused_found.items()]
    problems = []
    if unknown:
        problems.append(f"{label}: {len(unknown)} unknown tensor(s): {_short(unknown)}")
    if missing:
        problems.append(f"{label}: {len(missing)} tensor(s) missing: {_short(missing)}")
    if shapes:
        problems.append(f"{label}: {len(shapes)} tensor(s) of the wrong shape: {_short(shapes)}")
    if twice:
        problems.append(f"{label}: mapped twice: {_short(twice)}")
    return state, problems, dropped


def raise_problems(problems: List[str], source: str, what: str) -> None:
    if problems:
        raise ImportWeightsError(f"{source}: does not match {what}: " + "; ".join(problems))


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _short(items: List[str], n: int = 4) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


# ------------------------------------------------------------------------------------ writing
def depth_config(overrides: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A resolved depth-task config dict: the schema defaults with ``overrides`` per section."""
    from fmdepth.config import config_from_dict, config_to_dict

    data = {"task": "depth"}
    data.update({sec: dict(vals) for sec, vals in overrides.items()})
    return config_to_dict(config_from_dict(data))


def check_size(height: int, width: int, where: str) -> None:
    if height % 32 or width % 32 or height < 64 or width < 64:
        raise ImportWeightsError(f"{where}: input size {height}x{width} is not a multiple of 32 "
                                 f"(at least 64x64), which DepthNet needs")


def write_checkpoint(report: ImportReport, path: str, source_format: str, source_path: str) -> None:
    """Write ``report`` as an fmdepth checkpoint (the engine's format, atomic, weights_only-safe)."""
    from fmdepth import __version__
    from fmdepth.core.checkpoint import save_checkpoint

    payload = {
        "config": report.config, "models": report.models, "optimizer": {}, "scheduler": {},
        "scaler": None, "step": 0, "epoch": 0, "batch_in_epoch": 0, "version": __version__,
        "rng": None, "best_metric": None,
        "source": {"format": source_format, "path": os.path.abspath(source_path),
                   "files": dict(report.files), "dropped": list(report.dropped),
                   "notes": list(report.notes)},
    }
    save_checkpoint(payload, path)
