"""Cheap argument checks shared by the geometry functions (internal)."""
from typing import Optional, Sequence, Tuple, Union

import torch

Dim = Union[int, str]


def _fmt(spec: Sequence[Dim]) -> str:
    return "(" + ", ".join(str(d) for d in spec) + ")"


def check_tensor(x, name: str, spec: Sequence[Dim], sizes: Optional[dict] = None) -> dict:
    """Check ``x`` is a floating tensor whose shape matches ``spec``.

    ``spec`` holds ints (fixed sizes) and letters (free sizes). Letters already present in
    ``sizes`` must agree with the earlier tensors (batch, height, width, ...). Returns the
    updated ``sizes`` dict. Raises ``ValueError`` naming ``name`` and the expected shape.
    """
    sizes = {} if sizes is None else sizes
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {_fmt(spec)}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor of shape {_fmt(spec)}, got dtype {x.dtype}")
    if x.dim() != len(spec):
        raise ValueError(f"{name}: expected shape {_fmt(spec)}, got {tuple(x.shape)} (rank {x.dim()})")
    for d, (want, got) in enumerate(zip(spec, x.shape)):
        if isinstance(want, int):
            if got != want:
                raise ValueError(f"{name}: expected shape {_fmt(spec)}, got {tuple(x.shape)}")
        elif want in sizes:
            if sizes[want] != got:
                raise ValueError(
                    f"{name}: expected shape {_fmt(spec)} with {want}={sizes[want]} "
                    f"(from the other arguments), got {tuple(x.shape)}")
        else:
            sizes[want] = got
    return sizes


def check_same_device(*named: Tuple[str, torch.Tensor]) -> None:
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(f"{name}: expected a tensor on {first.device} (like {first_name}), got {t.device}")


_LOW = (torch.float16, torch.bfloat16)


def geometry_dtype(*named: Tuple[str, torch.Tensor]) -> torch.dtype:
    """The dtype coordinates are computed in: float32 or float64, never lower.

    Full-precision arguments (float32/float64) must agree; half/bfloat16 arguments (autocast
    outputs) are accepted and upcast. Mismatched full precisions raise ``ValueError``.
    """
    full = None
    for name, t in named:
        if t.dtype in _LOW:
            continue
        if full is None:
            full = (name, t.dtype)
        elif t.dtype != full[1]:
            raise ValueError(f"{name}: expected dtype {full[1]} (like {full[0]}), got {t.dtype}")
    return torch.float32 if full is None else full[1]
