"""Depth metrics and the KITTI Eigen evaluation protocol -- the one copy used by training-time
validation and by ``fmdepth evaluate depth``.

The protocol is the one of the published self-supervised depth tables (Monodepth2's
``evaluate_depth.py``), step by step, so numbers are comparable:

1. the predicted *scaled disparity* (``disp_to_depth(...)[0]``) is resized bilinearly to the
   ground-truth size (half-pixel centres, like ``cv2.resize``) and inverted to depth;
2. the evaluation mask is ``1e-3 < gt < 80`` inside the Garg crop (split ``eigen``), or
   ``gt > 0`` without a crop (split ``eigen_benchmark``, improved ground truth);
3. the prediction is multiplied by a fixed factor (1, or 5.4 for stereo-trained models) and, for
   monocular models, by the per-image median ratio ``median(gt) / median(pred)``;
4. the prediction is clamped to ``[1e-3, 80]``; the seven metrics are computed per image and
   averaged over images.

Median-scaling ratio convention: ``ratio = median(gt) / median(pred)`` is the factor the
prediction is *multiplied* by. A prediction equal to 3x the ground truth has ratio 1/3.
The summary reports the ratios' median and ``std(ratios / median)`` (Monodepth2's print-out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

MIN_DEPTH = 1e-3  # metres: lower cap of ground truth and prediction
MAX_DEPTH = 80.0  # metres: upper cap of ground truth and prediction
STEREO_SCALE_FACTOR = 5.4  # fixed scale of stereo-trained models (KITTI baseline 0.54 m x 10)
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
PROTOCOLS = ("eigen", "eigen_benchmark")

# Garg et al. (ECCV 2016) crop as fractions of the ground-truth image: top, bottom, left, right.
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)

ArrayLike = Union[np.ndarray, "torch.Tensor"]  # noqa: F821


def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - defensive
            raise ValueError(f"{name}: expected an array, got {type(x).__name__}") from exc
    return x


def depth_metrics(gt, pred) -> Dict[str, float]:
    """The seven standard depth metrics between matched depth samples.

    Args:
        gt: (N,) ground-truth depths, all > 0 (already masked).
        pred: (N,) predicted depths, all > 0 (already masked, scaled and clamped).

    Returns:
        dict with ``abs_rel`` = mean(|gt-pred|/gt), ``sq_rel`` = mean((gt-pred)^2/gt),
        ``rmse`` = sqrt(mean((gt-pred)^2)), ``rmse_log`` = sqrt(mean((log gt - log pred)^2)),
        ``a1``/``a2``/``a3`` = fraction with max(gt/pred, pred/gt) < 1.25, 1.25^2, 1.25^3.
        Computed in float64.

    Example:
        >>> m = depth_metrics(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
        >>> round(m["abs_rel"], 3), m["a1"]
        (0.5, 0.5)
    """
    gt = _to_numpy(gt, "gt").astype(np.float64, copy=False)
    pred = _to_numpy(pred, "pred").astype(np.float64, copy=False)
    if gt.ndim != 1 or pred.ndim != 1:
        raise ValueError(f"depth_metrics: gt and pred must be 1-D (N,), got {gt.shape} and {pred.shape}")
    if gt.shape != pred.shape:
        raise ValueError(f"depth_metrics: gt {gt.shape} and pred {pred.shape} must have the same length")
    if gt.size == 0:
        raise ValueError("depth_metrics: no valid pixels (empty gt/pred)")
    if not (np.all(np.isfinite(pred)) and np.all(pred > 0)):
        raise ValueError("depth_metrics: pred must be finite and > 0 (clamp it to [MIN_DEPTH, MAX_DEPTH])")
    if not (np.all(np.isfinite(gt)) and np.all(gt > 0)):
        raise ValueError("depth_metrics: gt must be finite and > 0 (mask invalid pixels first)")
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def garg_crop_bounds(height: int, width: int):
    """(top, bottom, left, right) of the Garg crop, end-exclusive, for a ``height x width`` GT image.

    The fractions are multiplied by the size and truncated to integers, exactly as the
    standard evaluation code (``np.array([...]).astype(np.int32)``). For 375x1242:
    rows 153..370, columns 44..1196 (``[153:371, 44:1197]``).
    """
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"garg_crop_bounds: height and width must be > 0, got {height}x{width}")
    top, bottom, left, right = np.array(
        [GARG_CROP[0] * height, GARG_CROP[1] * height, GARG_CROP[2] * width, GARG_CROP[3] * width]
    ).astype(np.int32)
    return int(top), int(bottom), int(left), int(right)


def eigen_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the Garg crop used by the Eigen split evaluation."""
    top, bottom, left, right = garg_crop_bounds(height, width)
    mask = np.zeros((int(height), int(width)), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def evaluation_mask(gt_depth: np.ndarray, protocol: str = "eigen") -> np.ndarray:
    """Pixels that count for one ground-truth map.

    Args:
        gt_depth: (H, W) metric ground truth, 0 where missing.
        protocol: ``"eigen"``: ``1e-3 < gt < 80`` inside the Garg crop; ``"eigen_benchmark"``
            (improved ground truth): ``gt > 0``, no crop -- as the standard evaluation code.

    Returns:
        (H, W) bool.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got '{protocol}'")
    gt_depth = np.asarray(gt_depth)
    if gt_depth.ndim != 2:
        raise ValueError(f"gt_depth must be (H, W), got shape {gt_depth.shape}")
    with np.errstate(invalid="ignore"):
        if protocol == "eigen":
            mask = (gt_depth > MIN_DEPTH) & (gt_depth < MAX_DEPTH)
            return mask & eigen_crop_mask(*gt_depth.shape)
        return gt_depth > 0


def resize_disparity(disp: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one (h, w) disparity map to (height, width).

    Half-pixel-centre sampling without antialiasing (``align_corners=False``), i.e. the same
    values as ``cv2.resize(disp, (width, height))`` used by the standard protocol.
    """
    import torch
    import torch.nn.functional as F

    disp = np.asarray(disp)
    if disp.ndim != 2:
        raise ValueError(f"disp must be (h, w), got shape {disp.shape}")
    if disp.shape == (height, width):
        return disp.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(disp, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(int(height), int(width)), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def sample_disparity(disp: np.ndarray, height: int, width: int, mask: np.ndarray) -> np.ndarray:
    """Values of ``resize_disparity(disp, height, width)[mask]``, computed only at ``mask``.

    Ground truth is sparse (LiDAR: ~5% of pixels), so interpolating only there is much cheaper
    than resizing the whole map; the result is the same bilinear, half-pixel-centre resize
    (source coordinate ``(i + 0.5) * h / H - 0.5`` clamped to the image).

    Args:
        disp: (h, w) disparity.
        height, width: the ground-truth size.
        mask: (height, width) bool.

    Returns:
        (mask.sum(),) float64.
    """
    disp = np.asarray(disp, dtype=np.float64)
    h, w = disp.shape
    rows, cols = np.nonzero(mask)
    y = np.clip((rows + 0.5) * (h / height) - 0.5, 0.0, h - 1)
    x = np.clip((cols + 0.5) * (w / width) - 0.5, 0.0, w - 1)
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = y - y0
    wx = x - x0
    top = disp[y0, x0] * (1 - wx) + disp[y0, x1] * wx
    bottom = disp[y1, x0] * (1 - wx) + disp[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def post_process_disparity(disp, disp_flipped):
    """Blend a prediction with the (flipped back) prediction of the mirrored image.

    Monodepth2's ``batch_post_process_disparity``: the left 5% of columns come from the
    flipped-image prediction, the right 5% from the plain one (each side's borders are
    occluded in one of the two), the middle is their mean, with a linear ramp between.

    Args:
        disp: (B, H, W) numpy or (B, 1, H, W) / (B, H, W) tensor, prediction of the images.
        disp_flipped: same shape, prediction of the horizontally flipped images, already
            flipped back to the original orientation.

    Returns:
        the blended disparity, same type and shape as ``disp``.
    """
    if tuple(disp.shape) != tuple(disp_flipped.shape):
        raise ValueError(f"disp {tuple(disp.shape)} and disp_flipped {tuple(disp_flipped.shape)} "
                         "must have the same shape")
    if disp.ndim not in (3, 4):
        raise ValueError(f"disp must be (B, H, W) or (B, 1, H, W), got {tuple(disp.shape)}")
    h, w = disp.shape[-2:]
    ramp_x, _ = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    l_mask = 1.0 - np.clip(20 * (ramp_x - 0.05), 0, 1)  # (H, W): 1 on the left border
    r_mask = l_mask[:, ::-1].copy()
    if hasattr(disp, "detach"):
        import torch

        l_mask = torch.as_tensor(l_mask, dtype=disp.dtype, device=disp.device)
        r_mask = torch.as_tensor(r_mask, dtype=disp.dtype, device=disp.device)
    mean = 0.5 * (disp + disp_flipped)
    return r_mask * disp + l_mask * disp_flipped + (1.0 - l_mask - r_mask) * mean


@dataclass
class DepthEvaluation:
    """Result of :func:`evaluate_depth_predictions`.

    Attributes:
        metrics: the seven metrics averaged over images (keys :data:`METRIC_NAMES`).
        per_image: one dict per image: the seven metrics, ``ratio`` (NaN without median
            scaling) and ``num_pixels``.
        ratios: (N,) median-scaling ratios ``median(gt)/median(pred)`` (empty without scaling).
        ratio_median: median of ``ratios`` (NaN without median scaling).
        ratio_std: ``std(ratios / ratio_median)`` (NaN without median scaling).
        protocol, median_scaling, fixed_scale: the settings used.
    """

    metrics: Dict[str, float]
    per_image: List[Dict[str, float]] = field(default_factory=list)
    ratios: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ratio_median: float = float("nan")
    ratio_std: float = float("nan")
    protocol: str = "eigen"
    median_scaling: bool = True
    fixed_scale: float = 1.0

    def summary(self) -> Dict[str, float]:
        """The metrics plus the scaling statistics and the image count (for ``--json``)."""
        out = dict(self.metrics)
        out["num_images"] = len(self.per_image)
        out["median_scaling"] = self.median_scaling
        out["fixed_scale"] = self.fixed_scale
        out["protocol"] = self.protocol
        if self.median_scaling:
            out["ratio_median"] = self.ratio_median
            out["ratio_std"] = self.ratio_std
        return out


def evaluate_depth_image(gt_depth, pred_disp, protocol: str = "eigen", median_scaling: bool = True,
                         fixed_scale: float = 1.0, where: str = "frame 0"):
    """Evaluate one predicted scaled disparity against one ground-truth depth map.

    Args:
        gt_depth: (H, W) metric ground truth (0 where missing).
        pred_disp: (h, w) predicted scaled disparity (``disp_to_depth(...)[0]``), > 0; resized
            to (H, W) here. Its aspect ratio must match the ground truth's within 10%.
        protocol: ``"eigen"`` or ``"eigen_benchmark"`` (see :func:`evaluation_mask`).
        median_scaling: multiply by ``median(gt)/median(pred)`` (monocular models).
        fixed_scale: multiply by this first (5.4 for stereo-trained models).
        where: names the image in error messages (e.g. ``"disps.npz frame 12"``).

    Returns:
        (metrics dict, ratio): the seven metrics plus ``num_pixels`` (pixels evaluated); ratio
        is NaN without median scaling.

    Raises:
        ValueError: wrong shapes, NaN/inf/negative disparities, empty mask (message names ``where``).
    """
    gt_depth = _to_numpy(gt_depth, where)
    pred_disp = _to_numpy(pred_disp, where)
    if pred_disp.ndim == 3 and pred_disp.shape[0] == 1:
        pred_disp = pred_disp[0]
    if gt_depth.ndim != 2:
        raise ValueError(f"{where}: ground truth must be (H, W), got shape {gt_depth.shape}")
    if pred_disp.ndim != 2 or min(pred_disp.shape) < 1:
        raise ValueError(f"{where}: prediction must be (h, w), got shape {pred_disp.shape}")
    gh, gw = gt_depth.shape
    ph, pw = pred_disp.shape
    if abs(math.log((pw / ph) / (gw / gh))) > math.log(1.1):
        raise ValueError(f"{where}: prediction size {ph}x{pw} does not match the ground truth size "
                         f"{gh}x{gw} (aspect ratios {pw / ph:.3f} vs {gw / gh:.3f}); predictions must "
                         "cover the ground-truth image")
    if not np.all(np.isfinite(pred_disp)):
        bad = int(np.sum(~np.isfinite(pred_disp)))
        raise ValueError(f"{where}: prediction contains {bad} NaN/inf value(s)")
    if np.any(pred_disp < 0):
        raise ValueError(f"{where}: prediction contains negative disparities (min {pred_disp.min():.3g}); "
                         "expected scaled disparities > 0")
    if fixed_scale <= 0 or not math.isfinite(fixed_scale):
        raise ValueError(f"fixed_scale must be finite and > 0, got {fixed_scale}")

    mask = evaluation_mask(gt_depth, protocol)
    if not mask.any():
        raise ValueError(f"{where}: no valid ground-truth pixel left after the "
                         f"{'Garg crop and [1e-3, 80] m cap' if protocol == 'eigen' else 'gt > 0 mask'} "
                         f"(ground truth {gh}x{gw}, {int(np.sum(gt_depth > 0))} pixels > 0)")
    if mask.mean() < 0.25:  # sparse (LiDAR) ground truth: interpolate at the valid pixels only
        disp = sample_disparity(pred_disp, gh, gw, mask)
    else:  # dense ground truth: one full resize is cheaper
        disp = resize_disparity(pred_disp, gh, gw)[mask].astype(np.float64)
    with np.errstate(divide="ignore"):
        pred = 1.0 / disp  # zero disparity -> inf depth, capped to MAX_DEPTH below
    gt = gt_depth[mask].astype(np.float64)
    pred *= fixed_scale
    ratio = float("nan")
    if median_scaling:
        ratio = float(np.median(gt) / np.median(pred))
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"{where}: median scaling ratio is {ratio} (prediction median "
                             f"{np.median(pred)}); the prediction is degenerate")
        pred *= ratio
    np.clip(pred, MIN_DEPTH, MAX_DEPTH, out=pred)
    metrics = depth_metrics(gt, pred)
    metrics["num_pixels"] = int(gt.size)
    return metrics, ratio


def _summarise_ratios(ratios: np.ndarray):
    if ratios.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(ratios))
    return med, float(np.std(ratios / med))


def evaluate_depth_predictions(gt_depths: Sequence, pred_disps: Sequence, protocol: str = "eigen",
                               median_scaling: bool = True, fixed_scale: float = 1.0,
                               gt_source: str = "ground truth", pred_source: str = "predictions",
                               progress: bool = False) -> DepthEvaluation:
    """The full protocol over a test set (see the module docstring).

    Args:
        gt_depths: N ground-truth maps, each (H_i, W_i) metric depth, 0 where missing.
        pred_disps: N predicted scaled disparities, each (h, w) (or an (N, h, w) array).
        protocol: ``"eigen"`` (Garg crop + [1e-3, 80] m) or ``"eigen_benchmark"`` (gt > 0).
        median_scaling: per-image median scaling (monocular); False for a fixed scale only.
        fixed_scale: factor applied before median scaling (5.4 for stereo-trained models).
        gt_source, pred_source: file names used in error messages.
        progress: show a tqdm bar.

    Returns:
        :class:`DepthEvaluation` (mean metrics, per-image metrics, scaling ratios).

    Raises:
        ValueError: counts differ, or any frame fails :func:`evaluate_depth_image`.
    """
    n_gt, n_pred = len(gt_depths), len(pred_disps)
    if n_gt != n_pred:
        raise ValueError(f"{pred_source} holds {n_pred} predictions but {gt_source} holds {n_gt} "
                         "ground-truth maps; they must match one to one (same split, same order)")
    if n_gt == 0:
        raise ValueError(f"{gt_source}: no ground-truth maps to evaluate")
    iterator = range(n_gt)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="metrics", unit="img", leave=False)
    per_image, ratios = [], []
    for i in iterator:
        m, ratio = evaluate_depth_image(gt_depths[i], pred_disps[i], protocol, median_scaling,
                                        fixed_scale, where=f"{pred_source} frame {i}")
        m["ratio"] = ratio
        per_image.append(m)
        if median_scaling:
            ratios.append(ratio)
    return _finish(per_image, np.asarray(ratios, dtype=np.float64), protocol, median_scaling, fixed_scale)


def _finish(per_image, ratios, protocol, median_scaling, fixed_scale) -> DepthEvaluation:
    metrics = {k: float(np.mean([m[k] for m in per_image])) for k in METRIC_NAMES}
    med, std = _summarise_ratios(ratios) if median_scaling else (float("nan"), float("nan"))
    return DepthEvaluation(metrics=metrics, per_image=per_image, ratios=ratios, ratio_median=med,
                           ratio_std=std, protocol=protocol, median_scaling=median_scaling,
                           fixed_scale=fixed_scale)


class DepthEvaluator:
    """Streaming version of :func:`evaluate_depth_predictions` (feed batches as they come).

    Used by the evaluation command (network predictions batch by batch) and by training-time
    validation. ``add(gt, disp)`` takes one image or a batch; ``result()`` gives the
    :class:`DepthEvaluation`.
    """

    def __init__(self, protocol: str = "eigen", median_scaling: bool = True, fixed_scale: float = 1.0,
                 source: str = "predictions"):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got '{protocol}'")
        self.protocol = protocol
        self.median_scaling = median_scaling
        self.fixed_scale = float(fixed_scale)
        self.source = source
        self.per_image: List[Dict[str, float]] = []
        self.ratios: List[float] = []

    def __len__(self) -> int:
        return len(self.per_image)

    def add(self, gt_depth, pred_disp, names: Optional[Sequence[str]] = None) -> None:
        """Evaluate one image ((H, W) + (h, w)) or a batch ((B, [1,] H, W) + (B, [1,] h, w))."""
        gt_depth = _to_numpy(gt_depth, "gt_depth")
        pred_disp = _to_numpy(pred_disp, "pred_disp")
        if gt_depth.ndim == 2:
            gt_depth, pred_disp = gt_depth[None], pred_disp[None]
        if gt_depth.ndim == 4:
            gt_depth = gt_depth[:, 0]
        if pred_disp.ndim == 4:
            pred_disp = pred_disp[:, 0]
        if gt_depth.ndim != 3 or pred_disp.ndim != 3 or len(gt_depth) != len(pred_disp):
            raise ValueError(f"DepthEvaluator.add: expected gt (B, [1,] H, W) and pred (B, [1,] h, w) "
                             f"with the same B, got {gt_depth.shape} and {pred_disp.shape}")
        for b in range(len(gt_depth)):
            index = len(self.per_image)
            where = f"{self.source} frame {index}" + (f" ({names[b]})" if names else "")
            m, ratio = evaluate_depth_image(gt_depth[b], pred_disp[b], self.protocol, self.median_scaling,
                                            self.fixed_scale, where=where)
            m["ratio"] = ratio
            self.per_image.append(m)
            if self.median_scaling:
                self.ratios.append(ratio)

    def result(self) -> DepthEvaluation:
        if not self.per_image:
            raise ValueError(f"{self.source}: no image was evaluated")
        return _finish(self.per_image, np.asarray(self.ratios, dtype=np.float64), self.protocol,
                       self.median_scaling, self.fixed_scale)


def format_table(metrics: Dict[str, float]) -> str:
    """The usual two-line table (header + values), ready to paste into a paper's LaTeX table."""
    header = " | ".join(f"{k:>8}" for k in METRIC_NAMES)
    values = " & ".join(f"{metrics[k]:8.3f}" for k in METRIC_NAMES)
    return f"{header}\n{values} \\\\"
