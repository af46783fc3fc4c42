"""THE argument checker of fmdepth, and the dtype helpers that go with it.

Every public function checks its tensors at entry with :func:`check_tensor` and raises one
``ValueError`` line naming the argument, the expected shape and what it got::

    sizes = check_tensor(image, "image", ("B", 3, "H", "W"))
    check_tensor(depth, "depth", ("B", 1, "H", "W"), sizes)   # B, H, W must agree with image

A shape ``spec`` holds ints (fixed sizes) and letters (free sizes, shared through ``sizes``).
Argument order everywhere: the tensor first, then its name.
"""
from contextlib import contextmanager
from typing import Optional, Sequence, Tuple, Union

import torch

Dim = Union[int, str]


def format_spec(spec: Sequence[Dim]) -> str:
    """``("B", 3, "H", "W")`` -> ``"(B, 3, H, W)"``."""
    return "(" + ", ".join(str(d) for d in spec) + ")"


def check_tensor(x, name: str, spec: Sequence[Dim], sizes: Optional[dict] = None,
                 floating: bool = True) -> dict:
    """Check that ``x`` is a (floating, unless ``floating=False``) tensor whose shape matches ``spec``.

    Letters already in ``sizes`` must agree with the earlier tensors (batch, height, width, ...).

    Returns:
        the updated ``sizes`` dict (letter -> size).

    Raises:
        ValueError: naming ``name``, the expected shape and the one received.
    """
    sizes = {} if sizes is None else sizes
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {format_spec(spec)}, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor of shape {format_spec(spec)}, "
                         f"got dtype {x.dtype}")
    if x.dim() != len(spec):
        raise ValueError(f"{name}: expected shape {format_spec(spec)}, got {tuple(x.shape)} (rank {x.dim()})")
    for want, got in zip(spec, x.shape):
        if isinstance(want, int):
            if got != want:
                raise ValueError(f"{name}: expected shape {format_spec(spec)}, got {tuple(x.shape)}")
        elif want in sizes:
            if sizes[want] != got:
                raise ValueError(f"{name}: expected shape {format_spec(spec)} with {want}={sizes[want]} "
                                 f"(from the other arguments), got {tuple(x.shape)}")
        else:
            sizes[want] = got
    return sizes


def check_same_device(*named: Tuple[str, torch.Tensor]) -> None:
    """``check_same_device(("image", image), ("K", K))``: every tensor on the first one's device."""
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(f"{name}: expected a tensor on {first.device} (like {first_name}), got {t.device}")


def check_min_size(x: torch.Tensor, name: str, min_h: int, min_w: int, why: str) -> None:
    """Require ``x.shape[-2:] >= (min_h, min_w)``; ``why`` says what needs the size."""
    if x.shape[-2] < min_h or x.shape[-1] < min_w:
        raise ValueError(f"{name}: needs H >= {min_h} and W >= {min_w} ({why}), got {tuple(x.shape)}")


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


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Common dtype of ``tensors``, at least float32 (half inputs are computed in float32)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def as_compute(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``tensors`` cast to :func:`compute_dtype` (unchanged when already there)."""
    dtype = compute_dtype(*tensors)
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in tensors)


@contextmanager
def no_autocast(device: torch.device):
    """Disable autocast on ``device`` (for matmul-based statistics that need full precision)."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:  # pragma: no cover - exotic backends
        yield
