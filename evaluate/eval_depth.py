#!/usr/bin/env python
"""Thin wrapper: same arguments as `fmdepth evaluate depth` (see `--help`)."""
import sys

from fmdepth.cli import script_main
from fmdepth.commands import evaluate as _cmd


def main(argv=None) -> int:
    return script_main("eval_depth.py", _cmd.DEPTH_DESCRIPTION, _cmd.add_depth_arguments, _cmd.run_depth, argv)


if __name__ == "__main__":
    sys.exit(main())
