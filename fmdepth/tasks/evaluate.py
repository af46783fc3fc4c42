"""Predict a split and evaluate it: the one loop behind training-time depth validation, ``fmdepth
evaluate depth --checkpoint``, ``fmdepth demo`` and the textureless experiment.

:func:`predict_split` runs a disparity network over a loader of :class:`~fmdepth.data.DepthBatch`
and yields each batch with its scaled disparity (``disp_to_depth(...)[0]``);
:func:`evaluate_split` feeds those, image by image, to :class:`fmdepth.metrics.DepthEvaluator` s
(the one metrics implementation: Eigen protocol, median or fixed scaling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

#: (B, 3, H, W) images in [0, 1] -> (B, 1, H, W) sigmoid disparity (e.g. ``system.predict_disparity``)
PredictDisparity = Callable[[torch.Tensor], torch.Tensor]


def scaled_disparity(predict_disparity: PredictDisparity, images: torch.Tensor, min_depth: float,
                     max_depth: float, post_process: bool = False) -> torch.Tensor:
    """Scaled disparity ``disp_to_depth(predict_disparity(images), min_depth, max_depth)[0]``.

    Args:
        predict_disparity: images -> sigmoid disparity.
        images: (B, 3, H, W) in [0, 1], on the network's device.
        min_depth, max_depth: the depth range of ``disp_to_depth``.
        post_process: Monodepth2's flip blend (the images and their mirror in one network call).

    Returns:
        (B, 1, H, W) scaled disparity on the images' device.
    """
    from fmdepth.geometry import disp_to_depth
    from fmdepth.metrics.depth import post_process_disparity

    x = torch.cat([images, torch.flip(images, dims=[3])], dim=0) if post_process else images
    scaled, _ = disp_to_depth(predict_disparity(x), min_depth, max_depth)
    if post_process:
        n = images.shape[0]
        scaled = post_process_disparity(scaled[:n], torch.flip(scaled[n:], dims=[3]))
    return scaled


@dataclass
class SplitBatch:
    """One batch of :func:`predict_split`.

    Attributes:
        batch: the loader's :class:`~fmdepth.data.DepthBatch` (on the CPU).
        disp: (B, 1, h, w) float32 CPU sigmoid disparity of ``batch.net_frames[0]`` (None with
            the flip blend).
        scaled: (B, 1, h, w) float32 CPU scaled disparity (flip-blended with ``post_process``).
    """

    batch: Any
    disp: torch.Tensor
    scaled: torch.Tensor


def predict_split(predict_disparity: PredictDisparity, loader, min_depth: float, max_depth: float,
                  device: Any, post_process: bool = False, progress: Optional[str] = None) -> Iterator[SplitBatch]:
    """Predict frame 0 of every batch of ``loader`` (no gradients; the caller sets eval mode).

    Args:
        predict_disparity: images -> sigmoid disparity (``system.predict_disparity``).
        loader: yields :class:`~fmdepth.data.DepthBatch` with ``net_frames[0]`` (B, 3, h, w).
        min_depth, max_depth: the depth range of ``disp_to_depth``.
        device: where the network runs.
        post_process: flip blend of :func:`scaled_disparity`.
        progress: a tqdm description (bar in images), or None for no bar.

    Yields:
        :class:`SplitBatch` per batch, in loader order.
    """
    from fmdepth.geometry import disp_to_depth

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(loader.dataset), desc=progress, unit="img", leave=False)
    try:
        for batch in loader:
            images = batch.net_frames[0].to(device)
            with torch.no_grad():
                if post_process:
                    disp, scaled = None, scaled_disparity(predict_disparity, images, min_depth, max_depth, True)
                else:
                    disp = predict_disparity(images)
                    scaled = disp_to_depth(disp, min_depth, max_depth)[0]
            yield SplitBatch(batch=batch, disp=None if disp is None else disp.float().cpu(),
                             scaled=scaled.float().cpu())
            if bar is not None:
                bar.update(images.shape[0])
    finally:
        if bar is not None:
            bar.close()


def evaluate_split(predict_disparity: PredictDisparity, loader, min_depth: float, max_depth: float,
                   device: Any, evaluators: Sequence, gts: Optional[Sequence[np.ndarray]] = None,
                   names: Optional[Sequence[str]] = None, post_process: bool = False,
                   progress: Optional[str] = None,
                   on_batch: Optional[Callable[[SplitBatch], None]] = None) -> None:
    """Predict the split (:func:`predict_split`) and add every image to each evaluator.

    Args:
        predict_disparity, loader, min_depth, max_depth, device, post_process, progress: as
            :func:`predict_split`.
        evaluators: :class:`fmdepth.metrics.DepthEvaluator` s (protocol and scaling of each).
        gts: one (H, W) ground-truth depth per image in loader order; None = ``batch.depth_gt``.
        names: one name per image for error messages (e.g. the split line), or None.
        on_batch: called with every :class:`SplitBatch` (to keep images or predictions).

    Raises:
        ValueError: no ground truth (``gts`` None and a batch without ``depth_gt``), or a
            frame the metrics refuse (named).
    """
    index = 0
    for item in predict_split(predict_disparity, loader, min_depth, max_depth, device, post_process, progress):
        if gts is None and item.batch.depth_gt is None:
            raise ValueError("the validation set has no ground-truth depth (depth_gt is None)")
        scaled = item.scaled[:, 0].numpy()
        for b in range(scaled.shape[0]):
            gt = gts[index] if gts is not None else item.batch.depth_gt[b, 0].float().cpu()
            name = [names[index]] if names else None
            for ev in evaluators:
                ev.add(gt, scaled[b], names=name)
            index += 1
        if on_batch is not None:
            on_batch(item)


__all__ = ["PredictDisparity", "SplitBatch", "evaluate_split", "predict_split", "scaled_disparity"]
