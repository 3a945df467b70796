#!/usr/bin/env python
"""Train, evaluate and run inference with bundles on their embedded demo data (CPU profile).

    python scripts/run_demo.py                       # the lung-nodule CT bundle
    python scripts/run_demo.py --bundles all         # all five
    python scripts/run_demo.py --output demo_out --bundles brain_lesion_mri_classification

Each step is ``python -m monai.bundle run`` with the bundle's config plus ``configs/demo.json``; the demo data is
generated on first use (``$MONAI_ADV_DEMO_DIR`` or ``~/.cache/monai_adv/demo``). Every output of a bundle goes to
``<output>/<bundle>/``: ``models/model.pt``, ``metrics.json``, ``test_predictions.csv``, ``predictions.csv``,
``tensorboard/`` and one log per step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
STEPS = {"train": ["train"], "evaluate": ["train", "evaluate"], "inference": ["inference"]}


def run_step(bundle: str, step: str, output: Path) -> float:
    configs = [str(ROOT / "bundles" / bundle / "configs" / f"{name}.json") for name in [*STEPS[step], "demo"]]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs), "--output_dir", str(output)]
    log = output / f"{step}.log"
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"{bundle}: {step} failed (exit {code}); end of {log}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=["lung_nodule_ct_classification"], help=f"'all' or of {BUNDLES}")
    parser.add_argument("--output", type=Path, default=ROOT / "demo_out", help="output folder (default: demo_out)")
    args = parser.parse_args(argv)
    bundles = BUNDLES if args.bundles == ["all"] else args.bundles
    unknown = sorted(set(bundles) - set(BUNDLES))
    if unknown:
        parser.error(f"unknown bundles {unknown}; choose from {BUNDLES}")
    for bundle in bundles:
        output = args.output / bundle
        output.mkdir(parents=True, exist_ok=True)
        seconds = {step: run_step(bundle, step, output) for step in STEPS}
        metrics = json.loads((output / "metrics.json").read_text())
        timing = ", ".join(f"{step} {s:.0f} s" for step, s in seconds.items())
        print(
            f"{bundle}: test accuracy {metrics['accuracy']:.3f}, ROC AUC {metrics['roc_auc']}, n={metrics['n']} "
            f"({timing}) -> {output}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
