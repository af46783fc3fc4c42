"""Imported FeatDepth weights: fmdepth's DepthNet / PoseNet / FeatureNet vs FeatDepth's own modules.

Needs a FeatDepth checkout (``--featdepth-repo`` or ``FEATDEPTH_REPO``; its ``mono/`` package
imports without mmcv). No download: FeatDepth's own ``mono_fm`` (depth ResNet50, pose ResNet18)
and ``autoencoder`` (ResNet50) modules are built by its code with seeded random parameters and
batch-norm statistics (the depth model's ``extractor`` set to the auto-encoder's encoder, as in
its two-stage training), saved as mmcv-style ``{"state_dict": ..., "meta": ...}`` files, imported
with ``fmdepth import-weights --from featdepth FILE --autoencoder AE``, and run on one image
prepared as FeatDepth's ``scripts/infer.py`` does (bilinear resize, /255).

FeatDepth's decoder gives its finest disparity at half resolution; fmdepth's DepthNet returns it
upsampled x2 (bilinear), so ``disp`` is compared with that upsampling of FeatDepth's output, and
the native maps resized straight to the original size are reported for information.

    FEATDEPTH_REPO=/tmp/featdepth python bench/featdepth_equality.py [--height 320 --width 1024]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from md2_equality import _randomise, default_image  # noqa: E402  (bench helpers)


def build_featdepth(repo: str, height: int, width: int, seed: int = 0):
    """FeatDepth's mono_fm and autoencoder modules, randomised, eval mode."""
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from mono.model.mono_autoencoder.net import autoencoder
    from mono.model.mono_fm.net import mono_fm

    opt = SimpleNamespace(depth_num_layers=50, pose_num_layers=18, depth_pretrained_path=None,
                          pose_pretrained_path=None, extractor_pretrained_path=None, imgs_per_gpu=1,
                          height=height, width=width)
    model = mono_fm(opt)
    ae = autoencoder(SimpleNamespace(depth_num_layers=50, depth_pretrained_path=None))
    for i, part in enumerate((model.DepthEncoder, model.DepthDecoder, model.PoseEncoder, model.PoseDecoder,
                              ae.Encoder, ae.Decoder)):
        _randomise(part, seed + i)
    model.extractor.load_state_dict(ae.Encoder.state_dict())
    return model.eval(), ae.eval()


def compare(repo: str, image_path: str, workdir: str, height: int = 320, width: int = 1024) -> dict:
    from fmdepth.cli import main as fmdepth_main
    from fmdepth.core.checkpoint import load_checkpoint
    from fmdepth.inference import DepthPredictor, PosePredictor, load_image, to_tensor
    from fmdepth.networks import FeatureNet

    model, ae = build_featdepth(repo, height, width)
    depth_file = os.path.join(workdir, "fm_depth.pth")
    ae_file = os.path.join(workdir, "autoencoder.pth")
    torch.save({"meta": {"epoch": 40}, "state_dict": model.state_dict()}, depth_file)
    torch.save({"meta": {"epoch": 40}, "state_dict": ae.state_dict()}, ae_file)
    ckpt = os.path.join(workdir, "featdepth.pt")
    rc = fmdepth_main(["import-weights", "--from", "featdepth", depth_file, "--autoencoder", ae_file,
                       "--height", str(height), "--width", str(width), "--out", ckpt, "--force"])
    if rc != 0:
        raise RuntimeError("import-weights failed")
    original = to_tensor([load_image(image_path)])  # (1, 3, H0, W0) in [0, 1]
    # scripts/infer.py: float image, bilinear resize (align_corners=False), / 255
    x = F.interpolate(original * 255.0, [height, width], mode="bilinear", align_corners=False) / 255.0
    with torch.no_grad():
        theirs = model.DepthDecoder(model.DepthEncoder(x))
        native = [theirs[("disp", 0, s)] for s in range(4)]  # 1/2 .. 1/16 of the input
        predictor = DepthPredictor.from_checkpoint(ckpt, device="cpu")
        ours = predictor.net(x)
        disp_diff = max(float((o - F.interpolate(n, scale_factor=2, mode="bilinear", align_corners=False))
                              .abs().max()) for o, n in zip(ours, native))
        h0, w0 = original.shape[-2:]
        direct = F.interpolate(native[0], (h0, w0), mode="bilinear", align_corners=False)
        via_full = F.interpolate(ours[0], (h0, w0), mode="bilinear", align_corners=False)
        frames = torch.cat([x, torch.flip(x, dims=[3])], 1)
        aa, tt = model.PoseDecoder(model.PoseEncoder(frames))
        faa, ftt = PosePredictor.from_checkpoint(ckpt, device="cpu").net(frames)
        ckpt_data = load_checkpoint(ckpt)
        fnet = FeatureNet(50, input_norm="none")
        fnet.load_state_dict(ckpt_data["models"]["feature"])
        fnet.eval()
        feats, recons = fnet(x)
        their_feats = ae.Encoder(x)
        their_recons = ae.Decoder(their_feats, 0)
        feat_diff = max(float((a - b).abs().max()) for a, b in zip(feats, their_feats))
        recon_diff = max(float((recons[s] - their_recons[("disp", 0, s)]).abs().max()) for s in range(4))
    return {"size": (height, width), "disp_max_abs_diff": disp_diff,
            "disp_range": (float(native[0].min()), float(native[0].max())),
            "native_vs_upsampled_at_original_size": float((direct - via_full).abs().max()),
            "pose_max_abs_diff": max(float((faa - aa[:, 0, 0]).abs().max()), float((ftt - tt[:, 0, 0]).abs().max())),
            "feature_max_abs_diff": feat_diff, "reconstruction_max_abs_diff": recon_diff}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featdepth-repo", default=os.environ.get("FEATDEPTH_REPO", ""))
    parser.add_argument("--image", default=None)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.featdepth_repo or not os.path.isdir(os.path.join(args.featdepth_repo, "mono")):
        print("set FEATDEPTH_REPO (or --featdepth-repo) to a FeatDepth checkout", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        r = compare(args.featdepth_repo, args.image or default_image(work), work, args.height, args.width)
    print(f"FeatDepth ResNet50 depth / ResNet18 pose / ResNet50 auto-encoder at {args.height}x{args.width}: "
          f"disparity (4 scales) max |diff| {r['disp_max_abs_diff']:.2e} (values {r['disp_range'][0]:.3f}.."
          f"{r['disp_range'][1]:.3f}), pose {r['pose_max_abs_diff']:.2e}, FeatureNet features "
          f"{r['feature_max_abs_diff']:.2e}, reconstructions {r['reconstruction_max_abs_diff']:.2e}; "
          f"native half-resolution map resized straight to the image vs via fmdepth's x2: "
          f"{r['native_vs_upsampled_at_original_size']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
