#!/usr/bin/env python
"""Download the standard KITTI split lists (Monodepth2, pinned commit) into the fmdepth cache,
verifying each file's sha256. The lists are not part of this repository.

examples:
  python datasets/fetch_splits.py                      # every pinned list -> ~/.cache/fmdepth/splits
  python datasets/fetch_splits.py eigen eigen_zhou     # just these
  FMDEPTH_CACHE=/data/cache python datasets/fetch_splits.py
  python datasets/fetch_splits.py --mirror file:///mnt/copy/splits   # offline mirror of the same tree
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fmdepth.data.splits import PINNED, SPLIT_NAMES, default_cache_dir, fetch_split  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"split names ({', '.join(SPLIT_NAMES)}); default: all")
    p.add_argument("--cache-dir", default=None, help=f"default {default_cache_dir()}")
    p.add_argument("--mirror", default=None, help="base URL holding <split>/<file> (default: GitHub)")
    args = p.parse_args(argv)
    names = args.names or SPLIT_NAMES
    try:
        for name in names:
            path = fetch_split(name, cache_dir=args.cache_dir, base_url=args.mirror)
            files = [k for k in PINNED if k == name or k.split("/")[0] == name]
            print(f"{name}: {len(files)} file(s) verified -> {path}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"fetch_splits: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
