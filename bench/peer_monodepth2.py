"""Benchmark: fmdepth's trainer side by side with Monodepth2's own ``train.py`` (the peer).

Same data, same settings, same step count, same evaluator:

1. ``fmdepth synth`` drives rendered at KITTI size (375x1242) with KITTI calibration files, in
   the KITTI raw layout both trainers read (``--data`` reuses a rendered folder).
2. Monodepth2 (``MD2_REPO``: a checkout of github.com/nianticlabs/monodepth2, commit b676244) is
   copied into a scratch folder, given the five compatibility edits it needs on current
   torch/torchvision/PIL/numpy (they change no computation), and trained with its defaults:
   ``--weights_init scratch --height 96 --width 320 --batch_size 4 --png --no_cuda`` (lr 1e-4,
   frames 0 -1 1, smoothness 1e-3, pose x0.01, min/max depth 0.1/100, no lr decay within the run)
   for ``--epochs`` epochs of the rendered training split.
3. ``fmdepth train`` with the same settings (ResNet18 depth and pose from scratch, published pose
   scale 0.01, min_depth 0.1, max_depth 100, photometric-only, first-order smoothness 1e-3, lr
   1e-4, batch 4, no decay) for the same number of optimizer steps; and, as a third row, the
   feature-metric configuration: a FeatureNet trained first (``loss.mode=featurenet``), then
   frozen for depth training (``loss.mode=depth``, ``loss.feature_metric=1e-3``).
4. Both models predict the held-out drive (the split's test file); ``fmdepth evaluate depth``
   scores every prediction against the same ground truth (``fmdepth export-gt``, the standard
   Eigen export rule) with the Eigen protocol (Garg crop, 80 m cap, per-image median scaling).

Printed per row and seed: Abs Rel, wall time, examples/s and peak resident memory of the
training process (``wait4`` rusage), the median-scaled constant-depth baseline, and the ratios
to Monodepth2 (targets: Abs Rel <= 1.05x, examples/s >= 1.3x, peak memory <= 1x).

    MD2_REPO=/path/to/monodepth2 python bench/peer_monodepth2.py --seeds 0 1 2
    MD2_REPO=... python bench/peer_monodepth2.py --epochs 2 --seeds 0 --no-featuremetric   # smoke
    python bench/peer_monodepth2.py --only fmdepth --seeds 0   # without the peer

Without ``MD2_REPO`` (and without ``--only fmdepth``) it prints why and exits 0. No code of
the peer is part of fmdepth: it is run from its own checkout, in a scratch copy.
"""
import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Text replacements Monodepth2 b676244 needs on current libraries (file, old, new).
MD2_COMPAT = (
    ("datasets/mono_dataset.py", "Image.ANTIALIAS", "Image.LANCZOS"),
    ("datasets/mono_dataset.py", "color_aug = transforms.ColorJitter.get_params(",
     "color_aug = transforms.ColorJitter("),
    ("trainer.py", "from IPython import embed\n", ""),
    ("trainer.py", "self.val_iter.next()", "next(self.val_iter)"),
    ("kitti_utils.py", "astype(np.int)", "astype(int)"),
)

# What Monodepth2's defaults are, as fmdepth config keys (the photometric-only row).
FMDEPTH_CONFIG = {
    "data": {"dataset": "synthetic", "split": "splits", "height": 96, "width": 320, "num_workers": 0},
    "model": {"depth_layers": 18, "pose_layers": 18, "feature_layers": 18, "pose_scale": 0.01,
              "min_depth": 0.1, "max_depth": 100.0},
    "loss": {"feature_metric": 0.0, "smoothness": 1e-3, "smoothness2": 0.0, "scales": [0, 1, 2, 3]},
    "optim": {"lr": 1e-4, "decay_epochs": [], "warmup_steps": 0},
    "train": {"epochs": 1000, "batch_size": 4, "log_every": 10, "image_every": 100000,
              "val_every": 100000, "ckpt_every": 100000},
}
#: network input size and depth range shared by both trainers (Monodepth2's defaults)
SIZE_AND_RANGE = (FMDEPTH_CONFIG["data"]["height"], FMDEPTH_CONFIG["data"]["width"],
                  FMDEPTH_CONFIG["model"]["min_depth"], FMDEPTH_CONFIG["model"]["max_depth"])


def run_measured(cmd, cwd, env, log_path):
    """Run ``cmd``; returns (wall seconds, peak RSS in bytes) of that process tree's largest member."""
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        with open(log_path) as fh:
            tail = fh.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit code {code}; log {log_path}:\n{tail}")
    return wall, usage.ru_maxrss * 1024


def render(data, drives, frames, seed):
    if os.path.isfile(os.path.join(data, "synth_info.json")):
        print(f"reusing rendered data in {data}")
        return
    subprocess.run([sys.executable, "-m", "fmdepth", "synth", "--out", data, "--drives", str(drives),
                    "--frames", str(frames), "--seed", str(seed), "--quiet"], check=True, cwd=ROOT)


def prepare_md2(repo, scratch, data):
    """Scratch copy of the peer with the compatibility edits and our split files."""
    if not os.path.isfile(os.path.join(repo, "trainer.py")):
        raise FileNotFoundError(f"MD2_REPO={repo}: no trainer.py (expected a Monodepth2 checkout)")
    dst = os.path.join(scratch, "monodepth2")
    shutil.copytree(repo, dst, ignore=shutil.ignore_patterns(".git", "assets", "*.ipynb"))
    for rel, old, new in MD2_COMPAT:
        path = os.path.join(dst, rel)
        with open(path) as fh:
            text = fh.read()
        with open(path, "w") as fh:
            fh.write(text.replace(old, new))
    split_dir = os.path.join(dst, "splits", "fmdepth_synth")
    os.makedirs(split_dir, exist_ok=True)
    for name in ("train", "val"):
        shutil.copy(os.path.join(data, "splits", f"{name}_files.txt"), split_dir)
    # options.py restricts --split to its own names: add ours
    opts = os.path.join(dst, "options.py")
    with open(opts) as fh:
        text = fh.read()
    with open(opts, "w") as fh:
        fh.write(text.replace('choices=["eigen_zhou", "eigen_full", "odom", "benchmark"]',
                              'choices=["eigen_zhou", "eigen_full", "odom", "benchmark", "fmdepth_synth"]'))
    return dst


MD2_PREDICT = r"""
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import networks
from datasets import KITTIRAWDataset
from layers import disp_to_depth
torch.set_num_threads(int(sys.argv[5]))
wdir, data, split, out = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[6]
height, width, min_depth, max_depth = int(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9]), float(sys.argv[10])
enc = networks.ResnetEncoder(18, False)
dec = networks.DepthDecoder(enc.num_ch_enc, range(4))
state = torch.load(wdir + "/encoder.pth", map_location="cpu", weights_only=True)
enc.load_state_dict({k: v for k, v in state.items() if k in enc.state_dict()})
dec.load_state_dict(torch.load(wdir + "/depth.pth", map_location="cpu", weights_only=True))
enc.eval(); dec.eval()
files = [l.strip() for l in open(split) if l.strip()]
ds = KITTIRAWDataset(data, files, height, width, [0], 4, is_train=False, img_ext=".png")
preds = []
with torch.no_grad():
    for inp in torch.utils.data.DataLoader(ds, 8, shuffle=False):
        d = dec(enc(inp[("color", 0, 0)]))[("disp", 0)]
        preds.append(disp_to_depth(d, min_depth, max_depth)[0][:, 0].numpy())
np.savez(out, disps=np.concatenate(preds))
"""


def evaluate(args_list, json_path, env):
    subprocess.run([sys.executable, "-m", "fmdepth", "evaluate", "depth", *args_list, "--json", json_path,
                    "--no-progress", "--num-workers", "0"], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL)
    with open(json_path) as fh:
        return json.load(fh)


def fm_yaml(path, overrides):
    import yaml

    cfg = copy.deepcopy(FMDEPTH_CONFIG)
    for section, values in overrides.items():
        cfg.setdefault(section, {}).update(values)
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="", help="rendered synth folder (default: render into --out/data)")
    ap.add_argument("--out", default="", help="work folder (default: a temporary folder)")
    ap.add_argument("--drives", type=int, default=3, help="drives to render (the last is held out)")
    ap.add_argument("--frames", type=int, default=40, help="frames per drive")
    ap.add_argument("--epochs", type=int, default=9, help="Monodepth2 epochs (fmdepth gets as many steps)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    ap.add_argument("--only", choices=("both", "fmdepth", "monodepth2"), default="both")
    ap.add_argument("--no-featuremetric", action="store_true", help="skip the frozen-FeatureNet row")
    ap.add_argument("--featurenet-steps", type=int, default=300, help="stage-1 FeatureNet steps")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)

    repo = os.environ.get("MD2_REPO", "")
    if args.only != "fmdepth" and not repo:
        print("bench/peer_monodepth2.py: MD2_REPO is not set (a Monodepth2 checkout); skipped. "
              "Use --only fmdepth to run fmdepth's rows alone.")
        return 0
    out = args.out or tempfile.mkdtemp(prefix="peer_md2_")
    os.makedirs(out, exist_ok=True)
    data = args.data or os.path.join(out, "data")
    render(data, args.drives, args.frames, 0)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    test_split = os.path.join(data, "splits", "test_files.txt")
    gt = os.path.join(out, "gt_depths.npz")
    if not os.path.isfile(gt):
        subprocess.run([sys.executable, "-m", "fmdepth", "export-gt", "--data", data, "--split-file", test_split,
                        "--out", gt], check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    with open(os.path.join(data, "splits", "train_files.txt")) as fh:
        n_train = sum(1 for line in fh if line.strip())
    steps = (n_train // 4) * args.epochs
    print(f"{n_train} training items, batch 4: {args.epochs} epochs = {steps} steps per run; "
          f"{args.threads} thread(s) per process")

    rows = {}

    def record(name, seed, wall, rss, metrics):
        rows.setdefault(name, []).append({"seed": seed, "wall_s": wall, "peak_rss_gb": rss / 1e9,
                                          "examples_per_s": steps * 4 / wall, "abs_rel": metrics["abs_rel"],
                                          "metrics": metrics})
        print(f"  {name:<26} seed {seed}: Abs Rel {metrics['abs_rel']:.3f}  {wall:7.0f} s  "
              f"{steps * 4 / wall:5.2f} ex/s  peak RSS {rss / 1e9:.2f} GB", flush=True)

    md2_dir = prepare_md2(repo, out, data) if args.only != "fmdepth" else None
    for seed in args.seeds:
        if md2_dir:
            log_dir = os.path.join(out, f"md2_s{seed}")
            cmd = [sys.executable, "-c",
                   "import sys, random, numpy, torch; s=int(sys.argv[1]); random.seed(s); numpy.random.seed(s); "
                   "torch.manual_seed(s); torch.set_num_threads(int(sys.argv[2])); sys.argv=['train.py']+sys.argv[3:]; "
                   "sys.path.insert(0, '.'); exec(open('train.py').read())",
                   str(seed), str(args.threads),
                   "--data_path", data, "--split", "fmdepth_synth", "--png", "--height", str(SIZE_AND_RANGE[0]), "--width", str(SIZE_AND_RANGE[1]),
                   "--batch_size", "4", "--no_cuda", "--weights_init", "scratch", "--num_workers", "0",
                   "--num_epochs", str(args.epochs), "--scheduler_step_size", str(args.epochs + 1),
                   "--log_dir", log_dir, "--model_name", "m", "--log_frequency", "50"]
            wall, rss = run_measured(cmd, md2_dir, env, os.path.join(out, f"md2_s{seed}.log"))
            wdir = os.path.join(log_dir, "m", "models", f"weights_{args.epochs - 1}")
            pred = os.path.join(out, f"md2_s{seed}_disps.npz")
            subprocess.run([sys.executable, "-c", MD2_PREDICT, md2_dir, wdir, data, test_split,
                            str(args.threads), pred, *map(str, SIZE_AND_RANGE)], check=True, cwd=md2_dir, env=env)
            record("monodepth2 train.py", seed, wall, rss,
                   evaluate(["--pred", pred, "--gt", gt], os.path.join(out, f"md2_s{seed}.json"), env))
        if args.only == "monodepth2":
            continue
        arms = [("fmdepth photometric", {}, None)]
        if not args.no_featuremetric:
            arms.append(("fmdepth + feature-metric", {"loss": {"mode": "depth", "feature_metric": 1e-3}},
                         "featurenet"))
        for name, over, stage1 in arms:
            tag = name.split()[-1].replace("-", "_")
            sets = ["--set", f"train.max_steps={steps}", "--set", f"seed={seed}"]
            if stage1:
                fn_run = os.path.join(out, f"featurenet_s{seed}")
                if not os.path.isfile(os.path.join(fn_run, "checkpoints", "last.pt")):
                    y = os.path.join(out, f"featurenet_s{seed}.yaml")
                    fm_yaml(y, {"loss": {"mode": "featurenet"}})
                    run_measured([sys.executable, "-m", "fmdepth", "train", "--config", y, "--data", data,
                                  "--out", fn_run, "--quiet", "--set", f"train.max_steps={args.featurenet_steps}",
                                  "--set", f"seed={seed}"],
                                 ROOT, env, os.path.join(out, f"featurenet_s{seed}.log"))
                over = copy.deepcopy(over)
                over.setdefault("model", {})["feature_weights"] = os.path.join(fn_run, "checkpoints", "last.pt")
            y = os.path.join(out, f"fm_{tag}_s{seed}.yaml")
            fm_yaml(y, over)
            run_dir = os.path.join(out, f"fm_{tag}_s{seed}")
            if os.path.isdir(run_dir):
                shutil.rmtree(run_dir)
            wall, rss = run_measured([sys.executable, "-m", "fmdepth", "train", "--config", y, "--data", data,
                                      "--out", run_dir, "--quiet", *sets], ROOT, env,
                                     os.path.join(out, f"fm_{tag}_s{seed}.log"))
            ckpt = os.path.join(run_dir, "checkpoints", "last.pt")
            record(name, seed, wall, rss,
                   evaluate(["--checkpoint", ckpt, "--data", data, "--split-file", test_split, "--gt", gt],
                            os.path.join(out, f"fm_{tag}_s{seed}.json"), env))

    const = evaluate_constant(gt, out, env)
    print()
    print(f"held-out drive, Eigen protocol, median scaling; constant depth: Abs Rel {const:.3f}")
    head = f"{'row':<26} {'Abs Rel (mean ± std)':>22} {'ex/s':>7} {'peak GB':>8} {'vs MD2: AbsRel':>15} {'ex/s':>6} {'mem':>6}"
    print(head)
    ref = rows.get("monodepth2 train.py")

    def mean(name, key):
        return statistics.mean(r[key] for r in rows[name])

    for name, rs in rows.items():
        a = [r["abs_rel"] for r in rs]
        sd = statistics.stdev(a) if len(a) > 1 else 0.0
        line = (f"{name:<26} {statistics.mean(a):>14.3f} ± {sd:.3f} {mean(name, 'examples_per_s'):>7.2f} "
                f"{mean(name, 'peak_rss_gb'):>8.2f}")
        if ref:
            line += (f" {statistics.mean(a) / mean('monodepth2 train.py', 'abs_rel'):>15.2f}"
                     f" {mean(name, 'examples_per_s') / mean('monodepth2 train.py', 'examples_per_s'):>6.2f}"
                     f" {mean(name, 'peak_rss_gb') / mean('monodepth2 train.py', 'peak_rss_gb'):>6.2f}")
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"steps": steps, "constant_abs_rel": const, "rows": rows}, fh, indent=1)
    return 0


def evaluate_constant(gt, out, env):
    """Median-scaled constant depth on the same ground truth (the bar any learning must clear)."""
    import numpy as np

    with np.load(gt, allow_pickle=False) as z:
        key = "data" if "data" in z.files else z.files[0]
        n = len(z[key])
    pred = os.path.join(out, "constant_disps.npz")
    np.savez(pred, disps=np.ones((n, *SIZE_AND_RANGE[:2]), dtype=np.float32))
    return evaluate(["--pred", pred, "--gt", gt], os.path.join(out, "constant.json"), env)["abs_rel"]


if __name__ == "__main__":
    sys.exit(main())
