"""Ignite handlers for MONAI engines. Reference them by full dotted path, e.g. ``monai_adv.handlers.ClassificationMetricsWriter``."""

from monai_adv.handlers.adversarial_batches import AdversarialBatches
from monai_adv.handlers.attack_sweep import AttackSweep
from monai_adv.handlers.checkpoint import StrictCheckpointLoad
from monai_adv.handlers.checkpoint_saver import AtomicCheckpointSaver, AtomicDiskSaver
from monai_adv.handlers.classification import ClassificationMetricsWriter, PredictionCSVWriter
from monai_adv.handlers.collect import PerImageCollector
from monai_adv.handlers.evaluator_data import EvaluatorDataHandler
from monai_adv.handlers.overfit_guard import CatastrophicOverfittingGuard
from monai_adv.handlers.precise_batch_norm import PreciseBatchNorm
from monai_adv.handlers.resume import TrainingResume
from monai_adv.handlers.robustness_comparison import RobustnessComparison
from monai_adv.handlers.triage import SensitivityTriage, load_threshold

__all__ = ["AdversarialBatches", "AtomicCheckpointSaver", "AtomicDiskSaver", "AttackSweep", "CatastrophicOverfittingGuard", "ClassificationMetricsWriter", "EvaluatorDataHandler", "PredictionCSVWriter", "PerImageCollector", "PreciseBatchNorm", "RobustnessComparison", "SensitivityTriage", "TrainingResume", "StrictCheckpointLoad", "load_threshold"]
