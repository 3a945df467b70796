"""The MONAI Label task (monai_adv.monailabel_task) against the real monailabel 0.8.5, in the separate environment.

monailabel pins numpy<2 and needs torchvision and pydicom<3, so it lives in ``.venv-label`` (built by
``bash scripts/setup.sh`` through ``scripts/setup_label_env.sh``). This test prepares a bundle in the main environment:
the CT bundle with its demo overlay, a seeded random network whose last bias puts the test image near the decision
boundary saved as the checkpoint, a demo DICOM image and the same pixels as NIfTI. Then it runs this file as a script
with the label environment's Python, which computes the reference bracket with
:func:`monai_adv.sensitivity.minimal_flip_eps` on the bundle's own pre-processing, writes ``triage.json`` files whose
thresholds sit exactly at that bracket's ends, builds a ``MONAILabelApp`` whose ``init_infers`` returns the task,
and calls ``app.infer`` as MONAI Label's server does. The test checks the returned class, bracket and referral flag
against the reference and the thresholds.

Without ``.venv-label`` the test fails and says how to build it; ``MONAI_ADV_SKIP_LABEL=1`` skips it (and makes
``scripts/setup.sh`` skip building the environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "lung_nodule_ct_classification"
EPS_MAX = 0.04  # set through the task's ``overrides`` (the bundle's own triage_eps_max is 0.02)
EPS_TINY = 1e-5  # too small to flip the test network's prediction
MARGIN = 0.3  # clean logit margin of the test network on the test image: PGD flips it at eps ~0.005
MARKER = "MONAILABEL_RESULT "
# the classes the checkpoint records (a model trained on the user's own data): MONAI Label must name these, not the
# bundle's published benign/malignant
CLASSES = ["no_nodule", "nodule"]


def label_python() -> Path:
    """The label environment's interpreter: ``$MONAI_ADV_LABEL_VENV/bin/python``, default ``.venv-label``."""
    venv = Path(os.environ.get("MONAI_ADV_LABEL_VENV", ROOT / ".venv-label"))
    return (venv if venv.is_absolute() else ROOT / venv) / "bin" / "python"


# ---------------------------------------------------------------------------------------------------------- pytest side
def _prepare(work: Path) -> dict:
    """Bundle copy with a seeded random checkpoint, and one demo CT crop as DICOM and as NIfTI (same HU values)."""
    import nibabel as nib
    import numpy as np
    import torch
    from monai.bundle import ConfigParser

    from monai_adv.demo import ensure_demo_data
    from monai_adv.io import read_image
    from monai_adv.utils import atomic_write

    bundle = work / "app" / "model" / BUNDLE
    shutil.copytree(ROOT / "bundles" / BUNDLE / "configs", bundle / "configs")
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "demo.json")])
    parser["bundle_root"] = str(bundle)
    datalist = Path(ensure_demo_data("lung_nodule_ct", work / "demo", seed=0))
    item = json.loads(datalist.read_text())["test"][0]
    dicom = datalist.parent / item["image"]

    # A seeded random network is confident and nearly flat around the image (PGD does not flip it even at eps 1);
    # its last bias is shifted so that the clean logit margin on the test image is MARGIN: a decision boundary
    # close enough for a finite bracket, as a trained model has for its borderline images.
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    image = parser.get_parsed_content("preprocessing")({"image": str(dicom)})["image"][None]
    last = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits = network(image)[0]
        last.bias += logits.mean() - logits + torch.tensor([MARGIN / 2, -MARGIN / 2])
    identity = {"bundle": BUNDLE, "network": "monai_adv.networks.PaperVGG16", "class_names": CLASSES}
    state = {"model": network.state_dict(), "identity": identity}
    atomic_write(bundle / "models" / "model.pt", lambda tmp: torch.save(state, tmp))
    hu, _ = read_image(dicom)
    studies = work / "studies"
    studies.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(hu[0], dtype=np.float32), np.eye(4)), str(studies / "ct_crop.nii.gz"))
    spec = {"bundle": str(bundle), "dicom": str(dicom), "nifti_id": "ct_crop", "studies": str(studies)}
    (work / "spec.json").write_text(json.dumps(spec))
    return spec


def test_monailabel_task_returns_referral_flag_and_bracket(tmp_path):
    import pytest

    if os.environ.get("MONAI_ADV_SKIP_LABEL") == "1":
        pytest.skip("MONAI_ADV_SKIP_LABEL=1: the MONAI Label environment (.venv-label) is opted out")
    python = label_python()
    if not python.exists():
        pytest.fail(
            f"{python} not found: the MONAI Label environment is missing. Run `bash scripts/setup.sh` (or "
            "`bash scripts/setup_label_env.sh`), or set MONAI_ADV_SKIP_LABEL=1 to skip this test"
        )
    spec = _prepare(tmp_path)
    env = {
        **os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
        "MONAI_LABEL_SESSIONS": "false", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
        "MONAI_LABEL_TASKS_TRAIN": "false", "MONAI_LABEL_TASKS_SCORING": "false",
    }
    proc = subprocess.run(
        [str(python), __file__, str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert proc.returncode == 0 and lines, f"label-side script failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}"
    out = json.loads(lines[-1][len(MARKER):])
    ref, results = out["reference"], out["results"]

    # the reference: the test network is flipped within EPS_MAX, not within EPS_TINY
    for name in ("dicom", "nifti"):
        assert ref[name]["flipped"], f"PGD did not flip the test network within {EPS_MAX} ({name})"
        assert 0 <= ref[name]["eps_lo"] < ref[name]["eps_hi"] <= EPS_MAX
        assert not ref[name]["flipped_tiny"], f"the test network flipped within {EPS_TINY} ({name})"
    # the same HU pixels read from DICOM and from NIfTI give the same prediction and bracket
    assert ref["dicom"]["eps_hi"] == ref["nifti"]["eps_hi"] and ref["dicom"]["class"] == ref["nifti"]["class"]

    for case, r in results.items():
        params = r["params"]
        json.dumps(params, allow_nan=False)  # what the server sends must be strict JSON
        assert r["file"] is None, case  # classification: no label file
        image = "nifti" if case == "by_id" else "dicom"
        assert params["class"] == ref[image]["class"], case
        assert abs(params["probability"] - ref[image]["probability"]) < 1e-5, case
        scores = params["prediction"]
        assert [s["label"] for s in scores] == CLASSES, case
        assert abs(sum(s["score"] for s in scores) - 1) < 1e-5, case
        assert params["native_units"] == "HU", case
        if case == "tiny":
            assert params["eps_hi"] is None and params["eps_hi_native"] is None and not params["flipped"]
            assert params["eps_lo"] == EPS_TINY and params["refer"] is False
            continue
        assert params["flipped"] is True, case
        assert (params["eps_lo"], params["eps_hi"]) == (ref[image]["eps_lo"], ref[image]["eps_hi"]), case
        assert abs(params["eps_hi_native"] - 1400.0 * params["eps_hi"]) < 1e-9, case
        assert params["refer"] is (params["eps_hi"] <= params["threshold"]), case

    # default triage file (<bundle>/eval/triage.json) with the threshold at eps_hi: referred (eps_hi <= threshold)
    assert results["by_id"]["params"]["threshold"] == ref["nifti"]["eps_hi"]
    assert results["by_id"]["params"]["refer"] is True
    assert results["by_path"]["params"]["refer"] is True
    # an explicit triage file with the threshold at eps_lo: not referred
    assert results["low_threshold"]["params"]["threshold"] == ref["dicom"]["eps_lo"]
    assert results["low_threshold"]["params"]["refer"] is False

    info = out["info"]
    assert info["type"] == "classification" and info["labels"] == {"no_nodule": 0, "nodule": 1}
    assert info["referral"]["triage_file"] == str(Path(spec["bundle"]) / "eval" / "triage.json")
    assert info["referral"]["eps_max"] == EPS_MAX
    assert "missing.json" in out["missing_triage_error"]


def test_main_environment_needs_no_monailabel():
    """``monai_adv`` imports without monailabel; the task module says how to get it."""
    import importlib.util

    import pytest

    import monai_adv  # noqa: F401

    if importlib.util.find_spec("monailabel") is not None:
        pytest.skip("monailabel is installed in this environment")
    with pytest.raises(ImportError, match="setup_label_env.sh"):
        import monai_adv.monailabel_task  # noqa: F401


# ----------------------------------------------------------------------------------------------- label-environment side
def _label_side(work: Path) -> dict:
    """Runs in ``.venv-label``: reference bracket, triage files, a MONAILabelApp with the task, ``app.infer``."""
    import torch
    from monai.bundle import ConfigParser
    from monailabel.interfaces.app import MONAILabelApp

    from monai_adv.monailabel_task import SensitivityReferralInferTask
    from monai_adv.sensitivity import minimal_flip_eps
    from monai_adv.utils import atomic_write_json

    torch.set_num_threads(1)
    spec = json.loads((work / "spec.json").read_text())
    bundle = spec["bundle"]
    overlay = {"config_files": ["configs/demo.json"], "overrides": {"triage_eps_max": EPS_MAX}}

    # reference: the bundle's own pre-processing and network, minimal_flip_eps called directly
    parser = ConfigParser()
    parser.read_config([os.path.join(bundle, "configs", name) for name in ("inference.json", "demo.json")])
    parser["bundle_root"] = bundle
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(os.path.join(bundle, "models", "model.pt"), weights_only=True)["model"])
    network.eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    images = {"dicom": spec["dicom"], "nifti": os.path.join(spec["studies"], spec["nifti_id"] + ".nii.gz")}
    reference = {}
    for name, path in images.items():
        x = preprocessing({"image": path})["image"][None]
        r = minimal_flip_eps(network, x, eps_max=EPS_MAX, restarts=2, steps=10, seed=0)
        tiny = minimal_flip_eps(network, x, eps_max=EPS_TINY, restarts=2, steps=10, seed=0)
        k = int(r.prediction[0])
        reference[name] = {
            "class": CLASSES[k], "probability": float(r.probability[0, k]),
            "eps_lo": float(r.eps_lo[0]), "eps_hi": float(r.eps_hi[0]), "flipped": bool(r.flipped[0]),
            "flipped_tiny": bool(tiny.flipped[0]),
        }

    # thresholds exactly at the bracket's ends: at eps_hi the image is referred (<=), at eps_lo it is not
    atomic_write_json(os.path.join(bundle, "eval", "triage.json"), {"threshold": reference["dicom"]["eps_hi"]})
    low = str(work / "triage_low.json")
    atomic_write_json(low, {"threshold": reference["dicom"]["eps_lo"]})

    class AdversarialTriageApp(MONAILabelApp):
        def init_infers(self):
            return {
                "ct": SensitivityReferralInferTask(bundle, self.conf, **overlay),
                "ct_low": SensitivityReferralInferTask(bundle, self.conf, triage_file=low, **overlay),
                "ct_tiny": SensitivityReferralInferTask(bundle, self.conf, eps_max=EPS_TINY, **overlay),
            }

    app = AdversarialTriageApp(app_dir=str(work / "app"), studies=spec["studies"], conf={})
    requests = {
        "by_id": {"model": "ct", "image": spec["nifti_id"]},  # through the datastore, as a client asks
        "by_path": {"model": "ct", "image": spec["dicom"]},
        "low_threshold": {"model": "ct_low", "image": spec["dicom"]},
        "tiny": {"model": "ct_tiny", "image": spec["dicom"]},
    }
    results = {}
    for case, request in requests.items():
        r = app.infer({**request, "device": "cpu"})
        results[case] = {"file": r["file"], "params": {k: v for k, v in r["params"].items() if k != "latencies"}}

    try:
        SensitivityReferralInferTask(bundle, {}, triage_file=str(work / "missing.json"), **overlay)
        missing = ""
    except FileNotFoundError as e:
        missing = str(e)
    info = app.info()["models"]["ct"]
    return {
        "reference": reference, "results": results, "missing_triage_error": missing,
        "info": {
            "type": getattr(info["type"], "value", info["type"]), "labels": info["labels"],
            "referral": info["referral"],
        },
    }


if __name__ == "__main__":
    print(MARKER + json.dumps(_label_side(Path(sys.argv[1]))), flush=True)
