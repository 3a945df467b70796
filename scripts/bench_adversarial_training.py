#!/usr/bin/env python
"""Seconds per epoch of adversarial training (monai_adv.engines.MixedAdversarialTrainer) against clean training
(monai.engines.SupervisedTrainer), measured side by side in one process.

Every configuration trains its own copy of the same small PaperVGG16 on the same random images; the epochs are
interleaved (one epoch of each configuration per round, in a rotating order) so that load changes on the machine
hit all of them alike, and the table reports the median over the measured rounds (the first round is a warm-up).

Cost model (attack-libraries note, section 4): a training step costs about 3 forward passes, an input-gradient
attack step about 2, so PGD-k on a fraction r of the batch costs about (3 + 2 k r) / 3 times a clean epoch:
50/50 PGD-7 3.3x, FGSM-RS on the whole batch 1.7x.

The "passes" column calibrates the model on this machine: it times epochs of bare input-gradient passes (as the
attacks take them) and predicts the slowdown from them, so "x clean" minus "passes" is the engine's own overhead.

Example::

    python scripts/bench_adversarial_training.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from monai.engines import SupervisedTrainer
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DataLoader

from monai_adv.engines import MixedAdversarialTrainer
from monai_adv.networks import PaperVGG16

# (label, attack, steps, ratio, goal on the slowdown or None)
CONFIGS = (
    ("clean SupervisedTrainer", None, 0, 0.0, None),
    ("50/50 PGD-7 (paper)", "pgd", 7, 0.5, 3.5),
    ("100% PGD-7 (public code)", "pgd", 7, 1.0, None),
    ("100% FGSM-RS (fast AT)", "fgsm_rs", 1, 1.0, 1.8),
    ("50/50 FGSM-RS", "fgsm_rs", 1, 0.5, 1.8),
)


def theory(steps: int, ratio: float) -> float:
    """Slowdown predicted by the cost model, (3 + 2 * steps * ratio) / 3."""
    return (3 + 2 * steps * ratio) / 3


def gradient_pass_epoch(network: nn.Module, loader: DataLoader, ratio: float) -> float:
    """Seconds for one input-gradient pass (eval mode, ``autograd.grad`` w.r.t. the input, as the attacks do) on
    ``round(ratio * B)`` samples of every batch: the unit cost of one attack step over an epoch."""
    network.eval()
    start = time.perf_counter()
    for batch in loader:
        k = max(1, int(ratio * batch["image"].shape[0] + 0.5))
        x = batch["image"][:k].clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(network(x), batch["label"][:k])
        torch.autograd.grad(loss, x)
    network.train()
    return time.perf_counter() - start


def build_trainer(config: tuple, network: nn.Module, loader: DataLoader, eps: float) -> SupervisedTrainer:
    _, attack, steps, ratio, _ = config
    common = dict(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.9), loss_function=nn.CrossEntropyLoss(),
        decollate=False,
    )
    if attack is None:
        return SupervisedTrainer(**common)
    steps = steps if attack == "pgd" else None
    return MixedAdversarialTrainer(**common, eps=eps, attack=attack, ratio=ratio, steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="training images per epoch (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--width", type=float, default=0.125, help="PaperVGG16 width multiplier (default 0.125)")
    parser.add_argument("--batch-norm", action="store_true", help="VGG16-BN instead of the paper's VGG16")
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--rounds", type=int, default=5, help="measured epochs per configuration (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as scripts/bench_attacks.py: denormal gradients distort CPU timings
    set_determinism(seed=args.seed)
    images = torch.rand(args.images, 1, args.size, args.size)
    labels = torch.randint(0, 2, (args.images,))
    items = [{"image": images[i], "label": labels[i]} for i in range(args.images)]
    loader = DataLoader(items, batch_size=args.batch_size, shuffle=True)
    base = PaperVGG16(in_channels=1, input_size=args.size, width=args.width, batch_norm=args.batch_norm)
    trainers = [build_trainer(c, copy.deepcopy(base), loader, args.eps) for c in CONFIGS]

    probe_net = copy.deepcopy(base)
    times: list[list[float]] = [[] for _ in CONFIGS]
    probes: dict[float, list[float]] = {0.5: [], 1.0: []}
    jobs = len(CONFIGS) + len(probes)
    for round_ in range(args.rounds + 1):
        shift = round_ % jobs
        for j in list(range(jobs))[shift:] + list(range(jobs))[:shift]:
            start = time.perf_counter()
            if j < len(CONFIGS):
                trainers[j].run()
                elapsed = time.perf_counter() - start
                if round_ > 0:  # round 0 warms up allocators and kernels
                    times[j].append(elapsed)
            else:
                ratio = list(probes)[j - len(CONFIGS)]
                elapsed = gradient_pass_epoch(probe_net, loader, ratio)
                if round_ > 0:
                    probes[ratio].append(elapsed)

    n_params = sum(p.numel() for p in base.parameters())
    print(
        f"PaperVGG16 width {args.width} at {args.size} px{' + BN' if args.batch_norm else ''} ({n_params:,} params), "
        f"{args.images} images, batch {args.batch_size}, eps {args.eps}, torch threads {torch.get_num_threads()}, "
        f"median of {args.rounds} interleaved epochs"
    )
    clean = statistics.median(times[0])
    probe = {r: statistics.median(t) for r, t in probes.items()}
    header = (
        f"{'configuration':<28} {'s/epoch':>8} {'min-max':>13} {'x clean':>8} {'model':>6} {'passes':>7} {'goal':>6}"
    )
    print(header)
    print("-" * len(header))
    for config, t in zip(CONFIGS, times):
        label, _, steps, ratio, goal = config
        med = statistics.median(t)
        measured_passes = 1 + steps * probe[ratio] / clean if steps else 1.0
        print(
            f"{label:<28} {med:8.3f} {min(t):6.3f}-{max(t):<6.3f} {med / clean:8.2f} {theory(steps, ratio):6.2f} "
            f"{measured_passes:7.2f} {'' if goal is None else f'<={goal}':>6}"
        )
    print(
        "model: (3 + 2 k r) / 3 (attack step = 2/3 of a training step); passes: 1 + k * (measured epoch of input-"
        "gradient passes on r*B samples) / clean epoch, i.e. the slowdown the attack's passes alone explain.\n"
        f"one input-gradient pass per batch, on the whole batch: {probe[1.0]:.3f} s/epoch = "
        f"{probe[1.0] / clean:.2f} x a clean training epoch; on half the batch: {probe[0.5]:.3f} s/epoch"
    )


if __name__ == "__main__":
    main()
