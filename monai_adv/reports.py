"""Figures of the study, as PNG files written atomically: the paper's Figures 1, 2 and 3 and the triage curve."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_adv.utils import atomic_write

__all__ = ["write_robustness_comparison", "plot_accuracy_vs_eps", "plot_adversarial_examples", "plot_robustness_comparison", "plot_triage_curves", "plot_susceptibility"]

MARKERS = {"FGSM": "o", "BIM": "s", "PGD": "^"}


def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(nrows, ncols, figsize=size, squeeze=False)


def _save(plt, fig, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    written = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return written


def _eps_axis(ax, native_per_unit: float | None, native_units: str | None) -> None:
    ax.set_xlabel("epsilon (L-infinity, [0, 1] input units)")
    if native_per_unit:
        secondary = ax.secondary_xaxis("top", functions=(lambda e: e * native_per_unit, lambda n: n / native_per_unit))
        secondary.set_xlabel(f"epsilon ({native_units})")


def plot_accuracy_vs_eps(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    native_per_unit: float | None = None,
    native_units: str | None = None,
) -> Path:
    """Figure 2: accuracy (%) against epsilon, one line per attack.

    Args:
        rows: dicts with ``attack``, ``eps`` and ``accuracy`` (a fraction); eps-0 rows (clean accuracy) start every line.
        path: the PNG to write.
        native_per_unit: native units per [0, 1] unit (1400 for the CT window [-1000, 400] HU), for a second axis.
    """
    plt, fig, axes = _figure()
    ax = axes[0][0]
    by_attack: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        by_attack[str(row["attack"])].append((float(row["eps"]), 100.0 * float(row["accuracy"])))
    for attack, points in by_attack.items():
        points.sort()
        ax.plot(*zip(*points), marker=MARKERS.get(attack, "."), label=attack)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, pad=30 if native_per_unit else 6)
    _eps_axis(ax, native_per_unit, native_units)
    return _save(plt, fig, path)


def plot_adversarial_examples(
    clean: np.ndarray,
    adversarial: Mapping[str, np.ndarray],
    probabilities: Mapping[str, np.ndarray],
    labels: Sequence[int],
    class_names: Sequence[str],
    eps: float,
    path: str | os.PathLike,
) -> Path:
    """Figure 1: per image, the clean image, then for each attack the adversarial image and its perturbation
    amplified to the full gray range, each titled with the predicted class and its probability.

    Args:
        clean: ``(N, C, H, W)`` images in [0, 1] (C = 1 or 3), or volumes ``(N, C, D, H, W)``, drawn by their
            middle slice along D (titled so).
        adversarial: attack name -> adversarial images at ``eps``, shaped as ``clean``.
        probabilities: ``"clean"`` and each attack name -> ``(N, K)`` class probabilities.
        labels: N true classes.
    """
    attacks = list(adversarial)
    n = len(clean)
    plt, fig, axes = _figure(n, 1 + 2 * len(attacks), size=(2.0 * (1 + 2 * len(attacks)), 2.1 * n))

    def show(ax, image: np.ndarray, title: str, cmap: str = "gray", limits: tuple[float, float] = (0.0, 1.0)):
        if image.ndim == 4:  # a volume (C, D, H, W): its middle slice
            image = image[:, image.shape[1] // 2]
            title += "\n(middle slice)"
        picture = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        ax.imshow(np.clip((picture - limits[0]) / (limits[1] - limits[0]), 0, 1), cmap=cmap if image.shape[0] == 1 else None)
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    def caption(source: str, i: int) -> str:
        p = probabilities[source][i]
        k = int(np.argmax(p))
        return f"{class_names[k]} {100 * p[k]:.1f}%"

    for i in range(n):
        show(axes[i][0], clean[i], f"clean (true {class_names[labels[i]]})\n{caption('clean', i)}")
        for j, attack in enumerate(attacks):
            delta = adversarial[attack][i] - clean[i]
            bound = max(float(np.abs(delta).max()), 1e-12)
            show(axes[i][1 + 2 * j], adversarial[attack][i], f"{attack} eps={eps:g}\n{caption(attack, i)}")
            show(axes[i][2 + 2 * j], delta, f"{attack} perturbation\n(x{0.5 / bound:.0f})", limits=(-bound, bound))
    return _save(plt, fig, path)


def plot_robustness_comparison(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    native_per_unit: float | None = None,
    native_units: str | None = None,
) -> Path:
    """Figure 3: accuracy (%) against epsilon for each attack, original (dashed) against adversarially trained
    (solid) model. ``rows`` hold ``model``, ``attack``, ``eps`` and ``accuracy`` (a fraction)."""
    attacks = sorted({str(r["attack"]) for r in rows if str(r["attack"]) != "clean"})
    plt, fig, axes = _figure(1, max(1, len(attacks)), size=(4.0 * max(1, len(attacks)), 3.8))
    styles = ["--", "-", ":", "-."]
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    for ax, attack in zip(axes[0], attacks):
        for style, model in zip(styles, models):
            points = sorted(
                (float(r["eps"]), 100.0 * float(r["accuracy"]))
                for r in rows
                if str(r["model"]) == model and str(r["attack"]) in (attack, "clean")
            )
            ax.plot(*zip(*points), style, marker=MARKERS.get(attack, "."), label=model)
        ax.set_title(f"{title} {attack}".strip(), pad=30 if native_per_unit else 6)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _eps_axis(ax, native_per_unit, native_units)
    return _save(plt, fig, path)


def plot_triage_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "",
    marked_fraction: float | None = None,
) -> Path:
    """Retained accuracy (%) against the fraction of images referred, one curve per triage rule.

    Args:
        curves: rule name -> (fractions referred, accuracies of the retained images as fractions).
        marked_fraction: draw a vertical line there (the chosen ``q``).
    """
    plt, fig, axes = _figure()
    ax = axes[0][0]
    for rule, (fractions, accuracies) in curves.items():
        ax.plot(100 * np.asarray(fractions), 100 * np.asarray(accuracies), label=rule)
    if marked_fraction is not None:
        ax.axvline(100 * marked_fraction, color="gray", linestyle=":", label=f"q = {marked_fraction:g}")
    ax.set_xlabel("images referred (%)")
    ax.set_ylabel("accuracy of the retained images (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return _save(plt, fig, path)


def plot_susceptibility(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    reference: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    fraction: float = 0.5,
    title: str = "",
    reference_labels: Mapping[str, str] | None = None,
) -> Path:
    """The susceptibility comparison: accuracy under attack as a fraction of clean accuracy against epsilon (log
    scale), one solid line per model, the ``reference`` curves (the paper's) dashed in the same colour, and the bar
    at ``fraction`` of clean accuracy below which an attack "generally succeeds".

    Args:
        curves: model name -> ``(eps, relative accuracy)`` points, eps > 0.
        reference: name -> points of a published curve, drawn dashed; a name equal to one of ``curves`` shares
            its colour.
        reference_labels: name -> legend label of a reference curve (default ``"paper: <name>"``).
    """
    plt, fig, axes = _figure(size=(9.5, 4.2))
    ax = axes[0][0]
    colours = {}
    for name, points in curves.items():
        (line,) = ax.plot(*zip(*sorted(points)), marker="o", label=f"ours: {name}")
        colours[name] = line.get_color()
    for name, points in (reference or {}).items():
        label = (reference_labels or {}).get(name, f"paper: {name}")
        ax.plot(*zip(*sorted(points)), "--", marker="x", color=colours.get(name), label=label)
    ax.axhline(fraction, color="gray", linestyle=":", label=f"{fraction:g} x clean accuracy")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (L-infinity, [0, 1] input units)")
    ax.set_ylabel("accuracy / clean accuracy")
    ax.set_ylim(-0.02, 1.1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return _save(plt, fig, path)


def write_robustness_comparison(
    sweeps: Mapping[str, Mapping[str, Any]],
    output_dir: str | os.PathLike,
    native_per_unit: float | None = None,
    native_units: str | None = None,
) -> list[dict[str, Any]]:
    """Table S5 and Figure 3: merge the attack-sweep reports of several models on the same test split.

    Args:
        sweeps: model name -> the report of its :class:`~monai_adv.handlers.AttackSweep` (``handler.report``, the
            content of ``attack_sweep.json``), e.g. ``{"original": ..., "adversarially trained": ...}``.
        output_dir: where ``robustness_comparison.csv`` and ``robustness_comparison.png`` are written.

    Returns:
        the rows: ``model, attack, eps, eps_native, accuracy, n, correct`` (the clean row has attack ``clean``).
    """
    from monai_adv.handlers.attack_sweep import write_sweep_csv

    rows = []
    for model, report in sweeps.items():
        if report is None:
            raise ValueError(f"no attack-sweep report for model {model!r}: did its evaluator run?")
        rows.extend({"model": model, **row} for row in report["rows"])
    write_sweep_csv(Path(output_dir) / "robustness_comparison.csv", rows, extra=["model"])
    plot_robustness_comparison(
        rows, Path(output_dir) / "robustness_comparison.png", "", native_per_unit, native_units
    )
    return rows
