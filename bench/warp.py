"""Benchmark: the multi-scale depth-training warp of fmdepth against a Monodepth2-style reference.

One step = forward + backward of what self-supervised depth training does per batch:
for each of ``--scales`` disparity maps (full, 1/2, 1/4, 1/8 resolution), upsample the disparity
to full resolution, convert it to depth, warp both source frames into the target view, compute
the photometric error (0.85 SSIM + 0.15 L1) against the target, take the per-pixel minimum over
the two sources and average; the loss is the mean over scales. Gradients flow to the disparities
and to both poses (axis-angle + translation).

The reference is written the usual way (Monodepth2): pixel grids built for a fixed batch size,
back-projection by homogeneous 4xN matrix products, a 4x4 pose product, division, normalisation
to [-1, 1], ``grid_sample``; SSIM with reflection padding and five separate ``avg_pool2d`` calls.
Both run in the same process on the same inputs; the script prints median step times, the ratio
reference/fmdepth, peak memory of one step of each (fresh subprocess each; CPU: growth of the
process' peak RSS, CUDA: ``torch.cuda.max_memory_allocated``) and the largest absolute
difference between the two losses and all gradients.

    python bench/warp.py                        # 192x640, batch 4, CPU, 1 thread
    python bench/warp.py --threads 2 --repeats 5
    python bench/warp.py --repeats 20 --device cuda
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fmdepth.geometry import disp_to_depth, inverse_warp, pose_vec_to_matrix  # noqa: E402
from fmdepth.losses import min_reprojection, photometric_error  # noqa: E402

MIN_DEPTH, MAX_DEPTH = 0.1, 100.0


# ----------------------------------------------------------------------------- reference
class RefBackprojectDepth(torch.nn.Module):
    """Monodepth2-style: grids for one batch size and resolution, built at construction."""

    def __init__(self, batch, height, width, device, dtype=torch.float32):
        super().__init__()
        v, u = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
        ones = torch.ones(batch, 1, height * width, dtype=dtype)
        pix = torch.stack([u.reshape(-1), v.reshape(-1)], 0).unsqueeze(0).repeat(batch, 1, 1)
        self.pix_coords = torch.cat([pix, ones], 1).to(device)  # (B, 3, HW)
        self.ones = ones.to(device)  # (B, 1, HW)
        self.batch, self.height, self.width = batch, height, width

    def forward(self, depth, inv_K):
        cam_points = torch.matmul(inv_K[:, :3, :3], self.pix_coords)
        cam_points = depth.view(self.batch, 1, -1) * cam_points
        return torch.cat([cam_points, self.ones], 1)  # (B, 4, HW)


class RefProject3D(torch.nn.Module):
    def __init__(self, batch, height, width, eps=1e-7):
        super().__init__()
        self.batch, self.height, self.width, self.eps = batch, height, width, eps

    def forward(self, points, K, T):
        P = torch.matmul(K, T)[:, :3, :]
        cam_points = torch.matmul(P, points)
        pix_coords = cam_points[:, :2, :] / (cam_points[:, 2, :].unsqueeze(1) + self.eps)
        pix_coords = pix_coords.view(self.batch, 2, self.height, self.width).permute(0, 2, 3, 1)
        pix_coords = pix_coords / torch.tensor([self.width - 1, self.height - 1], dtype=pix_coords.dtype,
                                               device=pix_coords.device)
        return (pix_coords - 0.5) * 2


class RefSSIM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AvgPool2d(3, 1)
        self.pad = torch.nn.ReflectionPad2d(1)

    def forward(self, x, y):
        x, y = self.pad(x), self.pad(y)
        mu_x, mu_y = self.pool(x), self.pool(y)
        sigma_x = self.pool(x ** 2) - mu_x ** 2
        sigma_y = self.pool(y ** 2) - mu_y ** 2
        sigma_xy = self.pool(x * y) - mu_x * mu_y
        n = (2 * mu_x * mu_y + 0.01 ** 2) * (2 * sigma_xy + 0.03 ** 2)
        d = (mu_x ** 2 + mu_y ** 2 + 0.01 ** 2) * (sigma_x + sigma_y + 0.03 ** 2)
        return torch.clamp((1 - n / d) / 2, 0, 1)


class Reference:
    def __init__(self, batch, height, width, device, dtype=torch.float32):
        self.backproject = RefBackprojectDepth(batch, height, width, device, dtype)
        self.project = RefProject3D(batch, height, width)
        self.ssim = RefSSIM()
        self.size = (height, width)

    def __call__(self, disps, target, sources, poses, K4, inv_K4):
        T = [pose_vec_to_matrix(a, t) for a, t in poses]  # same pose construction on both sides
        losses = []
        for disp in disps:
            disp = F.interpolate(disp, self.size, mode="bilinear", align_corners=False)
            _, depth = disp_to_depth(disp, MIN_DEPTH, MAX_DEPTH)
            errors = []
            for src, T_i in zip(sources, T):
                cam_points = self.backproject(depth, inv_K4)
                pix_coords = self.project(cam_points, K4, T_i)
                pred = F.grid_sample(src, pix_coords, padding_mode="border", align_corners=True)
                l1 = (pred - target).abs().mean(1, True)
                errors.append(0.85 * self.ssim(pred, target).mean(1, True) + 0.15 * l1)
            losses.append(torch.cat(errors, 1).min(dim=1)[0].mean())
        return sum(losses) / len(losses)


# ----------------------------------------------------------------------------- fmdepth
def fmdepth_loss(disps, target, sources, poses, K, size):
    T = [pose_vec_to_matrix(a, t) for a, t in poses]
    losses = []
    for disp in disps:
        disp = F.interpolate(disp, size, mode="bilinear", align_corners=False)
        _, depth = disp_to_depth(disp, MIN_DEPTH, MAX_DEPTH)
        errors = [photometric_error(inverse_warp(src, depth, T_i, K, padding_mode="border")[0], target)
                  for src, T_i in zip(sources, T)]
        losses.append(min_reprojection(torch.cat(errors, 1))[0].mean())
    return sum(losses) / len(losses)


# ----------------------------------------------------------------------------- harness
def make_inputs(args, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    B, H, W = args.batch, args.height, args.width
    # a smooth target image and sources that are roughly shifted copies (realistic SSIM statistics)
    base = F.interpolate(torch.rand(B, 3, H // 8, W // 8, generator=g), (H, W), mode="bilinear", align_corners=False)
    base = (base + 0.05 * torch.rand(B, 3, H, W, generator=g)).clamp(0, 1)
    target = base
    sources = [torch.roll(base, shifts=s, dims=3) for s in (2, -3)]
    # disparities for depths of ~2.4 m .. 30 m (KITTI-like), so no point ends up behind a camera
    disps = [(0.002 + 0.04 * torch.rand(B, 1, H // 2 ** s, W // 2 ** s, generator=g)) for s in range(args.scales)]
    poses = [(0.01 * torch.randn(B, 3, generator=g), torch.tensor([[0.0, 0.0, 0.3 * sign]] * B)
              + 0.05 * torch.randn(B, 3, generator=g)) for sign in (1, -1)]
    K = torch.tensor([[0.58 * W, 0, 0.5 * W], [0, 1.92 * H, 0.5 * H], [0, 0, 1]]).expand(B, 3, 3).contiguous()
    K4 = torch.eye(4).repeat(B, 1, 1)
    K4[:, :3, :3] = K
    to = dict(device=device, dtype=dtype)
    return dict(disps=[d.to(**to) for d in disps], target=target.to(**to), sources=[s.to(**to) for s in sources],
                poses=[(a.to(**to), t.to(**to)) for a, t in poses], K=K.to(**to), K4=K4.to(**to),
                inv_K4=torch.linalg.inv(K4.to(**to)))


def leaves(inputs):
    disps = [d.clone().requires_grad_() for d in inputs["disps"]]
    poses = [(a.clone().requires_grad_(), t.clone().requires_grad_()) for a, t in inputs["poses"]]
    return disps, poses


def step(which, inputs, ref, size):
    disps, poses = leaves(inputs)
    if which == "reference":
        loss = ref(disps, inputs["target"], inputs["sources"], poses, inputs["K4"], inputs["inv_K4"])
    else:
        loss = fmdepth_loss(disps, inputs["target"], inputs["sources"], poses, inputs["K"], size)
    loss.backward()
    grads = [d.grad for d in disps] + [p.grad for pair in poses for p in pair]
    return loss.detach(), grads


def geometry_only(which, inputs, ref, size, depths):
    """The warps alone: 2 sources x every scale's depth, forward + backward (grads to depth and pose)."""
    depths = [d.clone().requires_grad_() for d in depths]
    poses = [(a.clone().requires_grad_(), t.clone().requires_grad_()) for a, t in inputs["poses"]]
    T = [pose_vec_to_matrix(a, t) for a, t in poses]
    total = 0.0
    for depth in depths:
        for src, T_i in zip(inputs["sources"], T):
            if which == "reference":
                pix = ref.project(ref.backproject(depth, inputs["inv_K4"]), inputs["K4"], T_i)
                warped = F.grid_sample(src, pix, padding_mode="border", align_corners=True)
            else:
                warped = inverse_warp(src, depth, T_i, inputs["K"], padding_mode="border")[0]
            total = total + warped.mean()
    total.backward()


def photometric_only(which, inputs, ref, preds):
    """The photometric errors alone: one per (scale, source) against the target, forward + backward."""
    preds = [p.clone().requires_grad_() for p in preds]
    target = inputs["target"]
    total = 0.0
    for pred in preds:
        if which == "reference":
            err = 0.85 * ref.ssim(pred, target).mean(1, True) + 0.15 * (pred - target).abs().mean(1, True)
        else:
            err = photometric_error(pred, target)
        total = total + err.mean()
    total.backward()


def compare(args, device, dtype, eps_ref):
    """Run both on the same inputs; return |loss diff|, max |grad diff|, relative L2 of the gradients."""
    inputs = make_inputs(args, device, dtype)
    ref = Reference(args.batch, args.height, args.width, device, dtype)
    ref.project.eps = eps_ref
    loss_r, grads_r = step("reference", inputs, ref, (args.height, args.width))
    loss_f, grads_f = step("fmdepth", inputs, ref, (args.height, args.width))
    diff_loss = (loss_r - loss_f).abs().item()
    diff_grad = max((a - b).abs().max().item() for a, b in zip(grads_r, grads_f))
    rel = max(((a - b).norm() / a.norm().clamp(min=1e-30)).item() for a, b in zip(grads_r, grads_f))
    return diff_loss, diff_grad, rel


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def measure_memory(which, args):
    """Peak memory of one warm step in this (fresh) process, in MiB."""
    device = torch.device(args.device)
    inputs = make_inputs(args, device)
    ref = Reference(args.batch, args.height, args.width, device) if which == "reference" else None
    size = (args.height, args.width)
    step(which, inputs, ref, size)  # warm-up: lazily built grids/caches count as state, not peak
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(which, inputs, ref, size)
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    base = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM (the peak) to the current RSS
        f.write("5")
    step(which, inputs, ref, size)
    return (_rss_kib("VmHWM") - base) / 1024


def memory_in_subprocess(which, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-only", which, "--height", str(args.height),
           "--width", str(args.width), "--batch", str(args.batch), "--scales", str(args.scales),
           "--device", args.device, "--threads", str(args.threads)]
    # A fixed mmap threshold makes glibc return every freed block >= 64 KiB to the OS, so the process'
    # resident set follows the live tensors (otherwise freed heap memory is reused invisibly).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--scales", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (default 1: stable timings on a shared machine)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-only", choices=["reference", "fmdepth"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.memory_only:
        print(json.dumps({"peak_mib": measure_memory(args.memory_only, args)}))
        return 0

    device = torch.device(args.device)
    inputs = make_inputs(args, device)
    ref = Reference(args.batch, args.height, args.width, device)
    size = (args.height, args.width)
    with torch.no_grad():
        depths = [disp_to_depth(F.interpolate(d, size, mode="bilinear", align_corners=False), MIN_DEPTH, MAX_DEPTH)[1]
                  for d in inputs["disps"]]
        T = [pose_vec_to_matrix(a, t) for a, t in inputs["poses"]]
        preds = [inverse_warp(src, depth, T_i, inputs["K"], padding_mode="border")[0]
                 for depth in depths for src, T_i in zip(inputs["sources"], T)]

    cases = {
        "full step": {w: (lambda w=w: step(w, inputs, ref, size)) for w in ("reference", "fmdepth")},
        "  warps only (geometry + grid_sample)": {
            w: (lambda w=w: geometry_only(w, inputs, ref, size, depths)) for w in ("reference", "fmdepth")},
        "  photometric errors only (SSIM + L1)": {
            w: (lambda w=w: photometric_only(w, inputs, ref, preds)) for w in ("reference", "fmdepth")},
    }
    for fns in cases.values():  # warm-up (grid caches, allocator)
        for fn in fns.values():
            fn()
    times = {name: {"reference": [], "fmdepth": []} for name in cases}
    for r in range(args.repeats):
        for name, fns in cases.items():
            order = ("reference", "fmdepth") if r % 2 == 0 else ("fmdepth", "reference")  # interleaved
            for which in order:
                times[name][which].append(timed(fns[which], device))

    print(f"warp benchmark: {args.scales}-scale warp of 2 sources + photometric error + per-pixel min, "
          f"forward+backward, B={args.batch} {args.height}x{args.width}, device={args.device}, "
          f"threads={args.threads}, repeats={args.repeats}")
    print(f"  {'':40s} {'reference':>20s} {'fmdepth':>20s}   ratio ref/fmdepth (median, min)")
    for name, t in times.items():
        mr, mf = statistics.median(t["reference"]), statistics.median(t["fmdepth"])
        nr, nf = min(t["reference"]), min(t["fmdepth"])
        print(f"  {name:40s} {mr * 1e3:9.1f} ms (min {nr * 1e3:6.1f}) {mf * 1e3:9.1f} ms (min {nf * 1e3:6.1f})"
              f"   {mr / mf:.2f}x, {nr / nf:.2f}x")
    if not args.no_memory:
        mem_r = memory_in_subprocess("reference", args)
        mem_f = memory_in_subprocess("fmdepth", args)
        kind = "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS growth"
        print(f"  peak memory of one full step ({kind}): reference {mem_r:.1f} MiB, fmdepth {mem_f:.1f} MiB "
              f"(ratio {mem_r / max(mem_f, 1e-9):.2f})")
    d_loss, d_grad, rel = compare(args, device, torch.float32, eps_ref=1e-7)
    print(f"  float32 outputs: |loss difference| {d_loss:.2e}; max |gradient difference| {d_grad:.2e}; "
          f"relative L2 gradient difference {rel:.2e}")
    small = argparse.Namespace(**{**vars(args), "height": max(args.height // 4, 16), "width": max(args.width // 4, 16)})
    d_loss, d_grad, rel = compare(small, device, torch.float64, eps_ref=0.0)
    print(f"  float64 at {small.height}x{small.width}, reference without its +1e-7 in the division: "
          f"|loss difference| {d_loss:.2e}; max |gradient difference| {d_grad:.2e} (same maths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
