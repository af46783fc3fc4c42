"""The typed batch every depth dataset produces, and the collate function that builds it.

A dataset's ``__getitem__`` returns a :class:`DepthSample` (no batch dimension);
:func:`collate_depth` stacks a list of them into a :class:`DepthBatch`:

=============  ==================================================================================
frames         ``{frame_id: [scale 0 (B,3,H,W), scale 1 (B,3,H/2,W/2), ...]}`` in [0, 1], for the
               LOSS (never colour-jittered). Frame ids: 0 (target), -1/1 (temporal), "s" (stereo)
net_frames     ``{frame_id: (B,3,H,W)}`` network INPUT at scale 0 (colour-jittered when augmenting)
K, K_inv       ``[(B,3,3) per scale]`` in pixels of that scale (read from the calibration files)
stereo_T       (B,4,4) ``src_T_tgt`` of the "s" frame (metric baseline from the calibration), or None
depth_gt       (B,1,Hg,Wg) metric ground truth at the native image size (0 = missing), or None
label          (B,1,Hg,Wg) int64 surface labels (synthetic data only), or None
index          (B,) dataset indices
meta           ``[(folder, frame_index, side)]``
=============  ==================================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

FrameId = Union[int, str]


@dataclass
class DepthSample:
    """One dataset item (tensors without the batch dimension); see :class:`DepthBatch`."""

    frames: Dict[FrameId, List[Tensor]]  # id -> [(3, H/2^s, W/2^s)]
    net_frames: Dict[FrameId, Tensor]  # id -> (3, H, W)
    K: List[Tensor]  # [(3, 3)]
    K_inv: List[Tensor]
    stereo_T: Optional[Tensor]  # (4, 4)
    depth_gt: Optional[Tensor]  # (1, Hg, Wg)
    label: Optional[Tensor]  # (1, Hg, Wg) int64
    index: int
    meta: Tuple[str, int, str]


@dataclass
class DepthBatch:
    """A batch of depth-training samples (see the module docstring for every field's shape)."""

    frames: Dict[FrameId, List[Tensor]]
    net_frames: Dict[FrameId, Tensor]
    K: List[Tensor]
    K_inv: List[Tensor]
    stereo_T: Optional[Tensor]
    depth_gt: Optional[Tensor]
    label: Optional[Tensor]
    index: Tensor
    meta: List[Tuple[str, int, str]] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.index.shape[0])

    def to(self, device, non_blocking: bool = False) -> "DepthBatch":
        """A copy with every tensor on ``device``."""

        def mv(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return DepthBatch(
            frames={k: [mv(t) for t in v] for k, v in self.frames.items()},
            net_frames={k: mv(v) for k, v in self.net_frames.items()},
            K=[mv(t) for t in self.K],
            K_inv=[mv(t) for t in self.K_inv],
            stereo_T=mv(self.stereo_T),
            depth_gt=mv(self.depth_gt),
            label=mv(self.label),
            index=mv(self.index),
            meta=list(self.meta),
        )

    def pin_memory(self) -> "DepthBatch":
        """Pinned copy (used by ``DataLoader(pin_memory=True)``)."""

        def pin(t):
            return None if t is None else t.pin_memory()

        return DepthBatch(
            frames={k: [pin(t) for t in v] for k, v in self.frames.items()},
            net_frames={k: pin(v) for k, v in self.net_frames.items()},
            K=[pin(t) for t in self.K], K_inv=[pin(t) for t in self.K_inv],
            stereo_T=pin(self.stereo_T), depth_gt=pin(self.depth_gt), label=pin(self.label),
            index=pin(self.index), meta=list(self.meta))


def _stack(tensors: Sequence[Tensor], what: str, meta) -> Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        detail = ", ".join(f"{m[0]} {m[1]} {m[2]}: {tuple(t.shape)}" for t, m in zip(tensors, meta))
        raise ValueError(f"collate_depth: {what} has different shapes within the batch ({detail}); "
                         "use batch size 1 or resize the ground truth to one size (gt_size=...)")
    return torch.stack(list(tensors))


def collate_depth(samples: Sequence[DepthSample]) -> DepthBatch:
    """Stack :class:`DepthSample` items into a :class:`DepthBatch`.

    Raises:
        ValueError: empty list, items with different frame ids / scales, or tensors of
            different shapes (the message names the entries).
    """
    samples = list(samples)
    if not samples:
        raise ValueError("collate_depth: empty list of samples")
    first = samples[0]
    if not isinstance(first, DepthSample):
        raise ValueError(f"collate_depth: expected DepthSample items, got {type(first).__name__}")
    meta = [s.meta for s in samples]
    for s in samples[1:]:
        if set(s.frames) != set(first.frames) or len(s.K) != len(first.K):
            raise ValueError(f"collate_depth: samples disagree on frame ids/scales: {sorted(map(str, first.frames))} "
                             f"vs {sorted(map(str, s.frames))} ({s.meta})")
    frames = {fid: [_stack([s.frames[fid][k] for s in samples], f"frame {fid!r} scale {k}", meta)
                    for k in range(len(first.frames[fid]))] for fid in first.frames}
    net = {fid: _stack([s.net_frames[fid] for s in samples], f"net frame {fid!r}", meta)
           for fid in first.net_frames}
    K = [torch.stack([s.K[k] for s in samples]) for k in range(len(first.K))]
    K_inv = [torch.stack([s.K_inv[k] for s in samples]) for k in range(len(first.K_inv))]

    def optional(name):
        values = [getattr(s, name) for s in samples]
        if all(v is None for v in values):
            return None
        if any(v is None for v in values):
            raise ValueError(f"collate_depth: '{name}' is missing for some samples of the batch")
        return _stack(values, name, meta)

    return DepthBatch(frames=frames, net_frames=net, K=K, K_inv=K_inv, stereo_T=optional("stereo_T"),
                      depth_gt=optional("depth_gt"), label=optional("label"),
                      index=torch.tensor([s.index for s in samples], dtype=torch.long), meta=meta)
