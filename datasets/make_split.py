#!/usr/bin/env python
"""Generate train/val split files for a custom dataset in the KITTI raw layout or image folders.

Frames without all the temporal neighbours a training sample needs (--frame-ids) are dropped
(and counted). Validation frames are drawn at random (--val-fraction, seeded) or are whole
sequences (--val-folders).

examples:
  python datasets/make_split.py --data /data/my_kitti_like --out splits/mine
  python datasets/make_split.py --data /data/my_kitti_like --out splits/mine --sides l r --frame-ids 0 -2 2
  python datasets/make_split.py --data my_videos_as_frames/ --layout folder --out splits/videos \
      --val-folders walk_03
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fmdepth.data.media import list_images  # noqa: E402
from fmdepth.data.splits import generate_split, scan_kitti_raw, write_split  # noqa: E402


def scan_folder(root):
    """{sequence: indices} for image folders: root itself ('.') and each sub-folder with images."""
    out = {}
    for seq in ["."] + sorted(os.listdir(root)):
        d = os.path.join(root, seq)
        if os.path.isdir(d):
            n = len(list_images(d))
            if n:
                out[seq] = list(range(n))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--out", required=True, help="output folder for train_files.txt / val_files.txt")
    p.add_argument("--layout", choices=("kitti_raw", "folder"), default="kitti_raw")
    p.add_argument("--img-ext", default=".png", help="image extension of the KITTI raw layout")
    p.add_argument("--frame-ids", type=int, nargs="+", default=[0, -1, 1])
    p.add_argument("--sides", nargs="+", default=["l"], choices=("l", "r"))
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val-folders", nargs="*", default=None, help="whole sequences used for validation")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not os.path.isdir(args.data):
        p.error(f"dataset folder not found: {args.data}")
    frames = scan_kitti_raw(args.data, args.img_ext) if args.layout == "kitti_raw" else scan_folder(args.data)
    if not frames:
        p.error(f"no frames found under {args.data} (layout {args.layout})")
    train, val, dropped = generate_split(frames, args.frame_ids, args.val_fraction, args.seed, args.sides,
                                         args.val_folders)
    write_split(os.path.join(args.out, "train_files.txt"), train)
    write_split(os.path.join(args.out, "val_files.txt"), val)
    print(f"{len(frames)} sequences: {len(train)} train, {len(val)} val entries, "
          f"{len(dropped)} dropped (missing neighbours) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
