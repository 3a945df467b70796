"""What a study needs to know about a bundle before running it: its config files, the data it will read (and its
fingerprint), the user's overrides per stage, and the settings the report quotes (profile, grids, epsilons)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_adv.overlays import overlay_files
from monai_adv.study.ledger import data_digest
from monai_adv.study.paper_figures import BUNDLE_DATASETS, paper_dataset
from monai_adv.study.stages import BUNDLE_STAGES, MANAGED_IDS, SETTINGS_CONFIG, BundleStage

__all__ = ["BundleSetup", "parse_override", "prepare_bundle", "available_bundles", "default_bundles_dir"]

ALL_STAGES = "*"


def default_bundles_dir() -> Path:
    """``bundles/`` beside the ``monai_adv`` package (a checkout or an editable install), else ``./bundles``."""
    beside = Path(__file__).resolve().parents[2] / "bundles"
    return beside if beside.is_dir() else Path.cwd() / "bundles"


def available_bundles(bundles_dir: str | os.PathLike) -> list[str]:
    """Names of the bundles (folders with ``configs/metadata.json``) in ``bundles_dir``: the paper's five in its
    order (CT, mammography, MRI, MNIST, CIFAR-10), then any other alphabetically."""
    root = Path(bundles_dir)
    if not root.is_dir():
        return []
    names = {p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file()}
    return [b for b in BUNDLE_DATASETS if b in names] + sorted(names - set(BUNDLE_DATASETS))


def parse_override(text: str) -> tuple[str, str, Any]:
    """``[STAGE:]ID=VALUE`` -> (stage or ``"*"``, id, value); the value is read as JSON when it parses, else kept as a
    string (``max_epochs=3``, ``eps_grid=[0.001,0.004]``, ``adversarial_train:max_epochs=2``, ``device=cpu``).
    The value is MONAI config syntax wherever it is read: a string starting with ``$`` is executed as Python code,
    ``@ID`` is a reference, ``%...`` a macro, a dict with ``_target_`` is instantiated (see the ``--set`` help).

    Raises:
        ValueError: naming the text, when it has no ``=``, names an unknown stage, or sets an id the study manages.
    """
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected [STAGE:]ID=VALUE")
    key, raw = text.split("=", 1)
    head, separator, tail = key.partition(":")
    if separator and not tail.startswith(":"):  # "stage:id"; MONAI's own "a::b" id separator is left alone
        stage, key = head.strip(), tail.strip()
    else:
        stage, key = ALL_STAGES, key.strip()
    bundle_stages = [s.name for s in BUNDLE_STAGES]
    if stage != ALL_STAGES and stage not in bundle_stages:
        raise ValueError(
            f"override {text!r}: unknown stage {stage!r}; the bundle stages are {', '.join(bundle_stages)}"
        )
    if not key:
        raise ValueError(f"override {text!r}: empty id")
    if key in MANAGED_IDS:
        raise ValueError(f"override {text!r}: the study sets {key!r} itself (use --dataset_dir or --output)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return stage, key, value


@dataclass
class BundleSetup:
    """One bundle, ready to run.

    Attributes:
        name: the bundle's folder name.
        config_dir: its ``configs`` folder.
        profile: ``"demo"`` (``configs/demo.json`` on top: the CPU profile) or ``"paper"`` (the bundle as shipped).
        datalist_file: the data list every stage reads.
        data_digest: SHA-256 over the data list and its images.
        data: what the report says about the data: ``label``, ``short``, ``demo``, ``name``, ``classes`` (the data
            list's, or ``None``), ``n_training``, ``n_test``.
        overrides: stage (or ``"*"``) -> id -> value, from ``--set``.
        settings: values the report quotes (image size, width, epochs, epsilons, grids, ...).
        medical: a medical model (for the susceptibility ratio).
    """

    name: str
    config_dir: Path
    profile: str
    datalist_file: Path
    data_digest: str
    data: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    medical: bool = True

    def overrides_for(self, stage: str) -> dict[str, Any]:
        """The ``--set`` values a stage gets: those for every stage, then its own."""
        return {**self.overrides.get(ALL_STAGES, {}), **self.overrides.get(stage, {})}

    def config_files(self, stage: BundleStage, resources: bool = True) -> list[Path]:
        """The config files of ``stage``, in ``--config_file`` order: the bundle's, then the stage's overlay and the
        bundle's settings for it (``configs/adversarial.json``, when the bundle has one), ``demo.json`` (demo
        profile), and (``resources``) the stage's resume configs."""
        files = [self.config_dir / f"{name}.json" for name in stage.configs]
        if stage.overlay is not None:
            files += overlay_files(stage.overlay)
            settings = self.config_dir / f"{SETTINGS_CONFIG}.json"
            if settings.is_file():
                files.append(settings)
        if self.profile == "demo":
            files.append(self.config_dir / "demo.json")
        if resources:
            files += list(stage.resources)
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{self.name}: stage {stage.name} needs {', '.join(missing)}")
        return files

    def data_overrides(self) -> dict[str, Any]:
        """The ids every stage gets: the data list, its folder, and the bundle's own folder as ``bundle_root``."""
        return {
            "bundle_root": str(self.config_dir.parent),
            "dataset_dir": str(self.datalist_file.parent),
            "datalist_file": str(self.datalist_file),
        }

    def check_data(self) -> None:
        """Check the data list for every stage at once (training with its validation split, and test), before any
        stage runs: one :class:`~monai_adv.io.DataError` lists every problem."""
        from monai_adv.datacheck import check_datalist

        s = self.settings
        check_datalist(
            self.datalist_file, ["training", "test"], class_names=s.get("class_names"),
            spatial_dims=s.get("spatial_dims"), channels=s.get("in_channels"), native_units=s.get("native_units"),
            val_fraction=s.get("val_fraction"), seed=s.get("seed") or 0, dataset_dir=self.datalist_file.parent,
        )


def _parser(files: Sequence[Path], overrides: Mapping[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update(dict(overrides))
    return parser


def _value(parser: Any, key: str) -> Any:
    try:
        value = parser.get_parsed_content(key)
    except (KeyError, ValueError, AttributeError, TypeError, RuntimeError):  # RuntimeError: MONAI's expression wrapper
        return None
    return value if isinstance(value, (str, int, float, bool, list, tuple, type(None))) else str(value)


def _describe_data(datalist_file: Path, dataset_dir: Path | None) -> dict[str, Any]:
    try:
        datalist = json.loads(datalist_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"data list {datalist_file} cannot be read: {error}") from error
    name = datalist.get("name") or datalist_file.parent.name
    demo = bool(datalist.get("demo"))
    if demo:
        label = (f"demo data (synthetic): `monai_adv.demo` set `{name}`, seed {datalist.get('seed', 0)}, "
                 f"generator version {datalist.get('demo_version', '?')}")
    else:
        label = f"prepared data set `{name}` from `{dataset_dir if dataset_dir is not None else datalist_file.parent}`"
    short = "demo data (synthetic)" if demo else f"data set `{name}`"
    classes = datalist.get("classes")
    return {
        "label": label, "short": short, "demo": demo, "name": name, "prepared_by": datalist.get("prepared_by"),
        "classes": [str(c) for c in classes] if isinstance(classes, list) else None,
        "n_training": len(datalist.get("training", [])), "n_test": len(datalist.get("test", [])),
    }


def prepare_bundle(
    name: str,
    bundles_dir: str | os.PathLike,
    profile: str,
    dataset_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> BundleSetup:
    """Resolve a bundle's data and settings (the demo data is generated on first use).

    Args:
        name: the bundle.
        bundles_dir: the folder holding the bundles.
        profile: ``"demo"`` or ``"paper"``.
        dataset_dir: a prepared data set (its ``datalist.json``); ``None`` uses the bundle's demo data.
        overrides: from :func:`parse_override`, grouped by stage.
    """
    config_dir = Path(bundles_dir) / name / "configs"
    if not (config_dir / "metadata.json").is_file():
        raise FileNotFoundError(f"bundle {name!r} not found in {bundles_dir} (no configs/metadata.json)")
    if profile not in ("demo", "paper"):
        raise ValueError(f"{name}: unknown profile {profile!r}; use 'demo' or 'paper'")
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    setup = BundleSetup(name, config_dir, profile, Path(), "", {}, overrides)
    stages = {s.name: s for s in BUNDLE_STAGES}
    if dataset_dir is not None:
        datalist_file = Path(dataset_dir).expanduser().resolve() / "datalist.json"
        if not datalist_file.is_file():
            raise FileNotFoundError(f"{name}: no datalist.json in {dataset_dir} (prepare the data set first)")
    elif profile == "demo":
        parser = _parser([config_dir / "train.json", config_dir / "demo.json"], setup.overrides_for("train"))
        datalist_file = Path(parser.get_parsed_content("datalist_file")).resolve()
    else:
        raise ValueError(f"{name}: the paper profile needs --dataset_dir (the demo data runs with the demo profile)")
    setup.datalist_file = datalist_file
    setup.data_digest = data_digest(datalist_file)
    setup.data = _describe_data(datalist_file, None if dataset_dir is None else Path(dataset_dir))

    def values(stage: str, keys: Sequence[str]) -> dict[str, Any]:
        files = setup.config_files(stages[stage], resources=False)
        parser = _parser(files, {**setup.data_overrides(), **setup.overrides_for(stage)})
        return {key: _value(parser, key) for key in keys}

    train = values("train", ["modality", "native_units", "native_per_unit", "class_names", "image_size",
                             "network_width", "batch_size", "max_epochs", "patience", "learning_rate", "seed",
                             "spatial_dims", "in_channels", "val_fraction"])
    adversarial = values("adversarial_train", ["adv_eps", "adv_attack", "adv_ratio", "adv_steps", "max_epochs"])
    setup.settings = {
        "profile": profile,
        **train,
        "adversarial": adversarial,
        "attack_eps_grid": values("attack", ["eps_grid"])["eps_grid"],
        "compare_eps_grid": values("compare", ["compare#eps_grid"])["compare#eps_grid"],
        **values("triage", ["triage_q", "triage_eps_max"]),
    }
    known = paper_dataset(name)
    setup.medical = known.medical if known else str(train.get("modality") or "none").lower() not in ("none", "")
    return setup
