"""The study's stages: what each reads, which bundle configs and overlays it runs, what it must write.

Per bundle, in order (the paper's steps):

=================  ========================================  ==============  ========================================
stage              configs                                   reads           writes (in ``<bundle>/<stage>/``)
=================  ========================================  ==============  ========================================
train              train                                     the data        ``models/model.pt``
evaluate           train, evaluate                           train's model   ``metrics.json``, ``test_predictions.csv``
attack             train, evaluate + ``attack_sweep``        train's model   ``attack_sweep.*``, Figure 1
adversarial_train  train + ``adversarial_train``             train's model   ``models/model_adversarial.pt``
compare_original   train, evaluate + ``compare``             train's model,  ``original/attack_sweep.*``
                                                             attack's sweep
compare            train, evaluate + ``compare``             both models     ``robustness_comparison.*``
triage             train, evaluate + ``triage``              train's model   ``sensitivity.csv``, ``triage.*``
=================  ========================================  ==============  ========================================

then, once for all bundles, ``compare_datasets`` (the susceptibility comparison) and ``report``.
The comparison's sweep of the original model (``compare_original``: the ``compare`` overlay with ``original_only``, the
compare stage's ``--set`` values) runs beside adversarial training, and takes the attack stage's sweep instead when it
is the same sweep (``reuse_sweep``: same settings, weights and items; so for a grid that already holds ``adv_eps``);
the compare stage checks and reuses it (``original_report``) and sweeps the adversarially trained model only.
Every bundle stage is one ``python -m monai.bundle run`` of, in this order: the bundle's configs; for the robustness
stages monai_adv's overlay (:func:`monai_adv.overlays.overlay_files`: ``common.json`` and the overlay) and the
bundle's own settings for the overlays (``configs/adversarial.json``, when it has one); ``configs/demo.json`` in the
demo profile; for the training stages ``monai_adv/resources/resume_training.json`` (and, for adversarial training,
``resume_adversarial_training.json``: the overfitting guard's memory); last a JSON file of overrides the study
writes: ``output_dir`` (the stage's folder), the checkpoint paths (the upstream stages' outputs, or this stage's:
``ckpt_path`` for the clean model, ``adv_init_ckpt`` for the model adversarial training starts from, and
``robust_ckpt_path``, where the ``adversarial_train`` overlay points ``ckpt_path``), the data list, and the user's
``--set`` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BundleStage", "BUNDLE_STAGES", "STUDY_STAGES", "STAGE_NAMES", "MANAGED_IDS", "RESUME_CONFIG",
    "RESUME_ADVERSARIAL_CONFIG", "RESUME_FILE", "SETTINGS_CONFIG", "OVERRIDE_STAGES",
]

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
RESUME_CONFIG = RESOURCES / "resume_training.json"
RESUME_ADVERSARIAL_CONFIG = RESOURCES / "resume_adversarial_training.json"
RESUME_FILE = "resume.pt"
SETTINGS_CONFIG = "adversarial"
"""The bundle's config of settings for monai_adv's overlays (``configs/adversarial.json``), after the overlay."""


@dataclass(frozen=True)
class BundleStage:
    """One step of the study for one bundle.

    Attributes:
        name: the stage (and its folder).
        step: the paper's step, in words.
        configs: bundle config names, in the order given to ``monai.bundle run``.
        reads: config id -> (upstream stage, path inside its folder): a file this stage reads.
        writes: config id -> path inside this stage's folder: where the stage writes a file a later stage reads.
        products: files the stage must write (inside its folder); the ledger keeps their SHA-256.
        resumable: a training stage that continues from its last epoch after an interruption.
        overlay: the ``monai_adv`` overlay appended after the bundle's configs (:mod:`monai_adv.overlays`), followed
            by the bundle's settings config (:data:`SETTINGS_CONFIG`); ``None`` for the bundle's own steps.
        resources: config files of ``monai_adv`` added after those and ``demo.json`` (the resume handler of
            training stages).
        fixed: config id -> value the study always sets for this stage (after the ``--set`` values).
        settings_of: the stage whose ``--set`` values this one takes (``None``: its own); ``--set`` cannot name it.
    """

    name: str
    step: str
    configs: tuple[str, ...]
    reads: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    writes: Mapping[str, str] = field(default_factory=dict)
    products: tuple[str, ...] = ()
    resumable: bool = False
    overlay: str | None = None
    resources: tuple[Path, ...] = ()
    fixed: Mapping[str, object] = field(default_factory=dict)
    settings_of: str | None = None

    @property
    def override_stage(self) -> str:
        """The stage name whose ``--set`` values this stage runs with."""
        return self.settings_of or self.name


_MODEL = ("train", "models/model.pt")
_TEST = ("train", "evaluate")
_ORIGINAL_SWEEP = "original/attack_sweep.json"
BUNDLE_STAGES: tuple[BundleStage, ...] = (
    BundleStage("train", "train", ("train",), writes={"ckpt_path": "models/model.pt"},
                products=("models/model.pt",), resumable=True, resources=(RESUME_CONFIG,)),
    BundleStage("evaluate", "evaluate", _TEST, reads={"ckpt_path": _MODEL},
                products=("metrics.json", "test_predictions.csv")),
    BundleStage("attack", "sweep the attacks", _TEST, reads={"ckpt_path": _MODEL}, overlay="attack_sweep",
                products=("attack_sweep.csv", "attack_sweep.json", "attack_sweep.png", "adversarial_examples.png")),
    BundleStage("adversarial_train", "adversarially train", ("train",), reads={"adv_init_ckpt": _MODEL},
                writes={"robust_ckpt_path": "models/model_adversarial.pt"}, overlay="adversarial_train",
                products=("models/model_adversarial.pt",), resumable=True,
                resources=(RESUME_CONFIG, RESUME_ADVERSARIAL_CONFIG)),
    BundleStage("compare_original", "sweep again, the original model", _TEST, overlay="compare",
                reads={"ckpt_path": _MODEL, "compare#reuse_sweep": ("attack", "attack_sweep.json")},
                products=(_ORIGINAL_SWEEP, "original/attack_sweep.csv"),
                fixed={"compare#original_only": True}, settings_of="compare"),
    BundleStage("compare", "sweep again, the adversarially trained model; compare", _TEST, overlay="compare",
                reads={"ckpt_path": _MODEL, "robust_ckpt_path": ("adversarial_train", "models/model_adversarial.pt"),
                       "compare#original_report": ("compare_original", _ORIGINAL_SWEEP)},
                products=("robustness_comparison.csv", "robustness_comparison.png")),
    BundleStage("triage", "triage", _TEST, reads={"ckpt_path": _MODEL}, overlay="triage",
                products=("sensitivity.csv", "triage.json", "triage.png")),
)
STUDY_STAGES: tuple[str, ...] = ("compare_datasets", "report")
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in BUNDLE_STAGES) + STUDY_STAGES
OVERRIDE_STAGES: tuple[str, ...] = tuple(s.name for s in BUNDLE_STAGES if s.settings_of is None)
"""The stages ``--set STAGE:ID=VALUE`` can name."""

# ids the study sets itself; ``--set`` may not override them
MANAGED_IDS = frozenset(
    {"output_dir", "ckpt_path", "adv_init_ckpt", "robust_ckpt_path", "models_dir", "datalist_file", "dataset_dir",
     "resume_path", "bundle_root"}
)
