"""What a study needs to know about a bundle before running it: its config files, the data it will read (and its
fingerprint), the user's overrides per stage, and the settings the report quotes (profile, grids, epsilons).

Two kinds of bundle: ours (``bundles/<name>``: JSON configs, our data lists, a demo profile) and any other bundle that
follows the model zoo's conventions (:class:`ForeignBundle`, ``run_study.py --bundle_root``): its own train and
evaluate configs (JSON or YAML), its own data layout under ``dataset_dir``, no demo profile."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_adv.overlays import overlay_files
from monai_adv.study.ledger import data_digest, folder_digest
from monai_adv.study.paper_figures import BUNDLE_DATASETS, paper_dataset
from monai_adv.study.stages import BUNDLE_STAGES, MANAGED_IDS, OVERRIDE_STAGES, SETTINGS_CONFIG, BundleStage

__all__ = [
    "BundleSetup", "ForeignBundle", "parse_override", "prepare_bundle", "prepare_foreign_bundle", "available_bundles",
    "default_bundles_dir", "find_config", "BUNDLE_IDS",
]

ALL_STAGES = "*"
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
BUNDLE_IDS = ("network", "device", "bundle_root", "output_dir", "ckpt_path", "dataset_dir")
"""The model zoo's ids every stage reads or the study sets (``ckpt_path``: where training saves the model and where
evaluation loads it from; the study points it at each stage's checkpoint)."""
ENGINE_IDS = {"train": ("adv_trainer", "adv_evaluator"), "evaluate": ("adv_evaluator",)}
"""Per bundle config of a stage, the overlay ids that name its engines (``@<id>`` references)."""


@dataclass(frozen=True)
class ForeignBundle:
    """A bundle that is not one of ours (``run_study.py --bundle_root``), in the model zoo's layout.

    Attributes:
        root: the bundle's folder (holding ``configs/``).
        train_config: the name of its training config in ``configs/`` (``.json``, ``.yaml`` or ``.yml``).
        evaluate_config: the name of its evaluation config, merged over the training config as in the zoo.
        checkpoint: a trained model to study instead of training one (it must load into ``adv_checkpoint_dict``).
    """

    root: Path
    train_config: str = "train"
    evaluate_config: str = "evaluate"
    checkpoint: Path | None = None


def find_config(config_dir: Path, name: str, setting: str, required: bool = True) -> Path | None:
    """``config_dir/<name>`` with its suffix (``.json``, ``.yaml`` or ``.yml``; ``name`` may carry it).

    Raises:
        FileNotFoundError: naming ``setting``, when ``required`` and no such file exists, or when two exist.
    """
    candidates = [config_dir / name] if Path(name).suffix in CONFIG_SUFFIXES else [
        config_dir / f"{name}{suffix}" for suffix in CONFIG_SUFFIXES
    ]
    found = [c for c in candidates if c.is_file()]
    if len(found) > 1:
        raise FileNotFoundError(f"{setting}: both {found[0].name} and {found[1].name} in {config_dir}; name one with "
                                f"its suffix")
    if not found and required:
        listed = sorted(p.name for p in config_dir.glob("*") if p.suffix in CONFIG_SUFFIXES)
        raise FileNotFoundError(
            f"{setting}: no config {name!r} in {config_dir} (it holds {', '.join(listed) or 'none'})"
        )
    return found[0] if found else None


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
    shared = {s.name: s.settings_of for s in BUNDLE_STAGES if s.settings_of}
    if stage in shared:
        raise ValueError(f"override {text!r}: stage {stage} runs with the {shared[stage]} stage's values; "
                         f"write {shared[stage]}:{key.strip()}=... (both stages get it)")
    if stage != ALL_STAGES and stage not in OVERRIDE_STAGES:
        raise ValueError(
            f"override {text!r}: unknown stage {stage!r}; the bundle stages are {', '.join(OVERRIDE_STAGES)}"
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
        configs: config name in :data:`~monai_adv.study.stages.BUNDLE_STAGES` (``train``, ``evaluate``) -> its file.
        foreign: not one of our bundles (:class:`ForeignBundle`): no data list of ours, no demo profile, no resume
            inside a training stage (an interrupted training stage runs again from its start).
        checkpoint: a trained model the train stage adopts instead of training.
        cwd: the folder bundle runs start in (our checkout for ours, the bundle's folder for another bundle).
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
    configs: dict[str, Path] = field(default_factory=dict)
    foreign: bool = False
    checkpoint: Path | None = None
    cwd: Path = field(default_factory=Path.cwd)
    dataset_dir: Path | None = None

    @property
    def bundle_root(self) -> Path:
        return self.config_dir.parent

    def products(self, stage: BundleStage) -> tuple[str, ...]:
        """The files ``stage`` must write: :attr:`BundleStage.products`, except that another bundle's evaluation
        writes what its own config writes (the report takes its clean accuracy from the sweep's clean pass)."""
        return () if self.foreign and stage.name == "evaluate" else stage.products

    def config_values(self, stage: str, keys: Sequence[str]) -> dict[str, Any]:
        """The values of ``keys`` in ``stage``'s configs with the overrides (``None`` where an id is missing or is not
        a plain value; other objects as their ``str``)."""
        files = self.config_files(next(s for s in BUNDLE_STAGES if s.name == stage), resources=False)
        parser = _parser(files, {**self.data_overrides(), **self.overrides_for(stage)})
        return {key: _value(parser, key) for key in keys}

    def runs_package_code(self, stage: BundleStage) -> bool:
        """Whether ``stage`` runs monai_adv's code: every stage of ours; another bundle's overlay stages only."""
        return not self.foreign or stage.overlay is not None

    def resumable(self, stage: BundleStage) -> bool:
        """Whether an interrupted ``stage`` continues after its last epoch (our training stages only)."""
        return stage.resumable and not self.foreign

    def overrides_for(self, stage: str) -> dict[str, Any]:
        """The values a stage gets: the ``--set`` values for every stage, then its own (for a stage that shares
        another's, that one's: :attr:`BundleStage.settings_of`), then the study's :attr:`BundleStage.fixed` ones."""
        spec = next((s for s in BUNDLE_STAGES if s.name == stage), None)
        own = self.overrides.get(spec.override_stage if spec else stage, {})
        return {**self.overrides.get(ALL_STAGES, {}), **own, **(dict(spec.fixed) if spec else {})}

    def overrides_read_by(self, stage: BundleStage) -> dict[str, Any]:
        """The ``--set`` values that can change ``stage``: its own, and those for every stage whose id its configs
        define or refer to (``@id``, ``%id``), also through another such value. A value for the triage alone thus
        leaves the training's fingerprint, and its checkpoint, as they were."""
        own = {**self.overrides.get(stage.override_stage, {}), **stage.fixed}
        shared = {k: v for k, v in self.overrides.get(ALL_STAGES, {}).items() if k not in own}
        if not shared:
            return dict(own)
        files = self.config_files(stage)
        parser = _parser(files, {})
        text = "\n".join(f.read_text(encoding="utf-8") for f in files) + json.dumps(own, default=str)
        kept: dict[str, Any] = {}
        while True:
            found = {k: v for k, v in shared.items() if k not in kept and (k in parser or _referenced(k, text))}
            if not found:
                return {**kept, **own}
            kept.update(found)
            text += json.dumps(found, default=str)

    def config_files(self, stage: BundleStage, resources: bool = True) -> list[Path]:
        """The config files of ``stage``, in ``--config_file`` order: the bundle's, then the stage's overlay and the
        bundle's settings for it (``configs/adversarial.json``, when the bundle has one), ``demo.json`` (demo
        profile), and (``resources``) the stage's resume configs."""
        files = [self.configs.get(name, self.config_dir / f"{name}.json") for name in stage.configs]
        if stage.overlay is not None:
            files += overlay_files(stage.overlay)
            settings = find_config(self.config_dir, SETTINGS_CONFIG, "the overlays' settings", required=False)
            if settings is not None:
                files.append(settings)
        if self.profile == "demo":
            files.append(self.config_dir / "demo.json")
        if resources and self.resumable(stage):
            files += list(stage.resources)
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{self.name}: stage {stage.name} needs {', '.join(missing)}")
        return files

    def data_overrides(self) -> dict[str, Any]:
        """The ids every stage gets: the data's folder, the bundle's own folder as ``bundle_root``, and for our bundles
        the data list."""
        if self.foreign:
            return {"bundle_root": str(self.bundle_root), "dataset_dir": str(self.dataset_dir)}
        return {
            "bundle_root": str(self.bundle_root),
            "dataset_dir": str(self.datalist_file.parent),
            "datalist_file": str(self.datalist_file),
        }

    def check_configs(self) -> None:
        """Check, before any stage runs, that every stage's configs (with the overrides) hold the ids the study and the
        overlays read (:data:`BUNDLE_IDS`, and the engines ``adv_trainer`` and ``adv_evaluator`` refer to).

        Raises:
            ValueError: listing every missing id with the stage and files, and the setting that names another id.
        """
        problems: dict[str, list[str]] = {}  # problem -> the stages that have it
        for stage in BUNDLE_STAGES:
            files = self.config_files(stage, resources=False)
            parser = _parser(files, {**self.data_overrides(), **self.overrides_for(stage.name)})
            found = [f"no id {key!r} (the study and the overlays read it; see the README's id table)"
                     for key in BUNDLE_IDS if key not in parser]
            for setting in ENGINE_IDS["evaluate" if "evaluate" in stage.configs else "train"] if stage.overlay else ():
                value = parser[setting] if setting in parser else None
                if isinstance(value, str) and value.startswith("@") and value[1:] not in parser:
                    found.append(f"{setting} refers to {value}, which is not an id of the bundle: name its engine "
                                 f"with --set {setting}=@<id>")
            for problem in found:
                problems.setdefault(problem, []).append(f"{stage.name} ({' + '.join(f.name for f in files)})")
        if problems:
            raise ValueError("the bundle lacks ids the study needs:\n  " + "\n  ".join(
                f"{problem}; stages {', '.join(stages)}" for problem, stages in problems.items()))

    def check_data(self) -> None:
        """Check the data list for every stage at once (training with its validation split, and test), before any
        stage runs: one :class:`~monai_adv.io.DataError` lists every problem. Another bundle's data is its own
        configs' business (they read it), so only its folder is checked, when it is set up."""
        from monai_adv.datacheck import check_datalist

        if self.foreign:
            return
        s = self.settings
        check_datalist(
            self.datalist_file, ["training", "test"], class_names=s.get("class_names"),
            spatial_dims=s.get("spatial_dims"), channels=s.get("in_channels"), native_units=s.get("native_units"),
            val_fraction=s.get("val_fraction"), seed=s.get("seed") or 0, dataset_dir=self.datalist_file.parent,
        )


def _referenced(key: str, text: str) -> bool:
    """Whether config ``text`` refers to the id ``key`` (``@key`` or ``%key``, not a longer id)."""
    return re.search(rf"[@%]{re.escape(key)}(?![\w#:])", text) is not None


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
    setup = BundleSetup(name, config_dir, profile, Path(), "", {}, overrides, cwd=Path(bundles_dir).resolve().parent)
    if dataset_dir is not None:
        datalist_file = Path(dataset_dir).expanduser().resolve() / "datalist.json"
        if not datalist_file.is_file():
            raise FileNotFoundError(f"{name}: no datalist.json in {dataset_dir} (prepare the data set first)")
    elif profile == "demo":
        parser = _parser([config_dir / "train.json", config_dir / "demo.json"], setup.overrides_for("train"))
        datalist_file = Path(parser.get_parsed_content("datalist_file")).resolve()
    else:
        raise ValueError(f"{name}: the paper profile needs --dataset_dir (the demo data runs with the demo profile)")
    setup.datalist_file, setup.dataset_dir = datalist_file, datalist_file.parent
    setup.data_digest = data_digest(datalist_file)
    setup.data = _describe_data(datalist_file, None if dataset_dir is None else Path(dataset_dir))
    values = setup.config_values
    train = values("train", ["modality", "native_units", "native_per_unit", "class_names", "image_size",
                             "network_width", "batch_size", "max_epochs", "patience", "learning_rate", "seed",
                             "spatial_dims", "in_channels", "val_fraction"])
    adversarial = values("adversarial_train", ["adv_eps", "adv_attack", "adv_ratio", "adv_steps", "max_epochs",
                                               "adv_max_epochs"])
    adv_max_epochs = adversarial.pop("adv_max_epochs")  # a bundle's own epochs for adversarial training, if it says
    if adv_max_epochs is not None:
        adversarial["max_epochs"] = adv_max_epochs
    setup.settings = {"profile": profile, **train, "adversarial": adversarial, **_overlay_settings(setup)}
    known = paper_dataset(name)
    setup.medical = known.medical if known else str(train.get("modality") or "none").lower() not in ("none", "")
    return setup


def _overlay_settings(setup: BundleSetup) -> dict[str, Any]:
    """The overlays' grids and triage settings the report quotes."""
    return {
        "attack_eps_grid": setup.config_values("attack", ["eps_grid"])["eps_grid"],
        "compare_eps_grid": setup.config_values("compare", ["compare#eps_grid"])["compare#eps_grid"],
        **setup.config_values("triage", ["triage_q", "triage_eps_max"]),
    }


def prepare_foreign_bundle(
    bundle: ForeignBundle,
    dataset_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> BundleSetup:
    """Resolve another bundle's configs, data folder and settings; nothing is run.

    Args:
        bundle: the bundle's folder, config names and optional checkpoint.
        dataset_dir: the folder its configs read as ``dataset_dir``; ``None`` keeps the bundle's own value, which must
            then be a folder.
        overrides: from :func:`parse_override`, grouped by stage.

    Raises:
        FileNotFoundError: naming the setting (``--bundle_root``, ``--train_config``, ``--evaluate_config``,
            ``--dataset_dir``, ``--checkpoint``) whose file or folder is missing.
    """
    root = Path(bundle.root).expanduser().resolve()
    config_dir = root / "configs"
    if not root.is_dir():
        raise FileNotFoundError(f"--bundle_root {bundle.root}: no such folder")
    if not config_dir.is_dir():
        raise FileNotFoundError(f"--bundle_root {bundle.root}: no configs folder (a bundle in the model zoo's layout "
                                "keeps its configs in <bundle_root>/configs)")
    configs = {
        "train": find_config(config_dir, bundle.train_config, "--train_config"),
        "evaluate": find_config(config_dir, bundle.evaluate_config, "--evaluate_config"),
    }
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    setup = BundleSetup(root.name, config_dir, "bundle", Path(), "", {}, overrides, configs=configs, foreign=True,
                        cwd=root)
    # the train config as the bundle has it, with the user's values: its data folder, classes and network
    own = _parser([configs["train"]], {**setup.overrides_for("train"), "bundle_root": str(root)})
    if not any("adv_class_names" in values for values in overrides.values()):
        names = _metadata_class_names(config_dir, _value(own, "num_classes"))
        if names is not None:  # the bundle's own names for its outputs, as its metadata.json declares them
            overrides.setdefault(ALL_STAGES, {})["adv_class_names"] = names
    if dataset_dir is None:
        value = _value(own, "dataset_dir")
        if not isinstance(value, str) or not (root / value).is_dir():
            raise FileNotFoundError(f"{root.name}: the bundle's dataset_dir ({value}) is not a folder here: pass "
                                    "--dataset_dir")
        dataset_dir = root / value
    setup.dataset_dir = Path(dataset_dir).expanduser().resolve()
    if not setup.dataset_dir.is_dir():
        raise FileNotFoundError(f"--dataset_dir {dataset_dir}: not a folder")
    if bundle.checkpoint is not None:
        setup.checkpoint = Path(bundle.checkpoint).expanduser().resolve()
        if not setup.checkpoint.is_file():
            raise FileNotFoundError(f"--checkpoint {bundle.checkpoint}: no such file")
        _check_checkpoint_fits(setup)
    setup.data_digest = folder_digest(setup.dataset_dir)
    setup.data = {
        "label": f"data set `{setup.dataset_dir.name}` as the bundle's own configs read it", "short":
        f"data set `{setup.dataset_dir.name}`", "demo": False, "name": setup.dataset_dir.name, "prepared_by": None,
        "classes": None, "n_training": None, "n_test": None,
    }
    train = setup.config_values("train", ["modality", "native_units", "spatial_dims", "num_classes"])
    adversarial = setup.config_values("adversarial_train", ["adv_eps", "adv_attack", "adv_ratio", "adv_steps"])
    names = setup.config_values("attack", ["adv_class_names"])["adv_class_names"]
    setup.settings = {
        "profile": "bundle", **train, "class_names": names, "network": _network_name(own),
        "checkpoint": setup.checkpoint is not None,
        "adversarial": adversarial, **_overlay_settings(setup),
    }
    setup.medical = str(train.get("modality") or "").lower() != "none"
    return setup


def _check_checkpoint_fits(setup: BundleSetup) -> None:
    """Load ``--checkpoint`` into the network the train config builds (on the CPU, strictly), so that a model of
    another network stops the study before any stage, naming what differs."""
    from monai_adv.checkpoints import CheckpointError, load_network_state

    parser = _parser([setup.configs["train"]], {**setup.data_overrides(), **setup.overrides_for("train")})
    network = parser.get_parsed_content("network_def" if "network_def" in parser else "network")
    try:
        load_network_state(network, setup.checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"--checkpoint does not fit this bundle's network: {error}") from error


def _metadata_class_names(config_dir: Path, num_classes: Any) -> list[str] | None:
    """The class names of ``configs/metadata.json`` (``network_data_format.outputs.pred.channel_def``), when it
    names exactly the train config's ``num_classes`` classes ``0 .. K-1``; else ``None``."""
    try:
        metadata = json.loads((config_dir / "metadata.json").read_text(encoding="utf-8"))
        channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        names = [str(channels[str(k)]) for k in range(len(channels))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return names if len(names) >= 2 and num_classes == len(names) else None


def _network_name(train: Any) -> str | None:
    """The class the train config's ``network_def`` instantiates, as written there (``train``: its parser)."""
    definition = train["network_def"] if "network_def" in train else None
    target = definition.get("_target_") if isinstance(definition, dict) else None
    return str(target) if target else None
