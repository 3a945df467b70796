"""Prepare your own images (a labelled folder tree or a table) into a data list for the bundles and the study.

    python scripts/prepare_folder.py --source DIR_OR_CSV --output DIR [--seed 0] [--grayscale]
        [--class_names a,b,c] [--native_units HU] [--modality CT] [--spatial_dims 2] [--test_fraction 0.333]
        [--skip_unreadable] [--balance] [--name NAME]

--source is either a folder <source>/<class>/... (class names = the first-level folder names, images anywhere below
them) or a CSV table with a header row and the columns path,label[,patient_id] (paths relative to the table's folder
or absolute). PNG, JPEG, DICOM and NIfTI images; files are linked from <output>/images/, never copied or converted.
The split is 2:1 train:test by patient; patient identifiers are pseudonymised. The rules are in the docstring of
monai_adv/prepare/folder.py. Then: python scripts/run_study.py --dataset_dir <output> ...
"""

from __future__ import annotations

import sys

from monai_adv.prepare import folder
from monai_adv.prepare.common import cli_parser, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(__doc__, "a folder of class folders, or a CSV table path,label[,patient_id]")
    parser.add_argument("--grayscale", action="store_true",
                        help="mark RGB images for conversion to one gray channel when loaded (never silent)")
    parser.add_argument("--class_names", "--class-names", default=None, metavar="A,B,C",
                        help="the class names of integer labels, or the order of named classes; exactly the classes "
                             "present")
    parser.add_argument("--native_units", "--native-units", default=None,
                        help="the units of NIfTI/NumPy images, which their headers do not say (e.g. HU)")
    parser.add_argument("--modality", default=None,
                        help="the modality of NIfTI/NumPy/PNG/JPEG images (DICOM headers give theirs)")
    parser.add_argument("--spatial_dims", "--spatial-dims", type=int, choices=(2, 3), default=2,
                        help="2 for images, 3 for volumes (default %(default)s)")
    parser.add_argument("--test_fraction", "--test-fraction", type=float, default=1 / 3,
                        help="the fraction of each class on the test side, by patient (default 1/3: a 2:1 split)")
    parser.add_argument("--skip_unreadable", "--skip-unreadable", action="store_true",
                        help="leave out files that cannot be used (not images, DICOM SEG/RTSTRUCT/DICOMDIR, "
                             "unreadable) and list them in <output>/skipped.csv, instead of stopping")
    parser.add_argument("--balance", action="store_true",
                        help="drop images of the larger classes (seeded) until the classes are equal")
    parser.add_argument("--name", default=None, help="the data set's name (default: the source's name)")
    args = parser.parse_args(argv)
    return run_cli(
        folder.prepare_folder,
        args,
        grayscale=args.grayscale,
        class_names=args.class_names,
        native_units=args.native_units,
        modality=args.modality,
        spatial_dims=args.spatial_dims,
        test_fraction=args.test_fraction,
        skip_unreadable=args.skip_unreadable,
        balance=args.balance,
        name=args.name,
    )


if __name__ == "__main__":
    sys.exit(main())
