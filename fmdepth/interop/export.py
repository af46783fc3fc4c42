"""Export a checkpoint's DepthNet (or PoseNet) to ONNX or TorchScript for deployment.

The exported graph takes images in [0, 1] at the checkpoint's input size (normalisation is
inside, as in fmdepth) with a dynamic batch dimension:

* depth: ``image`` (N, 3, H, W) -> ``disp`` (N, 1, H, W), the scale-0 sigmoid disparity; depth is
  ``1 / (1/max_depth + (1/min_depth - 1/max_depth) * disp)`` with the checkpoint's range (stored
  in the ONNX metadata and printed by ``fmdepth export``).
* pose: ``frames`` (N, 6, H, W), two stacked frames -> ``axisangle`` (N, 3), ``translation`` (N, 3),
  already x ``pose_scale``; ``pose_vec_to_matrix(axisangle, translation)`` is ``b_T_a`` for
  frames stacked as ``[a, b]``.

ONNX needs the optional packages of ``pip install -e ".[export]"`` (onnx, onnxruntime).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx", "torchscript")


class _DepthHead(nn.Module):
    """DepthNet -> its scale-0 disparity only (one output tensor for deployment)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)[0]


@dataclass
class ExportResult:
    path: str
    what: str  # "depth" | "pose"
    fmt: str
    input_shape: Tuple[int, ...]
    max_abs_diff: float  # exported vs PyTorch on a check batch of 2
    metadata: Dict[str, str]


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--format onnx needs the optional packages onnx and onnxruntime "
                         f"({exc.name} is not installed): pip install -e \".[export]\"") from None


def load_network(checkpoint: str, pose: bool = False, height: Optional[int] = None,
                 width: Optional[int] = None):
    """(module in eval mode, example input shape, metadata) for the checkpoint's DepthNet/PoseNet."""
    from fmdepth.inference import DepthPredictor, PosePredictor

    cls = PosePredictor if pose else DepthPredictor
    predictor = cls.from_checkpoint(checkpoint, device="cpu")
    info = predictor.info
    h = info.height if height is None else int(height)
    w = info.width if width is None else int(width)
    if h % 32 or w % 32 or h < 64 or w < 64:
        raise ValueError(f"{checkpoint}: export size {h}x{w} is not a multiple of 32 (at least 64x64)")
    net = predictor.net.cpu().eval()
    module = net if pose else _DepthHead(net)
    module.eval()
    meta = {"fmdepth_network": "pose" if pose else "depth", "height": str(h), "width": str(w),
            "min_depth": str(info.min_depth), "max_depth": str(info.max_depth),
            "input_norm": info.input_norm, "pose_scale": str(info.pose_scale),
            "checkpoint": os.path.basename(checkpoint)}
    return module, (1, 6 if pose else 3, h, w), meta


def _run_torch(module: nn.Module, x: torch.Tensor) -> List[np.ndarray]:
    with torch.no_grad():
        out = module(x)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.numpy() for o in out]


def run_exported(path: str, fmt: str, x: torch.Tensor) -> List[np.ndarray]:
    """Outputs of an exported file on ``x`` (onnxruntime for ONNX, ``torch.jit.load`` otherwise)."""
    if fmt == "onnx":
        _require_onnx()
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return list(sess.run(None, {sess.get_inputs()[0].name: x.numpy()}))
    module = torch.jit.load(path, map_location="cpu")
    return _run_torch(module, x)


def export_network(checkpoint: str, out: str, fmt: str, pose: bool = False,
                   height: Optional[int] = None, width: Optional[int] = None,
                   opset: int = 17) -> ExportResult:
    """Export and check: the file is run on a batch of 2 and compared with PyTorch.

    Raises:
        ValueError: unknown format, missing optional packages, an export size that is not a
            multiple of 32, or an unreadable / non-depth checkpoint.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format must be onnx or torchscript, got {fmt!r}")
    if fmt == "onnx":
        _require_onnx()
    module, shape, meta = load_network(checkpoint, pose, height, width)
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    in_name, out_names = ("frames", ["axisangle", "translation"]) if pose else ("image", ["disp"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on the entry shape checks
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(module, (example,), check_trace=False)
            traced.save(out, _extra_files={"fmdepth.json": repr(meta)})
        else:
            _export_onnx(module, example, out, in_name, out_names, opset)
            _add_onnx_metadata(out, meta)
    module.eval()  # the ONNX exporter restores the training flag it found; keep eval for the check
    check = torch.rand((2,) + shape[1:], generator=torch.Generator().manual_seed(1))
    ours, theirs = _run_torch(module, check), run_exported(out, fmt, check)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    return ExportResult(out, "pose" if pose else "depth", fmt, shape[1:], diff, meta)


def _export_onnx(module, example, out, in_name, out_names, opset) -> None:
    dynamic = {in_name: {0: "batch"}, **{n: {0: "batch"} for n in out_names}}
    try:  # the TorchScript-based exporter: fast, needs only torch
        torch.onnx.export(module, (example,), out, input_names=[in_name], output_names=out_names,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    except TypeError:  # a torch without the dynamo flag / without the legacy exporter
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(module, (example,), out, input_names=[in_name], output_names=out_names,
                          dynamic_shapes=({0: batch},), dynamo=True)


def _add_onnx_metadata(path: str, meta: Dict[str, str]) -> None:
    import onnx

    model = onnx.load(path)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)
