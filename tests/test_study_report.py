"""The report names the paper's data set, and sets its figures beside ours, only when our data is that data set; for
a user's own data set it names that data set and leaves the paper's figures out. Built from hand-made stage outputs
and data lists (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from monai_adv.study.compare_datasets import compare_datasets
from monai_adv.study.paper_figures import comparable_dataset
from monai_adv.study.report import BundleReport, write_report
from monai_adv.study.setup import default_bundles_dir, prepare_bundle

BUNDLE = "breast_lesion_mammography_classification"
PNG = b"\x89PNG\r\n\x1a\n"
SWEEP = [{"attack": "clean", "eps": 0.0, "accuracy": 0.8}] + [
    {"attack": a, "eps": e, "accuracy": acc} for a in ("FGSM", "PGD", "BIM")
    for e, acc in ((0.001, 0.6), (0.002, 0.35), (0.004, 0.2))
]


def stage_outputs(folder: Path) -> Path:
    """The files the report reads from a bundle's stage folders, with made-up numbers."""
    for stage in ("evaluate", "attack", "compare", "triage"):
        (folder / stage).mkdir(parents=True)
    (folder / "evaluate" / "metrics.json").write_text(json.dumps({"accuracy": 0.8, "roc_auc": 0.85, "n": 40}))
    (folder / "attack" / "attack_sweep.json").write_text(json.dumps({"rows": SWEEP, "checks": {}}))
    with (folder / "compare" / "robustness_comparison.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "attack", "eps", "accuracy"])
        for model, shift in (("original", 0.0), ("adversarially trained", 0.2)):
            writer.writerow([model, "clean", 0.0, 0.8])
            for attack in ("FGSM", "PGD", "BIM"):
                writer.writerows([[model, attack, 0.002, 0.3 + shift], [model, attack, 0.003, 0.25 + shift]])
    (folder / "triage" / "triage.json").write_text(json.dumps({
        "n": 40, "q": 0.2, "accuracy_all": 0.8, "accuracy_retained": 0.85, "n_flagged": 8, "fraction_flagged": 0.2,
        "threshold": 0.001, "settings": {"eps_max": 0.01},
        "comparison": {"confidence": {"accuracy_all": 0.8, "accuracy_retained": 0.83, "n_flagged": 8,
                                      "fraction_flagged": 0.2, "threshold": 0.7}},
    }))
    for name in ("attack/adversarial_examples.png", "attack/attack_sweep.png", "compare/robustness_comparison.png",
                 "triage/triage.png"):
        (folder / name).write_bytes(PNG)
    return folder


def datalist(folder: Path, name: str, classes: list[str], demo: bool = False, prepared_by: str | None = None) -> Path:
    folder.mkdir(parents=True)
    items = [{"id": f"img{k}", "image": f"images/img{k}.png", "label": k % 2, "patient_id": f"p{k}"} for k in range(4)]
    marks = {**({"demo": True} if demo else {}), **({"prepared_by": prepared_by} if prepared_by else {})}
    (folder / "datalist.json").write_text(json.dumps(
        {"name": name, "classes": classes, **marks, "training": items[:3], "test": items[3:]}
    ))
    return folder


def report_for(tmp_path: Path, data_dir: Path, overrides: dict | None = None) -> tuple[str, str]:
    """The report of the mammography bundle run on ``data_dir``: the whole text and the bundle's section."""
    setup = prepare_bundle(BUNDLE, default_bundles_dir(), "paper", data_dir, overrides)
    output = tmp_path / "study"
    bundle = BundleReport(BUNDLE, stage_outputs(output / BUNDLE), setup.data, setup.settings, setup.medical)
    column = getattr(comparable_dataset(BUNDLE, setup.data), "column", None)  # as the runner passes it
    compare_datasets({BUNDLE: SWEEP}, {BUNDLE: True}, {BUNDLE: column}, output / "compare_datasets")
    text = write_report(output / "report", [bundle], output / "compare_datasets").read_text()
    section = text.split(f'<a id="{BUNDLE}"></a>')[1].split('<a id="susceptibility"></a>')[0]
    return text, section


def test_a_users_data_set_is_named_and_the_papers_figures_are_left_out(tmp_path):
    data = datalist(tmp_path / "chest", "chest_xray_pneumonia", ["normal", "pneumonia"])
    text, section = report_for(tmp_path, data)
    assert section.splitlines()[2] == f"## {BUNDLE} (data set `chest_xray_pneumonia`)"
    assert "- **Classes** (the data list's, in label order): 0 `normal`, 1 `pneumonia`." in section
    # the paper's data set only in the one sentence saying that its figures are not comparable
    assert section.count("CBIS-DDSM") == 1
    assert ("The paper's figures for this kind of model are for CBIS-DDSM lesions (Mammogram); this run used data "
            "set `chest_xray_pneumonia`, so they are not comparable and are left out.") in section
    assert "paper (%)" not in section and "**paper:**" not in section and "Table 1 (" not in section
    for published in ("76.43", "45.36", "55.36", "80.13"):  # the paper's Tables 1, S5 and 2 for mammograms
        assert published not in text
    assert "| PGD | 0.002 | 0.51 | 35.00 |" in section  # ours, without a paper column
    susceptibility = text.split('<a id="susceptibility"></a>')[1].split("## Paper's data sets")[0]
    assert "not comparable (another data set)" in susceptibility and "data set `chest_xray_pneumonia`" in susceptibility


@pytest.mark.parametrize("name, demo", [("cbis_ddsm", False), ("breast_lesion_mammography", True)])
def test_the_papers_data_set_or_its_demo_stand_in_gets_the_papers_figures(tmp_path, name, demo):
    prepared_by = None if demo else "monai_adv.prepare.cbis_ddsm"
    data = datalist(tmp_path / "data", name, ["benign", "malignant"], demo=demo, prepared_by=prepared_by)
    text, section = report_for(tmp_path, data)
    assert section.splitlines()[2] == f"## {BUNDLE} (Mammogram: CBIS-DDSM lesions)"
    assert "paper (%), CBIS-DDSM lesions, Table 1" in section and "paper (%), CBIS-DDSM lesions, Table S5" in section
    assert "| no attack | 0 | 0 | 80.00 | 76.43 |" in section and "CBIS-DDSM lesions (Table 2)" in section
    assert "not comparable" not in text


@pytest.mark.parametrize("name, demo", [("lung_nodule_ct", True), ("cbis_ddsm", True), ("lidc_idri", False)])
def test_another_bundles_data_is_not_the_papers_data_set_of_this_bundle(name, demo):
    assert comparable_dataset(BUNDLE, {"name": name, "demo": demo}) is None
    assert comparable_dataset("unknown_bundle", {"name": "cbis_ddsm"}) is None


@pytest.mark.parametrize("prepared_by", [None, "monai_adv.prepare.folder"])
def test_a_users_folder_named_like_the_papers_data_set_is_not_the_papers_data_set(tmp_path, prepared_by):
    """A user's folder called ``cbis_ddsm`` (or a brain-MRI table prepared by prepare_brain_mri.py, whose registry is
    private) used to get the paper's heading and columns: only the paper data set's own script makes a data list
    comparable."""
    data = datalist(tmp_path / "data", "cbis_ddsm", ["benign", "malignant"], prepared_by=prepared_by)
    _, section = report_for(tmp_path, data)
    assert section.splitlines()[2] == f"## {BUNDLE} (data set `cbis_ddsm`)"
    assert "paper (%)" not in section and "not comparable" in section
    assert comparable_dataset("brain_lesion_mri_classification",
                              {"name": "brain_mri", "prepared_by": "monai_adv.prepare.brain_mri"}) is None


def test_another_bundles_native_units_come_from_its_sweep(tmp_path):
    """Regression: the report looked for the sweep's native scale at the top of attack_sweep.json (it is under
    "settings"), so another bundle's fixed HU window showed "-" for every eps in native units."""
    folder = stage_outputs(tmp_path / "study" / "theirs")
    (folder / "evaluate" / "metrics.json").unlink()  # another bundle's evaluation writes its own files
    (folder / "attack" / "attack_sweep.json").write_text(json.dumps(
        {"rows": SWEEP, "checks": {}, "settings": {"native_per_unit": 2200.0, "native_units": "HU"}}
    ))
    settings = {"profile": "bundle", "class_names": ["a", "b"], "network": "monai.networks.nets.DenseNet121",
                "adversarial": {"adv_eps": 0.003, "adv_attack": "pgd", "adv_ratio": 0.5, "adv_steps": 7}}
    data = {"label": "data set `mine` as the bundle's own configs read it", "short": "data set `mine`", "name": "mine"}
    bundle = BundleReport("theirs", folder, data, settings, True)
    compare_datasets({"theirs": SWEEP}, {"theirs": True}, {"theirs": None}, tmp_path / "study" / "compare_datasets")
    text = write_report(tmp_path / "study" / "report", [bundle], tmp_path / "study" / "compare_datasets").read_text()
    assert "| PGD | 0.001 | 2.2 | 60.00 |" in text and "| eps (HU) |" in text
    assert "Accuracy at eps 0.002 (4.4 HU)" in text or "Accuracy at eps 0.003 (6.6 HU)" in text
    assert "80.00 % (n = " in text and "the sweep's clean pass" in text


def test_the_worst_case_row_and_pgds_overstatement_are_reported(tmp_path):
    folder = stage_outputs(tmp_path / "study" / "theirs")
    worst = [{"attack": "worst case", "eps": e, "accuracy": acc}
             for e, acc in ((0.001, 0.5), (0.002, 0.35), (0.004, 0.1))]
    (folder / "attack" / "attack_sweep.json").write_text(json.dumps({
        "rows": SWEEP + worst, "checks": {},
        "settings": {"ensemble": {"APGD-CE": "partial(APGD)", "Square": "partial(Square)"}},
        "sweep": {"ensemble_broken": {"APGD-CE": [0, 4, 0, 4], "Square": [0, 0, 0, 1]}},
    }))
    data = {"label": "data set `mine`", "short": "data set `mine`", "name": "mine"}
    bundle = BundleReport("theirs", folder, data, {"class_names": ["a", "b"]}, True)
    compare_datasets({"theirs": SWEEP}, {"theirs": True}, {"theirs": None}, tmp_path / "study" / "compare_datasets")
    text = write_report(tmp_path / "study" / "report", [bundle], tmp_path / "study" / "compare_datasets").read_text()
    assert "| worst case | 0.004 | - | 10.00 |" in text
    assert "APGD-CE, then Square" in text and "APGD-CE 8, Square 1" in text
    assert "PGD-10 overstates robustness by (points of accuracy, PGD minus worst case): +10.00 at eps 0.001; " \
           "+0.00 at eps 0.002; +10.00 at eps 0.004." in text


def test_the_comparison_shows_the_worst_case_of_both_models_and_pgds_overstatement(tmp_path):
    folder = stage_outputs(tmp_path / "study" / "theirs")
    with (folder / "compare" / "robustness_comparison.csv").open("a", newline="") as handle:
        csv.writer(handle).writerows([["original", "worst case", 0.002, 0.3], ["original", "worst case", 0.003, 0.2],
                                      ["adversarially trained", "worst case", 0.002, 0.35],
                                      ["adversarially trained", "worst case", 0.003, 0.3]])
    data = {"label": "data set `mine`", "short": "data set `mine`", "name": "mine"}
    bundle = BundleReport("theirs", folder, data, {"class_names": ["a", "b"]}, True)
    compare_datasets({"theirs": SWEEP}, {"theirs": True}, {"theirs": None}, tmp_path / "study" / "compare_datasets")
    text = write_report(tmp_path / "study" / "report", [bundle], tmp_path / "study" / "compare_datasets").read_text()
    assert "| worst case | 0.003 | 20.00 | 30.00 | +10.00 |" in text
    assert "PGD-10 overstates robustness by (points of accuracy, PGD minus worst case): original: +0.00 at eps " \
           "0.002; +5.00 at eps 0.003; adversarially trained: +15.00 at eps 0.002; +15.00 at eps 0.003." in text


def test_a_model_at_chance_is_flagged_before_its_robustness_figures(tmp_path):
    folder = stage_outputs(tmp_path / "study" / "theirs")
    at_chance = [dict(r, accuracy=0.5) for r in SWEEP]
    (folder / "attack" / "attack_sweep.json").write_text(json.dumps({"rows": at_chance, "checks": {}}))
    data = {"label": "data set `mine`", "short": "data set `mine`", "name": "mine"}
    bundle = BundleReport("theirs", folder, data, {"class_names": ["a", "b"]}, True)
    compare_datasets({"theirs": at_chance}, {"theirs": True}, {"theirs": None}, tmp_path / "study" / "compare_datasets")
    text = write_report(tmp_path / "study" / "report", [bundle], tmp_path / "study" / "compare_datasets").read_text()
    assert "**Warning:** the clean accuracy (50.00 %) is no better than chance for 2 classes" in text
    (folder / "attack" / "attack_sweep.json").write_text(json.dumps({"rows": SWEEP, "checks": {}}))
    text = write_report(tmp_path / "study" / "report", [bundle], tmp_path / "study" / "compare_datasets").read_text()
    assert "Warning:" not in text
