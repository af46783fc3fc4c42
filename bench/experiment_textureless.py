"""Experiment: does the feature-metric loss help on textureless surfaces? (writes docs/experiments.md)

1. Render a synthetic KITTI-layout dataset where a large share of the surfaces is flat coloured
   (``fmdepth.data.synthetic.render_dataset``, textureless=0.6); the last drive is held out.
2. Train, per seed, with the same config, data, step budget and networks, through the engine:
     * ``photometric``: photometric-only (``loss.feature_metric=0``; FeatureNet not built)
     * ``two_stage``: FeatDepth's recipe (``loss.mode=two_stage``,
       ``fmdepth.commands.train.two_stage_configs``): stage 1 FeatureNet alone for
       ``--stage1-steps``, then stage 2 = depth/pose with FeatureNet frozen and photometric +
       feature-metric (published weight 1e-3) for ``--steps`` -- the same steps as the baseline
     * ``joint`` (optional): everything trained together.
   The seed sets the initial weights and the data order (same seed = same start in both arms).
   Base config: ``configs/synth_quick.yaml`` (ResNet18 nets), 1 torch thread per run.
3. Every ``--eval-every`` steps (the learning curves) and at the end, evaluate on every frame of
   the held-out drive against the renderer's dense depth: pixels with 1e-3 < gt < 80 m, per-image
   median scaling, metrics of ``fmdepth.metrics.depth_metrics`` averaged over images;
   "textureless" = the same per-image evaluation (same scale ratio) restricted to pixels whose
   surface label has the renderer's TEXTURELESS bit.

    # one training per process (two side by side on a 2-core machine), then the table + figure
    python bench/experiment_textureless.py --run photometric 0 --steps 600
    python bench/experiment_textureless.py --run two_stage 0 --steps 600 --stage1-steps 100
    python bench/experiment_textureless.py --collect --steps 600 --stage1-steps 100
    python bench/experiment_textureless.py --landscape --seed 0   # feature quality check (trained FeatureNet)
    python bench/experiment_textureless.py --steps 600 --seeds 0 1 2   # everything, sequentially
"""
import argparse
import glob
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
    "two_stage": ["loss.mode=two_stage", "loss.feature_metric=0.001"],
    # controls: the same recipe with a feature-metric weight too small to matter (any difference
    # from `photometric` is then a perturbation amplified by training), and a 100x larger weight
    "two_stage_tiny": ["loss.mode=two_stage", "loss.feature_metric=1e-8"],
    "two_stage_strong": ["loss.mode=two_stage", "loss.feature_metric=0.1"],
    "joint": ["loss.mode=joint", "loss.feature_metric=0.001"],
}


def is_two_stage(arm: str) -> bool:
    """Arms trained with the two-stage recipe (stage 1 FeatureNet, then depth in ``stage2/``)."""
    return arm.startswith("two_stage")


METRICS = ("abs_rel", "sq_rel", "rmse", "a1")
EXAMPLE_INDEX = 20  # test frame shown in the figure
LEVELS = (0, 1, 2)  # FeatureNet encoder levels in the landscape check (the loss uses level 0)


# ------------------------------------------------------------------------------------ data
def render(args) -> str:
    from fmdepth.data.synthetic import render_dataset

    data = os.path.join(args.out, "data")
    if os.path.isdir(data):
        return data
    t0 = time.time()
    render_dataset(data, drives=args.drives, frames=args.frames, seed=args.data_seed, textureless=args.textureless,
                   height=args.render_height, width=args.render_width, velodyne=False, overwrite=False)
    print(f"rendered {args.drives} drives x {args.frames} frames at {args.render_height}x{args.render_width} "
          f"in {time.time() - t0:.0f}s -> {data}")
    return data


def test_set(cfg, data: str):
    from fmdepth.data import KittiRawDataset

    return KittiRawDataset(data, os.path.join(data, "splits", "test_files.txt"), height=cfg.data.height,
                           width=cfg.data.width, frame_ids=(0,), num_scales=cfg.data.num_scales,
                           is_train=False, load_gt=True)


def arm_config(args, data: str, arm: str, seed: int):
    overrides = [f"data.path={data}", f"data.height={args.height}", f"data.width={args.width}",
                 f"train.max_steps={args.steps}", f"train.batch_size={args.batch}", "train.epochs=1000",
                 f"seed={seed}", f"train.val_every={args.eval_every}", f"train.ckpt_every={args.eval_every}",
                 "train.log_every=10", "train.image_every=0", "train.device=cpu",
                 f"loss.stage1_steps={args.stage1_steps}"] + ARMS[arm]
    return load_config(os.path.join(ROOT, "configs", "synth_quick.yaml"), overrides)


# ------------------------------------------------------------------------------------ evaluation
class Accumulator:
    """Per-image metrics on the held-out frames: all valid pixels, and textureless pixels only."""

    def __init__(self):
        self.overall, self.flat, self.flat_fraction = [], [], []

    def add(self, depth_gt, label, scaled_disp):
        """depth_gt, label: (B, 1, Hg, Wg); scaled_disp: (B, 1, H, W) (``disp_to_depth``) or None (constant)."""
        from fmdepth.data.synthetic import TEXTURELESS
        from fmdepth.metrics import depth_metrics
        from fmdepth.metrics.depth import resize_disparity

        for i in range(depth_gt.shape[0]):
            gt = depth_gt[i, 0].numpy().astype(np.float64)
            lab = label[i, 0].numpy()
            valid = (gt > 1e-3) & (gt < 80.0)
            if scaled_disp is None:
                pred = np.ones_like(gt)
            else:
                pred = 1.0 / np.maximum(resize_disparity(scaled_disp[i, 0].numpy(), *gt.shape), 1e-6)
            pred = np.clip(pred * (np.median(gt[valid]) / np.median(pred[valid])), 1e-3, 80.0)
            self.overall.append(depth_metrics(gt[valid], pred[valid]))
            tl = valid & ((lab & TEXTURELESS) != 0)
            self.flat_fraction.append(tl.sum() / max(valid.sum(), 1))
            if tl.sum() >= 50:
                self.flat.append(depth_metrics(gt[tl], pred[tl]))

    def result(self):
        def mean(rows):
            return {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in METRICS}

        return {"overall": mean(self.overall), "textureless": mean(self.flat), "images": len(self.overall),
                "textureless_images": len(self.flat),
                "textureless_pixel_fraction": float(np.mean(self.flat_fraction))}


def make_validate(cfg, example_dir=None, start: int = 0):
    """``task.validate`` for the trainer: the held-out metrics (flat dict; ``abs_rel`` = overall).

    With ``example_dir``, the scaled disparity of test frame ``EXAMPLE_INDEX`` is saved at every
    validation as ``example_dir/step_<N>.npy`` (validations run every ``train.val_every`` steps)."""
    from fmdepth.tasks.evaluate import predict_split

    calls = [start // cfg.train.val_every]  # a resumed run: the validations already done

    def validate(system, loader, device):
        acc = Accumulator()
        calls[0] += 1
        seen = 0
        for item in predict_split(system.predict_disparity, loader, cfg.model.min_depth, cfg.model.max_depth,
                                  device):
            scaled = item.scaled
            acc.add(item.batch.depth_gt, item.batch.label, scaled)
            n = scaled.shape[0]
            if example_dir is not None and seen <= EXAMPLE_INDEX < seen + n:
                os.makedirs(example_dir, exist_ok=True)
                np.save(os.path.join(example_dir, f"step_{calls[0] * cfg.train.val_every}.npy"),
                        scaled[EXAMPLE_INDEX - seen, 0].numpy())
            seen += n
        r = acc.result()
        return {**{k: v for k, v in r["overall"].items()}, **{f"tl_{k}": v for k, v in r["textureless"].items()}}

    return validate


@torch.no_grad()
def constant_baseline(cfg, data: str):
    from torch.utils.data import DataLoader
    from fmdepth.data import collate_depth

    acc = Accumulator()
    for batch in DataLoader(test_set(cfg, data), batch_size=8, shuffle=False, collate_fn=collate_depth):
        acc.add(batch.depth_gt, batch.label, None)
    return acc.result()


# ------------------------------------------------------------------------------------ training
def _train_stage(cfg, run_dir: str, data: str, progress: bool, evaluate_depth: bool, resume: bool = False):
    from fmdepth.tasks import build_task
    from fmdepth.engine.trainer import seed_everything, train

    seed_everything(cfg.seed)
    task = build_task(cfg)
    if evaluate_depth:  # learning curve on the held-out drive (validation data = test frames)
        task.val_set, task.validate, task.best_metric, task.best_mode = test_set(cfg, data), \
            make_validate(cfg, os.path.join(run_dir, "examples"), start=_checkpoint_step(run_dir) if resume else 0), \
            "abs_rel", "min"
    else:
        task.val_set, task.validate = None, None
    t0 = time.time()
    result = train(cfg, run_dir, resume=resume, task=task, progress=progress)
    return task.system, result, time.time() - t0


def _checkpoint_step(run_dir: str) -> int:
    from fmdepth.core.checkpoint import load_checkpoint

    return int(load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt"))["step"])


def _curve(run_dir: str):
    rows = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("split") == "val":
                rows.append({k: r[k] for k in ("step", "abs_rel", "sq_rel", "tl_abs_rel", "tl_sq_rel")})
    return rows


def _mean_scalar(run_dir: str, key: str):
    vals = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("split") == "train" and key in r:
                vals.append(r[key])
    return float(np.mean(vals)) if vals else None


def run_one(args, data: str, arm: str, seed: int) -> dict:
    from fmdepth.commands.train import two_stage_configs
    from fmdepth.geometry import disp_to_depth

    cfg = arm_config(args, data, arm, seed)
    run_dir = os.path.join(args.out, "runs", f"{arm}_s{seed}")
    if os.path.isdir(run_dir) and not args.resume:
        shutil.rmtree(run_dir)
    info = {"arm": arm, "seed": seed, "steps": args.steps, "stage1_steps": 0, "stage1_seconds": 0.0}
    if is_two_stage(arm):
        (_, cfg1, dir1), (_, cfg, dir2) = two_stage_configs(cfg, run_dir)
        if args.resume:  # stage 1 finished before: not redone
            info.update(stage1_steps=_checkpoint_step(dir1))
        else:
            _, r1, sec1 = _train_stage(cfg1, dir1, data, not args.no_progress, evaluate_depth=False)
            info.update(stage1_steps=r1.step, stage1_seconds=sec1)
        depth_dir = dir2
    else:
        depth_dir = run_dir
    system, result, sec = _train_stage(cfg, depth_dir, data, not args.no_progress, evaluate_depth=True,
                                       resume=args.resume)
    curve = _curve(depth_dir)
    final = result.last_val
    info.update(train_seconds=sec, seconds_per_step=sec / max(result.step, 1), final_step=result.step,
                curve=curve, final=final, mean_feature_metric=_mean_scalar(depth_dir, "feature_metric"),
                mean_photometric=_mean_scalar(depth_dir, "photometric"))
    # the figure's example prediction
    system.eval()
    sample = test_set(cfg, data)[EXAMPLE_INDEX]
    with torch.no_grad():
        disp = system.predict_disparity(sample.net_frames[0][None])
        scaled, _ = disp_to_depth(disp, cfg.model.min_depth, cfg.model.max_depth)
    np.save(os.path.join(run_dir, "example_disp.npy"), scaled[0, 0].numpy())
    with open(os.path.join(run_dir, "result.json"), "w") as fh:
        json.dump(info, fh, indent=1)
    print(json.dumps({k: v for k, v in info.items() if k != "curve"}, indent=1), flush=True)
    return info


# ------------------------------------------------------------------------------------ landscape
@torch.no_grad()
def landscape(args, data: str) -> dict:
    """Photometric vs feature-metric error of the true relative pose, as the GT depth is scaled.

    For held-out frame pairs (target t, source t+1), with the renderer's poses and dense depth,
    the source (image / FeatureNet level-0 features of the trained stage-1 FeatureNet) is warped
    with ``scale * depth_gt``; the per-pixel error is averaged over the interior of textureless
    regions (textureless pixels whose 7x7 neighbourhood is textureless with the same label) and
    over textured pixels. Each curve is also reported relative to its value at scale 1.
    """
    import torch.nn.functional as F
    from fmdepth.geometry import inverse_warp, scale_intrinsics
    from fmdepth.data.synthetic import TEXTURELESS
    from fmdepth.losses import photometric_error
    from fmdepth.losses.feature import robust_l1
    from fmdepth.tasks.loading import load_feature_weights
    from fmdepth.networks import FeatureNet

    cfg = arm_config(args, data, "two_stage", args.seed)
    ckpt = args.feature_checkpoint or os.path.join(args.out, "runs", f"two_stage_s{args.seed}", "stage1",
                                                   "checkpoints", "last.pt")
    fnet = FeatureNet(cfg.model.feature_layers, "none", num_scales=4, input_norm=cfg.model.feature_input_norm)
    fnet.load_state_dict(load_feature_weights(ckpt))
    fnet.eval()
    scales = np.round(np.exp(np.linspace(np.log(0.5), np.log(2.0), 13)), 3)
    with open(os.path.join(data, "splits", "test_files.txt")) as fh:
        folder = fh.readline().split()[0]  # <date>/<drive> of the held-out drive
    poses = np.loadtxt(os.path.join(data, "gt", folder, "poses_02.txt")).reshape(-1, 3, 4)  # camera-to-world
    drive = os.path.basename(folder)
    from fmdepth.data import KittiRawDataset

    split = os.path.join(args.out, "landscape_split.txt")
    frames = list(range(2, args.frames - 2, 4))
    with open(split, "w") as fh:
        fh.writelines(f"{folder} {i} l\n" for i in frames)
    ds = KittiRawDataset(data, split, height=cfg.data.height, width=cfg.data.width, frame_ids=(0, 1),
                         num_scales=1, is_train=False, load_gt=True)
    rows = {k: np.zeros(len(scales)) for k in ("photo_flat", "fm_flat", "photo_tex", "fm_tex")}
    counts = {"flat": np.zeros(len(scales)), "tex": np.zeros(len(scales))}
    for j, fidx in enumerate(frames):
        s = ds[j]
        tgt, src = s.frames[0][0][None], s.frames[1][0][None]  # (1, 3, H, W)
        H, W = tgt.shape[-2:]
        K = s.K[0][None]
        gt = torch.as_tensor(s.depth_gt)[None].float()  # (1, 1, Hg, Wg)
        label = torch.as_tensor(s.label)[None]
        gt = F.interpolate(gt, size=(H, W), mode="nearest")
        label = F.interpolate(label.float(), size=(H, W), mode="nearest").long()
        T_w_t = np.vstack([poses[fidx], [0, 0, 0, 1]])
        T_w_s = np.vstack([poses[fidx + 1], [0, 0, 0, 1]])
        src_T_tgt = torch.as_tensor(np.linalg.inv(T_w_s) @ T_w_t, dtype=torch.float32)[None]
        valid = (gt > 1e-3) & (gt < 80)
        flat = valid & ((label & TEXTURELESS) != 0)
        # interior: the 7x7 neighbourhood has the same label (no edge within the features' receptive field)
        lab_f = label.float()
        same = (F.max_pool2d(lab_f, 7, 1, 3) == lab_f) & (-F.max_pool2d(-lab_f, 7, 1, 3) == lab_f)
        flat = flat & same
        tex = valid & ((label & TEXTURELESS) == 0) & same
        for i, sc in enumerate(scales):
            warped, ok = inverse_warp(src, (gt * float(sc)).clamp_min(1e-3), src_T_tgt, K)
            pe = photometric_error(warped, tgt)
            rows["photo_flat"][i] += float(pe[flat & ok.bool()].sum())
            rows["photo_tex"][i] += float(pe[tex & ok.bool()].sum())
            counts["flat"][i] += int((flat & ok.bool()).sum())
            counts["tex"][i] += int((tex & ok.bool()).sum())
        feats_all = fnet.encode(torch.cat([tgt, src]), levels=list(LEVELS))
        for level in LEVELS:
            feats = feats_all[level]  # (2, C, h, w)
            h, w = feats.shape[-2:]
            K_l = scale_intrinsics(K, w / W, h / H)
            # a feature pixel counts when every image pixel it covers is in the region
            flat_l = -F.adaptive_max_pool2d(-flat.float(), (h, w)) > 0.5
            tex_l = -F.adaptive_max_pool2d(-tex.float(), (h, w)) > 0.5
            gt_l = F.interpolate(gt, size=(h, w), mode="nearest")
            sfx = "" if level == 0 else f"_l{level}"
            for key in ("fm_flat", "fm_tex"):
                rows.setdefault(key + sfx, np.zeros(len(scales)))
            for i, sc in enumerate(scales):
                wf, okf = inverse_warp(feats[1:], (gt_l * float(sc)).clamp_min(1e-3), src_T_tgt, K_l)
                fe = robust_l1(wf, feats[:1], 1e-6).mean(dim=1, keepdim=True)
                ml_f, ml_t = flat_l & okf.bool(), tex_l & okf.bool()
                rows["fm_flat" + sfx][i] += float(fe[ml_f].mean()) if ml_f.any() else 0.0
                rows["fm_tex" + sfx][i] += float(fe[ml_t].mean()) if ml_t.any() else 0.0
    # photometric: mean over all region pixels the source sees; feature-metric: mean of per-frame means
    out = {"scales": scales.tolist(), "frames": frames, "drive": drive, "checkpoint": os.path.relpath(ckpt, ROOT),
           "flat_pixels": int(counts["flat"].max()), "textured_pixels": int(counts["tex"].max()),
           "levels": list(LEVELS)}
    out["photo_flat"] = (rows["photo_flat"] / np.maximum(counts["flat"], 1)).tolist()
    out["photo_tex"] = (rows["photo_tex"] / np.maximum(counts["tex"], 1)).tolist()
    for key in rows:
        if key.startswith("fm_"):
            out[key] = (rows[key] / len(frames)).tolist()
    with open(args.landscape_json or os.path.join(args.out, "landscape.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps(out, indent=1))
    return out


# ------------------------------------------------------------------------------------ report
def read_run(args, arm: str, seed: int, step: int):
    """One run's learning curve and its metrics at ``step`` from its metrics.jsonl (None if it has not
    reached ``step``). The learning rate is constant after the 20-step warm-up (synth_quick has no
    decay), so the state at ``step`` does not depend on the run's own ``--steps``."""
    run_dir = os.path.join(args.out, "runs", f"{arm}_s{seed}")
    depth_dir = os.path.join(run_dir, "stage2") if is_two_stage(arm) else run_dir
    path = os.path.join(depth_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    curve = [{k: r[k] for k in ("step", "abs_rel", "sq_rel", "tl_abs_rel", "tl_sq_rel")}
             for r in rows if r.get("split") == "val" and r["step"] <= step]
    final = [r for r in rows if r.get("split") == "val" and r["step"] == step]
    if not final:
        return None
    train = [r for r in rows if r.get("split") == "train" and r["step"] <= step]
    # median seconds per step over 10-step log intervals (a resumed run's gap and the evaluations drop out)
    gaps = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(train, train[1:])
            if b["step"] > a["step"]]
    sps = float(np.median(gaps)) if gaps else float("nan")
    stage1 = 0
    if is_two_stage(arm):
        stage1 = _checkpoint_step(os.path.join(run_dir, "stage1"))
    fm = [r["feature_metric"] for r in train if "feature_metric" in r]
    return {"arm": arm, "seed": seed, "final_step": step, "stage1_steps": stage1, "curve": curve,
            "final": final[0], "seconds_per_step": sps, "mean_feature_metric": float(np.mean(fm)) if fm else None,
            "mean_photometric": float(np.mean([r["photometric"] for r in train]))}


def collect(args, data: str):
    results = {}
    for arm in args.arms:
        for seed in args.seeds:
            r = read_run(args, arm, seed, args.steps)
            if r is not None:
                results.setdefault(arm, []).append(r)
    cfg = arm_config(args, data, "photometric", 0)
    const = constant_baseline(cfg, data)
    return results, const


def _ms(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def figure(args, data: str, results, const, path: str, land=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fmdepth.data.synthetic import TEXTURELESS

    colours = {"photometric": "tab:blue", "two_stage": "tab:red", "joint": "tab:green",
               "two_stage_tiny": "tab:grey", "two_stage_strong": "tab:purple"}
    fig = plt.figure(figsize=(15, 8.5))
    gs = fig.add_gridspec(2, 5, height_ratios=[1.25, 1.0])
    for col, (key, title, ckey) in enumerate([("abs_rel", "Abs Rel, all pixels", "overall"),
                                              ("tl_abs_rel", "Abs Rel, textureless pixels", "textureless")]):
        ax = fig.add_subplot(gs[0, 2 * col:2 * col + 2])
        for arm, runs in results.items():
            for r in runs:
                ax.plot([c["step"] for c in r["curve"]], [c[key] for c in r["curve"]], color=colours.get(arm, "k"),
                        alpha=0.8, lw=1.2, label=f"{arm}" if r is runs[0] else None,
                        ls=["-", "--", ":", "-."][r["seed"] % 4])
        ax.axhline(const[ckey]["abs_rel"], color="gray", ls="--", lw=1, label="constant depth")
        ax.axhline(0.6 * const[ckey]["abs_rel"], color="gray", ls=":", lw=1, label="0.6 x constant")
        ax.set_xlabel("depth training step (stage 2 for two_stage)")
        ax.set_title(title + " (held-out drive; line style = seed)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if land is not None:
        ax = fig.add_subplot(gs[0, 4])
        s = np.asarray(land["scales"])
        for key, lab, c, ls in [("photo_flat", "photometric, textureless", "tab:blue", "-"),
                                ("fm_flat", "feature-metric, textureless", "tab:red", "-"),
                                ("photo_tex", "photometric, textured", "tab:blue", ":"),
                                ("fm_tex", "feature-metric, textured", "tab:red", ":")]:
            v = np.asarray(land[key])
            ax.plot(s, v / v[np.argmin(np.abs(s - 1.0))], color=c, ls=ls, label=lab)
        ax.set_xscale("log")
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("depth scale (x ground truth)")
        ax.set_ylim(0.5, 3.0)
        ax.set_title("error / error at true depth\n(stage-1 FeatureNet, level 0)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    # image row
    cfg = arm_config(args, data, "photometric", 0)
    sample = test_set(cfg, data)[EXAMPLE_INDEX]
    gt = np.asarray(sample.depth_gt)[0]
    label = np.asarray(sample.label)[0]
    valid = (gt > 1e-3) & (gt < 80)
    def example(arm, seed):
        sub = "stage2" if is_two_stage(arm) else ""
        return os.path.join(args.out, "runs", f"{arm}_s{seed}", sub, "examples", f"step_{args.steps}.npy")

    have = [r["seed"] for r in results.get("photometric", [])
            if all(os.path.isfile(example(arm, r["seed"])) for arm in ("photometric", "two_stage"))]
    seed = min(have) if have else 0
    panels = [("input (held-out frame)", sample.net_frames[0].permute(1, 2, 0).numpy(), None)]
    for arm in ("photometric", "two_stage"):
        if os.path.isfile(example(arm, seed)):
            panels.append((f"{arm} (seed {seed}, step {args.steps}), disparity", np.load(example(arm, seed)), "magma"))
    gt_disp = np.where(valid, 1.0 / np.maximum(gt, 1e-3), np.nan)
    panels.append(("ground truth, disparity", gt_disp, "magma"))
    panels.append(("textureless pixels (white)", ((label & TEXTURELESS) != 0).astype(float), "gray"))
    for i, (title, img, cmap) in enumerate(panels[:5]):
        ax = fig.add_subplot(gs[1, i])
        ax.imshow(img, cmap=cmap, aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])  # ticks off, frame kept: the white mask stays visible on the white page
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_doc(path: str, args, results, const, land, command_lines) -> str:
    arms = [a for a in ARMS if a in results]
    lines = ["# Experiments", "",
             "## Feature-metric vs photometric-only loss on textureless synthetic scenes", "",
             "Produced by `bench/experiment_textureless.py` (rerun it to regenerate this section).", "",
             "Commands:", "", "```"] + command_lines + ["```", "",
             "Setup:", "",
             f"- Data: `render_dataset(drives={args.drives}, frames={args.frames}, seed={args.data_seed}, "
             f"textureless={args.textureless}, height={args.render_height}, width={args.render_width})`; the last "
             "drive is the held-out test split (never trained on).",
             f"- Training: `configs/synth_quick.yaml` (DepthNet/PoseNet/FeatureNet ResNet18 from scratch, frames "
             f"[0, -1, 1], Adam lr 3e-4, published pose_scale 0.01 / min_depth 0.1, auto-mask after 300 steps), "
             f"input {args.height}x{args.width}, batch {args.batch}, **{args.steps} depth steps per run**, CPU, "
             "1 torch thread per run, two runs side by side. The seed sets the initial weights and the data order; "
             "both arms of a seed start from the same DepthNet/PoseNet weights and see the same batches.",
             f"- Arms: `photometric`: `loss.feature_metric=0`; `two_stage`: `loss.mode=two_stage "
             f"loss.stage1_steps={args.stage1_steps}` = stage 1 FeatureNet alone for {args.stage1_steps} steps "
             f"(reconstruction + discriminative + convergent), then stage 2 = photometric + feature-metric "
             f"(weight 1e-3, encoder level 0) with FeatureNet frozen for the same {args.steps} steps as the baseline; "
             "`constant_depth`: the same depth everywhere (after median scaling: the image's median ground truth).",
             "- Evaluation (also every "
             f"{args.eval_every} steps for the curves): every frame of the held-out drive, the renderer's dense "
             "depth, pixels with 1e-3 < gt < 80 m, per-image median scaling; metrics averaged over images. "
             "*Textureless* = the same evaluation (same scale ratio) restricted to pixels whose surface label has "
             "the TEXTURELESS bit (images with >= 50 such pixels).", "",
             "Final metrics, mean ± std over seeds (sample std, ddof=1):", "",
             "| arm | seeds | Abs Rel | Sq Rel | Abs Rel (textureless) | Sq Rel (textureless) | median s/step (shared CPU) | "
             "Abs Rel / constant |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        runs = results[arm]
        cells = []
        for key in ("abs_rel", "sq_rel", "tl_abs_rel", "tl_sq_rel"):
            m, s = _ms([r["final"][key] for r in runs])
            cells.append(f"{m:.4f} ± {s:.4f}")
        ratio = [r["final"]["abs_rel"] / const["overall"]["abs_rel"] for r in runs]
        sps = np.mean([r["seconds_per_step"] for r in runs])
        lines.append(f"| `{arm}` | {', '.join(str(r['seed']) for r in runs)} | " + " | ".join(cells)
                     + f" | {sps:.2f} | {min(ratio):.2f}–{max(ratio):.2f} |")
    o, t = const["overall"], const["textureless"]
    lines.append(f"| `constant_depth` | – | {o['abs_rel']:.4f} | {o['sq_rel']:.4f} | {t['abs_rel']:.4f} | "
                 f"{t['sq_rel']:.4f} | – | 1.00 |")
    lines += ["", "Per seed (final step):", "",
              "| arm | seed | steps | Abs Rel | Sq Rel | Abs Rel (textureless) | Sq Rel (textureless) | "
              "best Abs Rel on the curve (step) |", "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        for r in sorted(results[arm], key=lambda r: r["seed"]):
            f = r["final"]
            best = min(r["curve"], key=lambda c: c["abs_rel"])
            lines.append(f"| `{arm}` | {r['seed']} | {r['final_step']}"
                         + (f" (+{r['stage1_steps']} stage 1)" if r["stage1_steps"] else "")
                         + f" | {f['abs_rel']:.4f} | {f['sq_rel']:.4f} | {f['tl_abs_rel']:.4f} | "
                         f"{f['tl_sq_rel']:.4f} | {best['abs_rel']:.4f} ({best['step']}) |")
    base = {r["seed"]: r["final"] for r in results.get("photometric", [])}
    paired = [(arm, [(r["seed"], base[r["seed"]], r["final"]) for r in sorted(results[arm], key=lambda r: r["seed"])
                     if r["seed"] in base]) for arm in arms if arm != "photometric"]
    if any(rows for _, rows in paired):
        lines += ["", "Paired by seed (same initial weights, same batches): `photometric` minus the arm, so a "
                  "positive number means the arm is better; mean ± std over seeds, and the spread of "
                  "`photometric` itself for comparison:", "",
                  "| arm | seeds | Δ Abs Rel | Δ Abs Rel (textureless) | Δ Sq Rel (textureless) | per-seed Δ Abs Rel "
                  "(textureless) |", "|---|---|---|---|---|---|"]
        for arm, rows in paired:
            if not rows:
                continue
            cells = []
            for key in ("abs_rel", "tl_abs_rel", "tl_sq_rel"):
                m, sd = _ms([b[key] - f[key] for _, b, f in rows])
                cells.append(f"{m:+.4f} ± {sd:.4f}")
            per = ", ".join(f"{b['tl_abs_rel'] - f['tl_abs_rel']:+.4f} (s{seed})" for seed, b, f in rows)
            lines.append(f"| `{arm}` | {len(rows)} | " + " | ".join(cells) + f" | {per} |")
        m, sd = _ms([b["tl_abs_rel"] for b in base.values()])
        lines.append(f"| (`photometric` spread) | {len(base)} | | {m:.4f} ± {sd:.4f} | | |")
    lines += ["", f"{const['images']} test images; textureless pixels are "
              f"{100 * const['textureless_pixel_fraction']:.0f}% of the evaluated pixels "
              f"({const['textureless_images']} images have >= 50 of them).", "",
              "![learning curves, loss landscape and an example](experiments_textureless.png)", "",
              "Reading:", "", "READING_PLACEHOLDER", ""]
    if land is not None:
        s = land["scales"]
        lines += ["### Feature quality check: error along a depth scale", "",
                  f"Held-out drive `{land['drive']}`, target frames {land['frames']} with source t+1, the "
                  "renderer's poses and dense depth; the source (image, or level-0 features of the trained stage-1 "
                  f"FeatureNet `{land['checkpoint']}`) is warped with scale x ground-truth depth. Errors are "
                  "averaged over the interior of textureless regions (textureless pixels whose 7x7 neighbourhood "
                  f"has the same label; {land['flat_pixels']} pixels) and over textured interiors "
                  f"({land['textured_pixels']} pixels). Photometric = `photometric_error` (SSIM+L1); "
                  "feature-metric = the robust L1 of `feature_metric_loss`. Columns relative to scale 1 are "
                  "error(scale) / error(1).", "",
                  "| depth scale | photometric, textureless | feature-metric, textureless | rel. photo | rel. FM | "
                  "photometric, textured | feature-metric, textured | FM level 1, textureless (rel.) | "
                  "FM level 2, textureless (rel.) |", "|---|---|---|---|---|---|---|---|---|"]
        i1 = int(np.argmin(np.abs(np.asarray(s) - 1.0)))
        for i, sc in enumerate(s):
            lines.append(f"| {sc:.3f} | {land['photo_flat'][i]:.4f} | {land['fm_flat'][i]:.4f} | "
                         f"{land['photo_flat'][i] / land['photo_flat'][i1]:.3f} | "
                         f"{land['fm_flat'][i] / land['fm_flat'][i1]:.3f} | {land['photo_tex'][i]:.4f} | "
                         f"{land['fm_tex'][i]:.4f} | "
                         + " | ".join(f"{land[k][i]:.4f} ({land[k][i] / land[k][i1]:.3f})"
                                      for k in ("fm_flat_l1", "fm_flat_l2")) + " |")
        lines += ["", "LANDSCAPE_PLACEHOLDER", ""]
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "experiment_textureless"))
    p.add_argument("--drives", type=int, default=5, help="rendered drives (the last one is held out)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--textureless", type=float, default=0.6)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--render-height", type=int, default=96)
    p.add_argument("--render-width", type=int, default=320)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=600, help="depth optimizer steps per run (the shared budget)")
    p.add_argument("--stage1-steps", type=int, default=100, help="two_stage: FeatureNet steps before stage 2")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seed", type=int, default=0, help="--landscape: whose stage-1 FeatureNet")
    p.add_argument("--arms", nargs="+", default=["photometric", "two_stage"], choices=sorted(ARMS))
    p.add_argument("--run", nargs=2, metavar=("ARM", "SEED"), help="train one arm/seed only (then --collect)")
    p.add_argument("--resume", action="store_true", help="--run: continue the run's depth stage to --steps")
    p.add_argument("--collect", action="store_true", help="no training: table, figure and doc from OUT/runs")
    p.add_argument("--landscape", action="store_true", help="feature quality check only (OUT/landscape.json)")
    p.add_argument("--feature-checkpoint", default="", help="--landscape: another stage-1 checkpoint")
    p.add_argument("--landscape-json", default="", help="--landscape: output file (default OUT/landscape.json)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "experiments.md"))
    p.add_argument("--figure", default=os.path.join(ROOT, "docs", "experiments_textureless.png"))
    p.add_argument("--no-doc", action="store_true", help="print results only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    data = render(args)
    if args.landscape:
        landscape(args, data)
        return 0
    if args.run:
        arm, seed = args.run[0], int(args.run[1])
        if arm not in ARMS:
            p.error(f"--run: unknown arm {arm}")
        run_one(args, data, arm, seed)
        return 0
    if not args.collect:
        for seed in args.seeds:
            for arm in args.arms:
                print(f"\n=== arm {arm}, seed {seed}: {' '.join(ARMS[arm])}", flush=True)
                run_one(args, data, arm, seed)
    results, const = collect(args, data)
    land_path = os.path.join(args.out, "landscape.json")
    land = json.load(open(land_path)) if os.path.isfile(land_path) else None
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump({"results": results, "constant_depth": const}, fh, indent=1)
    print(f"constant depth: abs_rel {const['overall']['abs_rel']:.4f}  tl_abs_rel {const['textureless']['abs_rel']:.4f}")
    for arm, runs in results.items():
        for key in ("abs_rel", "sq_rel", "tl_abs_rel", "tl_sq_rel"):
            m, s = _ms([r["final"][key] for r in runs])
            print(f"{arm:<12} {key:<11} {m:.4f} ± {s:.4f}  seeds {[r['seed'] for r in runs]}  "
                  f"per seed {[round(r['final'][key], 4) for r in runs]}")
    if not args.no_doc and results:
        figure(args, data, results, const, args.figure, land)
        cmd = f"--steps {args.steps} --stage1-steps {args.stage1_steps} --eval-every {args.eval_every}"
        lines = [f"python bench/experiment_textureless.py --run {arm} {seed} {cmd} --no-progress"
                 for seed in sorted({r['seed'] for rs in results.values() for r in rs}) for arm in results]
        lines += ["python bench/experiment_textureless.py --landscape --seed 0",
                  f"python bench/experiment_textureless.py --collect {cmd}"]
        write_doc(args.doc, args, results, const, land, lines)
        print(f"wrote {args.doc} and {args.figure} (fill in the reading)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
