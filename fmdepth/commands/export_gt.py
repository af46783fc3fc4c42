"""`fmdepth export-gt`: ground-truth depth maps for a split, as Monodepth2's gt_depths.npz."""
HELP = "export ground-truth depth (projected velodyne, or synthetic dense depth) for a split"
DESCRIPTION = """Project the velodyne scan of every entry of a split file into its camera
(P_rect_02 . R_rect_00 . Tr_velo_to_cam) and save the maps as an .npz with key 'data' -- the
gt_depths.npz format of Monodepth2's evaluation (float32 stack when all frames have one size,
otherwise an object array of per-frame maps).

Pixel rule (--pixel): 'kitti' (default) is the standard Eigen export's (Monodepth2's
export_gt_depth.py): a point projecting to (u, v) goes to column round(u)-1, row round(v)-1
(the KITTI devkit's 1-based convention), points outside the image are dropped, the smallest
value wins per pixel; the file is identical to the standard one. 'centre' puts points at the
nearest 0-based pixel centre round(u), round(v) -- one pixel off the standard file, so numbers
computed with it are not comparable to published tables.

Stored value (--depth): 'velodyne-x' (default) is the point's forward velodyne coordinate,
exactly what the standard Eigen export stores and what published KITTI numbers use; it differs
from the camera z by the LiDAR-camera offset (~0.27 m). 'camera-z' stores the rectified camera
z. --dense (datasets written by `fmdepth synth`) stores the renderer's dense depth instead.

examples:
  fmdepth export-gt --data /data/kitti_raw --split-file eigen --out gt_depths.npz
  fmdepth export-gt --data data/synth --split-file data/synth/splits/test_files.txt --out gt.npz
  fmdepth export-gt --data data/synth --split-file data/synth/splits/test_files.txt --out gt_dense.npz --dense
"""


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="dataset root (KITTI raw layout)")
    parser.add_argument("--split-file", required=True,
                        help="split file, or a standard split name (e.g. 'eigen': its test_files.txt, "
                             "fetched and sha256-checked on first use)")
    parser.add_argument("--out", required=True, help="output .npz (key 'data')")
    parser.add_argument("--depth", choices=("velodyne-x", "camera-z"), default="velodyne-x",
                        help="value stored per LiDAR pixel (default velodyne-x, the standard Eigen export)")
    parser.add_argument("--pixel", choices=("kitti", "centre"), default="kitti",
                        help="pixel rule: 'kitti' = round(u)-1, round(v)-1 as the standard Eigen export "
                             "(default); 'centre' = round(u), round(v)")
    parser.add_argument("--dense", action="store_true",
                        help="store the synthetic renderer's dense depth instead of LiDAR")
    parser.add_argument("--skip-missing", action="store_true",
                        help="skip (and report) entries whose files are missing or unreadable")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from fmdepth.data.gt import export_gt, load_gt_depths
    from fmdepth.data.splits import resolve_test_split

    split = resolve_test_split(args.split_file)
    out, n, skipped = export_gt(args.data, split, args.out, depth=args.depth, dense=args.dense,
                                skip_missing=args.skip_missing, progress=not args.quiet,
                                pixel=args.pixel)
    for entry, reason in skipped:
        print(f"skipped {entry[0]} {entry[1]} {entry[2]}: {reason}")
    gts = load_gt_depths(out)
    valid = sum(int((g > 0).sum()) for g in gts)
    shapes = sorted({g.shape for g in gts})
    kind = "dense depth" if args.dense else f"LiDAR ({args.depth}, {args.pixel} pixel rule)"
    print(f"wrote {out}: {n} frames, {kind}, sizes {', '.join(f'{h}x{w}' for h, w in shapes)}, "
          f"{valid / max(n, 1):.0f} valid pixels per frame"
          + (f", {len(skipped)} skipped" if skipped else ""))
    return 0
