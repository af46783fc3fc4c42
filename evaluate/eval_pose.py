#!/usr/bin/env python
"""Thin wrapper: same arguments as `fmdepth evaluate pose` (see `--help`)."""
import sys

from fmdepth.cli import script_main
from fmdepth.commands import evaluate as _cmd


def main(argv=None) -> int:
    return script_main("eval_pose.py", _cmd.POSE_DESCRIPTION, _cmd.add_pose_arguments, _cmd.run_pose, argv)


if __name__ == "__main__":
    sys.exit(main())
