"""Pair I/O: 8-bit image writing, landmark CSV files, resizing, and pair folders as datasets.

A *pair folder* is::

    ROOT/fixed/<name>.png   ROOT/moving/<name>.png            (required, same names)
    ROOT/landmarks_fixed/<name>.csv  ROOT/landmarks_moving/<name>.csv   (optional)
    ROOT/flow/<name>.npy   (optional true displacement, (2, H, W) float32)

Landmarks are ``(N, 2)`` arrays of ``(x, y)`` pixel coordinates (pixel centres at integers),
stored with one ``x,y`` line per landmark (an optional ``x,y`` header is allowed). Images are
read by :func:`fmdepth.data.media.read_image`.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from fmdepth.geometry import resize_image

from .media import list_images, read_image


def save_image(path: str, img) -> None:
    """Write a (C, H, W) or (H, W) float image in [0, 1] (numpy or tensor) as 8-bit PNG/JPG."""
    import imageio.v3 as iio

    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    iio.imwrite(path, (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def read_landmarks(path: str, height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """Read a landmark CSV file (``x,y`` per line, optional header) as float64 ``(N, 2)``.

    Args:
        path: CSV file.
        height, width: if given, every point must lie inside the image
            (``0 <= x <= width - 1``, ``0 <= y <= height - 1``).

    Raises:
        FileNotFoundError: missing file. ValueError: malformed line (named by number), no points,
        non-finite or out-of-image points.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"landmark file not found: {path}")
    points: List[Tuple[float, float]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row if c.strip() != ""]
            if not cells or cells[0].startswith("#"):
                continue
            if len(cells) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'x,y', got {','.join(row)!r}")
            try:
                x, y = float(cells[0]), float(cells[1])
            except ValueError:
                if lineno == 1 and not points:  # header such as "x,y"
                    continue
                raise ValueError(f"{path}:{lineno}: expected two numbers 'x,y', got {','.join(row)!r}") from None
            if not (np.isfinite(x) and np.isfinite(y)):
                raise ValueError(f"{path}:{lineno}: non-finite landmark ({x}, {y})")
            points.append((x, y))
    if not points:
        raise ValueError(f"{path}: no landmarks found (expected lines 'x,y')")
    pts = np.asarray(points, dtype=np.float64)
    if height is not None and width is not None:
        bad = (pts[:, 0] < 0) | (pts[:, 0] > width - 1) | (pts[:, 1] < 0) | (pts[:, 1] > height - 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: {int(bad.sum())} landmark(s) outside the {width}x{height} image, "
                             f"first #{i + 1} at ({pts[i, 0]:.2f}, {pts[i, 1]:.2f}); "
                             f"valid x in [0, {width - 1}], y in [0, {height - 1}]")
    return pts


def write_landmarks(path: str, points: np.ndarray) -> None:
    """Write ``(N, 2)`` (x, y) points as a CSV file with an ``x,y`` header."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points: expected (N, 2), got {points.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("x,y\n")
        for x, y in points:
            fh.write(f"{x:.4f},{y:.4f}\n")


def resize_array(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a (C, h, w) float array to (C, height, width) float32 with :func:`fmdepth.geometry.resize_image`.

    Bilinear, anti-aliased when shrinking, pixel centres aligned (``align_corners=True``: pixel
    ``u`` maps to ``u (width - 1) / (w - 1)``, the rule landmarks and flows are rescaled by).
    """
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
    return resize_image(x, (int(height), int(width)))[0].numpy()


@dataclass
class PairBatch:
    """A batch of registration pairs (what :func:`collate_pairs` returns).

    Attributes:
        fixed: (B, C, H, W) in [0, 1].  moving: (B, C, H, W) in [0, 1].
        flow: (B, 2, H, W) true displacement or None (unknown for real data).
        landmarks_fixed / landmarks_moving: per-sample (N_i, 2) tensors or None.
        names: pair names.
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    flow: Optional[torch.Tensor] = None
    landmarks_fixed: Optional[List[torch.Tensor]] = None
    landmarks_moving: Optional[List[torch.Tensor]] = None
    names: List[str] = field(default_factory=list)

    def to(self, device) -> "PairBatch":
        mv = (lambda t: None if t is None else t.to(device))
        return PairBatch(self.fixed.to(device), self.moving.to(device), mv(self.flow),
                         None if self.landmarks_fixed is None else [mv(t) for t in self.landmarks_fixed],
                         None if self.landmarks_moving is None else [mv(t) for t in self.landmarks_moving],
                         list(self.names))


def collate_pairs(samples: List[dict]) -> PairBatch:
    """Stack samples ``{"fixed", "moving", ["flow"], ["landmarks_fixed", "landmarks_moving"], "name"}``."""
    fixed = torch.stack([torch.as_tensor(s["fixed"]) for s in samples])
    moving = torch.stack([torch.as_tensor(s["moving"]) for s in samples])
    flow = None
    if all(s.get("flow") is not None for s in samples):
        flow = torch.stack([torch.as_tensor(s["flow"]) for s in samples])
    lf = lm = None
    if all(s.get("landmarks_fixed") is not None for s in samples):
        lf = [torch.as_tensor(s["landmarks_fixed"], dtype=torch.float32) for s in samples]
        lm = [torch.as_tensor(s["landmarks_moving"], dtype=torch.float32) for s in samples]
    return PairBatch(fixed, moving, flow, lf, lm, [str(s.get("name", i)) for i, s in enumerate(samples)])


class PairFolderDataset(Dataset):
    """Pairs from a pair folder (``ROOT/fixed``, ``ROOT/moving``, optional landmarks and flow).

    Every fixed image must have a moving image with the same file stem. Images are converted to
    ``channels`` and, when ``height``/``width`` are given, resized (landmarks and flow rescaled).

    Args:
        root: the pair folder.
        height, width: output size (None: keep; then all pairs in a batch must share a size).
        channels: 1 (grey, default) or 3.
    """

    def __init__(self, root: str, height: Optional[int] = None, width: Optional[int] = None,
                 channels: int = 1) -> None:
        self.root = root
        fixed_dir, moving_dir = os.path.join(root, "fixed"), os.path.join(root, "moving")
        if not os.path.isdir(fixed_dir) or not os.path.isdir(moving_dir):
            raise NotADirectoryError(f"{root}: a pair folder needs 'fixed/' and 'moving/' sub-folders")
        fixed = {os.path.splitext(f)[0]: f for f in list_images(fixed_dir)}
        moving = {os.path.splitext(f)[0]: f for f in list_images(moving_dir)}
        missing = sorted(set(fixed) - set(moving))
        if missing:
            raise ValueError(f"{root}: {len(missing)} fixed image(s) without a moving image of the same "
                             f"name, e.g. '{missing[0]}'")
        if not fixed:
            raise ValueError(f"{root}: no images in {fixed_dir}")
        self.names = sorted(fixed)
        self._fixed, self._moving = fixed, moving
        self.height, self.width, self.channels = height, width, channels

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, idx: int) -> dict:
        name = self.names[idx]
        fixed = read_image(os.path.join(self.root, "fixed", self._fixed[name]), self.channels)
        moving = read_image(os.path.join(self.root, "moving", self._moving[name]), self.channels)
        _, fh, fw = fixed.shape
        _, mh, mw = moving.shape
        sample = {"name": name}
        lf_path = os.path.join(self.root, "landmarks_fixed", f"{name}.csv")
        lm_path = os.path.join(self.root, "landmarks_moving", f"{name}.csv")
        flow_path = os.path.join(self.root, "flow", f"{name}.npy")
        lf = lm = flow = None
        if os.path.isfile(lf_path) and os.path.isfile(lm_path):
            lf, lm = read_landmarks(lf_path, fh, fw), read_landmarks(lm_path, mh, mw)
            if len(lf) != len(lm):
                raise ValueError(f"{name}: {len(lf)} fixed landmarks but {len(lm)} moving landmarks")
        if os.path.isfile(flow_path):
            flow = np.load(flow_path, allow_pickle=False).astype(np.float32)
            if flow.shape != (2, fh, fw):
                raise ValueError(f"{flow_path}: expected flow of shape (2, {fh}, {fw}), got {flow.shape}")
        H = self.height or fh
        W = self.width or fw
        # fixed-grid pixel scale (align_corners convention: u' = u * (W'-1)/(W-1))
        if (fh, fw) != (H, W) or (mh, mw) != (H, W):
            sfx, sfy = (W - 1) / (fw - 1), (H - 1) / (fh - 1)
            smx, smy = (W - 1) / (mw - 1), (H - 1) / (mh - 1)
            if flow is not None:  # moving coordinate minus fixed coordinate, re-expressed
                ys, xs = np.mgrid[0:fh, 0:fw].astype(np.float32)
                mx, my = (xs + flow[0]) * smx, (ys + flow[1]) * smy
                nx, ny = xs * sfx, ys * sfy
                flow = resize_array(np.stack([mx - nx, my - ny]), H, W) if (fh, fw) != (H, W) else np.stack([mx - nx, my - ny])
            fixed, moving = resize_array(fixed, H, W), resize_array(moving, H, W)
            if lf is not None:
                lf = lf * np.array([sfx, sfy])
                lm = lm * np.array([smx, smy])
        sample.update(fixed=fixed, moving=moving, flow=flow, landmarks_fixed=lf, landmarks_moving=lm)
        return sample
