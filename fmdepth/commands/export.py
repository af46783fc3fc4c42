"""`fmdepth export`: a checkpoint's DepthNet / PoseNet as ONNX or TorchScript."""
HELP = "export DepthNet (or PoseNet) of a checkpoint to ONNX or TorchScript"
DESCRIPTION = """Export the DepthNet of a checkpoint (or its PoseNet with --pose) at the
checkpoint's input size (data.height x data.width, or --height/--width, multiples of 32) with a
dynamic batch dimension, then run the exported file on a batch of 2 (onnxruntime for ONNX,
torch.jit.load for TorchScript) and print its largest difference from PyTorch.

Inputs are RGB images in [0, 1] (the normalisation is inside the graph):
  depth: image (N, 3, H, W) -> disp (N, 1, H, W), the sigmoid disparity at full resolution;
         depth = 1 / (1/max_depth + (1/min_depth - 1/max_depth) * disp) (range printed below and
         stored in the ONNX metadata).
  pose:  frames (N, 6, H, W), frames a and b stacked -> axisangle (N, 3), translation (N, 3).
ONNX needs the optional packages: pip install -e ".[export]".

examples:
  fmdepth export --checkpoint runs/fm/checkpoints/best.pt --format onnx --out depth.onnx
  fmdepth export --checkpoint md2_mono.pt --format torchscript --out depth.ts
  fmdepth export --checkpoint md2_mono.pt --format onnx --pose --out pose.onnx
"""


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="fmdepth checkpoint (.pt)")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="file format")
    parser.add_argument("--out", required=True, help="file to write (.onnx / .ts)")
    parser.add_argument("--pose", action="store_true", help="export PoseNet instead of DepthNet")
    parser.add_argument("--height", type=int, default=None, help="input height (default: the checkpoint's)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: the checkpoint's)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")


def run(args) -> int:
    from fmdepth.interop import export_network

    res = export_network(args.checkpoint, args.out, args.format, pose=args.pose,
                         height=args.height, width=args.width, opset=args.opset)
    shape = "x".join(str(s) for s in res.input_shape)
    m = res.metadata
    print(f"exported {res.what} network of {args.checkpoint} to {res.path} ({res.fmt}, input "
          f"N x {shape}, dynamic batch)")
    if res.what == "depth":
        print(f"  output disp (N, 1, {m['height']}, {m['width']}) in [0, 1]; depth range "
              f"{m['min_depth']}..{m['max_depth']}, input_norm {m['input_norm']}")
    else:
        print(f"  outputs axisangle (N, 3), translation (N, 3), pose scale {m['pose_scale']}")
    print(f"  check on a batch of 2: max |exported - PyTorch| = {res.max_abs_diff:.2e}")
    return 0
