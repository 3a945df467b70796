"""monai_adv: adversarial-robustness tooling for medical image classifiers, as MONAI bundles plus this extension.

Reference our classes from bundle configs by full dotted path (``monai_adv.handlers.X``): MONAI resolves short
``_target_`` names across every imported package whose name starts with ``monai``. Submodules load on first use, so
``"$import monai_adv"`` in a config makes ``monai_adv.datalist.load_datalist`` and the like available.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "attacks", "bundle_root", "checkpoints", "datacheck", "datalist", "demo", "engines", "handlers", "inputs", "io",
    "metrics", "networks", "prepare", "reports", "sensitivity", "study", "sweep", "threads", "transforms", "triage",
    "utils",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"monai_adv.{name}")
    raise AttributeError(f"module 'monai_adv' has no attribute {name!r}")
