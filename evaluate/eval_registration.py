#!/usr/bin/env python
"""Thin wrapper: same arguments as `fmdepth evaluate registration` (see `--help`)."""
import sys

from fmdepth.cli import script_main
from fmdepth.commands import evaluate_registration as _cmd


def main(argv=None) -> int:
    return script_main("eval_registration.py", _cmd.DESCRIPTION, _cmd.add_arguments, _cmd.run, argv)


if __name__ == "__main__":
    sys.exit(main())
