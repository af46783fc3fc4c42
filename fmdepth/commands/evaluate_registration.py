"""`fmdepth evaluate registration`: landmark error and folding over a folder of pairs."""
from __future__ import annotations

import json
import os

HELP = "registration metrics (landmark error, folding) over a folder of pairs"

DESCRIPTION = """Evaluate registration on a folder of pairs with landmarks:

  PAIRS/fixed/<name>.png  PAIRS/moving/<name>.png
  PAIRS/landmarks_fixed/<name>.csv  PAIRS/landmarks_moving/<name>.csv   (x,y per line)
  PAIRS/flow/<name>.npy  (optional true displacement -> end-point error)

Each pair is registered with a learned checkpoint (--checkpoint) or the per-pair optimiser
(--method/--similarity), or an existing flow is scored (--flows DIR with <name>.npy, (2,H,W)
pixels on the fixed grid). Landmark error of landmark i: || p_i + flow(p_i) - q_i || (pixels),
p_i on the fixed image, q_i on the moving image. Reported: mean/median/max landmark error before
and after (means over pairs, max over all pairs), folding fraction (Jacobian determinant <= 0),
end-point error when a true flow is present, seconds per pair.

examples:
  fmdepth evaluate registration --pairs pairs/ --method deformable --similarity ngf --json reg.json
  fmdepth evaluate registration --pairs pairs/ --checkpoint runs/reg/checkpoints/best.pt --csv per_pair.csv
  fmdepth evaluate registration --pairs pairs/ --flows my_flows/
"""


def add_arguments(parser) -> None:
    parser.add_argument("--pairs", required=True, help="pair folder (fixed/, moving/, landmarks_*/)")
    parser.add_argument("--checkpoint", help="learned registration checkpoint")
    parser.add_argument("--flows", help="folder of precomputed <name>.npy flows to score instead of registering")
    parser.add_argument("--method", choices=("affine", "deformable", "translation"), default="deformable",
                        help="per-pair method (translation, per-pair NeMAR, is withdrawn: see fmdepth register --help)")
    parser.add_argument("--similarity", choices=("mind", "mi", "ngf", "ncc", "mse", "feature"), default="mind",
                        help="per-pair similarity (default: mind, as fmdepth register)")
    parser.add_argument("--iterations", default=None, help="per-pair iterations per level, e.g. 150,100,60")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--grid-spacing", type=int, default=None,
                        help="control-grid spacing (default: 32 for mind, 16 otherwise, as fmdepth register)")
    parser.add_argument("--smoothness", type=float, default=0.5, help="flow smoothness weight (default: 0.5, "
                        "as fmdepth register)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N pairs (0 = all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the summary as JSON")
    parser.add_argument("--csv", help="write per-pair rows as CSV")


def run(args) -> int:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from fmdepth.commands.register import TRANSLATION_WITHDRAWN
    from fmdepth.data.pairs import PairFolderDataset
    from fmdepth.metrics.registration import RegistrationEvaluator
    from fmdepth.registration import parse_iterations, register_pair
    from fmdepth.tasks.registration import load_registration_checkpoint

    if sum(bool(x) for x in (args.checkpoint, args.flows)) > 1:
        raise ValueError("give at most one of --checkpoint and --flows")
    if args.method == "translation" and not (args.checkpoint or args.flows):
        raise ValueError(TRANSLATION_WITHDRAWN)
    iterations = parse_iterations(args.iterations)
    dataset = PairFolderDataset(args.pairs, channels=1)
    if not os.path.isdir(os.path.join(args.pairs, "landmarks_fixed")):
        raise ValueError(f"{args.pairs}: no landmarks_fixed/ folder: landmark evaluation needs "
                         f"landmarks_fixed/<name>.csv and landmarks_moving/<name>.csv")
    device = torch.device(args.device)
    system = load_registration_checkpoint(args.checkpoint).to(device) if args.checkpoint else None
    ev = RegistrationEvaluator()
    n = len(dataset) if args.limit <= 0 else min(args.limit, len(dataset))
    for i in tqdm(range(n), desc="evaluate registration"):
        s = dataset[i]
        if s["landmarks_fixed"] is None:
            raise ValueError(f"pair '{s['name']}': landmark files missing in {args.pairs}/landmarks_*/")
        if s["fixed"].shape[1:] != s["moving"].shape[1:]:
            raise ValueError(f"pair '{s['name']}': fixed {s['fixed'].shape[1:]} and moving "
                             f"{s['moving'].shape[1:]} sizes differ (use `fmdepth register` for such pairs)")
        f = torch.from_numpy(s["fixed"])[None].to(device)
        m = torch.from_numpy(s["moving"])[None].to(device)
        if args.flows:
            path = os.path.join(args.flows, f"{s['name']}.npy")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"flow for pair '{s['name']}' not found: {path}")
            flow = np.load(path, allow_pickle=False)
            if flow.shape != (2,) + s["fixed"].shape[1:]:
                raise ValueError(f"{path}: expected (2, {s['fixed'].shape[1]}, {s['fixed'].shape[2]}), got {flow.shape}")
            seconds = None
        elif system is not None:
            res = system.register(f, m)
            flow, seconds = res.flow[0].cpu().numpy(), res.seconds
        else:
            res = register_pair(f, m, args.method, args.similarity, levels=args.levels, iterations=iterations,
                                grid_spacing=args.grid_spacing, smoothness=args.smoothness, device=device)
            flow, seconds = res.flow[0].cpu().numpy(), res.seconds
        ev.add(s["name"], flow, s["landmarks_fixed"], s["landmarks_moving"], s.get("flow"), seconds)
    summary = ev.summary()
    what = args.checkpoint or args.flows or f"per-pair {args.method}/{args.similarity}"
    print(f"registration evaluation of {what} on {n} pair(s) from {args.pairs}")
    for k in ("lre_mean_before", "lre_mean", "lre_median", "lre_max", "folding_fraction", "epe", "seconds"):
        if k in summary:
            print(f"  {k:18s} {summary[k]:.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "pairs": ev.rows}, fh, indent=2)
    if args.csv:
        keys = sorted({k for r in ev.rows for k in r})
        keys.remove("name")
        with open(args.csv, "w", encoding="utf-8") as fh:
            fh.write(",".join(["name"] + keys) + "\n")
            for r in ev.rows:
                fh.write(",".join([str(r["name"])] + [str(r.get(k, "")) for k in keys]) + "\n")
    return 0
