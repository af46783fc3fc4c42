"""Benchmark: can the KITTI raw loader keep up with training?

Measures, in one run on one machine:

* loader throughput (samples/s) of ``KittiRawDataset`` at 192x640, frames [0, -1, 1], 4 scales,
  training augmentation on (flip + colour jitter), batches of ``--batch`` through a
  ``DataLoader`` with 0, 1 and 2 workers, reading a synthetic dataset rendered at KITTI size
  (375x1242 PNGs, rendered once into ``--data`` if that folder does not exist yet);
* the training rate (samples/s) of the 640x192 ResNet50 configuration
  (``configs/kitti_featdepth_r50_640x192.yaml``: ``fmdepth.models.depth`` system, ResNet50
  DepthNet + ResNet18 PoseNet + ResNet50 FeatureNet, random init, ``loss.mode=joint``):
  ``training_step`` + backward + Adam step on batches from the same loader;

and prints loader / training ratios. Target: >= 3x with the worker count used for training.

    python bench/data.py                               # CPU, everything at the published sizes
    python bench/data.py --device cuda --batch 12
    python bench/data.py --data /tmp/fmdepth_bench_kitti --samples 48 --steps 2
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from fmdepth.data import KittiRawDataset, collate_depth  # noqa: E402
from fmdepth.data.synthetic import render_dataset  # noqa: E402

TARGET = 3.0
HEIGHT, WIDTH = 192, 640


def loader_rate(dataset, batch: int, workers: int, samples: int) -> float:
    """Samples per second delivered by a DataLoader (after the first batch: worker start-up excluded)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_depth,
                        persistent_workers=workers > 0, drop_last=True)
    it = iter(_forever(loader))
    next(it)  # warm-up (worker start, first decode)
    n = 0
    t0 = time.perf_counter()
    while n < samples:
        n += next(it).batch_size
    return n / (time.perf_counter() - t0)


def _forever(loader):
    while True:
        yield from loader


def training_rate(dataset, batch: int, steps: int, device: str, config: str) -> float:
    """Samples per second of training steps of the 640x192 ResNet50 configuration."""
    from fmdepth.config import load_config
    from fmdepth.models.depth import build_depth_system

    cfg = load_config(config, ["model.pretrained=none", "loss.mode=joint", f"data.height={HEIGHT}",
                               f"data.width={WIDTH}"])
    system = build_depth_system(cfg).to(device).train()
    optim = torch.optim.Adam([p for p in system.parameters() if p.requires_grad], lr=1e-4)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0, collate_fn=collate_depth,
                        drop_last=True)
    batches = [b.to(device) for b, _ in zip(_forever(loader), range(2))]
    times = []
    for step in range(steps + 1):  # first step = warm-up
        b = batches[step % len(batches)]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = system.training_step(b, step)
        optim.zero_grad(set_to_none=True)
        out.loss.backward()
        optim.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "fmdepth_bench_kitti"),
                   help="synthetic KITTI-size dataset (rendered here if missing)")
    p.add_argument("--batch", type=int, default=12, help="batch size (loader and training), default 12")
    p.add_argument("--samples", type=int, default=48, help="samples timed per loader setting")
    p.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "kitti_featdepth_r50_640x192.yaml"))
    args = p.parse_args(argv)

    if not os.path.isdir(args.data):
        print(f"rendering a KITTI-size synthetic dataset into {args.data} (once) ...")
        render_dataset(args.data, drives=2, frames=8, seed=0, height=375, width=1242, velodyne=False)
    split = os.path.join(args.data, "splits", "train_files.txt")
    dataset = KittiRawDataset(args.data, split, HEIGHT, WIDTH, frame_ids=(0, -1, 1), num_scales=4, is_train=True)
    print(f"dataset: {len(dataset)} training entries at 375x1242 -> {WIDTH}x{HEIGHT}, frames [0, -1, 1], "
          f"4 scales, flip + jitter; batch {args.batch}; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs")
    rates = {}
    for w in args.workers:
        rates[w] = loader_rate(dataset, args.batch, w, args.samples)
        print(f"  loader, {w} worker(s): {rates[w]:7.2f} samples/s")
    train = training_rate(dataset, args.batch, args.steps, args.device, args.config)
    print(f"  training (640x192 ResNet50 FeatDepth system, joint mode, {args.device}): {train:7.2f} samples/s "
          f"({args.batch / train:.2f} s/step)")
    print("ratio loader / training:")
    for w, r in rates.items():
        ok = "OK" if r >= TARGET * train else "below target"
        print(f"  {w} worker(s): {r / train:6.1f}x  (target >= {TARGET:g}x: {ok})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
