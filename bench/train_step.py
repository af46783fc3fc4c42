"""Benchmark: cost of the feature-metric branch in one full training step of the depth system.

One step = ``system.training_step`` (forward + losses) + backward + ``Adam.step`` on a batch of
frames [0, -1, 1] at 192x640, batch 2, with the published networks (ResNet50 DepthNet, ResNet18
PoseNet, ResNet50 FeatureNet). Configurations, built and timed in the same process on the same
batch, interleaved round by round so that machine-load drift hits all of them alike:

* ``photometric``: photometric-only baseline (``loss.feature_metric=0``; FeatureNet not built);
* ``feature_metric``: stage 2 (``loss.mode=depth``): frozen FeatureNet run under no_grad, only up
  to the feature level the loss uses;
* ``joint`` (for information): FeatureNet trained together with its own objective.

Printed: median and minimum step time (the minimum is the less load-sensitive figure on a shared
machine), peak memory of one step measured in a fresh subprocess per configuration (CUDA:
``torch.cuda.max_memory_allocated``; CPU: peak growth of the resident set over the step, sampled
every 2 ms, Adam state included) and the ratios to the photometric-only step. Target: the
feature-metric branch (stage 2) adds <= 35% time.

    python bench/train_step.py                      # CPU, 192x640, batch 2, 3 timed rounds
    python bench/train_step.py --device cuda --rounds 10
    python bench/train_step.py --height 96 --width 320 --layers 18   # quick look on a small CPU
    python bench/train_step.py --threads 1   # on a shared, oversubscribed CPU (OpenMP spinning)
"""
import argparse
import os
import statistics
import sys
import threading
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fmdepth.config import LossConfig, ModelConfig  # noqa: E402
from fmdepth.data import DepthBatch  # noqa: E402
from fmdepth.geometry import intrinsics_pyramid, invert_intrinsics  # noqa: E402
from fmdepth.models import DepthSystem  # noqa: E402

TARGET = 1.35


def make_batch(batch: int, height: int, width: int, device, seed: int = 0) -> DepthBatch:
    """Random frames [0, -1, 1] with KITTI-like intrinsics (a valid DepthBatch)."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[0.58 * width, 0, 0.5 * width - 0.5], [0, 1.92 * height, 0.5 * height - 0.5],
                      [0, 0, 1.0]]).expand(batch, 3, 3).clone()
    Ks = intrinsics_pyramid(K, 4)
    full = {f: torch.rand(batch, 3, height, width, generator=g) for f in (0, -1, 1)}
    frames = {f: [x] + [F.interpolate(x, scale_factor=0.5 ** s, mode="area") for s in range(1, 4)]
              for f, x in full.items()}
    return DepthBatch(frames=frames, net_frames=dict(full), K=Ks, K_inv=[invert_intrinsics(k) for k in Ks],
                      stereo_T=None, depth_gt=None, label=None, index=torch.arange(batch)).to(device)


class PeakRSS:
    """Peak resident-memory growth (bytes) of this process while the context is open (Linux)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.growth = self.peak - self.start


def build(name: str, layers: int, feature_layers: int, device) -> DepthSystem:
    model = ModelConfig(depth_layers=layers, pose_layers=18, feature_layers=feature_layers)
    loss = {"photometric": LossConfig(feature_metric=0.0),
            "feature_metric": LossConfig(mode="depth"),
            "joint": LossConfig(mode="joint")}[name]
    return DepthSystem(model, loss, frame_ids=[0, -1, 1]).to(device).train()


def step(system, optimizer, batch) -> float:
    optimizer.zero_grad(set_to_none=True)
    out = system.training_step(batch, step=0)
    out.loss.backward()
    optimizer.step()
    return float(out.loss.detach())


def measure(system, optimizer, batch, device) -> tuple:
    """(seconds, peak bytes) of one step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        step(system, optimizer, batch)
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        return seconds, torch.cuda.max_memory_allocated(device) - base
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        step(system, optimizer, batch)
        seconds = time.perf_counter() - t0
    return seconds, mem.growth


def memory_child(args) -> None:
    """Run in a fresh process: one step of ``args.memory_child``; print its peak memory (bytes)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = make_batch(args.batch, args.height, args.width, device)
    system = build(args.memory_child, args.layers, args.layers, device)
    optimizer = torch.optim.Adam(system.parameter_groups(), lr=1e-4)
    if device.type == "cuda":
        _, peak = measure(system, optimizer, batch, device)
    else:
        with PeakRSS() as mem:
            step(system, optimizer, batch)
        peak = mem.growth
    print(f"PEAK {peak}", flush=True)


def peak_in_subprocess(args, name: str) -> float:
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, "--device", args.device,
           "--height", str(args.height), "--width", str(args.width), "--batch", str(args.batch),
           "--layers", str(args.layers), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float([line for line in out.splitlines() if line.startswith("PEAK ")][-1].split()[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--layers", type=int, default=50, help="DepthNet and FeatureNet ResNet depth (50)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (each runs every configuration once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--no-joint", action="store_true", help="skip the joint configuration")
    parser.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return 0
    device = torch.device(args.device)
    torch.manual_seed(0)
    names = ["photometric", "feature_metric"] + ([] if args.no_joint else ["joint"])
    batch = make_batch(args.batch, args.height, args.width, device)
    systems = {n: build(n, args.layers, args.layers, device) for n in names}
    optims = {n: torch.optim.Adam([g for g in s.parameter_groups()], lr=1e-4) for n, s in systems.items()}
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev_name}; input {args.batch}x3x{args.height}x{args.width}, frames [0, -1, 1], "
          f"DepthNet/FeatureNet ResNet{args.layers}, PoseNet ResNet18; {args.warmup} warm-up + {args.rounds} timed rounds",
          flush=True)
    times = {n: [] for n in names}
    for r in range(args.warmup + args.rounds):
        last = {}
        for n in names:
            seconds, _ = measure(systems[n], optims[n], batch, device)
            last[n] = seconds
            if r >= args.warmup:
                times[n].append(seconds)
        kind = "warm-up" if r < args.warmup else "timed"
        print(f"  round {r + 1}/{args.warmup + args.rounds} ({kind}): " +
              ", ".join(f"{n} {last[n]:.2f}s" for n in names), flush=True)
    print("peak memory: one step per configuration in a fresh subprocess ...", flush=True)
    peaks = {n: peak_in_subprocess(args, n) for n in names}
    mem_what = "peak allocated" if device.type == "cuda" else "peak RSS growth"
    ref_t = statistics.median(times["photometric"])
    ref_min = min(times["photometric"])
    ref_m = peaks["photometric"]
    print(f"\n{'configuration':<34}{'median [s]':>11}{'ratio':>7}{'min [s]':>9}{'ratio':>7}"
          f"{mem_what + ' [MiB]':>26}{'ratio':>7}")
    labels = {"photometric": "photometric-only",
              "feature_metric": "feature-metric (stage 2, frozen)",
              "joint": "joint (FeatureNet trained)"}
    for n in names:
        t, tmin, m = statistics.median(times[n]), min(times[n]), peaks[n]
        print(f"{labels[n]:<34}{t:>11.3f}{t / ref_t:>7.2f}{tmin:>9.3f}{tmin / ref_min:>7.2f}"
              f"{m / 2 ** 20:>26.1f}{(m / ref_m if ref_m > 0 else float('nan')):>7.2f}")
    ratio = statistics.median(times["feature_metric"]) / ref_t
    ratio_min = min(times["feature_metric"]) / ref_min
    verdict = "MET" if max(ratio, ratio_min) <= TARGET else "NOT MET"
    print(f"\nfeature-metric branch adds {100 * (ratio - 1):+.1f}% (median) / {100 * (ratio_min - 1):+.1f}% (min) "
          f"step time over photometric-only (target <= +{100 * (TARGET - 1):.0f}%): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
