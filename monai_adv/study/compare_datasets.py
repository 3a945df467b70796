"""The study's "compare data sets" step: the susceptibility of every bundle's model, the paper's, and the medical to
non-medical ratio, written as ``susceptibility.json``, ``susceptibility.csv`` and ``susceptibility.png``."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_adv.study.paper_figures import PAPER_DATASETS, SUSCEPTIBILITY_TEXT, table1_rows
from monai_adv.study.susceptibility import Susceptibility, susceptibility, susceptibility_ratio
from monai_adv.utils import atomic_write_json, atomic_write_text

__all__ = ["ATTACK", "FRACTION", "PAPER_TEXT_BOUNDS", "paper_susceptibility", "compare_datasets"]

ATTACK = "PGD"
FRACTION = 0.5
# the Results' bounds for the non-medical models ("epsilon > 0.07 for MNIST, > 0.01 for CIFAR-10")
PAPER_TEXT_BOUNDS = {"MNIST": 0.07, "CIFAR-10": 0.01}
FILES = ("susceptibility.json", "susceptibility.csv", "susceptibility.png")


def paper_susceptibility() -> dict[str, Any]:
    """The same measure on the paper's Table 1 (all five data sets), and the ratio from Table 1 alone and with the
    text's larger lower bounds for MNIST and CIFAR-10."""
    items = {c: susceptibility(c, table1_rows(c), d.medical, ATTACK, FRACTION) for c, d in PAPER_DATASETS.items()}
    with_text = [
        s if s.reached or s.name not in PAPER_TEXT_BOUNDS
        else Susceptibility(
            s.name, s.medical, s.clean_accuracy, None, PAPER_TEXT_BOUNDS[s.name], None, s.attack, s.fraction
        )
        for s in items.values()
    ]
    return {
        "items": {
            c: s.to_dict() | {"text": s.text(), "statement": SUSCEPTIBILITY_TEXT.get(c)} for c, s in items.items()
        },
        "ratio_table1": susceptibility_ratio(items.values()).to_dict(),
        "ratio_text_bounds": susceptibility_ratio(with_text).to_dict(),
    }


def compare_datasets(
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]],
    medical: Mapping[str, bool],
    paper_columns: Mapping[str, str | None],
    folder: str | os.PathLike,
) -> dict[str, Any]:
    """Compute and write the comparison.

    Args:
        sweeps: bundle -> its attack-sweep rows (``attack_sweep.json``'s ``rows``).
        medical: bundle -> whether its model is medical.
        paper_columns: bundle -> the paper's matching column (``"CT"``, ...) or ``None``.
        folder: where the three files go (each written atomically).

    Returns:
        the content of ``susceptibility.json``: ``items`` (per bundle), ``ratio``, ``paper``.
    """
    from monai_adv.reports import plot_susceptibility

    folder = Path(folder)
    items = {name: susceptibility(name, rows, medical[name], ATTACK, FRACTION) for name, rows in sweeps.items()}
    ratio = susceptibility_ratio(items.values())
    paper = paper_susceptibility()
    result = {
        "attack": ATTACK,
        "fraction": FRACTION,
        "definition": f"smallest eps of the sweep grid at which {ATTACK} accuracy < {FRACTION:g} x clean accuracy",
        "items": {n: s.to_dict() | {"text": s.text(), "paper_column": paper_columns.get(n)} for n, s in items.items()},
        "ratio": ratio.to_dict(),
        "paper": paper,
    }
    atomic_write_json(folder / "susceptibility.json", result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["bundle", "medical", "clean_accuracy", "eps", "reached", "max_eps", "accuracy_at_eps"])
    for name, s in items.items():
        writer.writerow([
            name, int(s.medical), f"{s.clean_accuracy:.6g}", "" if s.eps is None else f"{s.eps:g}", int(s.reached),
            f"{s.max_eps:g}", "" if s.accuracy_at_eps is None else f"{s.accuracy_at_eps:.6g}",
        ])
    atomic_write_text(folder / "susceptibility.csv", buffer.getvalue())

    def relative(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
        clean = next(float(r["accuracy"]) for r in rows if r["attack"] == "clean")
        return [(float(r["eps"]), float(r["accuracy"]) / clean if clean > 0 else math.nan)
                for r in rows if r["attack"] == ATTACK and float(r["eps"]) > 0]

    curves = {name: relative(rows) for name, rows in sweeps.items()}
    reference = {name: relative(table1_rows(column)) for name, column in paper_columns.items() if column}
    labels = {name: f"paper, Table 1: {column}" for name, column in paper_columns.items() if column}
    plot_susceptibility(curves, folder / "susceptibility.png", reference, FRACTION,
                        f"{ATTACK}: when does accuracy fall below half of clean?", labels)
    return result
