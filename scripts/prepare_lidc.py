"""Prepare LIDC-IDRI (TCIA DICOM tree + LIDC XML reads) into nodule crops and a data list.

``python scripts/prepare_lidc.py --source DIR --output DIR [--seed 0] [--crop-size 64] [--ambiguous exclude]``
"""

from __future__ import annotations

import sys

from monai_adv.prepare import lidc
from monai_adv.prepare.common import cli_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(__doc__, "folder holding the CT series and the LIDC XML files")
    parser.add_argument("--crop-size", type=int, default=64, help="square crop side in pixels")
    parser.add_argument("--ambiguous", choices=lidc.AMBIGUOUS_CHOICES, default="exclude",
                        help="what a median malignancy of exactly 3 becomes")
    parser.add_argument("--min-readers", type=int, default=1, help="keep nodules marked by at least this many readers")
    parser.add_argument("--group-distance-mm", type=float, default=5.0, help="grouping distance of readers' marks")
    parser.add_argument("--no-balance", action="store_true", help="keep every nodule instead of balancing classes")
    parser.add_argument("--skip-missing-series", action="store_true", help="skip XML files whose series is absent")
    args = parser.parse_args(argv)
    return run_cli(
        lidc.prepare,
        args,
        crop_size=args.crop_size,
        ambiguous=args.ambiguous,
        min_readers=args.min_readers,
        group_distance_mm=args.group_distance_mm,
        balance=not args.no_balance,
        skip_missing_series=args.skip_missing_series,
    )


if __name__ == "__main__":
    sys.exit(main())
