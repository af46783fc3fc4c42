#!/usr/bin/env python
"""Thin wrapper: same arguments as `fmdepth evaluate registration` (see `--help`)."""
import argparse
import os
import sys

from fmdepth.commands import evaluate_registration as _reg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="eval_registration.py", description=_reg.DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _reg.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(_reg.run(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        if os.environ.get("FMDEPTH_DEBUG"):
            raise
        print(f"eval_registration.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
