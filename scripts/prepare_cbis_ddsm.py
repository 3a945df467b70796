"""Prepare CBIS-DDSM (description CSVs + TCIA DICOM tree) into lesion crops and a data list.

``python scripts/prepare_cbis_ddsm.py --source DIR --output DIR [--seed 0] [--margin 1.2] [--keep-official-split]``
"""

from __future__ import annotations

import sys

from monai_adv.prepare import cbis_ddsm
from monai_adv.prepare.common import cli_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(__doc__, "folder holding the description CSVs and the DICOM tree")
    parser.add_argument("--margin", type=float, default=1.2, help="crop side / larger side of the ROI box")
    parser.add_argument("--min-side", type=int, default=32, help="smallest crop side in pixels")
    parser.add_argument("--keep-official-split", action="store_true", help="keep CBIS-DDSM's own train/test sets")
    parser.add_argument("--no-balance", action="store_true", help="keep every lesion instead of balancing classes")
    args = parser.parse_args(argv)
    return run_cli(
        cbis_ddsm.prepare,
        args,
        margin=args.margin,
        min_side=args.min_side,
        keep_official_split=args.keep_official_split,
        balance=not args.no_balance,
    )


if __name__ == "__main__":
    sys.exit(main())
