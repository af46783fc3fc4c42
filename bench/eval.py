#!/usr/bin/env python
"""Benchmark: depth evaluation throughput and where the time goes.

Renders a few synthetic frames at KITTI size (375x1242) in the KITTI raw layout, then runs the
`fmdepth evaluate depth` pipeline on them with a randomly initialised ResNet50 DepthNet at
640x192, timing separately

* network  -- DepthNet forward + disparity scaling (the reference),
* I/O      -- reading the PNG, resizing to 640x192, to-tensor (the dataset's work), reading GT,
* metrics  -- resizing the prediction to the GT size, Garg crop, median scaling, the 7 metrics.

It prints frames/s and the ratio (I/O + metrics) / network; the target is <= 0.10.
The ratio is measured in one run on one machine, so it does not depend on how fast the machine is
in absolute terms (a GPU makes the network faster and the ratio larger: run it there too).

usage:
  python bench/eval.py                      # 12 frames, batch 4, CPU (or CUDA when available)
  python bench/eval.py --frames 24 --batch-size 8 --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12, help="test frames to render and evaluate")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--layers", type=int, default=50, help="DepthNet ResNet depth (default 50)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    parser.add_argument("--data", help="reuse an already rendered synthetic dataset")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available())
                          else ("cpu" if args.device == "auto" else args.device))

    from fmdepth.geometry import disp_to_depth
    from fmdepth.metrics.depth import DepthEvaluator, format_table
    from fmdepth.networks import DepthNet

    tmp = None
    root = args.data
    if root is None:
        from fmdepth.data.synthetic import render_dataset

        tmp = tempfile.TemporaryDirectory(prefix="fmdepth_bench_eval_")
        root = os.path.join(tmp.name, "synth")
        t0 = time.perf_counter()
        # 2 drives: the last one is the test drive; render only what the benchmark evaluates
        render_dataset(root, drives=2, frames=max(3, args.frames), seed=0, height=375, width=1242,
                       velodyne=False, progress=False)
        print(f"rendered 2 drives x {max(3, args.frames)} frames at 375x1242 in {time.perf_counter() - t0:.1f} s")
    split = os.path.join(root, "splits", "test_files.txt")
    entries = [line.split() for line in open(split, encoding="utf-8") if line.strip()][: args.frames]
    items = []
    for folder, frame, side in entries:
        cam = "image_02" if side == "l" else "image_03"
        img = os.path.join(root, folder, cam, "data", f"{int(frame):010d}.png")
        gt = os.path.join(root, "gt", folder, "depth" if side == "l" else "depth_03", f"{int(frame):010d}.npy")
        items.append((img, gt))
    if not items:
        print(f"no test frames found in {split}", file=sys.stderr)
        return 2

    net = DepthNet(num_layers=args.layers, pretrained="none").to(device).eval()
    height, width, min_depth, max_depth = 192, 640, 0.1, 100.0
    from PIL import Image

    def load_batch(batch):
        """The dataset's work: PNG -> resize to network size -> tensor; plus the GT map."""
        images, gts = [], []
        for img_path, gt_path in batch:
            with Image.open(img_path) as im:
                im = im.convert("RGB").resize((width, height), Image.LANCZOS)
            images.append(np.asarray(im, dtype=np.float32) / 255.0)
            gts.append(np.load(gt_path, allow_pickle=False))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return x, gts

    # warm-up (allocator, cudnn autotune, first-call overheads) outside the timing
    with torch.no_grad():
        x, _ = load_batch(items[: args.batch_size])
        net(x.to(device))
        _sync(device)

    evaluator = DepthEvaluator(protocol="eigen", source="bench")
    t_io = t_net = t_metrics = 0.0
    batches = [items[i:i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    for batch in batches:
        t0 = time.perf_counter()
        x, gts = load_batch(batch)
        t1 = time.perf_counter()
        with torch.no_grad():
            disp = net(x.to(device, non_blocking=True))[0]
            scaled, _ = disp_to_depth(disp, min_depth, max_depth)
            scaled = scaled[:, 0].float().cpu().numpy()
        _sync(device)
        t2 = time.perf_counter()
        for b, gt in enumerate(gts):
            evaluator.add(gt, scaled[b])
        t3 = time.perf_counter()
        t_io += t1 - t0
        t_net += t2 - t1
        t_metrics += t3 - t2
    result = evaluator.result()
    n = len(items)
    total = t_io + t_net + t_metrics
    ratio = (t_io + t_metrics) / t_net
    print(f"device {device}, DepthNet ResNet{args.layers} at {width}x{height}, {n} frames, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  network          {t_net / n * 1000:8.1f} ms/frame")
    print(f"  I/O (load+resize){t_io / n * 1000:8.1f} ms/frame")
    print(f"  metrics          {t_metrics / n * 1000:8.1f} ms/frame  (resize to 375x1242, crop, median scaling, 7 metrics)")
    print(f"  evaluation       {n / total:8.2f} frames/s end to end (sequential: I/O + network + metrics)")
    print(f"  (I/O + metrics) / network = {ratio:.3f}   target <= 0.10: {'PASS' if ratio <= 0.10 else 'FAIL'}")
    print("  (random weights: the metrics below only show the pipeline ran)")
    print(format_table(result.metrics))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
