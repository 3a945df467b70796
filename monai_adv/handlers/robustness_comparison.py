"""Handler that sweeps the original and the adversarially trained weights on one evaluator's data (Table S5, Fig. 3)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from monai_adv.attacks.loss import predict
from monai_adv.attacks.model_state import eval_mode
from monai_adv.checkpoints import ModelIdentity
from monai_adv.distributed import gather_by_id
from monai_adv.handlers.attack_sweep import AttackSweep
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

    Args:
        attacks, eps_grid, class_names: as :class:`~monai_adv.handlers.AttackSweep`, for both sweeps.
        output_dir: folder of the two sweeps' sub-folders ``original`` and ``adversarial``.
        robust_ckpt_path: checkpoint of the adversarially trained weights (bare state dict or ``{"model": ...}``).
        map_location: ``torch.load``'s ``map_location`` for it, e.g. the bundle's ``@device``. Default ``"cpu"``.
        identity: a :class:`~monai_adv.checkpoints.ModelIdentity` compared with the one saved in the checkpoint.
        comparison_dir: folder of ``robustness_comparison.*``; default ``output_dir``.
        id_key, save_rank, name, input_space: as :class:`~monai_adv.handlers.AttackSweep`, for both sweeps.
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
        **sweep_options: Any,
    ) -> None:
        super().__init__(input_space, id_key, save_rank, name)
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

    def load_robust(self, network: nn.Module) -> None:
        """Load ``robust_ckpt_path`` into ``network``, checked as
        :class:`~monai_adv.handlers.StrictCheckpointLoad` checks it."""
        load_dict: dict[str, Any] = {"model": network}
        if self.identity is not None:
            load_dict["identity"] = self.identity
        StrictCheckpointLoad(self.robust_ckpt_path, load_dict, self.map_location)()

    def clean_accuracy(self, engine: Engine) -> float | None:
        """Accuracy of ``engine.network`` on the evaluator's clean data through ``engine.inferer`` (eval mode, no
        gradient; per item, gathered by id under ``torchrun``); ``None`` without labels or with
        ``use_predicted_labels``."""
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
        if self.use_predicted_labels or not labelled:
            return None
        _, values = gather_by_id(ids, {"correct": torch.cat(correct)})
        return float(values["correct"].sum()) / len(values["correct"])

    def __call__(self, engine: Engine) -> None:
        """Sweep the original weights, load the robust ones, sweep them, compare; restore the original weights."""
        if self.logger is None:
            self.logger = engine.logger
        for sweep in self.sweeps.values():
            sweep.logger = self.logger
        network = engine.network
        original_state = _state_copy(network)
        try:
            key = engine.state.key_metric_name
            clean = engine.state.metrics.get(key) if key and not self.use_predicted_labels else None
            reports = {"original": self.sweeps["original"].sweep(engine, clean)}
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
