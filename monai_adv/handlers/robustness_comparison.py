"""Handler that sweeps the original and the adversarially trained weights on one evaluator's data (Table S5, Fig. 3)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from monai_adv.attacks.loss import predict
from monai_adv.attacks.model_state import eval_mode
from monai_adv.checkpoints import ModelIdentity, weights_digest
from monai_adv.distributed import gather_by_id
from monai_adv.handlers.attack_sweep import SWEEP_FILES, AttackSweep, ids_digest
from monai_adv.handlers.checkpoint import StrictCheckpointLoad
from monai_adv.handlers.evaluator_data import EvaluatorDataHandler, evaluator_batches
from monai_adv.input_space import InputSpace
from monai_adv.reports import write_robustness_comparison
from monai_adv.sweep import AttackFactory

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["RobustnessComparison", "MODEL_NAMES"]

MODEL_NAMES = {"original": "original", "adversarial": "adversarially trained"}
"""Sub-folder of each model's sweep -> its name in ``robustness_comparison.csv``."""


def _state_copy(network: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``network``'s state dict in CPU memory (no second copy of the weights on the GPU), for
    ``load_state_dict``."""
    state = network.state_dict()
    copied = type(state)((k, v.detach().to("cpu", copy=True)) for k, v in state.items())
    if hasattr(state, "_metadata"):  # module versions, read by BatchNorm's load_state_dict
        copied._metadata = state._metadata
    return copied


class RobustnessComparison(EvaluatorDataHandler):
    """At the end of an evaluator run, sweep the attacks on its data for the weights it ran (the original model,
    loaded by the bundle's own checkpoint loader) and for the adversarially trained ones, and compare them.

    On ``Events.COMPLETED``:

    1. an :class:`~monai_adv.handlers.AttackSweep` of ``engine.network`` into ``<output_dir>/original``, checked
       against the evaluator's key metric, as a sweep attached to the evaluator would be;
    2. ``robust_ckpt_path`` loaded into ``engine.network`` with
       :class:`~monai_adv.handlers.StrictCheckpointLoad` (weights only, keys and shapes checked, ``identity``
       compared when given; a bare state dict as MONAI's ``CheckpointSaver`` writes is accepted);
    3. one pass of the evaluator's data through its inferer (``engine.inferer``, else the network) for that model's
       clean accuracy, the cross-check of its sweep (it stands in for a second evaluator run; it also draws from the
       global RNG as that run's data loader would, so the example figures match the two-evaluator config's);
    4. the sweep of the adversarially trained weights into ``<output_dir>/adversarial``;
    5. :func:`monai_adv.reports.write_robustness_comparison` of the two reports (models ``original`` and
       ``adversarially trained``) into ``comparison_dir``: ``robustness_comparison.csv`` and ``.png``;
    6. the original weights restored into ``engine.network`` (also when a step fails).

    The outputs equal those of two evaluators, each with its checkpoint loader and an ``AttackSweep`` with the same
    settings, followed by ``write_robustness_comparison``. ``self.reports`` holds ``{model name: report}`` on
    ``save_rank`` after the run.

    The two sweeps can run in two processes, the first while the robust model is still training (the study does
    this): a run with ``original_only`` does step 1 alone (no robust checkpoint is read); a later run given that
    sweep's ``original/attack_sweep.json`` as ``original_report`` copies that sweep's files to
    ``<output_dir>/original`` instead of step 1, then does steps 2-6; the outputs equal those of one run. A report is
    used only if it was written by a sweep with the same settings (:meth:`AttackSweep.settings`), of the same weights
    (SHA-256 of the state dict), on the same items (checked with one clean pass) with the same clean accuracy;
    otherwise ``original_report`` raises a ``ValueError`` naming what differs, while ``reuse_sweep`` (a sweep that may
    match, such as the attack sweep's when the comparison's grid adds no eps) logs why and sweeps.

    Args:
        attacks, eps_grid, class_names: as :class:`~monai_adv.handlers.AttackSweep`, for both sweeps.
        output_dir: folder of the two sweeps' sub-folders ``original`` and ``adversarial``.
        robust_ckpt_path: checkpoint of the adversarially trained weights (bare state dict or ``{"model": ...}``).
        map_location: ``torch.load``'s ``map_location`` for it, e.g. the bundle's ``@device``. Default ``"cpu"``.
        identity: a :class:`~monai_adv.checkpoints.ModelIdentity` compared with the one saved in the checkpoint.
        comparison_dir: folder of ``robustness_comparison.*``; default ``output_dir``.
        id_key, save_rank, name, input_space: as :class:`~monai_adv.handlers.AttackSweep`, for both sweeps.
        original_only: step 1 only (the original weights' sweep, or a report's); ``robust_ckpt_path`` is not read.
        original_report: the ``attack_sweep.json`` of an ``original_only`` run on the same weights and data, used
            instead of sweeping them again; a report that does not match is an error.
        reuse_sweep: an ``attack_sweep.json`` used like ``original_report`` when it matches, else ignored.
        sweep_options: any other keyword argument of :class:`~monai_adv.handlers.AttackSweep` (``native_per_unit``,
            ``native_units``, ``reuse``, ``use_predicted_labels``, ``large_eps``, ``black_box``, ``example_eps``,
            ``seed``, ...), for both sweeps.
    """

    def __init__(
        self,
        attacks: Mapping[str, AttackFactory],
        eps_grid: Sequence[float],
        output_dir: str,
        class_names: Sequence[str],
        robust_ckpt_path: str | os.PathLike,
        map_location: Any = "cpu",
        identity: ModelIdentity | None = None,
        comparison_dir: str | None = None,
        id_key: str = "id",
        save_rank: int = 0,
        name: str | None = None,
        input_space: InputSpace | Sequence[float] | None = None,
        original_only: bool = False,
        original_report: str | os.PathLike | None = None,
        reuse_sweep: str | os.PathLike | None = None,
        **sweep_options: Any,
    ) -> None:
        super().__init__(input_space, id_key, save_rank, name)
        if original_report is not None and reuse_sweep is not None:
            raise ValueError("RobustnessComparison: original_report (must match) and reuse_sweep (used if it matches) "
                             "both name the original model's sweep; give one of them")
        if not isinstance(original_only, bool):  # a command line's "false" would count as true
            raise ValueError(f"RobustnessComparison: original_only must be True or False, got {original_only!r}")
        self.original_only = original_only
        self.original_report = original_report
        self.reuse_sweep = reuse_sweep
        self.output_dir = output_dir
        self.comparison_dir = output_dir if comparison_dir is None else comparison_dir
        self.robust_ckpt_path = robust_ckpt_path
        self.map_location = map_location
        self.identity = identity
        self.sweeps = {
            folder: AttackSweep(
                attacks, eps_grid, os.path.join(output_dir, folder), class_names, id_key=id_key,
                save_rank=save_rank, name=name, input_space=self.input_space, **sweep_options,
            )
            for folder in MODEL_NAMES
        }
        first = self.sweeps["original"]
        self.use_predicted_labels = first.use_predicted_labels
        self.native_per_unit, self.native_units = first.native_per_unit, first.native_units
        self.reports: dict[str, dict[str, Any]] | None = None
        self.clean_ids: list[str] | None = None

    def load_robust(self, network: nn.Module) -> None:
        """Load ``robust_ckpt_path`` into ``network``, checked as
        :class:`~monai_adv.handlers.StrictCheckpointLoad` checks it."""
        load_dict: dict[str, Any] = {"model": network}
        if self.identity is not None:
            load_dict["identity"] = self.identity
        StrictCheckpointLoad(self.robust_ckpt_path, load_dict, self.map_location)()

    def read_original_report(self, engine: Engine, path: str | os.PathLike) -> dict[str, Any]:
        """The sweep report at ``path``, checked against this comparison's sweep of the original weights: the same
        settings, the weights in ``engine.network``, the evaluator's items (one clean pass) and clean accuracy.

        Raises:
            ValueError: naming the file and what differs.
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                report = json.load(handle)
            settings, identity, sweep = report["settings"], report["identity"], report["sweep"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"RobustnessComparison: {path} is not the attack_sweep.json of a sweep with its "
                             f"identity ({type(error).__name__}: {error})") from error
        expected = self.sweeps["original"].settings()
        differ = [key for key in sorted(set(expected) | set(settings))
                  if _comparable(expected.get(key)) != _comparable(settings.get(key))]
        if differ:
            raise ValueError(
                f"RobustnessComparison: {path} was swept with other settings than this comparison's: "
                + "; ".join(f"{key} {settings.get(key)!r} there, {expected.get(key)!r} here" for key in differ)
            )
        weights = weights_digest(engine.network)
        if identity.get("weights_sha256") != weights:
            raise ValueError(f"RobustnessComparison: {path} is the sweep of other weights than the evaluator's network "
                             f"holds (SHA-256 {identity.get('weights_sha256')} there, {weights} here)")
        key, clean = engine.state.key_metric_name, self._evaluator_accuracy(engine)
        if clean is not None and not math.isclose(float(clean), float(sweep["clean_accuracy"]), abs_tol=1e-6):
            raise ValueError(f"RobustnessComparison: {path} has clean accuracy {sweep['clean_accuracy']:.6g}, the "
                             f"evaluator's {key} is {float(clean):.6g}: other data")
        self.clean_accuracy(engine)
        if identity.get("ids_sha256") != ids_digest(self.clean_ids):
            raise ValueError(f"RobustnessComparison: {path} swept other items than the evaluator's data "
                             f"({sweep.get('n')} there, {len(self.clean_ids)} here, or other ids)")
        return report

    def clean_accuracy(self, engine: Engine) -> float | None:
        """Accuracy of ``engine.network`` on the evaluator's clean data through ``engine.inferer`` (eval mode, no
        gradient; per item, gathered by id under ``torchrun``); ``None`` without labels or with
        ``use_predicted_labels``. The ids seen are kept in ``self.clean_ids``."""
        network = engine.network
        inferer = getattr(engine, "inferer", None)
        ids, correct, labelled = [], [], True
        with eval_mode(network), torch.no_grad():
            for batch_ids, images, labels in evaluator_batches(engine, "clean accuracy", type(self).__name__,
                                                               self.id_key):
                logits = inferer(images, network) if inferer is not None else network(images)
                ids += batch_ids
                labelled &= labels is not None
                if labels is not None:
                    correct.append((predict(logits).cpu() == labels.reshape(-1).cpu()).to(torch.int64))
        counted = torch.cat(correct) if labelled and correct else torch.zeros(len(ids), dtype=torch.int64)
        self.clean_ids, values = gather_by_id(ids, {"correct": counted})
        if self.use_predicted_labels or not labelled:
            return None
        return float(values["correct"].sum()) / len(values["correct"])

    def __call__(self, engine: Engine) -> None:
        """Sweep the original weights (or take their report), load the robust ones, sweep them, compare; restore the
        original weights."""
        if self.logger is None:
            self.logger = engine.logger
        for sweep in self.sweeps.values():
            sweep.logger = self.logger
        network = engine.network
        reports = {"original": self._original_sweep(engine)}
        if self.original_only:
            if engine.state.rank == self.save_rank:
                self.reports = {MODEL_NAMES["original"]: reports["original"]}
            return
        original_state = _state_copy(network)
        try:
            self.load_robust(network)
            self.logger.info(f"adversarially trained weights loaded from {self.robust_ckpt_path}")
            clean = self.clean_accuracy(engine)
            reports["adversarial"] = self.sweeps["adversarial"].sweep(engine, clean)
        finally:
            network.load_state_dict(original_state)
        if engine.state.rank != self.save_rank:
            return
        self.reports = {MODEL_NAMES[folder]: report for folder, report in reports.items()}
        os.makedirs(self.comparison_dir, exist_ok=True)
        write_robustness_comparison(self.reports, self.comparison_dir, self.native_per_unit, self.native_units)
        self.logger.info(f"robustness comparison -> {self.comparison_dir}/robustness_comparison.*")

    def _original_sweep(self, engine: Engine) -> dict[str, Any] | None:
        """Step 1: the report of the original weights' sweep (``None`` off ``save_rank``), from ``original_report``
        or a matching ``reuse_sweep`` (its files copied to ``<output_dir>/original``), else swept."""
        path, report = self.original_report or self.reuse_sweep, None
        if self.original_report is not None:
            report = self.read_original_report(engine, path)
        elif path is not None:
            try:
                report = self.read_original_report(engine, path)
            except ValueError as reason:
                self.logger.info(f"the original weights are swept again: {reason}")
        if report is None:
            return self.sweeps["original"].sweep(engine, self._evaluator_accuracy(engine))
        if engine.state.rank != self.save_rank:
            return None
        source, target = os.path.dirname(os.path.abspath(os.fspath(path))), self.sweeps["original"].output_dir
        os.makedirs(target, exist_ok=True)
        if os.path.abspath(target) != source:
            for name in SWEEP_FILES:
                if os.path.isfile(os.path.join(source, name)):
                    shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
        self.logger.info(f"the original weights' sweep taken from {source} (same settings, weights and items)")
        return report

    def _evaluator_accuracy(self, engine: Engine) -> float | None:
        """The evaluator's own clean accuracy (its key metric), the cross-check of the original weights' sweep."""
        key = engine.state.key_metric_name
        return engine.state.metrics.get(key) if key and not self.use_predicted_labels else None


def _comparable(value: Any) -> Any:
    """A setting as JSON would hold it, without the memory addresses a function's ``repr`` carries."""
    return json.loads(re.sub(r" at 0x[0-9a-fA-F]+", "", json.dumps(value)))
