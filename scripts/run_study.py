#!/usr/bin/env python
"""The whole study in one resumable command; see ``monai_adv/study/cli.py`` or ``--help``.

    python scripts/run_study.py                      # the lung-nodule CT bundle on its demo data -> study/report/
    python scripts/run_study.py --bundles all        # all five bundles, with the susceptibility comparison
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_adv.study.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
