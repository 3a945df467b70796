"""Prepare CIFAR-10 (binary version) into PNG images and a data list: ``python scripts/prepare_cifar10.py --source DIR --output DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_adv.io import DataError  # noqa: E402
from monai_adv.prepare import cifar10, summarise  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, help="cifar-10-batches-bin or the folder holding it")
    parser.add_argument("--output", required=True, help="output folder (images/ and datalist.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-per-split", type=int, default=None, help="seeded random subset size per split")
    args = parser.parse_args(argv)
    try:
        path = cifar10.prepare(args.source, args.output, seed=args.seed, limit_per_split=args.limit_per_split)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarise(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
