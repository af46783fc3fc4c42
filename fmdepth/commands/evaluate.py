"""`fmdepth evaluate {depth,pose,registration}`: the standard KITTI protocols and registration."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

HELP = "evaluate depth (Eigen protocol), pose (KITTI odometry) or registration"
DESCRIPTION = """Evaluate a checkpoint (or external predictions) with the community's standard protocols,
so that the numbers compare with published tables.

  depth         KITTI Eigen split: Garg crop, depths capped to [1e-3, 80] m, predictions resized
                to the ground-truth size, per-image median scaling (or --fixed-scale 1 for
                fmdepth stereo-trained models, metric), Abs Rel, Sq Rel, RMSE, RMSE log, d<1.25, d<1.25^2,
                d<1.25^3. eigen_benchmark (improved ground truth) evaluates gt > 0 without crop.
  pose          KITTI odometry: 5-frame snippet ATE (Zhou et al.) and t_err / r_err over
                100-800 m segments (odometry devkit) after alignment; trajectory plot.
  registration  registration metrics (landmark error, folding) -- see its own --help.

examples:
  fmdepth evaluate depth --checkpoint runs/fm/checkpoints/best.pt --data /data/kitti_raw --split-file eigen
  fmdepth evaluate depth --checkpoint best.pt --data /data/kitti_raw --split-file eigen --gt gt_depths.npz \\
      --post-process --json metrics.json --csv per_image.csv
  fmdepth evaluate depth --pred disps.npz --gt gt_depths.npz --json metrics.json
  fmdepth evaluate pose --checkpoint best.pt --data /data/kitti_odometry --sequence 09 --plot traj09.png
  fmdepth evaluate registration --help
"""

DEPTH_DESCRIPTION = """Depth evaluation with the Eigen protocol (the one of published tables).

Either run a checkpoint's DepthNet on the split's images (--checkpoint, --data, --split-file;
batched, progress bar) or evaluate external predictions (--pred disps.npz: scaled disparities,
array 'disps' or the file's first array, (N, h, w) in split order). Ground truth comes from
--gt (written by `fmdepth export-gt`) or is exported from --data and the split on the fly.

Median-scaling ratio = median(gt) / median(pred), the factor each prediction is multiplied by;
its median and std(ratios / median) are printed. --fixed-scale S disables median scaling and
multiplies by S instead; the ratios are still printed (not applied: 1 = metric depth). Models
trained by fmdepth with the stereo frame are metric (the stereo pose is the calibrated baseline
in metres): --fixed-scale 1. Stereo weights brought in with import-weights keep their project's
baseline unit: --fixed-scale 5.4 for Monodepth2 (0.1), 36 for FeatDepth (0.015).

examples:
  fmdepth evaluate depth --checkpoint runs/fm/checkpoints/best.pt --data /data/kitti_raw --split-file eigen
  fmdepth evaluate depth --checkpoint best.pt --data /data/kitti_raw --split-file eigen_benchmark \\
      --gt gt_benchmark.npz --json out.json
  fmdepth evaluate depth --pred disps.npz --gt gt_depths.npz --csv per_image.csv
"""

POSE_DESCRIPTION = """Pose evaluation on a KITTI odometry sequence.

Runs PoseNet on consecutive pairs of DATA/sequences/NN/image_2, chains the relative poses, and
compares with DATA/poses/NN.txt: 5-frame snippet ATE (Zhou et al., per-snippet least-squares
scale, error = ||err||_F / 5 as in the published tables; mean and std) and the odometry
devkit's relative errors t_err (%) and r_err (deg/100 m) over 100..800 m segments every 10
frames, after aligning the whole trajectory (--align 7dof: similarity; scale: scale only).

examples:
  fmdepth evaluate pose --checkpoint best.pt --data /data/kitti_odometry/dataset --sequence 09
  fmdepth evaluate pose --checkpoint best.pt --data odom --sequence 10 --json p.json --plot p.png
"""


# ================================================================================== arguments
def add_depth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint .pt (its DepthNet is evaluated)")
    p.add_argument("--data", help="KITTI raw root (or a synthetic dataset in the same layout)")
    p.add_argument("--split-file", help="test split: a file of '<folder> <frame> <side>' lines, or a "
                   "split name (eigen, eigen_benchmark, ...; fetched and checksum-verified)")
    p.add_argument("--gt", help="ground truth .npz from `fmdepth export-gt` (default: export on the fly)")
    p.add_argument("--dense-gt", action="store_true",
                   help="when exporting GT on the fly from a synthetic dataset: use the renderer's dense "
                        "depth instead of the projected velodyne scan")
    p.add_argument("--pred", help="external predictions .npz/.npy (scaled disparities, N x h x w)")
    p.add_argument("--protocol", choices=("auto", "eigen", "eigen_benchmark"), default="auto",
                   help="mask/crop rules (default auto: eigen_benchmark when the split name/path contains "
                        "'eigen_benchmark', else eigen)")
    p.add_argument("--fixed-scale", type=float, default=None,
                   help="disable median scaling and multiply predictions by this (1 for fmdepth stereo / "
                        "mono+stereo models, 5.4 / 36 for imported Monodepth2 / FeatDepth stereo weights)")
    p.add_argument("--post-process", action="store_true", help="flip post-processing (2 forward passes)")
    p.add_argument("--batch-size", type=int, default=16, help="images per network call (default 16)")
    p.add_argument("--num-workers", type=int, default=2, help="data-loading workers (default 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--save-pred", help="also write the predicted scaled disparities to this .npz")
    p.add_argument("--json", help="write the metrics (DESIGN keys abs_rel ... a3 + scaling) to this JSON")
    p.add_argument("--csv", help="write per-image metrics to this CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_pose_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt (its PoseNet is evaluated)")
    p.add_argument("--data", required=True, help="KITTI odometry root holding sequences/ and poses/")
    p.add_argument("--sequence", required=True, help="sequence number, e.g. 09")
    p.add_argument("--align", choices=("7dof", "scale", "none"), default="7dof",
                   help="trajectory alignment before t_err/r_err (default 7dof similarity)")
    p.add_argument("--segment-lengths", default="100,200,300,400,500,600,700,800",
                   help="segment lengths in metres for t_err/r_err (default the devkit's 100..800)")
    p.add_argument("--batch-size", type=int, default=16, help="frame pairs per network call")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--json", help="write the metrics to this JSON")
    p.add_argument("--plot", help="write a trajectory plot (PNG) against the ground truth")
    p.add_argument("--save-poses", help="write the predicted trajectory (KITTI format) to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="evaluate_what", metavar="{depth,pose,registration}")
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("depth", help="KITTI Eigen-split depth metrics", description=DEPTH_DESCRIPTION,
                       formatter_class=fmt)
    add_depth_arguments(p)
    p.set_defaults(_run=run_depth)
    p = sub.add_parser("pose", help="KITTI odometry ATE / t_err / r_err", description=POSE_DESCRIPTION,
                       formatter_class=fmt)
    add_pose_arguments(p)
    p.set_defaults(_run=run_pose)
    from fmdepth.commands import evaluate_registration as reg

    p = sub.add_parser("registration", help=reg.HELP, description=reg.DESCRIPTION, formatter_class=fmt)
    reg.add_arguments(p)
    p.set_defaults(_run=reg.run)


def run(args) -> int:
    # cli.py calls the innermost set_defaults(_run=...), i.e. run_depth/run_pose directly;
    # this entry point serves callers that dispatch on `evaluate_what` themselves.
    what = getattr(args, "evaluate_what", None)
    if what == "depth":
        return run_depth(args)
    if what == "pose":
        return run_pose(args)
    if what == "registration":
        from fmdepth.commands import evaluate_registration

        return evaluate_registration.run(args)
    raise ValueError("choose what to evaluate: depth, pose or registration")


# ====================================================================================== depth
def _protocol(args, split_path: str) -> str:
    if args.protocol != "auto":
        return args.protocol
    names = f"{args.split_file or ''} {split_path or ''}"
    return "eigen_benchmark" if "eigen_benchmark" in names else "eigen"


def load_predictions(path: str):
    """Scaled disparities from .npz (key 'disps' or the first array) or .npy -> (N, h, w) float32."""
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"predictions file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: cannot be read without unpickling ({exc}); save a numeric array "
                         "with np.savez(path, disps=array)") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if not data.files:
                raise ValueError(f"{path}: holds no array")
            key = "disps" if "disps" in data.files else data.files[0]
            arr = data[key]
    else:
        arr = data
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"{path}: predictions must be (N, h, w) scaled disparities, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: predictions must be floating point disparities, got {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def _load_gt(args, split_path):
    """List of (H, W) ground-truth maps: --gt file, or exported from --data and the split."""
    from fmdepth.data import gt as gt_module

    if args.gt:
        if not os.path.isfile(args.gt):
            raise FileNotFoundError(f"ground-truth file not found: {args.gt}")
        return gt_module.load_gt_depths(args.gt), args.gt
    if not (args.data and split_path):
        raise ValueError("no ground truth: give --gt gt_depths.npz, or --data and --split-file to export it")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "gt_depths.npz")
        print(f"-> exporting ground truth from {args.data} for {split_path}")
        gt_module.export_gt(args.data, split_path, out, dense=bool(getattr(args, "dense_gt", False)),
                            progress=not getattr(args, "no_progress", False))
        return gt_module.load_gt_depths(out), f"ground truth exported from {args.data}"


def _write_json(path: str, payload: dict) -> None:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({k: clean(v) for k, v in payload.items()}, fh, indent=2)
        fh.write("\n")


def _write_csv(path: str, per_image, entries=None) -> None:
    import csv

    from fmdepth.metrics.depth import METRIC_NAMES

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "folder", "frame_index", "side", *METRIC_NAMES, "ratio", "num_pixels"])
        for i, m in enumerate(per_image):
            folder, frame, side = entries[i] if entries and i < len(entries) else ("", "", "")
            w.writerow([i, folder, frame, side, *[f"{m[k]:.6f}" for k in METRIC_NAMES],
                        "" if math.isnan(m["ratio"]) else f"{m['ratio']:.6f}", m["num_pixels"]])


def print_depth_report(result, out=None) -> None:
    from fmdepth.metrics.depth import format_table

    out = sys.stdout if out is None else out
    if result.median_scaling:
        print("   Mono evaluation: per-image median scaling (ratio = median(gt) / median(pred))", file=out)
        print(f"   Scaling ratios | med: {result.ratio_median:0.3f} | std: {result.ratio_std:0.3f}", file=out)
    else:
        print(f"   Fixed scale x{result.fixed_scale:g} (median scaling disabled)", file=out)
        check = getattr(result, "unapplied_ratio", None)
        if check is not None:
            print(f"   Median scaling ratios, not applied (1 = metric) | med: {check[0]:0.3f} | std: {check[1]:0.3f}",
                  file=out)
    print(f"   {len(result.per_image)} images, protocol {result.protocol}\n", file=out)
    print(format_table(result.metrics), file=out)


def run_depth(args) -> int:
    import numpy as np

    from fmdepth.metrics.depth import evaluate_depth_predictions

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.fixed_scale is not None and not (args.fixed_scale > 0 and math.isfinite(args.fixed_scale)):
        raise ValueError(f"--fixed-scale must be > 0, got {args.fixed_scale}")
    if args.pred and args.checkpoint:
        raise ValueError("give either --pred (external predictions) or --checkpoint, not both")
    if not args.pred and not args.checkpoint:
        raise ValueError("nothing to evaluate: give --checkpoint (with --data and --split-file) or --pred")
    median_scaling = args.fixed_scale is None
    fixed_scale = 1.0 if args.fixed_scale is None else float(args.fixed_scale)
    from fmdepth.data.splits import read_split, resolve_test_split

    split_path = resolve_test_split(args.split_file) if args.split_file else None
    protocol = _protocol(args, split_path)
    entries = None
    if split_path:
        entries = read_split(split_path)

    if args.pred:
        preds = load_predictions(args.pred)
        gts, gt_name = _load_gt(args, split_path)
        print(f"-> evaluating {len(preds)} predictions from {args.pred} against {gt_name}")
        result = evaluate_depth_predictions(gts, preds, protocol=protocol, median_scaling=median_scaling,
                                            fixed_scale=fixed_scale, gt_source=gt_name, pred_source=args.pred,
                                            progress=not args.no_progress)
        if not median_scaling:
            check = evaluate_depth_predictions(gts, preds, protocol=protocol, median_scaling=True,
                                               fixed_scale=fixed_scale, gt_source=gt_name, pred_source=args.pred)
            result.unapplied_ratio = (check.ratio_median, check.ratio_std)
        source = {"pred": os.path.abspath(args.pred)}
    else:
        if not (args.data and split_path):
            raise ValueError("--checkpoint needs --data (dataset root) and --split-file")
        result, preds = _evaluate_checkpoint(args, split_path, entries, protocol, median_scaling, fixed_scale)
        source = {"checkpoint": os.path.abspath(args.checkpoint)}
        if args.save_pred:
            os.makedirs(os.path.dirname(os.path.abspath(args.save_pred)), exist_ok=True)
            np.savez_compressed(args.save_pred, disps=np.stack(preds))
            print(f"-> wrote predicted scaled disparities to {args.save_pred}")

    print_depth_report(result)
    if args.json:
        payload = result.summary()
        payload.update(source)
        if getattr(result, "unapplied_ratio", None) is not None:
            payload["ratio_median_not_applied"], payload["ratio_std_not_applied"] = result.unapplied_ratio
        if split_path:
            payload["split_file"] = os.path.abspath(split_path)
        payload["post_process"] = bool(args.post_process)
        _write_json(args.json, payload)
        print(f"-> wrote {args.json}")
    if args.csv:
        _write_csv(args.csv, result.per_image, entries)
        print(f"-> wrote {args.csv}")
    return 0


def _evaluate_checkpoint(args, split_path, entries, protocol, median_scaling, fixed_scale):
    """Batched DepthNet inference over the split (:func:`fmdepth.tasks.evaluate.evaluate_split`)."""
    from torch.utils.data import DataLoader

    from fmdepth.data import KittiRawDataset, collate_depth
    from fmdepth.inference import DepthPredictor
    from fmdepth.metrics.depth import DepthEvaluator
    from fmdepth.tasks.evaluate import evaluate_split

    predictor = DepthPredictor.from_checkpoint(args.checkpoint, device=args.device)
    img_ext = (predictor.info.config.get("data") or {}).get("img_ext", ".png")
    gts, gt_name = _load_gt(args, split_path)
    dataset = KittiRawDataset(args.data, split_path, predictor.height, predictor.width, frame_ids=(0,),
                              num_scales=1, is_train=False, img_ext=img_ext, load_gt=False)
    if len(dataset) != len(gts):
        raise ValueError(f"{split_path} lists {len(dataset)} frames but {gt_name} holds {len(gts)} "
                         "ground-truth maps; export the ground truth for this split")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
                        collate_fn=collate_depth, pin_memory=predictor.device.type == "cuda")
    evaluator = DepthEvaluator(protocol=protocol, median_scaling=median_scaling, fixed_scale=fixed_scale,
                               source=os.path.basename(args.checkpoint))
    # with a fixed scale, the median-scaling ratios say how far from metric the depth is (1 = metric)
    probe = None if median_scaling else DepthEvaluator(protocol=protocol, median_scaling=True,
                                                       fixed_scale=fixed_scale, source="ratio check")
    print(f"-> {len(dataset)} images from {args.data} at {predictor.width}x{predictor.height} "
          f"(ResNet{predictor.info.depth_layers}, {predictor.device}, batch {args.batch_size}"
          f"{', flip post-processing' if args.post_process else ''})")
    preds = []
    names = [f"{f} {i} {s}" for f, i, s in entries] if entries else None
    evaluators = [evaluator] if probe is None else [evaluator, probe]
    evaluate_split(lambda images: predictor.net(images)[0], loader, predictor.info.min_depth,
                   predictor.info.max_depth, predictor.device, evaluators,
                   gts=gts, names=names, post_process=args.post_process,
                   progress=None if args.no_progress else "evaluate depth",
                   on_batch=(lambda item: preds.extend(item.scaled[:, 0].numpy())) if args.save_pred else None)
    result = evaluator.result()
    if probe is not None:
        check = probe.result()
        result.unapplied_ratio = (check.ratio_median, check.ratio_std)
    return result, preds


# ======================================================================================= pose
def read_calib_intrinsics(path: str):
    """The 3x3 intrinsics of camera 2 (``P2``) of a KITTI odometry calib.txt.

    The one calib.txt parser is :class:`fmdepth.data.kitti_io.OdometryCalibration` (also what
    training on ``data.dataset: kitti_odom`` reads), so both see the same numbers.
    """
    from fmdepth.data.kitti_io import OdometryCalibration

    return OdometryCalibration(path).K("2")


def _odometry_paths(root: str, sequence: str):
    seq = f"{int(sequence):02d}" if str(sequence).isdigit() else str(sequence)
    seq_dir = os.path.join(root, "sequences", seq)
    if not os.path.isdir(seq_dir):
        raise FileNotFoundError(f"sequence folder not found: {seq_dir} (expected the KITTI odometry "
                                "layout DATA/sequences/NN/image_2, DATA/poses/NN.txt)")
    image_dir = os.path.join(seq_dir, "image_2")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    return seq, image_dir, os.path.join(seq_dir, "calib.txt"), os.path.join(root, "poses", f"{seq}.txt")


def run_pose(args) -> int:
    import numpy as np
    import torch

    from fmdepth.data.media import list_images
    from fmdepth.inference import PosePredictor, load_image, resize_images, to_tensor
    from fmdepth.metrics.pose import (
        align_trajectory,
        chain_relative_poses,
        load_kitti_poses,
        plot_trajectory,
        relative_pose_errors,
        save_kitti_poses,
        snippet_ate,
    )

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        lengths = tuple(float(v) for v in str(args.segment_lengths).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--segment-lengths must be comma-separated numbers, got {args.segment_lengths!r}") from None
    if not lengths or min(lengths) <= 0:
        raise ValueError(f"--segment-lengths must be positive numbers, got {args.segment_lengths!r}")
    seq, image_dir, calib_path, pose_path = _odometry_paths(args.data, args.sequence)
    K = read_calib_intrinsics(calib_path)
    gt = load_kitti_poses(pose_path)
    files = list_images(image_dir)
    if len(files) != len(gt):
        raise ValueError(f"{image_dir} holds {len(files)} images but {pose_path} holds {len(gt)} poses; "
                         "they must match one to one")
    if len(files) < 2:
        raise ValueError(f"{image_dir}: need at least 2 frames, found {len(files)}")
    predictor = PosePredictor.from_checkpoint(args.checkpoint, device=args.device)
    print(f"-> sequence {seq}: {len(files)} frames, PoseNet ResNet{predictor.info.pose_layers} at "
          f"{predictor.width}x{predictor.height} on {predictor.device} (fx={K[0, 0]:.1f})")
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files) - 1, desc=f"pose {seq}", unit="pair")
    rel = []
    cache = {}

    def frame(i):
        if i not in cache:
            img = to_tensor([load_image(os.path.join(image_dir, files[i]))])
            cache[i] = resize_images(img, predictor.height, predictor.width)[0]
        return cache[i]

    for start in range(0, len(files) - 1, args.batch_size):
        idx = list(range(start, min(start + args.batch_size, len(files) - 1)))
        a = torch.stack([frame(i) for i in idx])
        b = torch.stack([frame(i + 1) for i in idx])
        rel.append(predictor.predict(a, b).numpy())  # (i+1)_T_i
        for i in idx:
            cache.pop(i, None)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    pred = chain_relative_poses(np.concatenate(rel))
    ates = snippet_ate(gt, pred, snippet_length=5)
    result = {"sequence": seq, "num_frames": int(len(files)), "ate_mean": float(ates.mean()),
              "ate_std": float(ates.std()), "num_snippets": int(len(ates)), "alignment": args.align}
    print(f"\n   Snippet ATE (5 frames): {result['ate_mean']:0.4f} +- {result['ate_std']:0.4f} "
          f"({len(ates)} snippets)")
    try:
        rpe = relative_pose_errors(gt, pred, lengths=lengths, alignment=args.align)
        result.update(t_err=rpe["t_err"], r_err=rpe["r_err"], num_segments=rpe["num_segments"],
                      scale=rpe["scale"])
        print(f"   Relative errors ({args.align} alignment, scale x{rpe['scale']:.3f}): "
              f"t_err {rpe['t_err']:.2f} %  r_err {rpe['r_err']:.2f} deg/100m  ({rpe['num_segments']} segments)")
    except ValueError as exc:
        result.update(t_err=None, r_err=None, num_segments=0)
        print(f"   Relative errors not available: {exc}")
    if args.plot:
        aligned, _ = align_trajectory(gt, pred, args.align)
        plot_trajectory(gt, aligned, args.plot, title=f"KITTI odometry {seq} ({args.align} aligned)")
        print(f"-> wrote {args.plot}")
    if args.save_poses:
        save_kitti_poses(args.save_poses, pred)
        print(f"-> wrote {args.save_poses}")
    if args.json:
        result["checkpoint"] = os.path.abspath(args.checkpoint)
        _write_json(args.json, result)
        print(f"-> wrote {args.json}")
    return 0
