"""Prepare CIFAR-10 (binary version) into PNG images and a data list.

``python scripts/prepare_cifar10.py --source DIR --output DIR [--seed 0] [--limit-per-split N]``
"""

from __future__ import annotations

import sys

from monai_adv.prepare import cifar10
from monai_adv.prepare.common import cli_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(__doc__, "cifar-10-batches-bin or the folder holding it")
    parser.add_argument("--limit-per-split", type=int, default=None, help="seeded random subset size per split")
    args = parser.parse_args(argv)
    return run_cli(cifar10.prepare, args, limit_per_split=args.limit_per_split)


if __name__ == "__main__":
    sys.exit(main())
