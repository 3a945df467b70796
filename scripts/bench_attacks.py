"""CPU benchmark of monai_adv's PGD against its floor, torchattacks and ART, and of the epsilon sweep with reuse.

Prints, measured side by side in one run (median of interleaved repeats):

* PGD-10 (eps/4 steps, random start) on one batch: the floor (10 forward+backward input-gradient passes of the same
  batch, nothing else), monai_adv.attacks.PGD, torchattacks.PGD and, if ``art`` is importable, ART's
  ProjectedGradientDescent with the same settings; ratios to the floor and to torchattacks;
* the FGSM+BIM+PGD sweep over an eps grid with reuse and without: time, gradient passes and accuracies.

The model is a small PaperVGG16 trained for a few seconds on synthetic "bright blob" images, so that the sweep breaks
samples inside the grid (an untrained VGG predicts one class whatever the input).

Usage::

    python scripts/bench_attacks.py [--size 64] [--width 0.125] [--batch 32] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from monai_adv.attacks import BIM, FGSM, PGD
from monai_adv.networks import PaperVGG16
from monai_adv.sweep import attack_sweep


def blobs(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1: a brighter square (size/4) on a noisy grey background; class 0: background only. Values in [0, 1]."""
    side = max(3, size // 4)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = 0.45 + 0.08 * torch.randn(n, 1, size, size, generator=gen)
    for i in torch.nonzero(y)[:, 0].tolist():
        r, c = torch.randint(0, size - side, (2,), generator=gen).tolist()
        x[i, 0, r : r + side, c : c + side] += 0.2
    return x.clamp(0, 1), y


def train(model: torch.nn.Module, size: int, steps: int, gen: torch.Generator) -> None:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(steps):
        x, y = blobs(32, size, gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None


def floor_passes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """The least any PGD-``steps`` must do: ``steps`` forward+backward input-gradient passes of the batch."""
    for _ in range(steps):
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xg), y), xg)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run every method once per round (rotating the order), after one warm-up call each."""
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(methods[name]))
    return times


def art_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int):
    """ART's PGD with our settings, or ``None`` with the reason when ART is not importable."""
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError as err:
        return None, f"ART not importable ({err}); skipped"
    import art

    clf = PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=2, clip_values=(0, 1)
    )
    attack = ProjectedGradientDescent(
        clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=steps, num_random_init=1, batch_size=x.shape[0],
        verbose=False,
    )
    xn, yn = x.numpy(), np.eye(2, dtype=np.float32)[y.numpy()]
    return (lambda: attack.generate(xn, yn)), f"ART {art.__version__} ProjectedGradientDescent (PyTorch)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--width", type=float, default=0.125, help="PaperVGG16 width multiplier (default 0.125)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    parser.add_argument("--eps", type=float, default=0.004, help="PGD eps for the timing (default 0.004)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats for the PGD timing")
    parser.add_argument("--sweep-repeats", type=int, default=3, help="interleaved repeats for the sweep timing")
    parser.add_argument("--grid", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.04, 0.08])
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    # A trained model is very confident on clean inputs, so their input gradients underflow to denormal floats,
    # which the CPU handles many times slower: without flushing, the floor (gradients at the clean points) is
    # slower than PGD itself (gradients at perturbed points). Flushing applies to every method alike.
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    # dropout 0: the plain narrow VGG16 does not learn this task in 100 Adam steps with the paper's 0.5
    model = PaperVGG16(
        spatial_dims=2, in_channels=1, num_classes=2, input_size=args.size, width=args.width, dropout=0.0
    )
    t_train = timed(lambda: train(model, args.size, args.train_steps, gen))
    x, y = blobs(args.batch, args.size, gen)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    print(
        f"PaperVGG16(width={args.width}, dropout=0) on 1x{args.size}x{args.size}, batch {args.batch}; "
        f"trained {args.train_steps} steps on synthetic blobs ({t_train:.1f} s), clean accuracy {clean:.3f}\n"
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}"
    )

    # ---- PGD-10 ----------------------------------------------------------------------------------------------------
    import torchattacks

    eps, steps = args.eps, args.steps
    ours = PGD(model, eps, steps=steps)
    theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    methods: dict[str, Callable[[], object]] = {
        f"floor ({steps} fwd+bwd)": lambda: floor_passes(model, x, y, steps),
        "monai_adv PGD": lambda: ours(x, y),
        "torchattacks PGD": lambda: theirs(x, y),
    }
    art_fn, art_note = art_pgd(model, x, y, eps, steps)
    if art_fn is not None:
        methods["ART PGD"] = art_fn
    times = interleaved(methods, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med[f"floor ({steps} fwd+bwd)"]
    print(f"\nPGD-{steps}, eps {eps:g}, step eps/4, random start; median of {args.repeats} interleaved repeats")
    print(f"{'method':<24}{'median s':>10}{'min s':>10}{'/ floor':>10}")
    for k, v in times.items():
        print(f"{k:<24}{med[k]:>10.4f}{min(v):>10.4f}{med[k] / floor:>10.3f}")
    print(f"{art_note}")
    print(
        f"ratios: ours/floor = {med['monai_adv PGD'] / floor:.3f} (goal <= 1.10); "
        f"ours/torchattacks = {med['monai_adv PGD'] / med['torchattacks PGD']:.3f} (goal <= 1.00)"
        + (f"; ours/ART = {med['monai_adv PGD'] / med['ART PGD']:.3f}" if "ART PGD" in med else "")
    )

    # ---- sweep ------------------------------------------------------------------------------------------------------
    attacks = {"FGSM": FGSM, "BIM": BIM, "PGD": PGD}
    results = {}

    def sweep(reuse: bool) -> None:
        torch.manual_seed(0)
        results[reuse] = attack_sweep(model, x, y, attacks, args.grid, reuse=reuse)

    stimes = interleaved({"reuse": lambda: sweep(True), "no reuse": lambda: sweep(False)}, args.sweep_repeats)
    smed = {k: statistics.median(v) for k, v in stimes.items()}
    print(f"\nFGSM+BIM+PGD sweep, eps grid {args.grid} (+0), median of {args.sweep_repeats} interleaved repeats")
    print(f"{'':<10}{'median s':>10}{'grad passes':>13}{'fwd passes':>12}{'samples attacked':>18}")
    for reuse, label in ((True, "reuse"), (False, "no reuse")):
        w = list(results[reuse].work.values())
        print(
            f"{label:<10}{smed[label]:>10.3f}{sum(v.grad_passes for v in w):>13}{sum(v.forward_passes for v in w):>12}"
            f"{sum(v.samples_attacked for v in w):>18}"
        )
    nominal = sum(v.grad_passes_no_reuse for v in results[True].work.values())
    spent = sum(v.grad_passes for v in results[True].work.values())
    print(
        f"ratios: time reuse/no-reuse = {smed['reuse'] / smed['no reuse']:.3f}; gradient passes "
        f"{spent}/{nominal} = {spent / nominal:.3f} of the no-reuse sweep"
    )
    print(f"\naccuracy (reuse | no reuse) at eps {list(results[True].eps)}")
    for name in attacks:
        a, b = results[True].accuracy(name), results[False].accuracy(name)
        print(f"  {name:<5} " + "  ".join(f"{u:.3f}|{v:.3f}" for u, v in zip(a, b)))


if __name__ == "__main__":
    main()
