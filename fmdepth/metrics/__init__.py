"""Metrics -- ONE copy, used by training-time validation and by ``evaluate/``.

* :mod:`fmdepth.metrics.depth`: the seven depth metrics and the KITTI Eigen protocol.
* :mod:`fmdepth.metrics.pose`: snippet ATE and KITTI odometry relative errors.
* :mod:`fmdepth.metrics.registration`: registration metrics (landmark error, folding).
* :mod:`fmdepth.metrics.pck`: PCK@alpha of keypoint matches (semantic alignment).
"""
from fmdepth.metrics.depth import (  # noqa: F401
    MAX_DEPTH,
    METRIC_NAMES,
    MIN_DEPTH,
    STEREO_SCALE_FACTOR,
    DepthEvaluation,
    DepthEvaluator,
    depth_metrics,
    eigen_crop_mask,
    evaluate_depth_image,
    evaluate_depth_predictions,
    evaluation_mask,
    garg_crop_bounds,
    post_process_disparity,
)
from fmdepth.metrics.pck import pck  # noqa: F401
from fmdepth.metrics.pose import (  # noqa: F401
    align_trajectory,
    chain_relative_poses,
    compute_ate,
    load_kitti_poses,
    relative_pose_errors,
    snippet_ate,
)
from fmdepth.metrics.registration import RegistrationEvaluator, folding_fraction, landmark_error, landmark_errors  # noqa: F401
