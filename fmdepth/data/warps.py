"""THE random-warp generator of fmdepth: random affines and smooth random displacement fields.

Every synthetic pair (:func:`fmdepth.data.pairs.make_pair`, :class:`SyntheticPairDataset`,
:class:`FastSyntheticPairDataset`), the semantic-alignment pairs
(:class:`fmdepth.data.semantic.WarpedPairDataset`, :func:`random_warp_flow`) and the
correspondence test pair (:func:`fmdepth.correspondence.synthetic.affine_colour_pair`) draw their
geometry here, and the
fields are interpolated by the one sampler of :mod:`fmdepth.geometry` (``align_corners=True``).

Conventions: a pixel affine ``A`` (2, 3) maps a fixed pixel ``(x, y, 1)`` to the moving pixel;
a flow is (2, H, W) in pixels on the fixed grid, ``flow[0]`` = dx, ``flow[1]`` = dy.

Random numbers come from the caller's stream, either a ``numpy.random.Generator`` or a
``torch.Generator`` (each generator is used in its own way, so a seed keeps giving the same
draws whichever caller it belongs to).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from fmdepth.geometry import affine_to_flow, dihedral_flow, dihedral_image, flow_warp, sample

Rng = Union[np.random.Generator, torch.Generator]

__all__ = ["uniform", "centred_affine", "random_affine", "control_grid_field", "random_smooth_flow",
           "random_warp", "random_warp_flow", "RandomWarpAugment", "dihedral_pair", "RandomFlipAugment"]


def uniform(rng: Rng, lo: float, hi: float) -> float:
    """One draw in [lo, hi) from a numpy or torch generator."""
    if isinstance(rng, torch.Generator):
        return float(lo + (hi - lo) * torch.rand((), generator=rng))
    return float(rng.uniform(lo, hi))


def centred_affine(height: int, width: int, angle_deg: float, scale: Sequence[float] = (1.0, 1.0),
                   shear: float = 0.0, shift: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """The (2, 3) float64 pixel affine ``p -> L (p - c) + c + shift`` about the image centre ``c``.

    ``L = R(angle) @ [[sx, shear], [0, sy]]``; ``c = ((W - 1) / 2, (H - 1) / 2)``.

    Example:
        >>> centred_affine(5, 5, 0.0, shift=(1.0, -2.0)).tolist()
        [[1.0, 0.0, 1.0], [0.0, 1.0, -2.0]]
    """
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lin = rot @ np.array([[float(scale[0]), shear], [0.0, float(scale[1])]])
    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    offset = c + np.asarray(shift, dtype=np.float64) - lin @ c
    return np.concatenate([lin, offset[:, None]], axis=1)


def random_affine(height: int, width: int, rng: np.random.Generator, rotation_deg: float = 8.0,
                  scale: float = 0.08, shear: float = 0.04, translation: float = 0.04) -> np.ndarray:
    """A random (2, 3) float64 pixel affine about the image centre (fixed pixel -> moving pixel).

    Rotation uniform in +-``rotation_deg``, log-scale per axis in +-``scale``, shear in
    +-``shear``, translation in +-``translation`` x image size (:func:`centred_affine`).
    """
    angle = rng.uniform(-rotation_deg, rotation_deg)
    sx, sy = np.exp(rng.uniform(-scale, scale, size=2))
    sh = rng.uniform(-shear, shear)
    t = rng.uniform(-translation, translation, size=2) * np.array([width, height])
    return centred_affine(height, width, angle, (sx, sy), sh, t)


def control_grid_field(coarse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (1, 2, gh, gw) control grid spanning the image corner to corner -> (2, H, W) field,
    interpolated bicubically by :func:`fmdepth.geometry.sample` (border padding), in ``coarse``'s dtype."""
    gh, gw = coarse.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=coarse.dtype), torch.arange(width, dtype=coarse.dtype),
                            indexing="ij")
    pix = torch.stack([xs * ((gw - 1) / max(width - 1, 1)), ys * ((gh - 1) / max(height - 1, 1))], -1)
    return sample(coarse, pix[None], mode="bicubic", padding_mode="border")[0][0]


def random_smooth_flow(height: int, width: int, rms: float, rng: Rng, control: int = 5) -> torch.Tensor:
    """Random smooth (2, H, W) float32 displacement with RMS magnitude ``rms`` pixels.

    Gaussian noise on a ``control x control`` grid spanning the image corner to corner,
    interpolated bicubically by :func:`fmdepth.geometry.sample` (border padding), made zero-mean
    and scaled so that ``sqrt(mean(dx^2 + dy^2)) == rms``. ``rms <= 0`` gives zeros and draws
    nothing. A numpy generator draws ``standard_normal((2, control, control))`` (computed in
    float64), a torch one ``randn(1, 2, control, control)`` (float32).

    Example:
        >>> f = random_smooth_flow(32, 40, 3.0, np.random.default_rng(0))
        >>> tuple(f.shape), round(float(f.pow(2).sum(0).mean().sqrt()), 4)
        ((2, 32, 40), 3.0)
    """
    if rms <= 0:
        return torch.zeros(2, height, width)
    if isinstance(rng, torch.Generator):
        coarse = torch.randn(1, 2, control, control, generator=rng)
    else:
        coarse = torch.from_numpy(rng.standard_normal((2, control, control)))[None]
    flow = control_grid_field(coarse, height, width)
    flow = flow - flow.mean(dim=(1, 2), keepdim=True)
    cur = float(flow.pow(2).sum(0).mean().sqrt())
    return (flow * (rms / max(cur, 1e-12))).float()


def random_warp(height: int, width: int, rng: np.random.Generator, rms: float,
                affine: Optional[dict] = None, control: int = 5) -> Tuple[torch.Tensor, Optional[np.ndarray]]:
    """A random affine (when ``affine`` is a dict of :func:`random_affine` keywords) plus a smooth field.

    Returns:
        flow: (2, H, W) float32, ``A p - p + s(p)`` (:func:`random_smooth_flow` of RMS ``rms``);
        A: (2, 3) float64 pixel affine, or None without ``affine``.
    """
    A = random_affine(height, width, rng, **affine) if affine is not None else None
    flow = random_smooth_flow(height, width, rms, rng, control=control)
    if A is not None:
        flow = flow + affine_to_flow(torch.from_numpy(A)[None], height, width)[0].float()
    return flow, A


def random_warp_flow(height: int, width: int, rng: np.random.Generator, max_rotation: float = 20.0,
                     max_scale: float = 1.2, max_translation: float = 0.1, max_shear: float = 0.1,
                     deform: float = 2.0, deform_grid: int = 4) -> torch.Tensor:
    """A random (2, H, W) float32 field in pixels: an affine about the centre plus a random deformation.

    ``p + flow(p)`` is the affine :func:`centred_affine` (rotation up to ``max_rotation`` degrees,
    isotropic scale in ``[1/max_scale, max_scale]``, shear up to ``max_shear``, shift up to
    ``max_translation`` of the size), plus displacements drawn N(0, ``deform``^2) on a
    ``deform_grid`` x ``deform_grid`` control grid (:func:`control_grid_field`; not normalised,
    unlike :func:`random_smooth_flow`).
    """
    angle = rng.uniform(-max_rotation, max_rotation)
    s = float(np.exp(rng.uniform(-np.log(max_scale), np.log(max_scale))))
    sh = rng.uniform(-max_shear, max_shear)
    shift = rng.uniform(-max_translation, max_translation, 2) * np.array([width, height])
    A = centred_affine(height, width, angle, (s, s), s * sh, shift)
    flow = affine_to_flow(torch.from_numpy(A)[None], height, width)[0].float()
    if deform > 0:
        coarse = torch.from_numpy(rng.normal(0.0, deform, (1, 2, deform_grid, deform_grid))).float()
        flow = flow + control_grid_field(coarse, height, width)
    return flow


class RandomWarpAugment(Dataset):
    """Training augmentation for pair datasets: the fixed image seen through a fresh random warp.

    On every access the sample's fixed image is resampled as ``f'(p) = f(p + a(p))`` with ``a`` a
    new :func:`random_warp` (smooth field of RMS ``rms`` px plus a random affine of up to
    ``rotation_deg``, ``scale``, ``translation`` x size), so a small set of real pairs gives new
    misalignments at every epoch (unsupervised registration otherwise memorises its training
    pairs). A known true flow is composed, ``u'(p) = a(p) + u(p + a(p))``; landmarks are dropped
    (their fixed positions would need ``a``'s inverse). The draws come from the global torch
    stream, which the training engine seeds and checkpoints, so runs and resumes repeat.
    Shapes: the wrapped dataset's ``fixed`` (C, H, W), optional ``flow`` (2, H, W).
    """

    def __init__(self, dataset, rms: float, rotation_deg: float = 4.0, scale: float = 0.04,
                 translation: float = 0.02, control: int = 5) -> None:
        if rms < 0:
            raise ValueError(f"rms: expected >= 0 pixels, got {rms}")
        self.dataset, self.rms, self.control = dataset, float(rms), int(control)
        self.affine = dict(rotation_deg=rotation_deg, scale=scale, shear=0.0, translation=translation)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        sample_ = dict(self.dataset[idx])
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,))))
        fixed = torch.as_tensor(np.asarray(sample_["fixed"], dtype=np.float32))
        _, H, W = fixed.shape
        a, _ = random_warp(H, W, rng, self.rms, affine=self.affine, control=self.control)
        sample_["fixed"] = flow_warp(fixed[None], a[None], padding_mode="border")[0][0].numpy()
        if sample_.get("flow") is not None:
            u = torch.as_tensor(np.asarray(sample_["flow"], dtype=np.float32))
            sample_["flow"] = (a + flow_warp(u[None], a[None], padding_mode="border")[0][0]).numpy()
        sample_["landmarks_fixed"] = sample_["landmarks_moving"] = None
        return sample_


def dihedral_pair(sample_: dict, hflip: bool, vflip: bool, transpose: bool) -> dict:
    """The same flip / transpose of both images of a pair sample, its flow and its landmarks.

    The pair stays a pair of the same two modalities seen in another orientation: images through
    :func:`fmdepth.geometry.dihedral_image`, the true flow through
    :func:`fmdepth.geometry.dihedral_flow` (``u'(p) = M^-1 u(g(p))``), landmarks to ``g^-1``.
    Images (C, H, W), flow (2, H, W) with ``flow[0]`` = dx, landmarks (N, 2) as (x, y) pixels;
    ``transpose`` needs a square pair (it swaps H and W).
    """
    out = dict(sample_)
    H, W = np.asarray(sample_["fixed"]).shape[-2:]
    if transpose and H != W:
        raise ValueError(f"transpose: needs a square pair, got {H}x{W}")
    for key in ("fixed", "moving"):
        out[key] = dihedral_image(torch.from_numpy(np.ascontiguousarray(sample_[key])), hflip, vflip,
                                  transpose).contiguous().numpy()
    if sample_.get("flow") is not None:
        u = torch.from_numpy(np.ascontiguousarray(sample_["flow"], dtype=np.float32))
        out["flow"] = dihedral_flow(u, hflip, vflip, transpose).contiguous().numpy()
    for key in ("landmarks_fixed", "landmarks_moving"):
        pts = sample_.get(key)
        if pts is None:
            continue
        pts = np.array(pts, copy=True)
        if hflip:
            pts[:, 0] = (W - 1) - pts[:, 0]
        if vflip:
            pts[:, 1] = (H - 1) - pts[:, 1]
        if transpose:
            pts = pts[:, ::-1].copy()
        out[key] = pts
    return out


class RandomFlipAugment(Dataset):
    """Training augmentation for pair datasets: each access sees the pair in one of its 8
    orientations (random horizontal flip, vertical flip and, for square pairs, transpose; see
    :func:`dihedral_pair`), drawn from the engine-seeded global torch stream as
    :class:`RandomWarpAugment` does. The same map is applied to both images, so the modality pair
    is unchanged while the content the network sees varies (a few unaligned videos otherwise show
    it one camera orientation only)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        sample_ = self.dataset[idx]
        h, v, t = (bool(b) for b in torch.randint(0, 2, (3,)))
        H, W = np.asarray(sample_["fixed"]).shape[-2:]
        return dihedral_pair(sample_, h, v, t and H == W)
