"""fmdepth.geometry -- the shared warping core: pure functions on tensors, no state, no fixed sizes.

Conventions (the one place they are written down; every module in fmdepth follows them)

================  ===========================================================================
camera frame      x right, y down, z forward (OpenCV / KITTI)
pixel (u, v)      (column, row); pixel centres at integer coordinates, image spans
                  [-0.5, W-0.5]; sampling uses ``align_corners=True`` so an identity warp
                  returns the image (to float rounding)
inside the image  ``0 <= u <= W-1`` and ``0 <= v <= H-1`` (the ``valid`` masks)
K                 (B, 3, 3) in pixels of the tensor it is used with; last row (0, 0, 1)
resizing K        pixel-centre: ``fx' = fx*s``, ``cx' = (cx + 0.5)*s - 0.5``
poses             ``a_T_b`` (B, 4, 4) maps points of frame b into frame a: ``X_a = a_T_b X_b``;
                  variables are named after their frames (``src_T_tgt``)
axis-angle        axis times angle in radians, right-hand rule (kornia's convention)
depth vs disp     ``disp`` is the network's sigmoid output, ``depth`` is z-depth;
                  ``disp_to_depth(disp, min_depth, max_depth)`` converts (Monodepth2)
missing depth     depth <= 0: masked out of ``valid``, never NaN/inf in values or gradients
flow              (B, 2, H, W) pixels, channel 0 = du (x), channel 1 = dv (y);
                  backward warping: ``out(p) = image(p + flow(p))``
affine/homography pixel coordinates, mapping a target pixel (u, v, 1) to the source pixel
dtypes            coordinates in float32 (float64 if the inputs are); half/bfloat16 images
                  (autocast) are sampled in float32 and returned in their own dtype
================  ===========================================================================

Shapes are in every public docstring and checked at entry: a ``ValueError`` names the argument
and the expected shape. Pixel grids are cached per (H, W, device, dtype), never per batch.
"""
from .camera import disp_to_depth, intrinsics_pyramid, invert_intrinsics, scale_intrinsics
from .flow import (DIHEDRAL, affine_to_3x3, affine_to_flow, check_image_pair, compose_affine_flow, dihedral_flow,
                   dihedral_image, pyramid_sizes, resize_flow, resize_image, undo_dihedral_flow)
from .grid import normalized_grid, pixel_grid
from .integrate import integrate_velocity, jacobian_determinant
from .points import carry_points, sample_at
from .pose import compose_pose, invert_pose, pose_vec_to_matrix
from .warp import (affine_warp, backproject, flow_warp, homography_warp, inverse_warp,
                   normalized_affine_to_pixel, pixel_affine_to_normalized, project, sample)

__all__ = [
    "backproject", "project", "sample", "inverse_warp", "flow_warp", "affine_warp",
    "homography_warp", "normalized_affine_to_pixel", "pixel_affine_to_normalized",
    "pose_vec_to_matrix", "invert_pose", "compose_pose",
    "scale_intrinsics", "intrinsics_pyramid", "invert_intrinsics", "disp_to_depth",
    "pixel_grid", "normalized_grid", "integrate_velocity", "jacobian_determinant",
    "resize_image", "resize_flow", "affine_to_flow", "compose_affine_flow", "affine_to_3x3", "pyramid_sizes",
    "check_image_pair", "sample_at", "carry_points", "DIHEDRAL", "dihedral_image", "dihedral_flow",
    "undo_dihedral_flow",
]
