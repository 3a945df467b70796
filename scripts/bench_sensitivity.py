#!/usr/bin/env python
"""Per-image adversarial sensitivity: bisection against the paper's eps-grid protocol, on a toy model (CPU).

    python scripts/bench_sensitivity.py                      # 128 images, eps_max 0.04, 32-value grid
    python scripts/bench_sensitivity.py --images 64 --grid-size 21 --paper-restarts 20

A small CNN is trained for a few seconds on synthetic two-class "lesion" images (a blob brighter than a noisy
background; benign images have fainter blobs, so some test images are misclassified). On the same test images the
script runs :func:`monai_adv.sensitivity.minimal_flip_eps`:

* ``bisection``: probe at eps_max, then halve to ``eps_max / 256`` (9 probes), PGD-10 (eps/4) with ``--restarts``
  random starts plus the warm start (the defaults of ``minimal_flip_eps``);
* ``bisection-cold``: the same without the warm start, ``--restarts + 1`` random starts;
* ``grid``: the paper's protocol on a linear grid of ``--grid-size`` values up to eps_max, ``--restarts`` starts;
* ``grid-paper``: the same grid with ``--paper-restarts`` (20 in the paper's code).

It reports the gradient passes per image (measured, with early stopping and batch compaction; and nominal: every
probe with all steps and restarts, which is what the paper's ART code spends on every grid value), how well the
flagged sets at q=0.2 agree, whether the grid ever flips an image at a smaller eps than the bisection bracket, and
clean accuracy after referring 20 % by sensitivity, confidence and margin.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from monai_adv.attacks import predict
from monai_adv.sensitivity import SensitivityResult, linear_grid, minimal_flip_eps
from monai_adv.triage import compare_triage, flag_fraction, overlap, triage_curves


def lesions(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, size, size)`` images in [0, 1] and labels: class 1 blobs have contrast U(0.06, 0.25), class 0 blobs
    U(0, 0.1) (the overlap makes some images ambiguous)."""
    y = torch.randint(0, 2, (n,), generator=generator)
    x = 0.4 + 0.04 * torch.randn(n, 1, size, size, generator=generator)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    for i in range(n):
        cy, cx = (size / 4 + size / 2 * torch.rand(2, generator=generator)).tolist()
        radius = 2.0 + 3.0 * torch.rand(1, generator=generator).item()
        u = torch.rand(1, generator=generator).item()
        contrast = 0.06 + 0.19 * u if y[i] else 0.1 * u
        x[i, 0] += contrast * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    return x.clamp(0, 1), y


class Standardise(nn.Module):
    """Fixed intensity standardisation inside the network, so that eps stays in [0, 1] image units."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.4) / 0.05


def toy_cnn() -> nn.Module:
    return nn.Sequential(
        Standardise(), nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int = 64) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def score(res: SensitivityResult) -> np.ndarray:
    """eps_hi with the paper's sentinel 1 for never-flipped images (for rank correlations)."""
    s = res.eps_hi.cpu().numpy()
    return np.where(np.isfinite(s), s, 1.0)


def compare(bis: SensitivityResult, grid: SensitivityResult, q: float) -> dict[str, float]:
    """Agreement of a grid result with the bisection result."""
    b_lo, b_hi = bis.eps_lo.cpu().numpy(), bis.eps_hi.cpu().numpy()
    g_hi = grid.eps_hi.cpu().numpy()
    b_f, g_f = bis.flipped.cpu().numpy(), grid.flipped.cpu().numpy()
    below_lo = g_f & (g_hi < b_lo)  # the grid found an example where the bisection's probe had failed
    below_hi = g_f & (g_hi < b_hi)
    ov = overlap(flag_fraction(b_hi, q), flag_fraction(g_hi, q))
    b_hi_capped = np.where(b_f, b_hi, bis.eps_max)
    return {
        "spearman": float(spearmanr(score(bis), score(grid)).statistic),
        "jaccard": ov["jaccard"],
        "overlap": ov["fraction_of_a"],
        "grid_only_flipped": int((g_f & ~b_f).sum()),
        "bisection_only_flipped": int((b_f & ~g_f).sum()),
        "grid_below_lo": int(below_lo.sum()),
        "grid_below_lo_max": float((b_lo - g_hi)[below_lo].max()) if below_lo.any() else 0.0,
        "grid_below_hi": int(below_hi.sum()),
        "grid_below_hi_max": float((b_hi_capped - g_hi)[below_hi].max()) if below_hi.any() else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="test images (default 128)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps of batch 64 (default 300)")
    parser.add_argument("--eps-max", type=float, default=0.04, help="top of the search and of the grid (0.04)")
    parser.add_argument("--grid-size", type=int, default=32, help="linear grid values (default 32, the LIDC grid)")
    parser.add_argument("--restarts", type=int, default=2, help="PGD restarts of bisection and grid (default 2)")
    parser.add_argument("--paper-restarts", type=int, default=20, help="restarts of the paper's grid (default 20)")
    parser.add_argument("--q", type=float, default=0.2, help="referred fraction (default 0.2)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as scripts/bench_attacks.py: denormal gradients distort CPU timings

    g = torch.Generator().manual_seed(args.seed)
    x_train, y_train = lesions(2048, args.size, g)
    x, y = lesions(args.images, args.size, g)
    torch.manual_seed(args.seed)
    model = toy_cnn()
    start = time.perf_counter()
    loss = train(model, x_train, y_train, args.train_steps)
    model.eval()
    with torch.no_grad():
        accuracy = float((predict(model(x)) == y).float().mean())
    print(f"toy CNN: trained {time.perf_counter() - start:.1f} s (last loss {loss:.3f}); "
          f"{args.images} test images {args.size}x{args.size}, clean accuracy {accuracy:.3f}")

    grid = linear_grid(args.eps_max, args.grid_size)
    runs = {
        "bisection": dict(eps_max=args.eps_max, restarts=args.restarts),
        "bisection-cold": dict(eps_max=args.eps_max, restarts=args.restarts + 1, warm_start=False),
        "grid": dict(method="grid", grid=grid, restarts=args.restarts),
        "grid-paper": dict(method="grid", grid=grid, restarts=args.paper_restarts),
    }
    results, times = {}, {}
    for name, kwargs in runs.items():
        start = time.perf_counter()
        results[name] = minimal_flip_eps(model, x, labels=y, seed=args.seed, **kwargs)
        times[name] = time.perf_counter() - start

    paper_nominal = results["grid-paper"].nominal_grad_passes_per_sample
    bis = results["bisection"]
    print(f"\neps_max {args.eps_max:g}, bisection tol {bis.tol:.3g} (9 probes), grid {args.grid_size} linear values "
          f"(spacing {grid[0]:.3g}); PGD 10 steps of eps/4, random starts, any-iterate scoring; bisection probes "
          f"below eps_max add a warm start")
    print(f"gradient passes per image; 'x paper' = the paper's nominal cost ({args.grid_size} values x 10 steps x "
          f"{args.paper_restarts} restarts = {paper_nominal}) / measured")
    header = (f"{'method':<14} {'restarts':>8} {'flipped':>8} {'measured':>9} {'nominal':>8} {'x paper':>8} "
              f"{'wall s':>7}")
    print(header + "\n" + "-" * len(header))
    for name, res in results.items():
        print(f"{name:<14} {res.restarts:>8} {int(res.flipped.sum()):>5}/{res.n:<3}"
              f"{res.grad_passes_per_sample:>9.1f} {res.nominal_grad_passes_per_sample:>8} "
              f"{paper_nominal / res.grad_passes_per_sample:>8.1f} {times[name]:>7.1f}")
    measured_ratio = {n: results[n].grad_passes_per_sample / bis.grad_passes_per_sample for n in ("grid", "grid-paper")}
    print(f"bisection uses {measured_ratio['grid']:.1f}x fewer passes than the same-restart grid and "
          f"{measured_ratio['grid-paper']:.1f}x fewer than the paper grid as measured here (with early stopping and "
          f"compaction), {paper_nominal / bis.grad_passes_per_sample:.1f}x fewer than the paper's nominal cost")

    print(f"\nagreement with bisection: rank correlation of eps_hi, flagged sets at q={args.q:g} (jaccard, fraction of "
          "bisection's set also flagged), images flipped by only one, and images the other method flipped at an eps "
          "below the bisection's eps_lo / eps_hi (count, largest difference)")
    header = (f"{'method':<14} {'spearman':>8} {'jaccard':>8} {'overlap':>8} {'only it':>9} {'bis-only':>8} "
              f"{'below lo':>8} {'max diff':>9} {'below hi':>8} {'max diff':>9}")
    print(header + "\n" + "-" * len(header))
    for name in ("bisection-cold", "grid", "grid-paper"):
        c = compare(bis, results[name], args.q)
        print(f"{name:<14} {c['spearman']:>8.3f} {c['jaccard']:>8.3f} {c['overlap']:>8.3f} {c['grid_only_flipped']:>9} "
              f"{c['bisection_only_flipped']:>8} {c['grid_below_lo']:>8} {c['grid_below_lo_max']:>9.2e} "
              f"{c['grid_below_hi']:>8} {c['grid_below_hi_max']:>9.2e}")

    arrays = bis.arrays()
    rules = {
        "sensitivity (bisection)": arrays["eps_hi"],
        "sensitivity (grid)": results["grid"].arrays()["eps_hi"],
        "sensitivity (grid-paper)": results["grid-paper"].arrays()["eps_hi"],
        "confidence": arrays["confidence"],
        "margin": arrays["margin"],
    }
    print(f"\ntriage: refer q={args.q:g} of the images, clean accuracy on the rest")
    header = f"{'rule':<25} {'flagged':>8} {'threshold':>10} {'acc all':>8} {'retained':>9} {'flagged acc':>11}"
    print(header + "\n" + "-" * len(header))
    for name, res in compare_triage(rules, arrays["correct"], args.q).items():
        threshold = f"{res.threshold:.4g}" if math.isfinite(res.threshold) else str(res.threshold)
        print(f"{name:<25} {res.fraction_flagged:>8.3f} {threshold:>10} {res.accuracy_all:>8.3f} "
              f"{res.accuracy_retained:>9.3f} {res.accuracy_flagged:>11.3f}")

    fractions = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    print("\nretained accuracy against the fraction referred")
    header = f"{'rule':<25} " + " ".join(f"{q:>6.2f}" for q in fractions)
    print(header + "\n" + "-" * len(header))
    for name, (_, acc) in triage_curves(rules, arrays["correct"], fractions).items():
        print(f"{name:<25} " + " ".join(f"{a:>6.3f}" for a in acc))


if __name__ == "__main__":
    main()
