"""Entry checks and dtype helpers shared by the loss modules (private)."""
from contextlib import contextmanager
from typing import Optional, Sequence, Tuple

import torch


def check_tensor(name: str, t, expected: str, ndim: int = 4, channels: Optional[int] = None) -> None:
    """Raise ``ValueError`` unless ``t`` is a floating tensor of rank ``ndim`` (and ``channels``)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {expected}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(t.shape)}")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"{name}: expected shape {expected} with {channels} channel(s), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor of shape {expected}, got dtype {t.dtype}")


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, expected: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b}: expected shape {expected} equal to {name_a}'s {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{name_b}: expected device {a.device} (as {name_a}), got {b.device}")


def check_dims(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, dims: Sequence[int],
               expected: str) -> None:
    """Require ``a`` and ``b`` to agree on the listed dimensions and device."""
    for d in dims:
        if a.shape[d] != b.shape[d]:
            raise ValueError(f"{name_b}: expected shape {expected} matching {name_a} {tuple(a.shape)}, "
                             f"got {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{name_b}: expected device {a.device} (as {name_a}), got {b.device}")


def check_min_size(name: str, t: torch.Tensor, min_h: int, min_w: int, why: str) -> None:
    if t.shape[-2] < min_h or t.shape[-1] < min_w:
        raise ValueError(f"{name}: needs H >= {min_h} and W >= {min_w} ({why}), got {tuple(t.shape)}")


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Common dtype of ``tensors``, at least float32 (half inputs are computed in float32)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def as_compute(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
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
