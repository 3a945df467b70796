"""Prepare brain MRI (NIfTI volumes + lesion table) into axial crops and a data list.

``python scripts/prepare_brain_mri.py --source DIR --output DIR [--seed 0] [--table lesions.csv] [--crop-size 64]``

The table has the columns patient_id, image, x, y, z, label (see monai_adv.prepare.brain_mri).
"""

from __future__ import annotations

import sys

from monai_adv.prepare import brain_mri
from monai_adv.prepare.common import cli_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(__doc__, "folder holding the lesion table (or the table itself)")
    parser.add_argument("--table", default=brain_mri.TABLE, help="table file name inside --source")
    parser.add_argument("--crop-size", type=int, default=64, help="square crop side in voxels")
    parser.add_argument("--no-balance", action="store_true", help="keep every row instead of balancing classes")
    args = parser.parse_args(argv)
    return run_cli(brain_mri.prepare, args, crop_size=args.crop_size, table=args.table, balance=not args.no_balance)


if __name__ == "__main__":
    sys.exit(main())
