#!/usr/bin/env python
"""Run the paper's steps with bundles on their embedded demo data (CPU profile): train, evaluate, infer, sweep the
attacks, train adversarially, compare the two models, triage by sensitivity.

    python scripts/run_demo.py                       # the lung-nodule CT bundle
    python scripts/run_demo.py --bundles all         # all five
    python scripts/run_demo.py --output demo_out --bundles brain_lesion_mri_classification

Each step is ``python -m monai.bundle run`` with the bundle's configs plus ``configs/demo.json``; the demo data is
generated on first use (``$MONAI_ADV_DEMO_DIR`` or ``~/.cache/monai_adv/demo``). Every output of a bundle goes to
``<output>/<bundle>/``: ``models/model.pt`` and ``models/model_adversarial.pt``, ``metrics.json``,
``test_predictions.csv``, ``predictions.csv``, ``attack_sweep.*``, ``adversarial_examples.png``,
``robustness_comparison.*``, ``sensitivity.csv``, ``triage.*``, ``tensorboard/`` and one log per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
STEPS = {
    "train": ["train"],
    "evaluate": ["train", "evaluate"],
    "inference": ["inference"],
    "attack": ["attack"],
    "adversarial_train": ["train", "adversarial_train"],
    "compare": ["compare"],
    "triage": ["triage"],
}


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


def summary(bundle: str, output: Path, seconds: dict[str, float]) -> str:
    """What the steps found, in a few lines."""
    metrics = json.loads((output / "metrics.json").read_text())
    sweep = {(r["attack"], r["eps"]): r["accuracy"] for r in json.loads((output / "attack_sweep.json").read_text())["rows"]}
    with (output / "robustness_comparison.csv").open() as handle:
        comparison = {(r["model"], r["attack"], float(r["eps"])): float(r["accuracy"]) for r in csv.DictReader(handle)}
    adv_eps = json.loads((ROOT / "bundles" / bundle / "configs" / "adversarial_train.json").read_text())["adv_eps"]
    triage = json.loads((output / "triage.json").read_text())
    pgd = max(e for a, e in sweep if a == "PGD" and e <= 0.004)
    return "\n".join([
        f"{bundle} -> {output}",
        f"  test accuracy {metrics['accuracy']:.3f} (ROC AUC {metrics['roc_auc']:.3f}, n={metrics['n']}); "
        f"under PGD at eps {pgd:g}: {sweep[('PGD', pgd)]:.3f}",
        f"  PGD at the training eps {adv_eps:g}: original {comparison[('original', 'PGD', adv_eps)]:.3f}, "
        f"adversarially trained {comparison[('adversarially trained', 'PGD', adv_eps)]:.3f} "
        f"(clean {comparison[('original', 'clean', 0.0)]:.3f} -> {comparison[('adversarially trained', 'clean', 0.0)]:.3f})",
        f"  triage q={triage['q']}: accuracy {triage['accuracy_all']:.3f} -> {triage['accuracy_retained']:.3f} retained "
        f"(confidence triage {triage['comparison']['confidence']['accuracy_retained']:.3f})",
        "  seconds: " + ", ".join(f"{step} {s:.0f}" for step, s in seconds.items()),
    ])


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
        print(summary(bundle, output, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
