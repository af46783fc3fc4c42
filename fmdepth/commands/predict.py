"""`fmdepth predict`: depth for your own images, folders and videos."""
HELP = "predict depth for images, folders or videos (.npy + colour .png; videos -> NAME_depth.mp4)"
DESCRIPTION = """Predict disparity/depth with the DepthNet of a checkpoint.

Inputs are image files, folders (their images and videos, not recursive) and video files
(.mp4, .avi, .mov, ... read with imageio-ffmpeg). Each image is resized to the checkpoint's
input size (config data.height x data.width), predicted in batches, and the output resized back
to the input size. For an input NAME the command writes, under --out:
  NAME_disp.npy    scaled disparity (float32, input size)
  NAME_depth.npy   depth = 1 / disparity with the checkpoint's model.min_depth/max_depth range
  NAME_disp.png    colourised disparity (magma)
A video NAME.mp4 gives one video, OUT/NAME_depth.mp4: each frame beside its colourised
disparity, at the input's frame rate (written under a temporary name, renamed when complete);
--save-npy also writes the per-frame OUT/NAME/000000_disp.npy, ... Folder contents go to
OUT/FOLDER/....

Monocular models give depth only up to an unknown scale: multiply by a known scale (e.g. the
median ratio to a reference) before reading metres. Models trained by fmdepth with the stereo
frame (stereo, mono+stereo) are metric as written; Monodepth2/FeatDepth stereo weights brought in
with import-weights need x5.4 / x36 (their 0.1 / 0.015-unit baselines).

examples:
  fmdepth predict --checkpoint runs/fm/checkpoints/best.pt street.jpg --out depth_out
  fmdepth predict --checkpoint best.pt my_images/ drive.mp4 --out depth_out --batch-size 16
  fmdepth predict --checkpoint best.pt frames/ --out d --save disp --post-process
  fmdepth predict --checkpoint runs/mine/checkpoints/last.pt my_video.mp4 --out pred   # pred/my_video_depth.mp4
"""


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or video files")
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt written by `fmdepth train`")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--save", choices=("depth", "disp", "both"), default="both",
                        help="which .npy to write (default both); the colour PNG is always written")
    parser.add_argument("--save-npy", action="store_true",
                        help="videos: also write per-frame .npy files (--save chooses which); by default a "
                             "video gives only NAME_depth.mp4")
    parser.add_argument("--post-process", action="store_true",
                        help="average with the prediction of the flipped image (2x slower)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from fmdepth.inference import DepthPredictor, predict_inputs

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    predictor = DepthPredictor.from_checkpoint(args.checkpoint, device=args.device)
    files = predict_inputs(predictor, args.inputs, args.out, batch_size=args.batch_size, save=args.save,
                           post_process=args.post_process, progress=not args.no_progress,
                           save_npy=args.save_npy)
    n_png = sum(f.endswith(".png") for f in files)
    videos = [f for f in files if f.endswith("_depth.mp4")]
    print(f"predicted {n_png} image(s) and {len(videos)} video(s) at {predictor.width}x{predictor.height} "
          f"network input; wrote {len(files)} files to {args.out}")
    for v in videos:
        print(f"  {v}")
    return 0
