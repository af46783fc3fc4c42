"""`fmdepth import-weights`: Monodepth2 / FeatDepth released weights -> an fmdepth checkpoint."""
HELP = "import released Monodepth2 or FeatDepth weights as an fmdepth checkpoint"
DESCRIPTION = """Read the released weights of Monodepth2 or FeatDepth and write an fmdepth
checkpoint that `predict`, `evaluate depth`, `evaluate pose`, `export` and
`train --set model.init_checkpoint=...` use like any other.

--from monodepth2 MODEL_DIR: a model folder with encoder.pth (its height/width/use_stereo entries
  give the input size) and depth.pth, plus pose_encoder.pth and pose.pth when the model has a
  pose network; ResNet18/34/50/101/152 encoders are recognised from the tensors.
--from featdepth FILE.pth: a FeatDepth checkpoint (mmcv 'state_dict'): depth encoder/decoder,
  pose encoder/decoder and, in the auto-encoder and joint files, FeatureNet. The two-stage depth
  file holds only FeatureNet's frozen encoder (extractor.*): give the auto-encoder file with
  --autoencoder to import FeatureNet too, or --without-feature. The input size is not in the
  file: --height/--width (default 320x1024, the released KITTI model's).

Every tensor is used: an unknown, missing or mis-shaped tensor stops the import with the names
listed (never a partial load). The only tensors left out are those the source itself never uses
(e.g. the ResNet's ImageNet classifier fc.*), and the summary names them. Files are read with
torch.load(weights_only=True); a pickle payload with Python objects is refused.

The checkpoint records model.input_norm=monodepth2 (the sources normalise images as
(x - 0.45) / 0.225), min/max depth 0.1/100 and pose scale 0.01, so its predictions equal the
source implementation's on the same network input.

examples:
  fmdepth import-weights --from monodepth2 models/mono_640x192 --out md2_mono.pt
  fmdepth import-weights --from featdepth fm_depth.pth --autoencoder autoencoder.pth --out featdepth.pt
  fmdepth import-weights --from featdepth fm_depth.pth --without-feature --height 320 --width 1024 --out fd.pt
  fmdepth predict --checkpoint md2_mono.pt street.jpg --out depth_out
"""


def add_arguments(parser):
    parser.add_argument("source", metavar="SOURCE",
                        help="Monodepth2 model folder, or FeatDepth .pth file")
    parser.add_argument("--from", dest="source_format", required=True, choices=("monodepth2", "featdepth"),
                        help="which project the weights come from")
    parser.add_argument("--out", required=True, help="fmdepth checkpoint to write (.pt)")
    parser.add_argument("--height", type=int, default=None,
                        help="network input height (Monodepth2: default from encoder.pth; FeatDepth: 320)")
    parser.add_argument("--width", type=int, default=None,
                        help="network input width (Monodepth2: default from encoder.pth; FeatDepth: 1024)")
    parser.add_argument("--autoencoder", default=None,
                        help="featdepth: the auto-encoder .pth that completes FeatureNet (decoder)")
    parser.add_argument("--without-feature", action="store_true",
                        help="featdepth: leave FeatureNet's encoder (extractor.*) out")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def run(args) -> int:
    import os

    from fmdepth.interop import import_featdepth, import_monodepth2, write_checkpoint

    if os.path.exists(args.out) and not args.force:
        raise FileExistsError(f"{args.out} exists (pass --force to overwrite)")
    if args.source_format == "monodepth2":
        if args.autoencoder or args.without_feature:
            raise ValueError("--autoencoder / --without-feature are for --from featdepth")
        report = import_monodepth2(args.source, args.height, args.width)
    else:
        report = import_featdepth(args.source, args.height, args.width, autoencoder=args.autoencoder,
                                  without_feature=args.without_feature)
    write_checkpoint(report, args.out, args.source_format, args.source)
    cfg = report.config
    parts = []
    for name, state in report.models.items():
        layers = cfg["model"][f"{name}_layers"]
        parts.append(f"{name} (ResNet{layers}, {len(state)} tensors, "
                     f"{sum(t.numel() for t in state.values()) / 1e6:.2f} M values)")
    print(f"imported {args.source_format} {args.source}: {', '.join(parts)}")
    print(f"  input {cfg['data']['height']}x{cfg['data']['width']}, input_norm "
          f"{cfg['model']['input_norm']}, depth {cfg['model']['min_depth']:g}..{cfg['model']['max_depth']:g}, "
          f"pose scale {cfg['model']['pose_scale']:g}, decoder {cfg['model']['depth_decoder']}")
    for item in report.dropped:
        print(f"  left out: {item}")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"wrote {args.out}")
    return 0
