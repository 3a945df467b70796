#!/usr/bin/env python
"""Run a bundle's demo study for several data and training seeds and check the paper's findings on every seed.

    python scripts/demo_seeds.py                                   # the CT demo, seeds 0-4 -> demo_seeds/
    python scripts/demo_seeds.py --bundle brain_lesion_mri_classification --seeds 0 1 2

Seed ``s`` runs ``scripts/run_study.py --bundles <bundle> --set seed=s --set demo_seed=s --output <output>/seed<s>``:
``seed`` drives the training (initialisation, batch order, validation split), ``demo_seed`` the demo data set (another
seed generates another set of synthetic patients into the demo cache). A seed whose study is complete is only read
again; an interrupted one continues where it stopped (the study is resumable).

Per seed it prints the clean test accuracy, PGD accuracy at eps 0.004 (10 steps, the attack stage), both models'
PGD accuracy at the adversarial-training eps (0.003, the compare stage), the adversarially trained model's clean
accuracy, and the accuracy retained by sensitivity triage and by confidence triage at the same referral fraction
(q = 0.2, the triage stage); then how many seeds meet each of the acceptance criteria of issue #13:

- ``clean``: clean test accuracy in [0.80, 0.97];
- ``fragile``: PGD accuracy at 0.004 at most ``--fragile_ratio`` (0.5) times the clean accuracy;
- ``adv. training``: the adversarially trained model's PGD accuracy at 0.003 at least 0.20 above the original's,
  its clean accuracy within 0.10 of the original's;
- ``triage``: sensitivity triage raises accuracy at least as much as confidence triage.

For the mammography and MRI demos the issue asks only ``fragile`` with a ratio of 0.7 (``--fragile_ratio 0.7``).
Torch threads: every study runs its bundle stages with ``--threads`` CPU threads (default 1, as the demo profile).
Exit status 0 when every seed ran, whatever the criteria say.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = "lung_nodule_ct_classification"
ATTACK_EPS = 0.004
ADV_EPS = 0.003
CLEAN_RANGE = (0.80, 0.97)
MIN_ADV_GAIN = 0.20
MAX_CLEAN_DROP = 0.10


@dataclass
class SeedResult:
    """The numbers of one seed's study (accuracies in [0, 1])."""

    seed: int
    clean: float
    pgd_attack: float
    pgd_adv_original: float
    pgd_adv_robust: float
    clean_robust: float
    triage_all: float
    triage_sensitivity: float
    triage_confidence: float
    wall_s: float | None = None

    def checks(self, fragile_ratio: float) -> dict[str, bool]:
        """Which acceptance criteria this seed meets."""
        return {
            "clean": CLEAN_RANGE[0] <= self.clean <= CLEAN_RANGE[1],
            "fragile": self.pgd_attack <= fragile_ratio * self.clean,
            "adv. training": self.pgd_adv_robust - self.pgd_adv_original >= MIN_ADV_GAIN
            and abs(self.clean_robust - self.clean) <= MAX_CLEAN_DROP,
            "triage": self.triage_sensitivity >= self.triage_confidence,
        }


def _accuracy(rows: list[dict[str, str]], attack: str, eps: float, model: str | None = None) -> float:
    for row in rows:
        if row["attack"] == attack and abs(float(row["eps"]) - eps) < 1e-9 and (model is None or row["model"] == model):
            return float(row["accuracy"])
    raise KeyError(f"no {attack} row at eps {eps}" + (f" for model {model!r}" if model else ""))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_seed(folder: Path, bundle: str, seed: int) -> SeedResult:
    """The numbers of the study in ``folder`` (its ``<bundle>/attack``, ``compare`` and ``triage`` stage folders)."""
    stages = folder / bundle
    sweep = _read_csv(stages / "attack" / "attack_sweep.csv")
    compare = _read_csv(stages / "compare" / "robustness_comparison.csv")
    triage = json.loads((stages / "triage" / "triage.json").read_text(encoding="utf-8"))
    original, robust = "original", "adversarially trained"
    return SeedResult(
        seed=seed,
        clean=_accuracy(sweep, "clean", 0.0),
        pgd_attack=_accuracy(sweep, "PGD", ATTACK_EPS),
        pgd_adv_original=_accuracy(compare, "PGD", ADV_EPS, original),
        pgd_adv_robust=_accuracy(compare, "PGD", ADV_EPS, robust),
        clean_robust=_accuracy(compare, "clean", 0.0, robust),
        triage_all=float(triage["accuracy_all"]),
        triage_sensitivity=float(triage["accuracy_retained"]),
        triage_confidence=float(triage["comparison"]["confidence"]["accuracy_retained"]),
    )


def run_seed(output: Path, bundle: str, seed: int, threads: int, extra: list[str]) -> float:
    """Run (or continue) the demo study of ``bundle`` for ``seed`` into ``output``; its wall time in seconds."""
    import time

    command = [
        sys.executable, str(ROOT / "scripts" / "run_study.py"), "--bundles", bundle, "--output", str(output),
        "--threads", str(threads), "--set", f"seed={seed}", "--set", f"demo_seed={seed}", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with open(output.with_suffix(".log"), "w", encoding="utf-8") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: the study failed (exit {done.returncode}); see {output.with_suffix('.log')}")
    return time.perf_counter() - start


def table(results: list[SeedResult], fragile_ratio: float) -> str:
    """The per-seed table and the count of seeds meeting each criterion, as Markdown."""
    head = ("| seed | clean | PGD 0.004 | PGD 0.004 / clean | PGD 0.003 original | PGD 0.003 adv. trained "
            "| clean adv. trained | triage: all | retained, sensitivity | retained, confidence | wall (s) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        wall = f"{r.wall_s:.0f}" if r.wall_s is not None else "-"
        lines.append(
            f"| {r.seed} | {r.clean:.3f} | {r.pgd_attack:.3f} | {r.pgd_attack / max(r.clean, 1e-12):.2f} "
            f"| {r.pgd_adv_original:.3f} | {r.pgd_adv_robust:.3f} | {r.clean_robust:.3f} | {r.triage_all:.3f} "
            f"| {r.triage_sensitivity:.3f} | {r.triage_confidence:.3f} | {wall} |"
        )
    lines.append("")
    names = list(results[0].checks(fragile_ratio)) if results else []
    for name in names:
        met = [r.seed for r in results if r.checks(fragile_ratio)[name]]
        lines.append(f"- {name}: {len(met)} of {len(results)} seeds (seeds {', '.join(map(str, met)) or 'none'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=DEFAULT_BUNDLE, help="the bundle (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="default: 0 1 2 3 4")
    parser.add_argument("--output", type=Path, default=Path("demo_seeds"), help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per study (default: 1)")
    parser.add_argument("--fragile_ratio", type=float, default=0.5,
                        help="'fragile' means PGD accuracy at 0.004 at most this times clean (default: 0.5; the issue "
                             "asks 0.7 for mammography and MRI)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[STAGE:]ID=VALUE",
                        help="passed on to every study (run_study.py --set)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))  # this process only reads CSVs; the studies get --threads
    args.output.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        folder = args.output / f"seed{seed}"
        wall = run_seed(folder, args.bundle, seed, args.threads, [f"--set={o}" for o in args.overrides])
        result = read_seed(folder, args.bundle, seed)
        result.wall_s = wall
        results.append(result)
        print(f"seed {seed}: clean {result.clean:.3f}, PGD 0.004 {result.pgd_attack:.3f}, "
              f"adv. trained PGD 0.003 {result.pgd_adv_robust:.3f} (original {result.pgd_adv_original:.3f}), "
              f"triage {result.triage_sensitivity:.3f} vs confidence {result.triage_confidence:.3f} ({wall:.0f} s)",
              flush=True)
    print(f"\n{args.bundle}, seeds {' '.join(map(str, args.seeds))}:\n")
    print(table(results, args.fragile_ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
