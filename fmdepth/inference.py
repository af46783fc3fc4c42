"""Inference: DepthNet / PoseNet from a checkpoint, batched prediction of images, folders, videos.

A checkpoint (``RUN_DIR/checkpoints/best.pt``, see :mod:`fmdepth.core.checkpoint`) carries the
resolved config, so the networks are rebuilt exactly as trained: ``model.depth_layers``,
``model.pose_layers``, ``model.num_scales``, the input size ``data.height x data.width`` and the
disparity range ``model.min_depth .. model.max_depth``.

Monocular depth is known only up to scale: the depth written here is ``1 / scaled_disp`` with
the checkpoint's depth range, which is *not* metric for a monocular model (the evaluation
multiplies it by the per-image median ratio); models trained by fmdepth with the stereo frame
are metric as they are (the stereo pose is the calibrated baseline in metres), Monodepth2 /
FeatDepth stereo weights brought in with ``import-weights`` after x5.4 / x36 (their 0.1 / 0.015-unit
baselines).

Example:
    >>> predictor = DepthPredictor.from_checkpoint("runs/fm/checkpoints/best.pt")  # doctest: +SKIP
    >>> disp, depth = predictor.predict(images)   # (B, 3, H, W) in [0, 1] -> 2 x (B, 1, H, W)
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from fmdepth.data.media import (IMAGE_EXTS, VIDEO_EXTS, as_rgb_uint8, iter_video_frames,  # noqa: F401 (re-exported)
                                read_image, read_image_rgb8)
from fmdepth.tasks.evaluate import scaled_disparity
from fmdepth.tasks.loading import LoadedSystem, load_system


# ------------------------------------------------------------------------------ checkpoints
@dataclass
class CheckpointInfo:
    """What prediction needs from a checkpoint's resolved config."""

    path: str
    height: int
    width: int
    min_depth: float
    max_depth: float
    depth_layers: int
    pose_layers: int
    pose_scale: float
    num_scales: int
    config: Dict[str, Any]
    input_norm: str = "imagenet"  # model.input_norm
    depth_decoder: str = "monodepth2"  # model.depth_decoder

    @classmethod
    def from_loaded(cls, loaded: LoadedSystem) -> "CheckpointInfo":
        """The fields of :class:`~fmdepth.tasks.loading.LoadedSystem`'s resolved config."""
        cfg = loaded.config
        m = cfg.model
        return cls(path=loaded.path, height=cfg.data.height, width=cfg.data.width, min_depth=m.min_depth,
                   max_depth=m.max_depth, depth_layers=m.depth_layers, pose_layers=m.pose_layers,
                   pose_scale=m.pose_scale, num_scales=m.num_scales, config=loaded.checkpoint["config"],
                   input_norm=m.input_norm, depth_decoder=m.depth_decoder)


def _pick_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resize_images(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (B, 3, H, W) images to the network size (bilinear with antialiasing)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] == (height, width):
        return images
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0.0, 1.0)


class _CheckpointPredictor:
    """A network of the system a checkpoint describes (:func:`fmdepth.tasks.load_system`), in eval mode.

    Args:
        net: the loaded network.
        info: :class:`CheckpointInfo` (input size, depth range, architecture).
        device: where to run.
    """

    MODEL_NAME = ""  # key under checkpoint["models"]
    ATTRIBUTE = ""  # the network's attribute on the depth system

    def __init__(self, net: torch.nn.Module, info: CheckpointInfo, device: torch.device):
        self.net = net.to(device).eval()
        self.info = info
        self.device = device
        self.height, self.width = info.height, info.width

    @classmethod
    def from_checkpoint(cls, path: str, device=None):
        """Rebuild the network from ``path`` (ValueError naming the file when it cannot)."""
        device = _pick_device(device)
        loaded = load_system(path, device=device, task="depth", require=(cls.MODEL_NAME,))
        return cls(getattr(loaded.system, cls.ATTRIBUTE), CheckpointInfo.from_loaded(loaded), device)


class DepthPredictor(_CheckpointPredictor):
    """A DepthNet rebuilt from a checkpoint, in eval mode (``DepthPredictor.from_checkpoint(path)``)."""

    MODEL_NAME = "depth"
    ATTRIBUTE = "depth_net"

    @torch.no_grad()
    def predict_scaled_disp(self, images: torch.Tensor, post_process: bool = False) -> torch.Tensor:
        """Scaled disparity (``disp_to_depth(...)[0]``) at the network resolution.

        Args:
            images: (B, 3, H, W) in [0, 1]; resized to the checkpoint's input size when needed.
            post_process: average with the flipped image's prediction (Monodepth2 blend).

        Returns:
            (B, 1, height, width) float32 on the predictor's device.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got {shape}")
        x = resize_images(images.to(self.device, torch.float32), self.height, self.width)
        return scaled_disparity(lambda t: self.net(t)[0], x, self.info.min_depth, self.info.max_depth,
                                post_process)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, post_process: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Scaled disparity and depth resized back to the input size.

        Args:
            images: (B, 3, H, W) in [0, 1], any size.

        Returns:
            (scaled_disp, depth), each (B, 1, H, W); depth = 1 / scaled_disp (up to scale for
            monocular models).
        """
        scaled = self.predict_scaled_disp(images, post_process)
        h, w = images.shape[-2:]
        if scaled.shape[-2:] != (h, w):
            scaled = F.interpolate(scaled, size=(h, w), mode="bilinear", align_corners=False)
        return scaled, 1.0 / scaled


class PosePredictor(_CheckpointPredictor):
    """A PoseNet rebuilt from a checkpoint, in eval mode.

    The pair (frame_a, frame_b), stacked as ``cat([a, b], dim=1)``, gives
    ``pose_vec_to_matrix(axisangle, translation)`` = ``b_T_a`` (points of frame a expressed in
    frame b), the convention of the depth system (Monodepth2's: target first for a later
    source frame, no inversion).
    """

    MODEL_NAME = "pose"
    ATTRIBUTE = "pose_net"

    @torch.no_grad()
    def predict(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
        """``b_T_a`` for each pair.

        Args:
            frame_a, frame_b: (B, 3, H, W) in [0, 1] (resized to the checkpoint's input size).

        Returns:
            (B, 4, 4) float64 on the CPU.
        """
        from fmdepth.geometry import pose_vec_to_matrix

        if frame_a.shape != frame_b.shape or frame_a.dim() != 4 or frame_a.shape[1] != 3:
            raise ValueError(f"frame_a and frame_b must both be (B, 3, H, W), got {tuple(frame_a.shape)} "
                             f"and {tuple(frame_b.shape)}")
        a = resize_images(frame_a.to(self.device, torch.float32), self.height, self.width)
        b = resize_images(frame_b.to(self.device, torch.float32), self.height, self.width)
        axisangle, translation = self.net(torch.cat([a, b], dim=1))
        return pose_vec_to_matrix(axisangle, translation, invert=False).double().cpu()


# ---------------------------------------------------------------------------------- inputs
def load_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image file, read by :func:`fmdepth.data.media.read_image_rgb8`.

    8-bit files come back unchanged; 16-bit ones are value / 65535 rounded to 8 bits; grey is
    repeated to RGB, alpha dropped, palettes expanded.

    Raises:
        FileNotFoundError: no such file. ValueError: not a readable image.
    """
    return read_image_rgb8(path)


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """List of (H, W, 3) uint8 images of one size -> (B, 3, H, W) float in [0, 1]."""
    arr = np.stack(images).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@dataclass
class InputItem:
    """One thing to predict: an image file or a video file."""

    path: str
    kind: str  # "image" | "video"
    out_prefix: str  # relative output name without suffix


def collect_inputs(inputs: Sequence[str]) -> List[InputItem]:
    """Expand files and folders (non-recursive, sorted) into :class:`InputItem` s.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: a file has an unknown extension, or a folder holds no image/video.
    """
    items: List[InputItem] = []
    for raw in inputs:
        path = os.path.expanduser(raw)
        if os.path.isdir(path):
            names = sorted(os.listdir(path))
            found = [n for n in names if n.lower().endswith(IMAGE_EXTS + VIDEO_EXTS)]
            if not found:
                raise ValueError(f"{path}: folder holds no image ({', '.join(IMAGE_EXTS)}) or video file")
            base = os.path.basename(os.path.normpath(path))
            for n in found:
                items.extend(_item(os.path.join(path, n), os.path.join(base, os.path.splitext(n)[0])))
        elif os.path.isfile(path):
            items.extend(_item(path, os.path.splitext(os.path.basename(path))[0]))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    seen = set()
    for it in items:  # two inputs with the same name would overwrite each other's outputs
        if it.out_prefix in seen:
            raise ValueError(f"two inputs map to the same output name '{it.out_prefix}' ({it.path}); "
                             "rename one or predict them separately")
        seen.add(it.out_prefix)
    return items


def _item(path: str, prefix: str) -> List[InputItem]:
    low = path.lower()
    if low.endswith(IMAGE_EXTS):
        return [InputItem(path, "image", prefix)]
    if low.endswith(VIDEO_EXTS):
        return [InputItem(path, "video", prefix)]
    raise ValueError(f"{path}: unknown file type (images: {', '.join(IMAGE_EXTS)}; videos: {', '.join(VIDEO_EXTS)})")


def count_video_frames(path: str) -> Optional[int]:
    """Frame count from the container's metadata (fps x duration; None when unknown).

    Only used for the progress bar's total, so it never decodes the video.
    """
    try:
        import imageio.v2 as iio2

        with iio2.get_reader(path) as reader:
            meta = reader.get_meta_data()
        n = meta.get("nframes")
        if n is None or not math.isfinite(float(n)):
            n = float(meta.get("fps", 0)) * float(meta.get("duration", 0))
        return int(round(float(n))) if n and float(n) > 0 else None
    except Exception:  # the count is only cosmetic
        return None


def iter_frames(items: Sequence[InputItem]) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield (output prefix, (H, W, 3) uint8) for every image and every video frame."""
    for it in items:
        if it.kind == "image":
            yield it.out_prefix, load_image(it.path)
            continue
        for i, frame in enumerate(iter_video_frames(it.path)):
            yield os.path.join(it.out_prefix, f"{i:06d}"), frame


def colorize_disparity(disp: np.ndarray, vmax: Optional[float] = None) -> np.ndarray:
    """(H, W) disparity -> (H, W, 3) uint8 magma image (vmax: 95th percentile by default)."""
    import matplotlib

    cmap = matplotlib.colormaps["magma"]
    d = np.asarray(disp, dtype=np.float64)
    vmin = float(d.min())
    vmax = float(np.percentile(d, 95)) if vmax is None else float(vmax)
    norm = np.clip((d - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    return (cmap(norm)[..., :3] * 255.0 + 0.5).astype(np.uint8)


def predict_inputs(predictor: DepthPredictor, inputs: Sequence[str], out_dir: str, batch_size: int = 8,
                   save: str = "both", post_process: bool = False, progress: bool = True,
                   save_npy: bool = False) -> List[str]:
    """Predict every image / folder / video and write the results under ``out_dir``.

    For an image ``NAME`` it writes ``OUT/NAME_disp.npy`` (scaled disparity, float32, input size),
    ``OUT/NAME_depth.npy`` (``1/disp``; up to scale for monocular models) and
    ``OUT/NAME_disp.png`` (magma). For a video ``NAME`` it writes ``OUT/NAME_depth.mp4``: the
    input frame and its colourised disparity side by side, at the video's frame rate
    (:func:`predict_video`); with ``save_npy`` also the per-frame ``OUT/NAME/000000_disp.npy`` /
    ``_depth.npy``. Folder contents go to ``OUT/FOLDER/...``.

    Args:
        predictor: a :class:`DepthPredictor`.
        inputs: image files, folders, video files.
        out_dir: output folder (created).
        batch_size: images per network call (frames of different sizes are batched together;
            each is resized to the network size and back).
        save: ``"depth"``, ``"disp"`` or ``"both"`` (which ``.npy`` to write; the PNG always).
        save_npy: also write per-frame ``.npy`` files (``save`` of them) for video frames.

    Returns:
        the written file paths.
    """
    from PIL import Image

    if save not in ("depth", "disp", "both"):
        raise ValueError(f"save must be depth, disp or both, got '{save}'")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = collect_inputs(inputs)
    total = sum(1 if it.kind == "image" else (count_video_frames(it.path) or 0) for it in items)
    os.makedirs(out_dir, exist_ok=True)
    written: List[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total or None, desc="predict", unit="img")

    def flush(batch: List[Tuple[str, np.ndarray]]) -> None:
        for (name, img), disp in zip(batch, predict_disp_arrays(predictor, [b[1] for b in batch], post_process)):
            stem = os.path.join(out_dir, name)
            os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
            written.extend(_save_npy(stem, disp, save))
            Image.fromarray(colorize_disparity(disp)).save(stem + "_disp.png")
            written.append(stem + "_disp.png")
        if bar is not None:
            bar.update(len(batch))

    batch: List[Tuple[str, np.ndarray]] = []
    for it in items:
        if it.kind == "video":
            if batch:
                flush(batch)
                batch = []
            written.extend(predict_video(predictor, it.path, os.path.join(out_dir, it.out_prefix),
                                         batch_size=batch_size, post_process=post_process,
                                         npy=save if save_npy else None, bar=bar))
            continue
        batch.append((it.out_prefix, load_image(it.path)))
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if bar is not None:
        bar.close()
    return written


def _save_npy(stem: str, disp: np.ndarray, save: str) -> List[str]:
    out = []
    if save in ("disp", "both"):
        np.save(stem + "_disp.npy", disp.astype(np.float32))
        out.append(stem + "_disp.npy")
    if save in ("depth", "both"):
        np.save(stem + "_depth.npy", (1.0 / disp).astype(np.float32))
        out.append(stem + "_depth.npy")
    return out


def predict_disp_arrays(predictor: DepthPredictor, images: Sequence[np.ndarray],
                        post_process: bool = False) -> List[np.ndarray]:
    """(H, W, 3) uint8 images (any sizes) -> their (H, W) float32 scaled disparities, one network
    call: each image is resized to the network size and its disparity back to the image size."""
    net_in = torch.cat([resize_images(to_tensor([img]), predictor.height, predictor.width) for img in images])
    scaled = predictor.predict_scaled_disp(net_in, post_process).float().cpu()
    out = []
    for img, disp in zip(images, scaled):
        h, w = img.shape[:2]
        out.append(F.interpolate(disp[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy())
    return out


#: widest side-by-side frame written (wider inputs are scaled down for the video only)
MAX_VIDEO_WIDTH = 3840


def side_by_side(frame: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 input | colourised (H, W) disparity -> (H', 2W', 3) uint8 with even sides
    (H.264 with yuv420p needs them; an odd row/column is padded black), at most
    :data:`MAX_VIDEO_WIDTH` wide."""
    from PIL import Image

    out = np.concatenate([frame, colorize_disparity(disp)], axis=1)
    if out.shape[1] > MAX_VIDEO_WIDTH:
        s = MAX_VIDEO_WIDTH / out.shape[1]
        out = np.asarray(Image.fromarray(out).resize((MAX_VIDEO_WIDTH, max(2, int(round(out.shape[0] * s)))),
                                                     Image.Resampling.BILINEAR))
    h, w = out.shape[:2]
    if h % 2 or w % 2:
        out = np.pad(out, ((0, h % 2), (0, w % 2), (0, 0)))
    return np.ascontiguousarray(out)


def predict_video(predictor: DepthPredictor, path: str, stem: str, batch_size: int = 8,
                  post_process: bool = False, npy: Optional[str] = None, bar=None) -> List[str]:
    """Write ``STEM_depth.mp4``: every frame of the video ``path`` beside its colourised disparity,
    at the input's frame rate (H.264). The file is written under a temporary name and renamed
    when complete, so a video that fails to decode leaves nothing (and overwrites nothing).

    Args:
        stem: output path without the ``_depth.mp4`` suffix.
        npy: None, or ``"disp"``/``"depth"``/``"both"``: also write ``STEM/000000_disp.npy`` ...

    Returns:
        the written file paths.

    Raises:
        ValueError: the video cannot be decoded (names the file).
    """
    import imageio.v2 as iio2

    from fmdepth.data.media import video_fps

    fps = video_fps(path)
    if not fps > 0:
        fps = 25.0
    out_path = stem + "_depth.mp4"
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    tmp = os.path.join(os.path.dirname(out_path) or ".", f".{os.path.basename(stem)}.partial-{os.getpid()}.mp4")
    written: List[str] = []
    writer = None
    count = 0
    try:
        batch: List[np.ndarray] = []

        def flush() -> None:
            nonlocal writer, count
            disps = predict_disp_arrays(predictor, batch, post_process)
            for frame, disp in zip(batch, disps):
                if writer is None:
                    writer = iio2.get_writer(tmp, format="ffmpeg", fps=fps, codec="libx264", quality=8,
                                             macro_block_size=1, pixelformat="yuv420p")
                writer.append_data(side_by_side(frame, disp))
                if npy is not None:
                    os.makedirs(stem, exist_ok=True)
                    written.extend(_save_npy(os.path.join(stem, f"{count:06d}"), disp, npy))
                count += 1
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

        for frame in iter_video_frames(path):
            batch.append(frame)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if writer is None:
            raise ValueError(f"{path}: the video has no frames; expected a decodable video")
        writer.close()
        writer = None
        os.replace(tmp, out_path)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return [out_path] + written
