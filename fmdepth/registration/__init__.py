"""Per-pair registration (layer 2): the solver, its never-worse selection, and what it writes.

Conventions (as everywhere in fmdepth): images (B, C, H, W) float in [0, 1]; a flow is
(B, 2, H, W) in pixels on the **fixed** grid, ``flow[:, 0]`` = dx, and the registered image is
``warped(p) = moving(p + flow(p))`` (:func:`fmdepth.geometry.flow_warp`). Affines are pixel
affines mapping fixed pixels to moving pixels (:func:`fmdepth.geometry.affine_warp`).

* :func:`register_pair` optimises one transform for one pair (affine, dense flow, stationary
  velocity field, or NeMAR-style translation + flow) over a multi-resolution pyramid
  (:func:`solve_pair`) and never returns one that scores worse than the identity, nor a dense
  field that the pair registered the other way round does not invert (:func:`inverse_consistency`).
* :func:`keep_if_better` applies that guard to other results (a learned system's ``register``,
  :mod:`fmdepth.models.registration`).
* :func:`write_pair_outputs` / :func:`write_result` write the pictures, the flow and result.json.

``fmdepth register``, ``fmdepth evaluate registration`` and ``bench/registration.py`` all call
these functions.
"""
from fmdepth.metrics.registration import RegistrationResult

from .outputs import (PAIR_FILES, checkerboard_image, overlay_image, result_record, write_pair_outputs,
                      write_result)
from .select import (CHECK_SIMILARITY, DEFAULT_CONSISTENCY_LIMIT, DEFAULT_MIND_MI_WEIGHT, FUNCTIONAL_ETA, check_images,
                     check_similarity_for, functional_eta, inverse_consistency, keep_if_better, prefer, register_pair,
                     score_flows)
from .solver import (DEFAULT_ITERATIONS, DEFAULT_SIMILARITY, METHODS, as_image_batch, check_method,
                     default_grid_spacing, default_lr, make_similarity, parse_iterations, solve_pair)

__all__ = [
    "METHODS", "DEFAULT_SIMILARITY", "DEFAULT_ITERATIONS", "CHECK_SIMILARITY", "DEFAULT_CONSISTENCY_LIMIT",
    "FUNCTIONAL_ETA", "DEFAULT_MIND_MI_WEIGHT", "RegistrationResult", "inverse_consistency", "functional_eta",
    "register_pair", "solve_pair", "keep_if_better", "score_flows", "prefer", "check_similarity_for",
    "check_images", "check_method", "default_lr", "default_grid_spacing", "make_similarity", "as_image_batch",
    "parse_iterations", "overlay_image", "checkerboard_image", "write_pair_outputs", "result_record",
    "write_result", "PAIR_FILES",
]
