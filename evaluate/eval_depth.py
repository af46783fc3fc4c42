#!/usr/bin/env python
"""Thin wrapper: same arguments as `fmdepth evaluate depth` (see `--help`)."""
import argparse
import os
import sys

from fmdepth.commands import evaluate as _evaluate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="eval_depth.py", description=_evaluate.DEPTH_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _evaluate.add_depth_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(_evaluate.run_depth(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        if os.environ.get("FMDEPTH_DEBUG"):
            raise
        print(f"eval_depth.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
