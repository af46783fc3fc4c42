"""`fmdepth synth`: render a synthetic dataset in the KITTI raw + odometry layouts."""
HELP = "render a synthetic driving dataset in the KITTI raw/odometry layouts (with GT depth)"
DESCRIPTION = """Render procedurally generated driving sequences by analytic ray casting and write them
exactly like KITTI: raw layout (image_02/03 PNGs, calib_*.txt, velodyne .bin scans, oxts),
odometry layout (sequences/NN, poses/NN.txt), dense ground-truth depth + surface labels under
gt/, and split files under splits/ (train/val frames have both neighbours; the last drives form
the disjoint test split). Deterministic for a seed. The folder appears only when complete.

Ground truth: gt/<folder>/depth/NNNNNNNNNN.npy is camera-2 z in metres at pixel centres, 0 for
sky; labels/NNNNNNNNNN.npy holds uint8 surface ids (0 sky, 1 road, 2 lane marking, 3 sidewalk,
4 curb, 5 grass, 6 building, 7 parked car, 8 moving car, 9 pole) + 128 when the surface is
textureless; depth_03/, labels_03/ hold the right camera; poses_02.txt camera-to-world poses.

Velodyne scans follow the KITTI pixel convention of the standard Eigen export (a return at
projected (u, v) measures pixel round(u)-1, round(v)-1): `export-gt --depth camera-z` equals the
dense depth at every LiDAR pixel. The stereo baseline image_02/image_03 is 0.54 m, as KITTI's.

examples:
  fmdepth synth --out data/synth                                 # 3 drives x 40 frames, 375x1242
  fmdepth synth --out data/tiny --drives 2 --frames 12 --height 96 --width 320
  fmdepth synth --out data/hard --textureless 0.4 --moving-cars 3 --seed 7
  fmdepth export-gt --data data/synth --split-file data/synth/splits/test_files.txt --out gt.npz
"""


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--drives", type=int, default=3, help="number of drives, >= 2 (default 3)")
    parser.add_argument("--frames", type=int, default=40, help="frames per drive, >= 3 (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--textureless", type=float, default=0.1,
                        help="fraction of surfaces rendered flat-coloured, in [0, 1] (default 0.1)")
    parser.add_argument("--height", type=int, default=375, help="image height (default 375)")
    parser.add_argument("--width", type=int, default=1242, help="image width (default 1242)")
    parser.add_argument("--moving-cars", type=int, default=0,
                        help="independently moving cars per drive (default 0)")
    parser.add_argument("--supersample", type=int, default=2,
                        help="per-axis supersampling factor (default 2 = 2x2)")
    parser.add_argument("--no-velodyne", action="store_true",
                        help="do not simulate velodyne scans (export-gt then needs --dense)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import os

    from fmdepth.data.synthetic import render_dataset

    out = render_dataset(args.out, drives=args.drives, frames=args.frames, seed=args.seed,
                         textureless=args.textureless, height=args.height, width=args.width,
                         moving_cars=args.moving_cars, supersample=args.supersample,
                         velodyne=not args.no_velodyne, overwrite=args.overwrite,
                         progress=not args.quiet)
    splits = os.path.join(out, "splits")
    counts = []
    for name in ("train", "val", "test"):
        with open(os.path.join(splits, f"{name}_files.txt")) as fh:
            counts.append(f"{name} {sum(1 for _ in fh)}")
    print(f"wrote {out}")
    print(f"splits ({splits}): " + ", ".join(counts))
    return 0
