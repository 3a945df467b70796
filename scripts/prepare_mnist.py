"""Prepare MNIST (the four IDX files) into PNG digits and a data list.

``python scripts/prepare_mnist.py --source DIR --output DIR [--seed 0] [--limit-per-split N]``
"""

from __future__ import annotations

import argparse
import sys

from monai_adv.io import DataError
from monai_adv.prepare import mnist, summarise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="folder with the four MNIST IDX files (optionally .gz)")
    parser.add_argument("--output", required=True, help="output folder (images/ and datalist.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-per-split", type=int, default=None, help="seeded random subset size per split")
    args = parser.parse_args(argv)
    try:
        path = mnist.prepare(args.source, args.output, seed=args.seed, limit_per_split=args.limit_per_split)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarise(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
