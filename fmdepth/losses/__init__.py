"""Loss functions of fmdepth: pure functions plus thin ``nn.Module`` wrappers.

photometric  SSIM, (robust) L1, photometric_error, per-pixel minimum, auto-mask
"""
from .photometric import (SSIM, PhotometricError, automask, min_reprojection, photometric_error, robust_l1,
                          ssim)

__all__ = [
    "ssim", "robust_l1", "photometric_error", "min_reprojection", "automask", "SSIM", "PhotometricError",
]
