"""Prepare brain MRI (NIfTI volumes + lesion table) into axial crops and a data list.

``python scripts/prepare_brain_mri.py --source DIR --output DIR [--seed 0] [--table lesions.csv] [--crop-size 64]``

The table has the columns patient_id, image, x, y, z, label (see monai_adv.prepare.brain_mri).
"""

from __future__ import annotations

import argparse
import sys

from monai_adv.io import DataError
from monai_adv.prepare import brain_mri, summarise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="folder holding the lesion table (or the table itself)")
    parser.add_argument("--output", required=True, help="output folder (images/ and datalist.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", default=brain_mri.TABLE, help="table file name inside --source")
    parser.add_argument("--crop-size", type=int, default=64, help="square crop side in voxels")
    parser.add_argument("--no-balance", action="store_true", help="keep every row instead of balancing classes")
    args = parser.parse_args(argv)
    try:
        path = brain_mri.prepare(
            args.source,
            args.output,
            seed=args.seed,
            crop_size=args.crop_size,
            table=args.table,
            balance=not args.no_balance,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarise(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
