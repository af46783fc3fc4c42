"""`fmdepth train`: train a system (depth, registration or semantic) from a config file."""
import os

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

loss.mode=two_stage (FeatDepth's published recipe) runs two trainings into one run folder:
  RUN_DIR/config.yaml              the resolved two-stage config
  RUN_DIR/stage1/                  loss.mode=featurenet (FeatureNet alone), a complete run folder;
                                   loss.stage1_epochs (0 = train.epochs), loss.stage1_steps budget
  RUN_DIR/stage1/finished.json     written when stage 1 has run its budget
  RUN_DIR/stage2/                  loss.mode=depth, FeatureNet frozen with stage1's last.pt;
                                   train.epochs, train.max_steps
--resume continues the unfinished stage; a finished stage 1 is never redone. train.max_minutes
applies to each stage; stage 2 starts only once stage 1 is finished.

examples:
  fmdepth train --config configs/synth_quick.yaml --data data/synth --out runs/quick
  fmdepth train --config configs/video_quick.yaml --data my_video.mp4 --out runs/mine   # own video
  # FeatDepth on KITTI, both stages in one run folder (loss.mode=two_stage in the config):
  # runs/fm/stage1 = FeatureNet alone, runs/fm/stage2 = depth/pose with FeatureNet frozen
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw --out runs/fm
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw --out runs/fm --resume
  # one stage at a time, or everything trained together
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw \\
      --set loss.mode=depth --set model.feature_weights=runs/fm/stage1/checkpoints/last.pt --out runs/fm2
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw \\
      --set loss.mode=joint --out runs/fm_joint
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
    import sys

    from fmdepth.config import load_config
    from fmdepth.tasks import check_choices

    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    # 1. config errors first (names the key), before anything is imported or read
    cfg = load_config(args.config, overrides)
    check_choices(cfg)  # the values the code's registries own (methods, similarities, modalities)
    run_dir = args.out or os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    # 2. data path and run folder, still before any work
    if cfg.task == "depth":
        if not cfg.data.path:
            raise ValueError("no dataset: pass --data DIR (or set data.path in the config)")
        if not (os.path.isdir(cfg.data.path) or (cfg.data.dataset == "folder" and os.path.isfile(cfg.data.path))):
            raise FileNotFoundError(f"data.path: dataset folder not found: {cfg.data.path}"
                                    + (" (data.dataset folder also takes a video file)" if cfg.data.dataset == "folder" else ""))
    from fmdepth.engine.trainer import NonFiniteLossError, check_run_dir
    from fmdepth.tasks import train

    if cfg.loss.mode == "two_stage":
        check_two_stage_dir(run_dir, args.resume)
        runner = train_two_stage
    else:
        check_run_dir(run_dir, args.resume)
        runner = train
    try:
        result = runner(cfg, run_dir, resume=args.resume, progress=not args.quiet)
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
        tb = run_dir if cfg.loss.mode == "two_stage" else os.path.join(run_dir, "tensorboard")  # both stages
        print(f"TensorBoard: tensorboard --logdir {tb}")
    return 0


# ------------------------------------------------------------------------------------ two stages
STAGE1_DONE = "finished.json"


def two_stage_configs(cfg, run_dir: str):
    """The two runs of ``loss.mode=two_stage``: ``[("stage1", cfg1, dir1), ("stage2", cfg2, dir2)]``.

    Stage 1: ``loss.mode=featurenet``, ``train.epochs = loss.stage1_epochs or train.epochs``,
    ``train.max_steps = loss.stage1_steps``. Stage 2: ``loss.mode=depth`` with
    ``model.feature_weights = RUN_DIR/stage1/checkpoints/last.pt``, the config's own budgets.
    Everything else is the config as given.
    """
    import dataclasses

    if cfg.loss.mode != "two_stage":
        raise ValueError(f"two_stage_configs needs loss.mode=two_stage, got {cfg.loss.mode!r}")
    if cfg.model.feature_weights:
        raise ValueError("config key 'model.feature_weights': loss.mode=two_stage trains FeatureNet in stage 1 "
                         "and uses its weights in stage 2; for given FeatureNet weights use loss.mode=depth")
    dir1, dir2 = os.path.join(run_dir, "stage1"), os.path.join(run_dir, "stage2")
    loss1 = dataclasses.replace(cfg.loss, mode="featurenet", stage1_epochs=0, stage1_steps=0)
    train1 = dataclasses.replace(cfg.train, epochs=cfg.loss.stage1_epochs or cfg.train.epochs,
                                 max_steps=cfg.loss.stage1_steps)
    cfg1 = dataclasses.replace(cfg, loss=loss1, train=train1)
    loss2 = dataclasses.replace(cfg.loss, mode="depth", stage1_epochs=0, stage1_steps=0)
    model2 = dataclasses.replace(cfg.model, feature_weights=os.path.join(dir1, "checkpoints", "last.pt"))
    cfg2 = dataclasses.replace(cfg, loss=loss2, model=model2)
    return [("stage1", cfg1, dir1), ("stage2", cfg2, dir2)]


def check_two_stage_dir(run_dir: str, resume: bool) -> None:
    """``check_run_dir`` for a two-stage run folder: a new run needs an empty one, --resume a stage 1."""
    from fmdepth.engine.trainer import check_run_dir

    check_run_dir(os.path.join(run_dir, "stage1"), resume)
    if not resume:
        check_run_dir(run_dir, False)
        check_run_dir(os.path.join(run_dir, "stage2"), False)


def stage1_finished(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, "stage1", STAGE1_DONE))


def train_two_stage(cfg, run_dir: str, resume: bool = False, progress: bool = True):
    """Run ``loss.mode=two_stage``: stage 1 then stage 2 (see :func:`two_stage_configs`).

    With ``resume`` the unfinished stage continues from its ``last.pt``; a finished stage 1
    (``stage1/finished.json``) is not redone. Returns stage 2's ``TrainResult``, or stage 1's when
    stage 1 stopped on ``train.max_minutes`` (stage 2 not started; continue with ``--resume``).
    """
    import json

    from fmdepth.config import save_config
    from fmdepth.tasks import train

    stages = two_stage_configs(cfg, run_dir)
    (_, cfg1, dir1), (_, cfg2, dir2) = stages
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        os.makedirs(run_dir, exist_ok=True)
        save_config(cfg, os.path.join(run_dir, "config.yaml"))
    if stage1_finished(run_dir):
        print(f"stage 1 finished ({os.path.join(dir1, STAGE1_DONE)}): not redone")
    else:
        resume1 = resume and os.path.isfile(os.path.join(dir1, "checkpoints", "last.pt"))
        print(f"stage 1 (loss.mode=featurenet) -> {dir1}" + (" (resumed)" if resume1 else ""))
        result = train(cfg1, dir1, resume=resume1, progress=progress)
        if result.stop_reason == "max_minutes":
            print(f"stage 1 stopped on train.max_minutes at step {result.step}; stage 2 not started "
                  f"(continue with --resume)")
            return result
        if main:
            with open(os.path.join(dir1, STAGE1_DONE), "w", encoding="utf-8") as fh:
                json.dump({"step": result.step, "epoch": result.epoch, "stop_reason": result.stop_reason,
                           "checkpoint": result.last_checkpoint}, fh)
    resume2 = resume and os.path.isfile(os.path.join(dir2, "checkpoints", "last.pt"))
    print(f"stage 2 (loss.mode=depth, FeatureNet frozen: {cfg2.model.feature_weights}) -> {dir2}"
          + (" (resumed)" if resume2 else ""))
    return train(cfg2, dir2, resume=resume2, progress=progress)
