"""Depth metrics and the Eigen protocol: hand-computed values, crop bounds, scaling, bad input."""
import math

import numpy as np
import pytest
import torch

from fmdepth.metrics import (
    DepthEvaluator,
    depth_metrics,
    eigen_crop_mask,
    evaluate_depth_image,
    evaluate_depth_predictions,
    evaluation_mask,
    garg_crop_bounds,
    post_process_disparity,
)
from fmdepth.metrics.depth import METRIC_NAMES, format_table, resize_disparity


def test_depth_metrics_hand_computed():
    gt = np.array([1.0, 2.0, 4.0, 10.0])
    pred = np.array([1.0, 3.0, 2.0, 10.0])
    m = depth_metrics(gt, pred)
    # |d|/gt = 0, 0.5, 0.5, 0 -> 0.25 ; d^2/gt = 0, 0.5, 1, 0 -> 0.375 ; d^2 = 0,1,4,0 -> sqrt(1.25)
    assert m["abs_rel"] == pytest.approx(0.25)
    assert m["sq_rel"] == pytest.approx(0.375)
    assert m["rmse"] == pytest.approx(math.sqrt(1.25))
    logs = [0.0, math.log(2 / 3), math.log(2), 0.0]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 4))
    # ratios max(gt/pred, pred/gt) = 1, 1.5, 2, 1: <1.25 -> 2/4 ; <1.5625 -> 3/4 ; <1.953 -> 3/4
    assert (m["a1"], m["a2"], m["a3"]) == (0.5, 0.75, 0.75)
    assert set(m) == set(METRIC_NAMES)


def test_depth_metrics_perfect_and_torch_input():
    gt = torch.rand(100, dtype=torch.float64) * 50 + 1
    m = depth_metrics(gt, gt.clone())
    assert m["abs_rel"] == 0 and m["rmse"] == 0 and m["a1"] == 1.0


@pytest.mark.parametrize("gt,pred,msg", [
    (np.ones((2, 2)), np.ones((2, 2)), "1-D"),
    (np.ones(3), np.ones(4), "same length"),
    (np.ones(0), np.ones(0), "no valid"),
    (np.ones(3), np.array([1.0, np.nan, 1.0]), "finite"),
    (np.ones(3), np.array([1.0, 0.0, 1.0]), "> 0"),
])
def test_depth_metrics_bad_input(gt, pred, msg):
    with pytest.raises(ValueError, match=msg):
        depth_metrics(gt, pred)


def test_garg_crop_bounds_kitti_size():
    # 0.40810811*375=153.04, 0.99189189*375=371.96, 0.03594771*1242=44.65, 0.96405229*1242=1197.35
    assert garg_crop_bounds(375, 1242) == (153, 371, 44, 1197)
    mask = eigen_crop_mask(375, 1242)
    rows = np.nonzero(mask.any(1))[0]
    cols = np.nonzero(mask.any(0))[0]
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (153, 370, 44, 1196)
    assert mask.sum() == (371 - 153) * (1197 - 44)


def test_evaluation_mask_protocols():
    gt = np.zeros((375, 1242))
    gt[200, 100] = 5.0     # inside crop
    gt[10, 100] = 5.0      # above crop
    gt[250, 600] = 90.0    # beyond 80 m
    assert evaluation_mask(gt, "eigen").sum() == 1
    assert evaluation_mask(gt, "eigen_benchmark").sum() == 3
    with pytest.raises(ValueError, match="protocol"):
        evaluation_mask(gt, "nyu")


def _gt_map(h=60, w=200, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(2.0, 60.0, size=(h, w))
    gt[rng.uniform(size=(h, w)) < 0.5] = 0.0  # sparse like LiDAR
    return gt


def test_median_scaling_three_times_gt():
    gt = _gt_map()
    pred_disp = 1.0 / (np.where(gt > 0, gt, 10.0) * 3.0)  # depth = 3 x gt, same size
    m, ratio = evaluate_depth_image(gt, pred_disp)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6)  # float32 disparities
    assert m["a1"] == 1.0
    assert ratio == pytest.approx(1.0 / 3.0)  # ratio = median(gt)/median(pred), multiplies pred
    res = evaluate_depth_predictions([gt, gt], [pred_disp, pred_disp])
    assert res.ratio_median == pytest.approx(1 / 3) and res.ratio_std == pytest.approx(0.0, abs=1e-9)
    # without median scaling the error is large; the fixed scale 1/3 fixes it
    m_raw, r = evaluate_depth_image(gt, pred_disp, median_scaling=False)
    assert math.isnan(r) and m_raw["abs_rel"] > 1.0
    m_fix, _ = evaluate_depth_image(gt, pred_disp, median_scaling=False, fixed_scale=1 / 3)
    assert m_fix["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_prediction_clamped_to_80m():
    gt = np.full((40, 120), 50.0)
    pred_disp = np.full((40, 120), 1.0 / 200.0)  # 200 m, no median scaling -> clamped to 80
    m, _ = evaluate_depth_image(gt, pred_disp, protocol="eigen_benchmark", median_scaling=False)
    assert m["rmse"] == pytest.approx(30.0)


def test_resize_matches_half_pixel_bilinear():
    disp = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = resize_disparity(disp, 6, 8)
    # half-pixel centres: output pixel (0, 1) samples input x = (1 + .5) / 2 - .5 = 0.25
    assert out.shape == (6, 8)
    assert out[0, 1] == pytest.approx(0.25)
    assert out[0, 0] == pytest.approx(0.0)  # clamped at the border
    assert resize_disparity(disp, 3, 4) is not None and np.array_equal(resize_disparity(disp, 3, 4), disp)


def test_low_resolution_prediction_is_resized_to_gt():
    gt = np.full((64, 208), 10.0)
    pred_disp = np.full((16, 52), 0.5)
    m, ratio = evaluate_depth_image(gt, pred_disp, protocol="eigen_benchmark")
    assert m["abs_rel"] == pytest.approx(0.0) and ratio == pytest.approx(5.0)


def test_counts_mismatch_error_names_files():
    gt = [_gt_map(), _gt_map(seed=1)]
    with pytest.raises(ValueError, match=r"disps\.npz holds 1 predictions but gt_depths\.npz holds 2"):
        evaluate_depth_predictions(gt, [np.ones((60, 200))], gt_source="gt_depths.npz", pred_source="disps.npz")


def test_size_mismatch_error_names_frame():
    gt = [_gt_map(), _gt_map(seed=1)]
    preds = [np.ones((60, 200)), np.ones((100, 100))]  # second one square
    with pytest.raises(ValueError, match=r"disps\.npz frame 1: prediction size 100x100"):
        evaluate_depth_predictions(gt, preds, pred_source="disps.npz")


def test_nan_prediction_error_names_frame():
    gt = [_gt_map(), _gt_map(seed=1), _gt_map(seed=2)]
    preds = [np.full((60, 200), 0.1) for _ in range(3)]
    preds[2][5, 5] = np.nan
    with pytest.raises(ValueError, match=r"p\.npz frame 2: prediction contains 1 NaN"):
        evaluate_depth_predictions(gt, preds, pred_source="p.npz")


def test_negative_disparity_error():
    with pytest.raises(ValueError, match="negative"):
        evaluate_depth_image(_gt_map(), -np.ones((60, 200)))


def test_empty_mask_after_crop_error():
    gt = np.zeros((375, 1242))
    gt[:100] = 10.0  # only above the Garg crop
    with pytest.raises(ValueError, match="frame 0: no valid ground-truth pixel left after the Garg crop"):
        evaluate_depth_predictions([gt], [np.ones((192, 640))])


def test_streaming_evaluator_matches_batch_function():
    gts = [_gt_map(seed=s) for s in range(4)]
    rng = np.random.default_rng(5)
    preds = [rng.uniform(0.02, 0.5, size=(30, 100)).astype(np.float32) for _ in range(4)]
    ref = evaluate_depth_predictions(gts, preds, protocol="eigen_benchmark")
    ev = DepthEvaluator(protocol="eigen_benchmark")
    ev.add(torch.from_numpy(np.stack(gts[:2]))[:, None], torch.from_numpy(np.stack(preds[:2]))[:, None])
    ev.add(np.stack(gts[2:]), np.stack(preds[2:]))
    res = ev.result()
    for k in METRIC_NAMES:
        assert res.metrics[k] == pytest.approx(ref.metrics[k])
    assert res.ratio_median == pytest.approx(ref.ratio_median)
    assert len(res.per_image) == 4 and "ratio" in res.per_image[0]
    assert "abs_rel" in format_table(res.metrics)


def test_post_process_blend_numpy_and_torch():
    w = 40
    a = np.ones((2, 10, w))
    b = np.full((2, 10, w), 3.0)
    out = post_process_disparity(a, b)
    assert out[0, 0, 0] == pytest.approx(3.0)      # left border from the flipped prediction
    assert out[0, 0, -1] == pytest.approx(1.0)     # right border from the plain one
    assert out[0, 0, w // 2] == pytest.approx(2.0)  # middle: the mean
    t = post_process_disparity(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None])
    assert torch.allclose(t[:, 0], torch.from_numpy(out))
    with pytest.raises(ValueError, match="same shape"):
        post_process_disparity(a, b[:, :, :-1])


def test_sparse_sampling_equals_full_resize():
    from fmdepth.metrics.depth import sample_disparity

    rng = np.random.default_rng(3)
    disp = rng.uniform(0.01, 1.0, size=(24, 80)).astype(np.float32)
    mask = rng.uniform(size=(75, 250)) < 0.3
    mask[0, 0] = mask[-1, -1] = True  # borders
    full = resize_disparity(disp, 75, 250)[mask]
    np.testing.assert_allclose(sample_disparity(disp, 75, 250, mask), full, rtol=1e-4)  # torch: float32 coords
    # downsampling too
    np.testing.assert_allclose(sample_disparity(disp, 12, 40, np.ones((12, 40), bool)),
                               resize_disparity(disp, 12, 40).ravel(), rtol=1e-4)
