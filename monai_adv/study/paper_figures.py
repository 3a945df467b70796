"""The published figures of Joel et al., JCO Clin Cancer Inform 2022;6:e2100170, that the study report sets beside ours.

Every number is copied from the paper's text (Table 1, Table S5, Table 2 and the Results section), in percent as
printed. Nothing here is computed from our runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CITATION", "PaperDataset", "PAPER_DATASETS", "BUNDLE_DATASETS", "TABLE1", "TABLE_S5", "TABLE_S5_EPS", "TABLE2",
    "SUSCEPTIBILITY_TEXT", "ADVERSARIAL_TRAINING_GAIN", "paper_dataset", "comparable_dataset", "table1_rows",
]

CITATION = "Joel et al., JCO Clin Cancer Inform 2022;6:e2100170"


@dataclass(frozen=True)
class PaperDataset:
    """A column of the paper's tables: its name there, the data set behind it and whether it is medical; and the
    data lists that are that data set: ``prepared_by`` is the module of our preparation script for it, which it
    records in the data list (:mod:`monai_adv.prepare`; ``None`` for the private MRI registry, whose script reads a
    table of one's own), ``demo`` the name of the embedded demo data that stands in for it (:mod:`monai_adv.demo`,
    data list ``demo: true``)."""

    column: str
    dataset: str
    medical: bool
    prepared_by: str | None
    demo: str


PAPER_DATASETS: dict[str, PaperDataset] = {
    "CT": PaperDataset("CT", "LIDC-IDRI lung nodules", True, "monai_adv.prepare.lidc", "lung_nodule_ct"),
    "Mammogram": PaperDataset(
        "Mammogram", "CBIS-DDSM lesions", True, "monai_adv.prepare.cbis_ddsm", "breast_lesion_mammography"
    ),
    "MRI": PaperDataset("MRI", "brain-metastasis registry (private)", True, None, "brain_lesion_mri"),
    "MNIST": PaperDataset("MNIST", "MNIST digits", False, "monai_adv.prepare.mnist", "mnist_digit"),
    "CIFAR-10": PaperDataset("CIFAR-10", "CIFAR-10 objects", False, "monai_adv.prepare.cifar10", "cifar10_object"),
}

BUNDLE_DATASETS: dict[str, str] = {
    "lung_nodule_ct_classification": "CT",
    "breast_lesion_mammography_classification": "Mammogram",
    "brain_lesion_mri_classification": "MRI",
    "mnist_digit_classification": "MNIST",
    "cifar10_object_classification": "CIFAR-10",
}

# Table 1: accuracy (%) with no attack (key ("clean", 0.0)) and under each attack at each epsilon ([0, 1] units).
_EPS = (0.001, 0.002, 0.004, 0.006)
_TABLE1_COLUMNS = {
    "CT": {"clean": 75.41, "FGSM": (51.98, 34.62, 31.12, 31.59), "PGD": (41.84, 26.92, 25.64, 25.64),
           "BIM": (44.99, 27.74, 25.87, 25.76)},
    "Mammogram": {"clean": 76.43, "FGSM": (46.96, 30.00, 24.46, 23.93), "PGD": (45.36, 27.68, 23.93, 23.57),
                  "BIM": (46.07, 28.57, 23.93, 23.57)},
    "MRI": {"clean": 93.64, "FGSM": (77.27, 56.36, 43.03, 40.38), "PGD": (61.36, 24.32, 6.36, 6.36),
            "BIM": (64.24, 29.02, 6.44, 6.36)},
    "MNIST": {"clean": 99.13, "FGSM": (99.05, 99.05, 99.04, 98.96), "PGD": (99.06, 99.05, 99.01, 98.92),
              "BIM": (99.06, 99.05, 99.01, 98.93)},
    "CIFAR-10": {"clean": 86.13, "FGSM": (85.32, 82.39, 74.29, 65.27), "PGD": (85.29, 81.93, 71.90, 59.98),
                 "BIM": (85.32, 82.06, 72.84, 62.28)},
}
TABLE1: dict[str, dict[tuple[str, float], float]] = {
    column: {("clean", 0.0): values["clean"]}
    | {(attack, eps): acc for attack in ("FGSM", "PGD", "BIM") for eps, acc in zip(_EPS, values[attack])}
    for column, values in _TABLE1_COLUMNS.items()
}

# Table S5: accuracy (%) before ("original") and after ("adversarially trained") adversarial training, clean and
# under each attack at eps 0.003, for the three medical data sets.
TABLE_S5_EPS = 0.003
TABLE_S5: dict[str, dict[str, dict[str, float]]] = {
    "CT": {"original": {"clean": 75.41, "FGSM": 31.82, "PGD": 25.87, "BIM": 26.22},
           "adversarially trained": {"clean": 77.39, "FGSM": 65.27, "PGD": 58.97, "BIM": 61.89}},
    "Mammogram": {"original": {"clean": 76.43, "FGSM": 26.25, "PGD": 24.46, "BIM": 24.82},
                  "adversarially trained": {"clean": 70.36, "FGSM": 57.32, "PGD": 55.36, "BIM": 56.07}},
    "MRI": {"original": {"clean": 93.64, "FGSM": 47.27, "PGD": 9.17, "BIM": 14.39},
            "adversarially trained": {"clean": 88.41, "FGSM": 87.95, "PGD": 80.45, "BIM": 82.12}},
}

# Results / abstract: "adversarial training caused model accuracy on adversarial images to increase by up to ..." (%).
ADVERSARIAL_TRAINING_GAIN: dict[str, float] = {"CT": 42.9, "Mammogram": 35.7, "MRI": 73.2}

# Table 2: accuracy (%) on the whole test set and on the "adversarially aware" test set without the 20 % most
# sensitive images, the change, and the epsilon threshold below which a PGD flip excluded an image.
TABLE2: dict[str, dict[str, float]] = {
    "CT": {"all": 75.41, "retained": 81.31, "change": 5.90, "threshold": 0.0003},
    "Mammogram": {"all": 76.43, "retained": 80.13, "change": 3.70, "threshold": 0.00025},
    "MRI": {"all": 93.64, "retained": 98.82, "change": 5.18, "threshold": 0.0006},
}

# Results, "Susceptibility": the perturbation needed for attacks to be "majority effective", as stated in the text.
SUSCEPTIBILITY_TEXT: dict[str, str] = {
    "CT": "< 0.004 (PGD and BIM)",
    "Mammogram": "< 0.004 (PGD and BIM)",
    "MRI": "< 0.004 (PGD and BIM)",
    "MNIST": "> 0.07",
    "CIFAR-10": "> 0.01",
}


def paper_dataset(bundle: str) -> PaperDataset | None:
    """The paper's column matching a bundle (by its name), or ``None`` for a bundle the paper did not study."""
    column = BUNDLE_DATASETS.get(bundle)
    return PAPER_DATASETS[column] if column else None


def comparable_dataset(bundle: str, data: Mapping[str, Any]) -> PaperDataset | None:
    """The paper's column for ``bundle`` when the data our run used is that column's data set, else ``None``.

    Our data is the paper's data set when its data list was written by our preparation script for it (its
    ``prepared_by`` equal to :attr:`PaperDataset.prepared_by`, no ``demo`` flag; never by name, which a user's
    folder can share by chance), or is the embedded demo data that stands in for it (``name`` equal to
    :attr:`PaperDataset.demo` and ``demo: true``). Any other data list (a user's own data set, the private MRI
    registry's stand-in table, or the demo data of another bundle) is not: the paper's figures are not comparable
    with ours.

    Args:
        bundle: the bundle's name.
        data: what :class:`~monai_adv.study.setup.BundleSetup` says about the data (``name``, ``demo``,
            ``prepared_by``).
    """
    paper = paper_dataset(bundle)
    if paper is None:
        return None
    if data.get("demo"):
        return paper if data.get("name") == paper.demo else None
    return paper if paper.prepared_by is not None and data.get("prepared_by") == paper.prepared_by else None


def table1_rows(column: str) -> list[dict[str, float | str]]:
    """Table 1's column as attack-sweep rows (``attack``, ``eps``, ``accuracy`` as a fraction), clean row first."""
    return [
        {"attack": attack, "eps": eps, "accuracy": value / 100.0} for (attack, eps), value in TABLE1[column].items()
    ]
