"""Benchmark of the worst-case evaluation: our ensemble over a bundle's eps grid against torchattacks' AutoAttack.

On the same trained model and test images, in one run, per eps of the grid:

* **ours**: :func:`monai_adv.sweep.attack_sweep` with the paper's attacks (FGSM, BIM-10, PGD-10) and the ensemble
  (APGD-CE, APGD-margin, for ``K >= 4`` classes APGD-T on up to 9 runner-up classes, then Square; each run per eps
  only on the images every earlier attack left correct, reusing the nested balls across eps), per-image seeds: the
  worst-case accuracy and the time of the whole grid;
* **theirs**: torchattacks 3.5.1's ``AutoAttack`` (``version="standard"``: APGD-CE, APGD-T, FAB-T, Square with 5000
  queries) run at each eps separately on all images, for ``K >= 3`` classes; for a binary model (where APGD-T and
  FAB-T refuse two classes) its ``APGD`` (CE) followed by ``Square`` on the images APGD left correct.

It prints the robust accuracy of both per eps, the difference in points, and both times with their ratio. The goal
(issue #12): the same robust accuracy within 0.5 points, in at most half the time.

The model and images come from a study's output and the bundle's own configs: the trained model
``<study>/<bundle>/train/models/model.pt`` and the test images through the bundle's evaluation transforms on the demo
data (run ``scripts/run_study.py --bundles <bundle>`` first, or give ``--checkpoint``).

Usage::

    python scripts/bench_evaluation.py --study study --bundle lung_nodule_ct_classification [--n 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load(bundle: str, checkpoint: Path, n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, list[float], int]:
    """The bundle's network with ``checkpoint`` loaded (eval mode), the first ``n`` test images ``(n, C, ...)`` in
    [0, 1] with their labels, the bundle's eps grid and its number of classes."""
    from monai.bundle import ConfigParser

    from monai_adv.checkpoints import load_network_state

    configs = ROOT / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / name) for name in ("train.json", "evaluate.json", "adversarial.json",
                                                         "demo.json")])
    parser.update({"bundle_root": str(ROOT / "bundles" / bundle), "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network")
    load_network_state(network, checkpoint)
    network.eval()
    dataset = parser.get_parsed_content("validate#dataset")
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    images = torch.stack([torch.as_tensor(item["image"]).as_subclass(torch.Tensor) for item in items]).float()
    labels = torch.tensor([int(torch.as_tensor(item["label"]).reshape(-1)[0]) for item in items])
    return network, images, labels, [float(e) for e in parser.get_parsed_content("eps_grid")], len(
        parser.get_parsed_content("class_names"))


def ours(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid: list[float], apgd_steps: int,
         square_queries: int, classes: int) -> tuple[dict[float, float], float]:
    from monai_adv.attacks import BIM, FGSM, PGD, worst_case_ensemble
    from monai_adv.attacks.seeding import key_of
    from monai_adv.sweep import WORST_CASE, attack_sweep

    attacks = {"FGSM": FGSM, "BIM": partial(BIM, steps=10), "PGD": partial(PGD, steps=10)}
    ensemble = worst_case_ensemble(classes, apgd_steps, square_queries)
    start = time.perf_counter()
    result = attack_sweep(model, x, y, attacks, grid, keys=[key_of(i) for i in range(len(x))], ensemble=ensemble)
    seconds = time.perf_counter() - start
    accuracy = dict(zip(result.eps, result.accuracy(WORST_CASE)))
    return {e: accuracy[e] for e in grid}, seconds


def theirs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid: list[float],
           classes: int) -> tuple[dict[float, float], float, str]:
    import torchattacks

    accuracy, seconds = {}, 0.0
    for eps in grid:
        start = time.perf_counter()
        if classes >= 3:
            adv = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=classes,
                                          seed=0)(x, y)
            what = "torchattacks.AutoAttack(version='standard')"
        else:  # APGD-T and FAB-T refuse two classes: APGD-CE, then Square on what it left correct
            adv = torchattacks.APGD(model, norm="Linf", eps=eps, steps=10, seed=0, loss="ce")(x, y)
            with torch.no_grad():
                left = (model(adv).argmax(1) == y).nonzero()[:, 0]
            if left.numel():
                adv[left] = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, seed=0)(x[left], y[left])
            what = "torchattacks APGD-CE (10 steps) then Square (5000 queries)"
        with torch.no_grad():
            accuracy[eps] = float((model(adv).argmax(1) == y).float().mean())
        seconds += time.perf_counter() - start
    return accuracy, seconds, what


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=Path("study"), help="a study's output folder")
    parser.add_argument("--bundle", default="lung_nodule_ct_classification")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the trained model (default <study>/<bundle>/train/models/model.pt)")
    parser.add_argument("--n", type=int, default=200, help="test images (default %(default)s)")
    parser.add_argument("--apgd_steps", type=int, default=10, help="our APGD steps (default %(default)s)")
    parser.add_argument("--square_queries", type=int, default=1000, help="our Square queries (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or args.study / args.bundle / "train" / "models" / "model.pt"
    if not checkpoint.is_file():
        parser.error(f"no trained model at {checkpoint}: run scripts/run_study.py --bundles {args.bundle} --output "
                     f"{args.study} first, or give --checkpoint")
    model, x, y, grid, classes = load(args.bundle, checkpoint, args.n)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(f"{args.bundle}: {len(x)} test images, {classes} classes, clean accuracy {100 * clean:.2f} %, "
          f"eps grid {grid}, {args.threads} thread(s)")
    mine, my_time = ours(model, x, y, grid, args.apgd_steps, args.square_queries, classes)
    other, other_time, what = theirs(model, x, y, grid, classes)
    targeted = f", APGD-T on {min(9, classes - 1)} targets" if classes >= 4 else ""
    print(f"ours: FGSM, BIM-10, PGD-10, then APGD-CE, APGD-margin{targeted} ({args.apgd_steps} steps) and Square "
          f"({args.square_queries} queries) on the images still correct, nested across eps")
    print(f"theirs: {what}, each eps separately")
    print(f"{'eps':>8} {'ours (%)':>10} {'theirs (%)':>11} {'ours - theirs':>14}")
    for eps in grid:
        print(f"{eps:>8g} {100 * mine[eps]:>10.2f} {100 * other[eps]:>11.2f} {100 * (mine[eps] - other[eps]):>+14.2f}")
    print(f"time: ours {my_time:.1f} s, theirs {other_time:.1f} s, ratio {my_time / other_time:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
