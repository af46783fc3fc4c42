"""`fmdepth register`: align a moving image (or video) to a fixed one."""
from __future__ import annotations

import os

HELP = "register a moving image/video to a fixed one (affine, deformable, NeMAR; per pair or learned)"

DESCRIPTION = """Register a moving image to a fixed image (e.g. infrared to RGB, one microscope channel to
another) and write:

  OUT/warped.png        the moving image resampled onto the fixed grid
  OUT/flow.npy          (2, H, W) float32 displacement in pixels on the fixed grid, [0] = dx, [1] = dy:
                        fixed pixel p corresponds to moving pixel p + flow[:, p] (moving pixel units)
  OUT/overlay.png       alpha blend of fixed and warped
  OUT/checkerboard.png  alternating tiles of fixed and warped
  OUT/result.json       method, time, which candidate was kept and why (scores), landmark errors
                        before/after, notes

Per pair (optimisation over a multi-resolution pyramid, progress bar):
  --method affine|deformable, --similarity mind|mi|ngf|ncc|mse|feature.
  The default, mind (MIND-SSC local self-similarity descriptors), was the most accurate fmdepth
  similarity on every kind of cross-modality pair measured (channel remaps, photo vs disparity,
  photo vs edges, MNI152 T1 vs grey matter; bench/registration.py --cross-modality, README);
  ncc/mse only for similar intensities. With mind the objective is MIND (5x5 patches,
  --mind-radius 2) + 0.1 x NGF (--mind-ngf-weight), chosen on the bench's tuning pairs. When the
  registered moving image's intensities turn out to be a function of the fixed image's (correlation
  ratio >= 0.92, e.g. a T1 brain image and its tissue map), the field is solved again with 0.2 x MI
  added (--mind-mi-weight auto; MI helps there and hurts on photo vs depth or edge maps).
  Per-pair NeMAR (--method translation) is withdrawn: a translator trained on one pair does not
  register it (held-out 256x256 pairs ended worse than they started: 7.81 -> 8.44 px and
  8.34 -> 8.79 px, 31 CPU s per pair), so the option now stops with that reason.
  Never silently worse: the identity, the affine start (--init affine / nbb) and the final result
  are scored on the similarity and on an independent check (ngf for mind, else mind); a candidate
  is kept only if it is better on both, and the terminal and result.json say which was kept.
  An affine start is also checked against the method run from the identity ("identity start").
  A deformable field must also agree with the pair registered the other way round: if the two
  directions disagree by more than --consistency-limit x the shorter side on average (0.03, 7.7 px
  at 256), the field is not trusted (a repeated structure matched one period off fools every
  similarity alike). This runs the pair twice; --consistency-limit 0 turns it off.
Learned (fast): --checkpoint CKPT from `fmdepth train --config configs/registration_*.yaml`.

Videos: --fixed-video/--moving-video (or --fixed/--moving given as video files or frame folders)
register frame by frame and write OUT/frames/NNNNNN.png and OUT/overlay.mp4. Different lengths or
frame rates are errors unless --on-mismatch truncate.

Images of different sizes: the moving image is resampled to the fixed size (reported) and the flow
is expressed in the original moving pixels. Different channel counts: registered on luminance.

examples:
  fmdepth register --fixed rgb.png --moving ir.png --out reg_out
  fmdepth register --fixed rgb.png --moving depth.png --init affine --out reg_aff
  fmdepth register --fixed a.png --moving b.png --method affine --similarity ngf --out aff \\
      --landmarks-fixed a.csv --landmarks-moving b.csv
  fmdepth register --fixed a.png --moving b.png --method deformable --init nbb --out reg_nbb
  fmdepth register --checkpoint runs/reg/checkpoints/best.pt --fixed a.png --moving b.png --out fast
  fmdepth register --checkpoint runs/reg/checkpoints/best.pt --fixed-video rgb.mp4 \\
      --moving-video ir.mp4 --out video_out
"""


TRANSLATION_WITHDRAWN = (
    "--method translation (per-pair NeMAR) is withdrawn: a translator and flow optimised on one pair do not "
    "register it -- on held-out 256x256 cross-modality pairs it ended worse than the input (7.81 -> 8.44 px, "
    "8.34 -> 8.79 px mean landmark error, 31 CPU s per pair; bench/registration.py). Use --method deformable "
    "(default, MIND-SSC similarity), or a learned model with --checkpoint")


# fmdepth.registration.solver.DEFAULT_MIND_RADIUS / DEFAULT_MIND_NGF_WEIGHT, written out so that building
# the parser imports no torch
MIND_RADIUS = 2
MIND_NGF_WEIGHT = 0.1
CONSISTENCY_LIMIT = 0.03  # fmdepth.registration.select.DEFAULT_CONSISTENCY_LIMIT
FUNCTIONAL_ETA = 0.92  # fmdepth.registration.select.FUNCTIONAL_ETA
MIND_MI_WEIGHT = 0.2  # fmdepth.registration.select.DEFAULT_MIND_MI_WEIGHT


def mi_weight_arg(text: str):
    """``--mind-mi-weight``: ``auto`` or a weight >= 0 -> "auto" or float."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise ValueError(f"--mind-mi-weight: expected 'auto' or a weight >= 0, got {text!r}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--fixed", help="fixed image (or video file / frame folder)")
    parser.add_argument("--moving", help="moving image (or video file / frame folder)")
    parser.add_argument("--fixed-video", help="fixed video file or frame folder")
    parser.add_argument("--moving-video", help="moving video file or frame folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--method", choices=("affine", "deformable", "translation"), default="deformable",
                        help="per-pair method: affine or deformable (default; ignored with --checkpoint); "
                             "translation (per-pair NeMAR) is withdrawn and stops with the reason")
    parser.add_argument("--similarity", choices=("mind", "mi", "ngf", "ncc", "mse", "feature"), default="mind",
                        help="similarity for affine/deformable and for scoring the candidates (default: mind)")
    parser.add_argument("--checkpoint", help="learned registration checkpoint (fast inference)")
    parser.add_argument("--flip-average", action="store_true",
                        help="with --checkpoint: average the flows predicted on the pair in its 8 flips / "
                             "transposes (4 if not square), 8x the time; for models trained with "
                             "registration.augment_flip (NeMAR's config, 15000 steps: held-out bikes 0.51x -> 0.47x of the initial error)")
    parser.add_argument("--landmarks-fixed", help="CSV of x,y landmarks on the fixed image")
    parser.add_argument("--landmarks-moving", help="CSV of the corresponding x,y landmarks on the moving image")
    parser.add_argument("--init", choices=("identity", "affine", "nbb"), default="identity",
                        help="deformable start: the identity (default), a per-pair affine stage, or an affine "
                             "fitted to neural best-buddy matches (an affine start that scores worse than the "
                             "identity is dropped)")
    parser.add_argument("--iterations", default=None,
                        help="iterations per pyramid level, coarse to fine, e.g. 150,100,60 (or one number)")
    parser.add_argument("--levels", type=int, default=3, help="pyramid levels (default: 3)")
    parser.add_argument("--grid-spacing", type=int, default=None,
                        help="control-grid spacing in pixels of the finest level (1 = dense; default: 32 for "
                             "mind, 16 otherwise)")
    parser.add_argument("--smoothness", type=float, default=0.5, help="flow smoothness weight (default: 0.5)")
    parser.add_argument("--mind-radius", type=int, default=MIND_RADIUS,
                        help=f"MIND-SSC patch radius in pixels of each pyramid level, for the similarity and "
                             f"the never-worse check (default: {MIND_RADIUS}, 5x5 patches)")
    parser.add_argument("--mind-ngf-weight", type=float, default=MIND_NGF_WEIGHT,
                        help=f"--similarity mind: optimise MIND + this weight x NGF (0 = MIND alone; "
                             f"default: {MIND_NGF_WEIGHT})")
    parser.add_argument("--mind-mi-weight", default="auto", metavar="auto|W",
                        help=f"--similarity mind, deformable: 'auto' (default) adds {MIND_MI_WEIGHT} x MI to the "
                             f"objective, solving again, when the registered moving image's intensities are a "
                             f"function of the fixed image's (correlation ratio >= {FUNCTIONAL_ETA}); a number "
                             f"adds that weight x MI always (0 = never)")
    parser.add_argument("--consistency-limit", type=float, default=CONSISTENCY_LIMIT,
                        help=f"deformable: drop a field whose mean forward-backward error against the pair "
                             f"registered from moving to fixed exceeds this fraction of the shorter side "
                             f"(default: {CONSISTENCY_LIMIT}, 7.7 px at 256; 0 = off, half the time)")
    parser.add_argument("--diffeomorphic", action="store_true",
                        help="deformable: optimise a stationary velocity field (scaling and squaring)")
    parser.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam", help="default: adam")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay weight of the warped image (default: 0.5)")
    parser.add_argument("--on-mismatch", choices=("error", "truncate"), default="error",
                        help="videos of different lengths / frame rates: error (default) or pair by index")
    parser.add_argument("--fps", type=float, default=0.0, help="output video fps (default: the input's, else 10)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class _Registrar:
    """Holds the method (per pair or learned) and registers one (fixed, moving) pair."""

    def __init__(self, args, notes):
        import torch

        self.args, self.notes = args, notes
        self.device = torch.device(args.device)
        self.system = None
        if args.checkpoint:
            from fmdepth.tasks.registration import load_registration_checkpoint

            self.system = load_registration_checkpoint(args.checkpoint).to(self.device)
            notes.append(f"learned {self.system.method} registration from {args.checkpoint}")

    def __call__(self, fixed, moving, show_progress=True):
        """fixed, moving: (C, H, W) numpy (same H, W) -> (flow (2,H,W), warped (C,H,W), result)."""
        import torch

        from fmdepth.registration import keep_if_better, parse_iterations, register_pair

        a = self.args
        f = torch.from_numpy(fixed)[None].to(self.device)
        m = torch.from_numpy(moving)[None].to(self.device)
        if self.system is not None:
            res = keep_if_better(f, m, self.system.register(f, m, flip_average=a.flip_average), self.args.similarity)
        else:
            # the affine start (per-pair stage or best buddies) and the result are both checked against
            # the identity inside register_pair (result.kept / scores / notes)
            init_affine = _nbb_affine(fixed, moving) if a.init == "nbb" else None
            res = register_pair(f, m, a.method, a.similarity, init="affine" if a.init == "affine" else "identity",
                                init_affine=init_affine, iterations=parse_iterations(a.iterations),
                                smoothness=a.smoothness, grid_spacing=a.grid_spacing, diffeomorphic=a.diffeomorphic,
                                levels=a.levels, optimizer=a.optimizer, mind_radius=a.mind_radius,
                                mind_ngf_weight=a.mind_ngf_weight, mind_mi_weight=mi_weight_arg(a.mind_mi_weight),
                                consistency_limit=a.consistency_limit,
                                progress=show_progress and not a.quiet, device=self.device)
        return res.flow[0].detach().cpu().numpy(), res.warped[0].detach().cpu().numpy(), res


def _nbb_affine(fixed, moving):
    """Initial (2, 3) affine fixed -> moving from neural best buddies (:mod:`fmdepth.correspondence`)."""
    import numpy as np
    import torch

    try:
        from fmdepth.correspondence import find_best_buddies, fit_affine
    except ImportError as exc:
        raise ValueError(f"--init nbb needs fmdepth.correspondence.find_best_buddies and fit_affine, "
                         f"which are not available ({exc}); use --init affine or identity") from None
    fa = np.repeat(fixed, 3, 0) if fixed.shape[0] == 1 else fixed
    ma = np.repeat(moving, 3, 0) if moving.shape[0] == 1 else moving
    nbb = find_best_buddies(torch.from_numpy(fa), torch.from_numpy(ma), k=20)
    pa, pb = np.asarray(torch.as_tensor(nbb.points_a).cpu()), np.asarray(torch.as_tensor(nbb.points_b).cpu())
    if len(pa) < 3:
        raise ValueError(f"--init nbb: only {len(pa)} best-buddy pairs found, need >= 3 for an affine")
    A = fit_affine(torch.as_tensor(pa, dtype=torch.float32), torch.as_tensor(pb, dtype=torch.float32), robust=True)
    return torch.as_tensor(A, dtype=torch.float32)[:2]


def _prepare_pair(fixed, moving, notes, name_f="fixed", name_m="moving"):
    """Resample moving to the fixed size and reconcile channels; returns (fixed, moving_rs, scale)."""
    from fmdepth.data.pairs import resize_array

    (cf, hf, wf), (cm, hm, wm) = fixed.shape, moving.shape
    scale = None
    if (hf, wf) != (hm, wm):
        notes.append(f"{name_m} is {wm}x{hm} and {name_f} is {wf}x{hf}: moving resampled to {wf}x{hf}; "
                     f"flow.npy is in original moving pixels")
        moving = resize_array(moving, hf, wf)
        scale = ((wm - 1) / max(wf - 1, 1), (hm - 1) / max(hf - 1, 1))
    if cf != cm:
        notes.append(f"{name_f} has {cf} channel(s), {name_m} has {cm}: registered on luminance, "
                     f"warped image keeps the moving channels")
    return fixed, moving, scale


def _to_moving_pixels(flow, scale):
    """Express a fixed-grid flow (resampled-moving pixels) in original moving pixels."""
    import numpy as np

    if scale is None:
        return flow
    _, h, w = flow.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([(xs + flow[0]) * scale[0] - xs, (ys + flow[1]) * scale[1] - ys]).astype(np.float32)


def _run_pair(args, registrar, notes) -> int:
    from fmdepth.data.pairs import load_image, read_landmarks
    from fmdepth.metrics.registration import landmark_error
    from fmdepth.registration import PAIR_FILES, result_record, write_pair_outputs, write_result

    fixed = load_image(args.fixed)
    moving_orig = load_image(args.moving)
    fixed, moving, scale = _prepare_pair(fixed, moving_orig, notes)
    lf = lm = None
    if bool(args.landmarks_fixed) != bool(args.landmarks_moving):
        raise ValueError("--landmarks-fixed and --landmarks-moving must be given together")
    if args.landmarks_fixed:
        lf = read_landmarks(args.landmarks_fixed, fixed.shape[1], fixed.shape[2])
        lm = read_landmarks(args.landmarks_moving, moving_orig.shape[1], moving_orig.shape[2])
        if len(lf) != len(lm):
            raise ValueError(f"landmark counts differ: {args.landmarks_fixed} has {len(lf)} points, "
                             f"{args.landmarks_moving} has {len(lm)}")
    flow, warped, res = registrar(fixed, moving)
    flow = _to_moving_pixels(flow, scale)
    write_pair_outputs(args.out, fixed, warped, flow, args.alpha)
    if registrar.system is not None:
        method = registrar.system.method
        result = result_record(method, res, notes)
    else:
        method = args.method
        result = result_record(method, res, notes, similarity=args.similarity, init=args.init)
    for n in notes:
        print(f"note: {n}")
    print(f"registered {args.moving} -> {args.fixed} ({method}) in {res.seconds:.2f} s")
    if res.kept is not None:
        print(f"kept: {res.kept}")
        for line in res.notes:
            print(f"  {line}")
    if res.correlation_ratio is not None:
        use = (f"{res.mind_mi_weight:g} x MI added to the objective" if res.mind_mi_weight > 0
               else "no MI added")
        print(f"intensities: correlation ratio {res.correlation_ratio:.3f} (functional from {FUNCTIONAL_ETA}): {use}")
    if res.consistency:
        limit = args.consistency_limit * min(fixed.shape[1:])
        errs = ", ".join(f"{k} {v:.2f} px" for k, v in res.consistency.items())
        print(f"forward-backward error (registered the other way round): {errs} (limit {limit:.2f} px)")
    if lf is not None:
        before, after = landmark_error(lf, lm, None), landmark_error(lf, lm, flow)
        result["landmarks_before"], result["landmarks_after"] = before, after
        print(f"landmark error before: mean {before['lre_mean']:.2f} px  median {before['lre_median']:.2f}  "
              f"max {before['lre_max']:.2f}  ({before['num_landmarks']} landmarks)")
        print(f"landmark error after:  mean {after['lre_mean']:.2f} px  median {after['lre_median']:.2f}  "
              f"max {after['lre_max']:.2f}")
    write_result(args.out, result)
    print(f"wrote {', '.join(PAIR_FILES)}, result.json to {args.out}")
    return 0


def _run_video(args, registrar, notes, fixed_src, moving_src) -> int:
    import imageio.v2 as iio2
    import numpy as np
    from tqdm.auto import tqdm

    from fmdepth.data.pairs import check_video_pair, read_frames, save_image
    from fmdepth.registration import overlay_image, write_result

    n, fps, mismatch = check_video_pair(fixed_src, moving_src, args.on_mismatch)
    notes.extend(mismatch)
    for note in notes:
        print(f"note: {note}")
    fps = args.fps or fps or 10.0
    frames_dir = os.path.join(args.out, "frames")
    os.makedirs(frames_dir, exist_ok=True)
    video_path = os.path.join(args.out, "overlay.mp4")
    writer = iio2.get_writer(video_path, format="ffmpeg", fps=fps, macro_block_size=1)
    total = 0.0
    try:
        bar = tqdm(zip(read_frames(fixed_src), read_frames(moving_src)), total=n, desc="register frames",
                   disable=args.quiet)
        for i, (fixed, moving) in enumerate(bar):
            if i >= n:
                break
            frame_notes = []
            fixed, moving, _ = _prepare_pair(fixed, moving, frame_notes, "fixed frame", "moving frame")
            if i == 0:
                for note in frame_notes:
                    print(f"note: {note}")
                    notes.append(note)
            _, warped, res = registrar(fixed, moving, show_progress=False)
            if res.kept not in (None, "final"):
                print(f"note: frame {i}: kept the {res.kept} ({res.notes[-1]})")
            total += res.seconds
            save_image(os.path.join(frames_dir, f"{i:06d}.png"), warped)
            blend = overlay_image(fixed, warped, args.alpha)
            writer.append_data((np.transpose(blend, (1, 2, 0)) * 255 + 0.5).astype(np.uint8))
    finally:
        writer.close()
    write_result(args.out, {"frames": n, "fps": fps, "seconds": total, "notes": notes})
    print(f"registered {n} frames in {total:.2f} s ({total / max(n, 1):.3f} s/frame); "
          f"wrote {frames_dir}/ and {video_path}")
    return 0


def run(args) -> int:
    from fmdepth.data.pairs import is_video
    from fmdepth.registration import parse_iterations

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha: expected a value in [0, 1], got {args.alpha}")
    if args.levels < 1:
        raise ValueError(f"--levels: must be >= 1, got {args.levels}")
    if args.mind_radius < 0:
        raise ValueError(f"--mind-radius: must be >= 0, got {args.mind_radius}")
    if not args.mind_ngf_weight >= 0:
        raise ValueError(f"--mind-ngf-weight: must be >= 0, got {args.mind_ngf_weight}")
    mi_weight_arg(args.mind_mi_weight)
    if not args.consistency_limit >= 0:
        raise ValueError(f"--consistency-limit: must be >= 0 (a fraction of the shorter side; 0 = off), "
                         f"got {args.consistency_limit}")
    if args.method == "translation" and not args.checkpoint:
        raise ValueError(TRANSLATION_WITHDRAWN)
    if args.flip_average and not args.checkpoint:
        raise ValueError("--flip-average: averages a learned model's predictions; give --checkpoint CKPT")
    parse_iterations(args.iterations)
    fixed_video = args.fixed_video or (args.fixed if args.fixed and (is_video(args.fixed) or os.path.isdir(args.fixed))
                                       else None)
    moving_video = args.moving_video or (args.moving if args.moving and (is_video(args.moving) or os.path.isdir(args.moving))
                                         else None)
    notes = []
    if fixed_video or moving_video:
        if not (fixed_video and moving_video):
            raise ValueError("video registration needs both a fixed and a moving video (or frame folder)")
        if args.landmarks_fixed:
            raise ValueError("--landmarks-* apply to single image pairs, not videos")
        return _run_video(args, _Registrar(args, notes), notes, fixed_video, moving_video)
    if not args.fixed or not args.moving:
        raise ValueError("give --fixed and --moving images (or --fixed-video and --moving-video)")
    for p in (args.fixed, args.moving):
        if not os.path.exists(p):
            raise FileNotFoundError(f"input not found: {p}")
    return _run_pair(args, _Registrar(args, notes), notes)
