"""Imported Monodepth2 weights: fmdepth's disparity vs Monodepth2's own test_simple.py, same run.

Needs a Monodepth2 checkout (``--md2-repo`` or ``MD2_REPO``) with two compat edits for a current
environment: ``networks/resnet_encoder.py`` calls ``resnets[num_layers](weights=None)`` instead of
``(pretrained)`` (torchvision >= 0.13), and ``test_simple.py`` sets ``STEREO_SCALE_FACTOR = 5.4``
instead of importing it from ``evaluate_depth`` (which needs OpenCV). No download: the weights are Monodepth2's own networks, built by its code,
with seeded random parameters and batch-norm statistics, saved in its model-folder format
(``encoder.pth`` with height/width/use_stereo, ``depth.pth``, ``pose_encoder.pth``, ``pose.pth``).

For each encoder depth:
1. ``fmdepth import-weights --from monodepth2`` the folder;
2. Monodepth2: ResNet18 runs ``test_simple.py --model_name mono_640x192 --no_cuda`` in a
   subprocess (its ``_disp.npy`` is the scaled disparity at 640x192); ResNet50, which
   test_simple.py cannot load, runs the same steps in process with Monodepth2's networks (PIL
   LANCZOS resize, ``ToTensor``, its encoder's ``(x - 0.45) / 0.225``, ``disp_to_depth(disp, 0.1, 100)``);
3. fmdepth: ``DepthPredictor`` on the same resized image, ``predict_scaled_disp``; plus pose
   (Monodepth2's ``axisangle[:, 0]``, ``translation[:, 0]`` vs fmdepth's PoseNet);
4. prints max |difference| (target <= 1e-4), and, for information, how far fmdepth's own
   resize (bilinear with antialiasing, what ``fmdepth predict`` does) moves the result.

    MD2_REPO=/tmp/md2 python bench/md2_equality.py [--image photo.png] [--layers 18 50]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HEIGHT, WIDTH = 192, 640


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Seeded random weights and batch-norm statistics (so that every tensor matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / t[0].numel()) ** 0.5)
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g) + (1.0 if name.endswith("weight") else 0.0))


def _md2_modules(md2_repo: str):
    if md2_repo not in sys.path:
        sys.path.insert(0, md2_repo)
    import networks  # Monodepth2's package
    from layers import disp_to_depth

    return networks, disp_to_depth


def write_md2_model(md2_repo: str, folder: str, layers: int, seed: int = 0):
    """Build Monodepth2's networks with its own code, randomise, save in its folder format."""
    networks, _ = _md2_modules(md2_repo)
    enc = networks.ResnetEncoder(layers, False)
    dec = networks.DepthDecoder(num_ch_enc=enc.num_ch_enc, scales=range(4))
    penc = networks.ResnetEncoder(18, False, num_input_images=2)
    pdec = networks.PoseDecoder(penc.num_ch_enc, num_input_features=1, num_frames_to_predict_for=2)
    for i, m in enumerate((enc, dec, penc, pdec)):
        _randomise(m, seed + i)
        m.eval()
    os.makedirs(folder, exist_ok=True)
    torch.save({**enc.state_dict(), "height": HEIGHT, "width": WIDTH, "use_stereo": False},
               os.path.join(folder, "encoder.pth"))
    torch.save(dec.state_dict(), os.path.join(folder, "depth.pth"))
    torch.save(penc.state_dict(), os.path.join(folder, "pose_encoder.pth"))
    torch.save(pdec.state_dict(), os.path.join(folder, "pose.pth"))
    return enc, dec, penc, pdec


def md2_resized_input(image_path: str) -> torch.Tensor:
    """test_simple.py's preprocessing: PIL LANCZOS to the feed size, ToTensor -> (1, 3, 192, 640)."""
    from PIL import Image
    from torchvision import transforms

    img = Image.open(image_path).convert("RGB").resize((WIDTH, HEIGHT), Image.LANCZOS)
    return transforms.ToTensor()(img).unsqueeze(0)


def compare(md2_repo: str, layers: int, image_path: str, workdir: str) -> dict:
    """Max |fmdepth - Monodepth2| for disparity and pose on one image (see the module doc)."""
    from fmdepth.cli import main as fmdepth_main
    from fmdepth.inference import DepthPredictor, PosePredictor

    _, disp_to_depth = _md2_modules(md2_repo)
    name = "mono_640x192" if layers == 18 else f"mono_resnet{layers}_640x192"
    folder = os.path.join(workdir, "models", name)
    enc, dec, penc, pdec = write_md2_model(md2_repo, folder, layers, seed=10 * layers)
    ckpt = os.path.join(workdir, f"{name}.pt")
    rc = fmdepth_main(["import-weights", "--from", "monodepth2", folder, "--out", ckpt, "--force"])
    if rc != 0:
        raise RuntimeError(f"import-weights failed for {folder}")
    x = md2_resized_input(image_path)
    with torch.no_grad():
        if layers == 18:  # Monodepth2's own script, its own process
            img = os.path.join(workdir, "input.png")
            if not os.path.exists(img):
                from PIL import Image

                Image.open(image_path).convert("RGB").save(img)
            env = dict(os.environ, OMP_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, os.path.join(md2_repo, "test_simple.py"), "--image_path", img,
                                   "--model_name", name, "--no_cuda"], cwd=workdir, env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"test_simple.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            md2_scaled = torch.from_numpy(np.load(os.path.join(workdir, "input_disp.npy")))
            how = "test_simple.py (subprocess)"
        else:  # test_simple.py builds ResNet18 only: the same steps with Monodepth2's networks
            md2_scaled, _ = disp_to_depth(dec(enc(x))[("disp", 0)], 0.1, 100)
            how = "Monodepth2 networks, test_simple.py steps"
        md2_disp_inproc = dec(enc(x))[("disp", 0)]
        predictor = DepthPredictor.from_checkpoint(ckpt, device="cpu")
        ours = predictor.predict_scaled_disp(x)
        ours_sigmoid = predictor.net(x)[0]
        # fmdepth's own resize of the original image (what `fmdepth predict` does)
        from fmdepth.inference import load_image, to_tensor

        original = to_tensor([load_image(image_path)])
        ours_own_resize = predictor.predict_scaled_disp(original)
        # pose on (resized image, flipped resized image)
        frames = torch.cat([x, torch.flip(x, dims=[3])], 1)
        aa, tt = pdec([penc(frames)])
        pose = PosePredictor.from_checkpoint(ckpt, device="cpu")
        faa, ftt = pose.net(frames)
    return {
        "layers": layers, "reference": how, "shape": tuple(ours.shape),
        "scaled_disp_max_abs_diff": float((ours - md2_scaled).abs().max()),
        "sigmoid_disp_max_abs_diff": float((ours_sigmoid - md2_disp_inproc).abs().max()),
        "scaled_disp_range": (float(md2_scaled.min()), float(md2_scaled.max())),
        "own_resize_max_abs_diff": float((ours_own_resize - md2_scaled).abs().max()),
        "pose_max_abs_diff": max(float((faa - aa[:, 0, 0]).abs().max()), float((ftt - tt[:, 0, 0]).abs().max())),
    }


def default_image(workdir: str) -> str:
    """A KITTI-sized (1242x375) crop of scikit-image's 'coffee' photograph."""
    from PIL import Image
    from skimage import data

    path = os.path.join(workdir, "photo.png")
    img = Image.fromarray(data.coffee()).resize((1242, 933), Image.BICUBIC).crop((0, 280, 1242, 655))
    img.save(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--md2-repo", default=os.environ.get("MD2_REPO", ""), help="Monodepth2 checkout (MD2_REPO)")
    parser.add_argument("--image", default=None, help="test image (default: a 1242x375 photo from scikit-image)")
    parser.add_argument("--layers", type=int, nargs="+", default=[18, 50])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.md2_repo or not os.path.isfile(os.path.join(args.md2_repo, "test_simple.py")):
        print("set MD2_REPO (or --md2-repo) to a Monodepth2 checkout", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        image = args.image or default_image(work)
        for layers in args.layers:
            r = compare(args.md2_repo, layers, image, work)
            print(f"ResNet{layers} vs {r['reference']}: scaled disparity {r['shape']} max |diff| "
                  f"{r['scaled_disp_max_abs_diff']:.2e} (values {r['scaled_disp_range'][0]:.3f}.."
                  f"{r['scaled_disp_range'][1]:.3f}), sigmoid disparity {r['sigmoid_disp_max_abs_diff']:.2e}, "
                  f"pose {r['pose_max_abs_diff']:.2e}; with fmdepth's own resize instead of LANCZOS "
                  f"{r['own_resize_max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
