"""`fmdepth correspond`: Neural Best-Buddies between two images."""
HELP = "sparse cross-domain correspondence (Neural Best-Buddies) between two images"
DESCRIPTION = """Find k corresponding point pairs between IMAGE_A and IMAGE_B with Neural Best-Buddies
(mutual nearest neighbours percolated down the VGG19 relu5_1..relu1_1 hierarchy, common-appearance
normalisation per search region, k-means top-k). Writes to --out:

  points.json          {"points_a": [[x, y], ...], "points_b": ..., "scores": ..., ...}
  points_a.txt/_b.txt  one "x y" line per pair (pixel centres at integers)
  pairs.png            both images side by side, pairs numbered and coloured alike

Grayscale inputs are replicated to RGB, RGBA inputs lose alpha (a message says so); images
must be at least 48x48. Without ImageNet weights (offline) use --weights none: seeded random
VGG19 features, good for images of the same scene, weak across object categories.

examples:
  fmdepth correspond cat.png dog.png --k 10 --out nbb_out
  fmdepth correspond a.png b.png --k 20 --weights ~/vgg19-dcbb9e9d.pth --size 224 --out nbb_out
  fmdepth correspond a.png b.png --weights none --device cuda --out nbb_out
"""


def add_arguments(parser):
    parser.add_argument("image_a", metavar="IMAGE_A", help="first image (PNG/JPEG/...)")
    parser.add_argument("image_b", metavar="IMAGE_B", help="second image")
    parser.add_argument("--k", type=int, default=10, help="number of pairs returned (default 10)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--weights", default="imagenet",
                        help="VGG19 weights: imagenet (torchvision download), none (seeded random) "
                             "or a local vgg19 state_dict path (default imagenet)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and k-means")
    parser.add_argument("--tau", type=float, default=0.05,
                        help="activation threshold in [0, 1] for keeping a pair (default 0.05)")
    parser.add_argument("--size", type=int, default=0,
                        help="resize both images so their longer side is SIZE before matching "
                             "(0 = native size); points are reported in the original pixels")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")


def run(args) -> int:
    import json
    import os
    import time
    import warnings

    import torch
    import torch.nn.functional as F

    from fmdepth.correspondence import find_best_buddies, load_image
    from fmdepth.correspondence.draw import draw_pairs
    from fmdepth.networks.resnet import PretrainedWeightsError

    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.size < 0:
        raise ValueError(f"--size must be >= 0, got {args.size}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img_a = load_image(args.image_a, "IMAGE_A")
        img_b = load_image(args.image_b, "IMAGE_B")
    for w in caught:
        print(f"note: {w.message}")

    def resized(img):
        if not args.size:
            return img, 1.0, 1.0
        H, W = img.shape[-2:]
        s = args.size / max(H, W)
        h, w = max(1, round(H * s)), max(1, round(W * s))
        out = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return out, W / w, H / h

    in_a, sxa, sya = resized(img_a)
    in_b, sxb, syb = resized(img_b)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = find_best_buddies(in_a, in_b, k=args.k, tau=args.tau, pretrained=args.weights,
                                    seed=args.seed, device=args.device)
        except PretrainedWeightsError as exc:  # offline / bad weights file: one clear line
            raise ValueError(f"--weights {args.weights}: {exc}") from exc
    for w in caught:
        print(f"warning: {w.message}")
    elapsed = time.perf_counter() - start

    def to_original(p, sx, sy):  # pixel centres: x_orig = (x + 0.5) * s - 0.5
        return torch.stack([(p[:, 0] + 0.5) * sx - 0.5, (p[:, 1] + 0.5) * sy - 0.5], 1)

    pa, pb = to_original(res.points_a, sxa, sya), to_original(res.points_b, sxb, syb)
    os.makedirs(args.out, exist_ok=True)
    record = {"image_a": os.path.abspath(args.image_a), "image_b": os.path.abspath(args.image_b),
              "k": args.k, "weights": args.weights, "points_a": pa.tolist(), "points_b": pb.tolist(),
              "scores": res.scores.tolist(), "pairs_per_level": res.pairs_per_level,
              "seconds": round(elapsed, 3)}
    with open(os.path.join(args.out, "points.json"), "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)
    for name, pts in (("points_a.txt", pa), ("points_b.txt", pb)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as fh:
            fh.write("".join(f"{x:.2f} {y:.2f}\n" for x, y in pts.tolist()))
    png = draw_pairs(img_a, img_b, pa, pb, os.path.join(args.out, "pairs.png"))
    print(f"{len(res)} best-buddy pairs in {elapsed:.2f} s (pairs per level, relu5_1 first: "
          f"{res.pairs_per_level})")
    for i, (a, b, s) in enumerate(zip(pa.tolist(), pb.tolist(), res.scores.tolist())):
        print(f"  {i + 1:2d}  A ({a[0]:7.1f}, {a[1]:7.1f})  ->  B ({b[0]:7.1f}, {b[1]:7.1f})  score {s:.3f}")
    print(f"wrote {os.path.join(args.out, 'points.json')}, points_a.txt, points_b.txt, {png}")
    return 0
