"""`fmdepth train`: train a system (depth, registration or semantic) from a config file."""
HELP = "train a model from a config (one CPU/GPU, or many GPUs under torchrun)"
DESCRIPTION = """Train the system named by the config's `task` (depth by default) and write a run folder:

  RUN_DIR/config.yaml              the fully resolved config (defaults + file + --set)
  RUN_DIR/metrics.jsonl            one JSON line per log step (train) and validation (val)
  RUN_DIR/tensorboard/             TensorBoard events: `tensorboard --logdir RUN_DIR`
  RUN_DIR/checkpoints/last.pt      latest state (every epoch / train.ckpt_every steps, at the end,
                                   and on Ctrl-C); best.pt = best validation Abs Rel

The config is checked before any work starts: an unknown key, a wrong type or an impossible value
is an error naming the key. An existing run folder is never overwritten: pass --resume to continue
it exactly where it stopped (same architecture required; training settings such as
train.max_steps may change). Budgets: train.max_steps, train.max_minutes.

examples:
  fmdepth train --config configs/synth_quick.yaml --data data/synth --out runs/quick
  fmdepth train --config configs/video_quick.yaml --data my_video.mp4 --out runs/mine   # own video
  # FeatDepth on KITTI, two stages: FeatureNet first, then depth/pose with FeatureNet frozen
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw \\
      --set loss.mode=featurenet --out runs/featurenet
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw \\
      --set model.feature_weights=runs/featurenet/checkpoints/last.pt --out runs/fm
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw --out runs/fm --resume
  fmdepth train --config configs/synth_quick.yaml --data data/synth --out runs/q2 \\
      --set train.batch_size=4 --set optim.lr=2e-4 --set train.max_minutes=5
  torchrun --nproc_per_node 4 -m fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml \\
      --data /data/kitti_raw --out runs/fm_ddp        # distributed data parallel, 4 GPUs
"""


def add_arguments(parser):
    parser.add_argument("--config", required=True, metavar="CFG",
                        help="YAML config (only what differs from the defaults; see configs/)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="dataset root; overrides data.path of the config")
    parser.add_argument("--out", metavar="RUN_DIR", default=None,
                        help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR from checkpoints/last.pt")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import os
    import sys

    from fmdepth.config import load_config

    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    # 1. config errors first (names the key), before anything is imported or read
    cfg = load_config(args.config, overrides)
    run_dir = args.out or os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    # 2. data path and run folder, still before any work
    if cfg.task == "depth":
        if not cfg.data.path:
            raise ValueError("no dataset: pass --data DIR (or set data.path in the config)")
        if not (os.path.isdir(cfg.data.path) or (cfg.data.dataset == "folder" and os.path.isfile(cfg.data.path))):
            raise FileNotFoundError(f"data.path: dataset folder not found: {cfg.data.path}"
                                    + (" (data.dataset folder also takes a video file)" if cfg.data.dataset == "folder" else ""))
    from fmdepth.engine.trainer import NonFiniteLossError, check_run_dir, train

    check_run_dir(run_dir, args.resume)
    try:
        result = train(cfg, run_dir, resume=args.resume, progress=not args.quiet)
    except NonFiniteLossError as exc:
        print(f"fmdepth train: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"stopped after {result.step} steps (epoch {result.epoch}, {result.stop_reason})")
        if result.last_val:
            print("last validation: " + "  ".join(f"{k}={v:.4f}" for k, v in result.last_val.items()))
        print(f"run folder: {run_dir}")
        print(f"checkpoint: {result.last_checkpoint}"
              + (f"  best: {result.best_checkpoint}" if result.best_checkpoint else ""))
        print(f"TensorBoard: tensorboard --logdir {os.path.join(run_dir, 'tensorboard')}")
    return 0
