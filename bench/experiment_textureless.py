"""Experiment: does the feature-metric loss help on textureless surfaces? (writes docs/experiments.md)

1. Render a synthetic KITTI-layout dataset where 60% of the surfaces are flat coloured
   (``fmdepth.data.synthetic.render_dataset``, textureless=0.6); the last drive(s) are held out.
2. Train, with the same config, seed, data order and step budget, through the engine
   (``fmdepth.engine.trainer.train``):
     * ``photometric``: photometric-only baseline (``loss.feature_metric=0``; FeatureNet not built)
     * ``featuremetric``: photometric + feature-metric, FeatureNet trained jointly
       (``loss.mode=joint``, published weight ``loss.feature_metric=1e-3``)
     * optionally more arms (``--arms``), e.g. ``featuremetric_w0.1`` with a larger weight.
   The base config is ``configs/synth_quick.yaml`` (ResNet18 nets, CPU-sized); no validation
   during training, the last weights are evaluated.
3. Evaluate on every frame of the held-out drives against the renderer's dense depth:
   pixels with 1e-3 < gt < 80 m, per-image median scaling (monocular), metrics from
   ``fmdepth.metrics.depth_metrics`` averaged over images; "textureless" restricts the same
   per-image evaluation (same median-scaling ratio) to pixels whose surface label has the
   renderer's TEXTURELESS bit.

    python bench/experiment_textureless.py                       # ~5-8 min per arm on 2 CPU cores
    python bench/experiment_textureless.py --steps 40 --out /tmp/exp --no-doc   # smoke run
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fmdepth.config import load_config  # noqa: E402

ARMS = {
    "photometric": ["loss.feature_metric=0.0"],
    "featuremetric": ["loss.mode=joint", "loss.feature_metric=0.001"],
    "featuremetric_w0.1": ["loss.mode=joint", "loss.feature_metric=0.1"],
}
METRICS = ("abs_rel", "sq_rel", "rmse", "a1")


def render(args) -> str:
    from fmdepth.data.synthetic import render_dataset

    data = os.path.join(args.out, "data")
    if os.path.isdir(data) and not args.rerender:
        print(f"reusing rendered data in {data}")
        return data
    if os.path.isdir(data):
        shutil.rmtree(data)
    t0 = time.time()
    render_dataset(data, drives=args.drives, frames=args.frames, seed=args.seed, textureless=args.textureless,
                   height=args.render_height, width=args.render_width, velodyne=False, overwrite=False)
    print(f"rendered {args.drives} drives x {args.frames} frames at {args.render_height}x{args.render_width} "
          f"in {time.time() - t0:.0f}s -> {data}")
    return data


def arm_config(args, data: str, arm: str):
    overrides = [f"data.path={data}", f"data.height={args.height}", f"data.width={args.width}",
                 f"train.max_steps={args.steps}", f"train.batch_size={args.batch}", "train.epochs=1000",
                 f"seed={args.seed}", "train.val_every=0", f"train.ckpt_every={args.steps}",
                 "train.log_every=10", f"train.image_every={10 * args.steps}", "train.device=cpu"] + ARMS[arm]
    return load_config(os.path.join(ROOT, "configs", "synth_quick.yaml"), overrides)


def train_arm(args, data: str, arm: str):
    from fmdepth.engine.tasks import build_task
    from fmdepth.engine.trainer import seed_everything, train

    cfg = arm_config(args, data, arm)
    run_dir = os.path.join(args.out, "runs", arm)
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    seed_everything(cfg.seed)
    task = build_task(cfg)
    task.val_set, task.validate = None, None  # held-out drives are evaluated after training only
    t0 = time.time()
    result = train(cfg, run_dir, task=task, progress=not args.no_progress)
    minutes = (time.time() - t0) / 60
    return cfg, task.system, result, minutes


def _per_image(gt, pred, mask):
    from fmdepth.metrics import depth_metrics

    return depth_metrics(gt[mask], pred[mask])


@torch.no_grad()
def evaluate(cfg, system, data: str):
    """Mean per-image metrics on the test drives: all pixels, and textureless pixels only.

    ``system=None`` evaluates the reference "constant depth" prediction (after per-image median
    scaling: the median ground-truth depth everywhere)."""
    from torch.utils.data import DataLoader
    from fmdepth.data import KittiRawDataset, collate_depth
    from fmdepth.data.synthetic import TEXTURELESS
    from fmdepth.geometry import disp_to_depth
    from fmdepth.metrics.depth import resize_disparity

    test_file = os.path.join(data, "splits", "test_files.txt")
    ds = KittiRawDataset(data, test_file, height=cfg.data.height, width=cfg.data.width, frame_ids=(0,),
                         num_scales=cfg.data.num_scales, is_train=False, load_gt=True)
    loader = DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate_depth)
    if system is not None:
        system.eval()
    overall, flat = [], []
    flat_fraction = []
    for batch in loader:
        if system is None:
            scaled = torch.ones_like(batch.net_frames[0][:, :1])
        else:
            disp = system.predict_disparity(batch.net_frames[0])
            scaled, _ = disp_to_depth(disp, cfg.model.min_depth, cfg.model.max_depth)
        for i in range(scaled.shape[0]):
            gt = batch.depth_gt[i, 0].numpy().astype(np.float64)
            label = batch.label[i, 0].numpy()
            pred_disp = resize_disparity(scaled[i, 0].numpy(), *gt.shape)
            valid = (gt > 1e-3) & (gt < 80.0)
            pred = 1.0 / np.maximum(pred_disp, 1e-6)
            pred = pred * (np.median(gt[valid]) / np.median(pred[valid]))
            pred = np.clip(pred, 1e-3, 80.0)
            overall.append(_per_image(gt, pred, valid))
            tl = valid & ((label & TEXTURELESS) != 0)
            flat_fraction.append(tl.sum() / max(valid.sum(), 1))
            if tl.sum() >= 50:
                flat.append(_per_image(gt, pred, tl))

    def mean(rows):
        return {k: float(np.mean([r[k] for r in rows])) for k in METRICS} if rows else {k: float("nan") for k in METRICS}

    return {"overall": mean(overall), "textureless": mean(flat), "images": len(overall),
            "textureless_images": len(flat), "textureless_pixel_fraction": float(np.mean(flat_fraction))}


def write_doc(path: str, args, results, command: str, data_info: str) -> None:
    lines = ["# Experiments", "",
             "## Feature-metric vs photometric-only loss on textureless synthetic scenes", "",
             "Produced by `bench/experiment_textureless.py` (rerun it to regenerate this section).", "",
             "Command:", "", "```", command, "```", "",
             "Setup:", "",
             f"- Data: {data_info}",
             f"- Training: `configs/synth_quick.yaml` (DepthNet/PoseNet/FeatureNet ResNet18, frames [0, -1, 1], "
             f"Adam lr 3e-4), input {args.height}x{args.width}, batch {args.batch}, **{args.steps} steps per arm**, "
             f"seed {args.seed} for every arm (same initial DepthNet/PoseNet weights, same data order), "
             "through the engine (`fmdepth.engine.trainer.train`), CPU.",
             "- Arms: " + "; ".join(f"`{a}`: `{' '.join(ARMS[a])}`" for a in results if a in ARMS)
             + "; `constant_depth`: reference, the same constant depth everywhere (after median scaling: the "
             "image's median ground truth).",
             "- Evaluation: every frame of the held-out test drive(s), the renderer's dense depth, pixels with "
             "1e-3 < gt < 80 m, per-image median scaling; metrics averaged over images. *Textureless* = the same "
             "evaluation (same scale ratio) restricted to pixels whose surface label has the TEXTURELESS bit "
             "(images with >= 50 such pixels).", "",
             "| arm | train min | Abs Rel | Sq Rel | RMSE | δ<1.25 | Abs Rel (textureless) | Sq Rel (textureless) | "
             "RMSE (textureless) | δ<1.25 (textureless) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in results.items():
        o, t = r["metrics"]["overall"], r["metrics"]["textureless"]
        lines.append(f"| `{arm}` | {r['minutes']:.1f} | {o['abs_rel']:.4f} | {o['sq_rel']:.4f} | {o['rmse']:.3f} | "
                     f"{o['a1']:.3f} | {t['abs_rel']:.4f} | {t['sq_rel']:.4f} | {t['rmse']:.3f} | {t['a1']:.3f} |")
    any_r = next(iter(results.values()))["metrics"]
    lines += ["", f"{any_r['images']} test images; textureless pixels are "
              f"{100 * any_r['textureless_pixel_fraction']:.0f}% of the evaluated pixels "
              f"({any_r['textureless_images']} images have >= 50 of them).", "",
              "Reading:", "", "READING_PLACEHOLDER", ""]
    text = "\n".join(lines)
    if os.path.isfile(path):
        old = open(path, encoding="utf-8").read()
        marker = "## Feature-metric vs photometric-only loss on textureless synthetic scenes"
        if marker in old:
            head = old.split(marker)[0].rstrip()
            rest = old.split(marker)[1]
            nxt = rest.find("\n## ")
            tail = rest[nxt:] if nxt >= 0 else ""
            body = text.split("# Experiments", 1)[1].lstrip()
            text = (head + "\n\n" + body + tail) if head else text + tail
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "experiment_textureless"))
    p.add_argument("--drives", type=int, default=5, help="rendered drives (the last one is held out)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--textureless", type=float, default=0.6)
    p.add_argument("--render-height", type=int, default=96)
    p.add_argument("--render-width", type=int, default=320)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per arm (the shared budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=["photometric", "featuremetric"], choices=sorted(ARMS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: OpenMP spinning on a shared 2-core machine costs ~10x)")
    p.add_argument("--rerender", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "experiments.md"))
    p.add_argument("--no-doc", action="store_true", help="print results only")
    p.add_argument("--from-results", action="store_true",
                   help="no training: reload OUT/results.json (and OUT/data) and rewrite the table")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    if args.from_results:
        data = os.path.join(args.out, "data")
        with open(os.path.join(args.out, "results.json")) as fh:
            results = {k: v for k, v in json.load(fh).items() if k != "constant_depth"}
    else:
        data = render(args)
        for arm in args.arms:
            print(f"\n=== arm {arm}: {' '.join(ARMS[arm])}", flush=True)
            cfg, system, result, minutes = train_arm(args, data, arm)
            metrics = evaluate(cfg, system, data)
            results[arm] = {"minutes": minutes, "steps": result.step, "metrics": metrics,
                            "final_loss": result.train_losses[-1] if result.train_losses else None}
            print(json.dumps(results[arm], indent=1), flush=True)
    cfg = arm_config(args, data, "photometric")
    results["constant_depth"] = {"minutes": 0.0, "steps": 0, "metrics": evaluate(cfg, None, data),
                                 "final_loss": None}
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"\n{'arm':<22}{'min':>6}" + "".join(f"{m:>10}" for m in METRICS) + "".join(f"{'tl_' + m:>12}" for m in METRICS))
    for arm, r in results.items():
        o, t = r["metrics"]["overall"], r["metrics"]["textureless"]
        print(f"{arm:<22}{r['minutes']:>6.1f}" + "".join(f"{o[m]:>10.4f}" for m in METRICS)
              + "".join(f"{t[m]:>12.4f}" for m in METRICS))
    if not args.no_doc:
        cli = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--from-results"]
        command = "python " + " ".join([os.path.relpath(__file__, ROOT)] + cli)
        data_info = (f"`render_dataset(drives={args.drives}, frames={args.frames}, seed={args.seed}, "
                     f"textureless={args.textureless}, height={args.render_height}, width={args.render_width})`; "
                     "the renderer holds out the last drive(s) as the test split")
        write_doc(args.doc, args, results, command, data_info)
        print(f"wrote {args.doc} (fill in the reading)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
