"""The ``fmdepth`` command.

Each subcommand lives in its own module under :mod:`fmdepth.commands` and exposes
``HELP`` (one line), ``DESCRIPTION`` (the ``--help`` text, with examples), ``add_arguments(parser)``
and ``run(args) -> int``. Command modules import heavy dependencies (torch, ...) inside ``run`` only,
so ``fmdepth --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from fmdepth import __version__

# subcommand name -> module under fmdepth.commands (order = order in --help)
COMMANDS = {
    "demo": "demo",
    "synth": "synth",
    "train": "train",
    "export-gt": "export_gt",
    "evaluate": "evaluate",
    "predict": "predict",
    "register": "register",
    "correspond": "correspond",
    "import-weights": "import_weights",
    "export": "export",
}

EPILOG = """examples:
  fmdepth demo --out demo_run                 # synthetic data -> short training -> metrics table
  fmdepth synth --out data/synth --drives 4 --frames 60
  fmdepth train --config configs/kitti_featdepth_r50_640x192.yaml --data /data/kitti_raw --out runs/fm
  fmdepth evaluate depth --checkpoint runs/fm/checkpoints/best.pt --data /data/kitti_raw --split-file eigen
  fmdepth predict --checkpoint runs/fm/checkpoints/best.pt my_images/ --out depth_out
  fmdepth register --fixed rgb.png --moving ir.png --method deformable --out reg_out
  fmdepth correspond a.png b.png --k 10 --out nbb_out
  fmdepth import-weights --from monodepth2 models/mono_640x192 --out md2.pt
  fmdepth export --checkpoint md2.pt --format onnx --out depth.onnx

Run `fmdepth <command> --help` for the options and examples of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmdepth",
        description="Self-supervised monocular depth and ego-motion with a feature-metric loss, "
        "and multimodal image registration on the same warping core.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fmdepth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"fmdepth.commands.{module_name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def run_guarded(prog: str, run, args) -> int:
    """Run ``run(args)``; bad input (ValueError, missing files) ends in one clear line, exit 2.

    ``FMDEPTH_DEBUG=1`` re-raises to show the traceback. Shared by ``fmdepth`` and the
    ``evaluate/*.py`` scripts.
    """
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        if os.environ.get("FMDEPTH_DEBUG"):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def script_main(prog: str, description: str, add_arguments, run, argv=None) -> int:
    """Entry point of a stand-alone script taking the same arguments as a subcommand."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_guarded(prog, run, parser.parse_args(argv))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return run_guarded(f"fmdepth {args.command}", args._run, args)


if __name__ == "__main__":
    sys.exit(main())
