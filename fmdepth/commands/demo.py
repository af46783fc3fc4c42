"""`fmdepth demo`: synthetic data -> a few minutes of training -> metrics table + depth images."""
HELP = "render synthetic drives, train a small depth model for a few minutes, print its metrics"
DESCRIPTION = """The first thing to run. On a laptop CPU (2 cores, default budget 8 minutes) it:

  1. renders a small synthetic driving dataset in the KITTI raw layout (4 drives x 40 frames,
     96x320, dense ground-truth depth; the last drive is held out) into OUT/data;
  2. trains a ResNet18 depth + pose model self-supervised (no ground truth is used for training)
     with the settings of configs/synth_quick.yaml into OUT/run, with a progress bar;
  3. evaluates it on the held-out drive (Eigen protocol: Garg crop, 80 m cap, per-image median
     scaling) and prints Abs Rel, Sq Rel, RMSE, RMSE log and d1-d3 next to the same metrics for a
     median-scaled constant depth (the bar a model that learned anything must clear);
  4. writes OUT/depth_grid.png (input | predicted disparity | ground truth) and OUT/demo_metrics.json.

Running it again reuses OUT/data and trains into a new OUT/run-N folder.

examples:
  fmdepth demo                                # everything under ./fmdepth_demo
  fmdepth demo --out /tmp/demo --minutes 4    # a shorter budget (less accurate)
  tensorboard --logdir fmdepth_demo/run       # the training curves and images
"""

DEMO_DRIVES = 4
DEMO_FRAMES = 40
DEMO_SEED = 0
DEMO_RENDER = (96, 320)  # rendered size (the network reads 64x224, see DEMO_CONFIG)

# The settings of configs/synth_quick.yaml (tests check the two agree).
DEMO_CONFIG = {
    "data": {"dataset": "synthetic", "split": "splits", "height": 64, "width": 224, "num_workers": 0},
    "model": {"depth_layers": 18, "pose_layers": 18, "feature_layers": 18},
    "loss": {"feature_metric": 0.0, "scales": [0, 1, 2, 3]},
    "optim": {"lr": 3.0e-4, "warmup_steps": 20, "decay_epochs": []},
    "train": {"epochs": 100, "max_steps": 400, "batch_size": 4, "log_every": 10,
              "image_every": 100, "val_every": 100, "ckpt_every": 100},
}

ROW_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
ROW_TITLES = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "d1<1.25", "d2<1.25^2", "d3<1.25^3")


def add_arguments(parser):
    parser.add_argument("--out", default="fmdepth_demo", metavar="DIR",
                        help="output folder (default ./fmdepth_demo)")
    parser.add_argument("--minutes", type=float, default=8.0, metavar="N",
                        help="total time budget in minutes, rendering and evaluation included "
                             "(default 8)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="at most this many training steps (default from synth_quick: 400)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def format_metrics_table(rows) -> str:
    """rows: list of (name, metrics dict) -> aligned text table (lower is better for the first 4)."""
    name_w = max(len(n) for n, _ in rows)
    head = " " * name_w + "  " + "  ".join(f"{t:>9}" for t in ROW_TITLES)
    lines = [head]
    for name, m in rows:
        lines.append(f"{name:<{name_w}}  " + "  ".join(f"{m[k]:9.3f}" for k in ROW_NAMES))
    lines.append(" " * name_w + "  " + "  ".join(f"{'(lower)' if i < 4 else '(higher)':>9}"
                                                for i in range(len(ROW_NAMES))))
    return "\n".join(lines)


def _render(data_dir: str, seed: int, progress: bool) -> str:
    import json
    import os

    from fmdepth.data.synthetic import render_dataset

    info_path = os.path.join(data_dir, "synth_info.json")
    want = {"seed": seed, "drives": DEMO_DRIVES, "frames": DEMO_FRAMES,
            "height": DEMO_RENDER[0], "width": DEMO_RENDER[1]}
    if os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as fh:
            info = json.load(fh)
        if all(info.get(k) == v for k, v in want.items()):
            print(f"[1/4] reusing synthetic data in {data_dir}")
            return data_dir
        raise FileExistsError(f"{data_dir} holds a different synthetic dataset ({info_path}); "
                              f"choose another --out")
    if os.path.exists(data_dir):
        raise FileExistsError(f"{data_dir} exists and is not a demo dataset; choose another --out")
    print(f"[1/4] rendering {DEMO_DRIVES} synthetic drives x {DEMO_FRAMES} frames into {data_dir}")
    render_dataset(data_dir, drives=DEMO_DRIVES, frames=DEMO_FRAMES, seed=seed, textureless=0.1,
                   height=want["height"], width=want["width"], velodyne=False, progress=progress)
    return data_dir


def _next_run_dir(out: str) -> str:
    import os

    run = os.path.join(out, "run")
    n = 2
    while os.path.exists(run):
        run = os.path.join(out, f"run-{n}")
        n += 1
    return run


def evaluate_on_test(system, data_dir: str, cfg, device, progress: bool = True):
    """Predict the held-out split and evaluate model and constant-depth baseline.

    Returns:
        (model DepthEvaluation, baseline DepthEvaluation, images (N,3,h,w), disps (N,1,h,w),
        gt list of (H, W) arrays)
    """
    import os

    import numpy as np
    import torch

    from fmdepth.data import KittiRawDataset, collate_depth
    from fmdepth.data.splits import read_split
    from fmdepth.metrics import DepthEvaluator, evaluate_depth_predictions
    from fmdepth.tasks.evaluate import evaluate_split

    test_file = os.path.join(data_dir, "splits", "test_files.txt")
    entries = read_split(test_file)
    dataset = KittiRawDataset(data_dir, test_file, cfg.data.height, cfg.data.width, frame_ids=(0,),
                              num_scales=1, is_train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False, num_workers=0,
                                         collate_fn=collate_depth)
    gts = []
    for folder, frame, side in entries:
        sub = "depth" if side == "l" else "depth_03"
        path = os.path.join(data_dir, "gt", folder, sub, f"{int(frame):010d}.npy")
        gts.append(np.load(path, allow_pickle=False).astype(np.float32))
    images, disps, scaled = [], [], []

    def keep(item) -> None:
        images.append(item.batch.net_frames[0])
        disps.append(item.disp)
        scaled.extend(item.scaled[:, 0].numpy())

    evaluator = DepthEvaluator(protocol="eigen", median_scaling=True, source="demo model")
    system.eval()
    evaluate_split(system.predict_disparity, loader, cfg.model.min_depth, cfg.model.max_depth, device,
                   [evaluator], gts=gts, progress="evaluate" if progress else None, on_batch=keep)
    model_eval = evaluator.result()
    constant = [np.ones_like(d) for d in scaled]  # any constant: median scaling sets its value
    base_eval = evaluate_depth_predictions(gts, constant, protocol="eigen", median_scaling=True,
                                           gt_source=test_file, pred_source="constant depth")
    return model_eval, base_eval, torch.cat(images), torch.cat(disps), gts


def write_depth_grid(path: str, images, disps, gts, rows: int = 4) -> str:
    """PNG grid, one test frame per row: input | predicted disparity | GT inverse depth."""
    import imageio.v2 as imageio
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    cmap = colormaps["magma"]
    n = len(images)
    picks = np.linspace(0, n - 1, num=min(rows, n)).round().astype(int)
    out_rows = []
    for i in picks:
        img = images[i].permute(1, 2, 0).numpy()
        h, w = img.shape[:2]
        disp = disps[i, 0].numpy()
        disp_rgb = cmap(np.clip(disp / max(np.percentile(disp, 95), 1e-6), 0, 1))[..., :3]
        gt = gts[i]
        inv = np.where(gt > 0, 1.0 / np.maximum(gt, 1e-3), 0.0)
        inv = np.asarray(Image.fromarray(inv.astype(np.float32)).resize((w, h), Image.NEAREST))
        gt_rgb = cmap(np.clip(inv / max(np.percentile(inv[inv > 0], 95) if (inv > 0).any() else 1, 1e-6),
                              0, 1))[..., :3]
        gt_rgb[inv <= 0] = 0.0  # no ground truth (sky): black
        out_rows.append(np.concatenate([img, disp_rgb, gt_rgb], axis=1))
    grid = (np.clip(np.concatenate(out_rows, axis=0), 0, 1) * 255).astype(np.uint8)
    imageio.imwrite(path, grid)
    return path


def run(args) -> int:
    import json
    import os
    import time

    if args.minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    if args.steps is not None and args.steps <= 0:
        raise ValueError(f"--steps must be > 0, got {args.steps}")
    t_start = time.time()
    from fmdepth.config import config_from_dict
    from fmdepth.tasks.depth import build as build_depth_task
    from fmdepth.engine.trainer import seed_everything, train

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    progress = not args.quiet
    data_dir = _render(os.path.join(out, "data"), args.seed, progress)

    # 2. train within what is left of the budget (keep ~1 minute for evaluation)
    elapsed = (time.time() - t_start) / 60.0
    train_minutes = args.minutes - elapsed - min(1.0, 0.15 * args.minutes)
    if train_minutes <= 0.2:
        raise ValueError(f"--minutes {args.minutes} leaves no time to train (rendering took "
                         f"{elapsed:.1f} min); give a larger budget")
    settings = json.loads(json.dumps(DEMO_CONFIG))
    settings["seed"] = args.seed
    settings["data"]["path"] = data_dir
    settings["train"]["max_minutes"] = round(train_minutes, 3)
    if args.steps is not None:
        settings["train"]["max_steps"] = args.steps
    cfg = config_from_dict(settings)
    run_dir = _next_run_dir(out)
    print(f"[2/4] training ResNet18 depth + pose (self-supervised, {cfg.data.height}x{cfg.data.width}, "
          f"batch {cfg.train.batch_size}) for up to {cfg.train.max_steps} steps / "
          f"{train_minutes:.1f} min into {run_dir}")
    seed_everything(cfg.seed)
    task = build_depth_task(cfg)
    t_train = time.time()
    result = train(cfg, run_dir, task=task, progress=progress)
    train_min = (time.time() - t_train) / 60.0

    # 3. evaluate the final weights on the held-out drive
    print(f"[3/4] evaluating on the held-out drive ({result.step} steps trained in {train_min:.1f} min)")
    device = next(task.system.parameters()).device
    model_eval, base_eval, images, disps, gts = evaluate_on_test(task.system, data_dir, cfg, device,
                                                                 progress)
    grid = write_depth_grid(os.path.join(out, "depth_grid.png"), images, disps, gts)
    rows = [(f"fmdepth model ({result.step} steps)", model_eval.metrics),
            ("constant depth (median-scaled)", base_eval.metrics)]
    print()
    print(f"held-out synthetic drive: {len(gts)} frames, Eigen crop, depth capped at 80 m, "
          f"per-image median scaling")
    print(format_metrics_table(rows))
    print()
    improvement = 1.0 - model_eval.metrics["abs_rel"] / base_eval.metrics["abs_rel"]
    if improvement > 0:
        verdict = f"{100 * improvement:.0f}% lower than the constant-depth baseline: the model learned"
    else:
        verdict = (f"{100 * -improvement:.0f}% higher than the constant-depth baseline: the model "
                   "does NOT beat it yet; give it more --minutes / --steps")
    print(f"Abs Rel {model_eval.metrics['abs_rel']:.3f} vs {base_eval.metrics['abs_rel']:.3f}, "
          f"{verdict}")
    summary = {"model": model_eval.metrics, "constant_baseline": base_eval.metrics,
               "steps": result.step, "train_minutes": round(train_min, 2),
               "total_minutes": round((time.time() - t_start) / 60.0, 2),
               "test_frames": len(gts), "run_dir": run_dir}
    with open(os.path.join(out, "demo_metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    print(f"[4/4] depth images (input | predicted disparity | ground truth): {grid}")
    print(f"      metrics: {os.path.join(out, 'demo_metrics.json')}   checkpoint: {result.last_checkpoint}")
    print(f"      TensorBoard: tensorboard --logdir {run_dir}   total time "
          f"{summary['total_minutes']:.1f} min")
    return 0
