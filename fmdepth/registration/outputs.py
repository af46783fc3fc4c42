"""What a registration writes: the warped image, the flow, overlay / checkerboard pictures, result.json."""
from __future__ import annotations

import json
import os
from typing import List, Optional

import numpy as np

from fmdepth.data.pairs import save_image
from fmdepth.metrics.registration import RegistrationResult

PAIR_FILES = ("warped.png", "flow.npy", "overlay.png", "checkerboard.png")


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, 0) if image.shape[0] == 1 else image


def overlay_image(fixed: np.ndarray, warped: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(C, H, W) numpy images in [0, 1] -> (3, H, W) alpha blend (grey promoted to RGB)."""
    return np.clip((1 - alpha) * _rgb(fixed) + alpha * _rgb(warped), 0, 1)


def checkerboard_image(fixed: np.ndarray, warped: np.ndarray, tiles: int = 8) -> np.ndarray:
    """(C, H, W) images -> (3, H, W) checkerboard of ``tiles`` x ``tiles`` alternating tiles."""
    f, w = _rgb(fixed), _rgb(warped)
    _, h, wd = f.shape
    yy, xx = np.mgrid[0:h, 0:wd]
    mask = ((yy * tiles // h + xx * tiles // wd) % 2).astype(bool)
    return np.where(mask[None], w, f)


def write_pair_outputs(out_dir: str, fixed: np.ndarray, warped: np.ndarray, flow: np.ndarray,
                       alpha: float = 0.5) -> None:
    """Write :data:`PAIR_FILES` into ``out_dir`` (created).

    Args:
        fixed: (C, H, W) in [0, 1]; warped: (C', H, W) the registered moving image.
        flow: (2, H, W) displacement in pixels on the fixed grid (written as float32 ``flow.npy``).
        alpha: overlay weight of the warped image.
    """
    os.makedirs(out_dir, exist_ok=True)
    save_image(os.path.join(out_dir, "warped.png"), warped)
    np.save(os.path.join(out_dir, "flow.npy"), flow.astype(np.float32))
    save_image(os.path.join(out_dir, "overlay.png"), overlay_image(fixed, warped, alpha))
    save_image(os.path.join(out_dir, "checkerboard.png"), checkerboard_image(fixed, warped))


def result_record(method: str, result: RegistrationResult, notes: List[str], similarity: Optional[str] = None,
                  init: Optional[str] = None) -> dict:
    """The ``result.json`` content of one pair: method, time, the kept candidate and why, the affine.

    ``similarity`` / ``init``: of a per-pair registration (None for a learned system).
    """
    affine = None if result.affine is None else result.affine.detach().cpu().numpy().tolist()
    return {"method": method, "similarity": similarity, "init": init, "seconds": result.seconds,
            "kept": result.kept, "selection": result.notes, "scores": result.scores,
            "consistency_px": result.consistency, "correlation_ratio": result.correlation_ratio,
            "mind_mi_weight": result.mind_mi_weight, "notes": notes, "affine": affine}


def write_result(out_dir: str, record: dict) -> str:
    """Write ``record`` as ``out_dir/result.json`` (indented) -> its path."""
    path = os.path.join(out_dir, "result.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
    return path
