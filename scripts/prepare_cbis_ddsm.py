"""Prepare CBIS-DDSM (description CSVs + TCIA DICOM tree) into lesion crops and a data list.

``python scripts/prepare_cbis_ddsm.py --source DIR --output DIR [--seed 0] [--margin 1.2] [--keep-official-split]``
"""

from __future__ import annotations

import argparse
import sys

from monai_adv.io import DataError
from monai_adv.prepare import cbis_ddsm, summarise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="folder holding the description CSVs and the DICOM tree")
    parser.add_argument("--output", required=True, help="output folder (images/ and datalist.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=1.2, help="crop side / larger side of the ROI box")
    parser.add_argument("--min-side", type=int, default=32, help="smallest crop side in pixels")
    parser.add_argument("--keep-official-split", action="store_true", help="keep CBIS-DDSM's own train/test sets")
    parser.add_argument("--no-balance", action="store_true", help="keep every lesion instead of balancing classes")
    args = parser.parse_args(argv)
    try:
        path = cbis_ddsm.prepare(
            args.source,
            args.output,
            seed=args.seed,
            margin=args.margin,
            min_side=args.min_side,
            keep_official_split=args.keep_official_split,
            balance=not args.no_balance,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarise(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
