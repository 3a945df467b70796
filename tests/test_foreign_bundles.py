"""The overlays on bundles that are not ours (issue #11 item 7).

``tests/foreign_bundles`` holds small classification bundles in the model zoo's layout, written the way a MONAI user
writes them (zoo ids only, MONAI classes only, no monai_adv id): a YAML DenseNet121 with ``ScaleIntensityd``, a JSON
ResNet-10 with ``ScaleIntensityd`` then a per-image z-score (``NormalizeIntensityd``), a 4-class DenseNet on a
clipped HU window, a 3-D classifier on NIfTI volumes windowed to [-1, 1], and one without any intensity window.
``tests/foreign_data.py`` cuts their data from real sample scans shipped with pydicom and nibabel.

On each bundle: its own training, then the attack sweep, adversarial training (one or two epochs), the comparison and
triage through MONAI's ``run`` entry point with our overlays, and the sweep's accuracies checked against the same
model attacked directly with ``monai_adv.sweep.attack_sweep`` on [0, 1] images of the bundle's own window, with the
model written as a function of those images by hand here (not with ``monai_adv.input_space``).

One bundle (the z-score one) runs every overlay as the README shows, ``python -m monai.bundle run`` in a subprocess
from inside the bundle with the ``--config_file`` list printed by ``python -m monai_adv overlay``; the others call
``monai.bundle.run`` in this process, the function that command line calls, to save the ~7 s of imports per run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run
from monai.transforms import Compose
from monai.utils import convert_to_tensor
from torch import nn

from monai_adv.attacks import worst_case_ensemble
from monai_adv.attacks.seeding import key_of
from monai_adv.sweep import WORST_CASE, attack_sweep

from foreign_data import BUILDERS, SPLITS

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:parsing config_file"),  # MONAI's notice that configs run code, every run
]

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = ROOT / "tests" / "foreign_bundles"
OVERLAY_DIR = ROOT / "monai_adv" / "overlays"
N_TEST = SPLITS["testing"]
SQUARE_QUERIES = 50  # the overlays' default ensemble with a smaller black-box budget, to keep the suite short
CSV_COLUMNS = ["attack", "eps", "eps_native", "accuracy", "n", "correct"]


@dataclass(frozen=True)
class Foreign:
    """What the test knows about a foreign bundle, written down by hand from its configs.

    ``window``: the (b_min, b_max) its intensity window maps to; ``zscore``: whether a per-image z-score follows;
    ``native_per_unit``: a_max - a_min of a fixed window (``None`` for a per-image window); ``epochs_id``: the id of
    its epoch count and the value for adversarial training (the 3-D bundle validates, and so saves, every 2nd epoch);
    ``overrides``: extra ids for every overlay run: for the slow DenseNet121 a shorter grid, a smaller triage range
    (fewer images flip, so fewer bisection probes) and one batch of 16 (half the passes); larger eps for the 4-class
    bundle, which the default grid (at most 13 HU of its 2200 HU window) never flips.
    """

    name: str
    ext: str
    num_classes: int
    window_transform: str
    window: tuple[float, float]
    zscore: bool
    native_per_unit: float | None
    epochs_id: str
    adv_epochs: int
    cli: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


BUNDLES = {
    b.name: b
    for b in [
        Foreign("mr_disk_densenet_classification", "yaml", 2, "ScaleIntensityd", (0.0, 1.0), False, None, "epochs", 1,
                overrides={"eps_grid": [0.002, 0.006], "triage_eps_max": 0.006, "batch_size": 16}),
        Foreign("ct_stripes_resnet_zscore_classification", "json", 2, "ScaleIntensityd", (0.0, 1.0), True, None,
                "epochs", 1, cli=True),
        Foreign("ct_quadrant_four_class_classification", "json", 4, "ScaleIntensityRanged", (0.0, 1.0), False,
                2200.0, "max_epochs", 1, overrides={"eps_grid": [0.004, 0.02, 0.05]}),
        Foreign("mr_volume_3d_classification", "yaml", 2, "ScaleIntensityRanged", (-1.0, 1.0), False, 1500.0,
                "epochs", 2),
    ]
}
OVERLAYS = ["attack_sweep", "adversarial_train", "compare", "triage"]


# ---------------------------------------------------------------------------------------------------------------------
# running bundles


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _cli_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_bundle(bundle: Foreign, work: Path, data: Path, configs: list[str], overlay: str | None = None,
               **overrides: Any) -> str:
    """Run the bundle copy in ``work`` with ``configs`` (names under configs/) and the overlay's files appended;
    returns the log of a subprocess run ("" in process). Only the overlays of a ``cli`` bundle run in a subprocess
    (its own training and evaluation are not what is tested), as the README shows, from inside the bundle:

        python -m monai.bundle run --config_file "$(python -m monai_adv overlay NAME configs/train.json ...)" ...
    """
    own = [f"configs/{c}.{bundle.ext}" for c in configs]
    if not (bundle.cli and overlay is not None):
        from monai_adv.overlays import overlay_files

        files = [str(work / f) for f in own] + [str(f) for f in (overlay_files(overlay) if overlay else [])]
        # monai.bundle.run is what `python -m monai.bundle run` calls; no logging_file here: fileConfig would
        # disable the loggers of the other tests in this process
        bundle_run(config_file=files, bundle_root=str(work), dataset_dir=str(data), logging_file=False, **overrides)
        return ""
    listed = subprocess.run([sys.executable, "-m", "monai_adv", "overlay", overlay, *own], capture_output=True,
                            text=True, cwd=work, env=_env())
    assert listed.returncode == 0, listed.stderr
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", listed.stdout.strip(), "--bundle_root",
               ".", "--dataset_dir", str(data), "--logging_file", "configs/logging.conf"]
    for key, value in overrides.items():
        command += [f"--{key}", _cli_value(value)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=work, env=_env(), timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def evaluate_accuracy(work: Path) -> float:
    """The accuracy the bundle's own evaluate config wrote (MONAI's MetricsSaver: ``<metric>,<value>``)."""
    rows = (work / "eval" / "metrics.csv").read_text().split()
    assert len(rows) == 1, rows
    return float(rows[0].split(",")[1])




class Runs:
    """Every bundle's data, training and overlay runs, each done once per session on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[tuple, Any] = {}

    def _once(self, key: tuple, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def data(self, name: str) -> Path:
        def make() -> Path:
            folder = self.root / "data" / name
            folder.mkdir(parents=True)
            BUILDERS[name](folder)
            return folder

        return self._once(("data", name), make)

    def trained(self, name: str) -> Path:
        """A copy of the bundle (as a user downloads it), trained with its own train config, then evaluated."""

        def make() -> Path:
            bundle, work = BUNDLES[name], self.root / "bundles" / name
            shutil.copytree(FOREIGN / name, work)
            run_bundle(bundle, work, self.data(name), ["train"])
            assert (work / "models" / "model.pt").is_file()
            run_bundle(bundle, work, self.data(name), ["train", "evaluate"])
            return work

        return self._once(("trained", name), make)

    def overlay(self, name: str, overlay: str) -> tuple[Path, str]:
        """The overlay's output folder and log; adversarial training runs before the comparison."""

        def make() -> tuple[Path, str]:
            bundle, work = BUNDLES[name], self.trained(name)
            out = work / "adv" / overlay
            overrides = {**bundle.overrides, "adv_output_dir": str(out), "square_queries": SQUARE_QUERIES}
            if overlay == "adversarial_train":
                overrides = {bundle.epochs_id: bundle.adv_epochs, "adv_output_dir": str(out)}
                clean = sha256(work / "models" / "model.pt")
                log = run_bundle(bundle, work, self.data(name), ["train"], overlay, **overrides)
                assert sha256(work / "models" / "model.pt") == clean, "adversarial training changed the clean model"
                return out, log
            if overlay == "compare":
                self.overlay(name, "adversarial_train")
            return out, run_bundle(bundle, work, self.data(name), ["train", "evaluate"], overlay, **overrides)

        return self._once(("overlay", name, overlay), make)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("foreign"))


# ---------------------------------------------------------------------------------------------------------------------
# the direct attack, written here by hand


class OnWindow(nn.Module):
    """The bundle's network as a function of ``u`` in [0, 1], the fraction of its intensity window: the window maps
    ``u`` to ``b_min + u * (b_max - b_min)``, and a per-image z-score (population std, as NormalizeIntensityd)
    follows where the bundle has one."""

    def __init__(self, net: nn.Module, window: tuple[float, float], zscore: bool) -> None:
        super().__init__()
        self.net, self.window, self.zscore = net, window, zscore

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        low, high = self.window
        x = low + u * (high - low)
        if self.zscore:
            flat = x.reshape(x.shape[0], -1)
            shape = (-1,) + (1,) * (x.ndim - 1)
            x = (x - flat.mean(1).reshape(shape)) / flat.std(1, unbiased=False).reshape(shape)
        return self.net(x)


def bundle_parser(bundle: Foreign, work: Path, data: Path, configs: list[str]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(work / "configs" / f"{c}.{bundle.ext}") for c in configs])
    parser["bundle_root"] = str(work)
    parser["dataset_dir"] = str(data)
    return parser


def load_weights(net: nn.Module, path: Path) -> nn.Module:
    """Weights saved by MONAI's CheckpointSaver (Ignite stores a one-entry save_dict as the bare state dict)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state))
    return net.eval()


@dataclass
class Reference:
    net: nn.Module
    model: nn.Module  # net as a function of u
    images: torch.Tensor  # u, (N, 1, *spatial)
    full: torch.Tensor  # the bundle's whole preprocessing, what its network reads
    labels: torch.Tensor
    ids: list[str]


def reference(bundle: Foreign, work: Path, data: Path, ckpt: str = "model.pt") -> Reference:
    """The test items as [0, 1] images of the bundle's window, built with its own transforms up to and including
    the window, and the trained network as a function of them."""
    parser = bundle_parser(bundle, work, data, ["train", "evaluate"])
    transforms = list(parser.get_parsed_content("validate#preprocessing").transforms)
    names = [type(t).__name__ for t in transforms]
    k = names.index(bundle.window_transform)
    after = names[k + 1 :]
    # what follows the window must be the z-score (where stated) and type casts only, so OnWindow is exact
    not_casts = [n for n in after if n not in ("EnsureTyped", "CastToTyped")]
    assert not_casts == (["NormalizeIntensityd"] if bundle.zscore else []), names
    items = parser.get_parsed_content("validate#dataset#data")
    assert len(items) == N_TEST
    up_to_window, whole = Compose(transforms[: k + 1]), Compose(transforms)
    low, high = bundle.window
    def image(transform: Compose, item: dict) -> torch.Tensor:
        return convert_to_tensor(transform(dict(item))["image"], track_meta=False).float()

    images = torch.stack([(image(up_to_window, i) - low) / (high - low) for i in items])
    full = torch.stack([image(whole, i) for i in items])
    net = load_weights(parser.get_parsed_content("network_def"), work / "models" / ckpt)
    return Reference(net, OnWindow(net, bundle.window, bundle.zscore), images, full,
                     torch.tensor([int(i["label"]) for i in items]), [str(i["id"]) for i in items])


def overlay_defaults() -> tuple[dict[str, Any], list[float]]:
    """The attacks and eps grid of the overlays' common settings, as the overlays build them."""
    parser = ConfigParser(json.loads((OVERLAY_DIR / "common.json").read_text()))
    return parser.get_parsed_content("attacks"), list(parser["eps_grid"])


def direct_sweep(ref: Reference, eps_grid: list[float]):
    """The overlays' default sweep written out: their attacks, then the worst case of the default ensemble (with
    the test's Square budget) for the network's number of classes."""
    attacks, _ = overlay_defaults()
    with torch.no_grad():
        classes = ref.model(ref.images[:1]).shape[1]
    ensemble = worst_case_ensemble(classes, square_queries=SQUARE_QUERIES)
    return attack_sweep(ref.model, ref.images, ref.labels, attacks, eps_grid, keys=[key_of(i) for i in ref.ids],
                        seed=0, ensemble=ensemble)


def sweep_rows(grid: list[float]) -> list[tuple[str, float]]:
    """``(attack, eps)`` of the rows of an overlay's sweep, in order: clean, every attack, the worst case."""
    attacks, _ = overlay_defaults()
    return [("clean", 0.0)] + [(a, e) for a in [*attacks, WORST_CASE] for e in grid]


def sweep_accuracies(rows: list[dict[str, str]]) -> dict[tuple[str, float], tuple[float, int, int]]:
    return {(r["attack"], float(r["eps"])): (float(r["accuracy"]), int(r["correct"]), int(r["n"])) for r in rows}


# ---------------------------------------------------------------------------------------------------------------------
# tests


def test_foreign_bundles_use_zoo_ids_only():
    """The bundles define the zoo's ids the overlays read and none of ours (no adv_* id, no monai_adv target)."""
    required = {"bundle_root", "output_dir", "ckpt_path", "dataset_dir", "device", "num_classes", "network_def",
                "network", "train#trainer", "train#handlers", "validate#preprocessing", "validate#handlers",
                "validate#evaluator"}
    for name in [*BUNDLES, "unwindowed_ct_classification"]:
        ext = BUNDLES[name].ext if name in BUNDLES else "json"
        parser = ConfigParser()
        parser.read_config(str(FOREIGN / name / "configs" / f"train.{ext}"))
        missing = [i for i in required if i not in parser]
        assert not missing, f"{name} lacks {missing}"
        texts = " ".join(p.read_text() for p in (FOREIGN / name / "configs").iterdir())
        assert "monai_adv" not in texts and "adv_" not in texts, name
        assert set(json.loads((FOREIGN / name / "configs" / "metadata.json").read_text())) >= {"network_data_format"}


@pytest.mark.parametrize("name", list(BUNDLES))
def test_foreign_bundle_trains_and_evaluates_better_than_chance(name, runs):
    work = runs.trained(name)
    accuracy = evaluate_accuracy(work)
    assert accuracy > 1.0 / BUNDLES[name].num_classes + 0.25, accuracy
    # the hand-written model on [0, 1] images of the window is the bundle's network on its own preprocessing
    ref = reference(BUNDLES[name], work, runs.data(name))
    assert float(ref.images.min()) >= 0.0 and float(ref.images.max()) <= 1.0
    with torch.no_grad():
        on_u, on_x = ref.model(ref.images), ref.net(ref.full)
    torch.testing.assert_close(on_u, on_x, atol=1e-4, rtol=1e-4)
    assert (on_x.argmax(1) == ref.labels).float().mean().item() == pytest.approx(accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUNDLES))
def test_sweep_equals_the_direct_attack_in_window_units(name, runs):
    bundle = BUNDLES[name]
    out, _ = runs.overlay(name, "attack_sweep")
    rows = read_csv(out / "attack_sweep.csv")
    assert list(rows[0]) == CSV_COLUMNS
    _, default_grid = overlay_defaults()
    grid = bundle.overrides.get("eps_grid", default_grid)
    assert [(r["attack"], float(r["eps"])) for r in rows] == sweep_rows(grid)
    assert {int(r["n"]) for r in rows} == {N_TEST}
    clean = evaluate_accuracy(runs.trained(name))
    assert float(rows[0]["accuracy"]) == pytest.approx(clean)
    for r in rows:
        if bundle.native_per_unit is None:
            assert r["eps_native"] == ""
        else:
            assert float(r["eps_native"]) == pytest.approx(float(r["eps"]) * bundle.native_per_unit, rel=1e-5)
    report = json.loads((out / "attack_sweep.json").read_text())
    assert report["checks"]["eps0_is_clean"]["passed"] is True  # the bundle's own key metric agrees
    assert report["checks"]["monotone"]["passed"] is True

    ref = reference(bundle, runs.trained(name), runs.data(name))
    direct = direct_sweep(ref, grid)
    expected = {("clean", 0.0): (direct.clean_accuracy, direct.clean_correct, direct.n)}
    for attack in direct.attacks:
        for eps, correct in zip(direct.eps, direct.correct[attack]):
            if eps > 0:
                expected[(attack, eps)] = (correct / direct.n, correct, direct.n)
    got = sweep_accuracies(rows)
    assert {k: v[1:] for k, v in got.items()} == {k: v[1:] for k, v in expected.items()}
    for key, (accuracy, _, _) in got.items():
        assert accuracy == pytest.approx(expected[key][0], abs=1e-6), key
    # the attacks did something somewhere on the grid, so the equality is not that of untouched clean counts
    assert min(v[1] for v in expected.values()) < direct.clean_correct or direct.clean_correct == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUNDLES))
def test_adversarial_training_writes_the_robust_model_and_keeps_the_clean_one(name, runs):
    bundle, work = BUNDLES[name], runs.trained(name)
    runs.overlay(name, "adversarial_train")
    robust = work / "models" / "model_adversarial.pt"
    assert robust.is_file()
    parser = bundle_parser(bundle, work, runs.data(name), ["train"])
    # lazy=False: a new network each time (the parser caches instances)
    clean = load_weights(parser.get_parsed_content("network_def", lazy=False), work / "models" / "model.pt")
    robust = load_weights(parser.get_parsed_content("network_def", lazy=False), robust).state_dict()
    changed = [k for k, v in clean.state_dict().items() if not torch.equal(v, robust[k])]
    assert changed, "the adversarially trained model equals the clean one"


def compare_grid(bundle: Foreign) -> list[float]:
    """The comparison's eps grid as its overlay builds it (``compare#eps_grid``, from ``eps_grid``)."""
    parser = ConfigParser()
    parser.read_config([str(OVERLAY_DIR / "common.json"), str(OVERLAY_DIR / "compare.json")])
    if "eps_grid" in bundle.overrides:
        parser["eps_grid"] = bundle.overrides["eps_grid"]
    return [float(e) for e in parser.get_parsed_content("compare#eps_grid")]


def direct_counts(bundle: Foreign, work: Path, data: Path, ckpt: str, grid: list[float]) -> dict[tuple, int]:
    direct = direct_sweep(reference(bundle, work, data, ckpt), grid)
    counts = {("clean", 0.0): direct.clean_correct}
    counts.update({(a, e): c for a in direct.attacks for e, c in zip(direct.eps, direct.correct[a]) if e > 0})
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUNDLES))
def test_comparison_equals_the_direct_attack_on_both_models(name, runs):
    bundle, work = BUNDLES[name], runs.trained(name)
    out, _ = runs.overlay(name, "compare")
    rows = read_csv(out / "robustness_comparison.csv")
    grid = compare_grid(bundle)
    models = {"original": "model.pt", "adversarially trained": "model_adversarial.pt"}
    assert sorted({r["model"] for r in rows}) == sorted(models)
    for model, ckpt in models.items():
        mine = [r for r in rows if r["model"] == model]
        assert [(r["attack"], float(r["eps"])) for r in mine] == sweep_rows(grid)
        assert {int(r["n"]) for r in mine} == {N_TEST}
        got = {k: v[1] for k, v in sweep_accuracies(mine).items()}
        assert got == direct_counts(bundle, work, runs.data(name), ckpt, grid), model
    original_clean = next(r for r in rows if r["model"] == "original" and r["attack"] == "clean")
    assert float(original_clean["accuracy"]) == pytest.approx(evaluate_accuracy(work))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUNDLES))
def test_triage_rates_every_test_image(name, runs):
    work = runs.trained(name)
    out, _ = runs.overlay(name, "triage")
    rows = read_csv(out / "sensitivity.csv")
    ref_ids = sorted(str(i["id"]) for i in json.loads((runs.data(name) / "datalist.json").read_text())["testing"])
    assert sorted(r["id"] for r in rows) == ref_ids
    clean = evaluate_accuracy(work)
    assert sum(r["prediction"] == r["label"] for r in rows) / len(rows) == pytest.approx(clean)
    for r in rows:
        assert float(r["eps_lo"]) <= float(r["eps_hi"])
    summary = json.loads((out / "triage.json").read_text())
    assert summary["n"] == N_TEST
    assert summary["accuracy_all"] == pytest.approx(clean)
    flagged = sum(r["flagged"].lower() in ("1", "true") for r in rows)
    assert flagged == round(summary["fraction_flagged"] * N_TEST)
    assert 0 < flagged < N_TEST


def test_a_bundle_without_an_intensity_window_stops_naming_adv_input_space(runs):
    name = "unwindowed_ct_classification"
    work, data = runs.root / "bundles" / name, runs.data(name)
    shutil.copytree(FOREIGN / name, work)
    parser = ConfigParser()
    parser.read_config(str(work / "configs" / "train.json"))
    (work / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), work / "models" / "model.pt")
    from monai_adv.overlays import overlay_files

    files = [str(work / "configs" / f) for f in ("train.json", "evaluate.json")]
    files += [str(f) for f in overlay_files("attack_sweep")]
    out = work / "adv"
    with pytest.raises(Exception) as caught:
        bundle_run(config_file=files, bundle_root=str(work), dataset_dir=str(data), logging_file=False,
                   adv_output_dir=str(out))
    chain, error = [], caught.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    message = "\n".join(chain)
    assert "adv_input_space" in message and "no intensity window" in message, message
    assert not (out / "attack_sweep.csv").exists()
    # the remedy the message names: the window stated by hand (raw HU spans about [-900, 1900] here)
    bundle_run(config_file=files, bundle_root=str(work), dataset_dir=str(data), logging_file=False,
               adv_output_dir=str(out), eps_grid=[0.002],
               adv_input_space="$monai_adv.input_space.InputSpace(-1100.0, 2200.0)")
    rows = read_csv(out / "attack_sweep.csv")
    assert {int(r["n"]) for r in rows} == {N_TEST}
