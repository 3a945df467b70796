"""Handler that scores every image's adversarial sensitivity and refers the most fragile ones (the paper's Table 2)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_adv.attacks.seeding import key_of
from monai_adv.distributed import gather_by_id
from monai_adv.handlers.evaluator_data import EvaluatorDataHandler
from monai_adv.input_space import InputSpace
from monai_adv.reports import plot_triage_curves
from monai_adv.sensitivity import SensitivityResult, minimal_flip_eps
from monai_adv.io import DataError
from monai_adv.triage import (
    compare_triage, flag_fraction, flag_threshold, retained_accuracy_curve, threshold_triage, triage,
)
from monai_adv.utils import atomic_write_json, atomic_write_text, finite_or_none

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["SensitivityTriage", "load_threshold"]


def load_threshold(path: str | os.PathLike) -> float:
    """The referral threshold (eps, [0, 1] units) stored in a ``triage.json`` by a :class:`SensitivityTriage` run.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        DataError: (a ``ValueError``) naming ``path``, when it holds no finite number under ``threshold``; in particular when the run
            stored ``null`` because its rule defined no threshold (it referred no image, or referred a never-flipped
            one; see :meth:`monai_adv.triage.TriageResult.to_dict`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"triage file not found: {path} (run the triage overlay first)")
    with open(path, encoding="utf-8") as handle:
        summary = json.load(handle)
    if "threshold" not in summary:
        raise DataError(f"{path}: no 'threshold' stored")
    value = summary["threshold"]
    if value is None:
        flagged = summary.get("n_flagged")
        why = (
            "it referred no image" if flagged == 0
            else "the images it referred include never-flipped ones (eps_hi = inf)" if flagged
            else "it defined none"
        )
        raise DataError(
            f"{path}: 'threshold' is null: the triage run that wrote it has no finite referral threshold ({why}, "
            f"n={summary.get('n')}); rerun triage on more images or with a larger eps_max, or give threshold"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{path}: 'threshold' must be a finite number, got {value!r}")
    return float(value)


class SensitivityTriage(EvaluatorDataHandler):
    """At the end of an evaluator run, find every image's minimal flipping epsilon and flag the most sensitive.

    Sensitivity is the bracket ``[eps_lo, eps_hi]`` of :func:`monai_adv.sensitivity.minimal_flip_eps`: at ``eps_hi``
    PGD changed the clean prediction, at ``eps_lo`` it did not (``eps_hi`` is ``inf`` for images that never flip
    below ``eps_max``). Images are flagged (referred to a radiologist) either as the most sensitive fraction ``q``
    or, with ``threshold`` (or ``threshold_file``), as every image with ``eps_hi <= threshold``. Images with the
    same ``eps_hi`` (in practice those never flipped) are ranked by the clean logit margin, smallest first, never by
    their order in the data; ``triage.json`` says how many referred images never flipped
    (``referred_never_flipped``).

    Outputs in ``output_dir`` (on ``save_rank``, atomically):

    - ``filename`` (``sensitivity.csv``): ``id, label, prediction, probability, eps_lo, eps_hi, eps_hi_native,
      flipped, margin, <flag_column>``; ``probability`` is the clean probability of the predicted class (the
      confidence); ``label`` is empty without labels.
    - with labels: ``triage.json`` with ``n, q, threshold, threshold_native, fraction_flagged, accuracy_all,
      accuracy_retained, accuracy_flagged`` for sensitivity triage and, under ``comparison``, the same for
      confidence triage (refer the least confident) and margin triage (smallest logit margin) at the same
      fraction; and ``triage.png``, retained accuracy against the fraction referred for the three rules.
      ``triage.json`` is strict JSON: a number that is not finite in memory is ``null``: ``threshold`` (and
      ``threshold_native``) when the rule refers no image (``-inf``; e.g. one image at ``q=0.2``) or its last
      referred image never flipped (``eps_hi = inf``), ``accuracy_flagged`` when nothing is referred,
      ``accuracy_retained`` and ``accuracy_gain`` when everything is (``nan``); see
      :meth:`monai_adv.triage.TriageResult.to_dict`. :func:`load_threshold` refuses a ``null`` threshold.

    Under ``torchrun`` every rank searches its shard; the per-image results are gathered by id (duplicates from padded
    shards dropped, rows sorted by id, as in a single-process run) and ``save_rank`` writes: the outputs equal the
    single-process ones for the same seed (bit for bit with :class:`monai_adv.distributed.BatchShardSampler` and the
    same batch size).

    Network inputs that are not [0, 1] (a z-score, raw HU): give ``input_space`` (see
    :class:`~monai_adv.handlers.evaluator_data.EvaluatorDataHandler`); the search then runs PGD on ``u`` in [0, 1]
    against the network as a function of ``u``, and every eps (``eps_max``, ``tol``, ``threshold``) is a fraction of
    the window.

    Args:
        output_dir: folder of the outputs.
        class_names: class names in index order.
        q: fraction of images to flag (default 0.2, as the paper); ignored when a threshold is given.
        threshold: flag ``eps_hi <= threshold`` instead (eps in [0, 1] units).
        threshold_file: read ``threshold`` from a ``triage.json`` of an earlier run (for inference).
        eps_max: top of the search range in [0, 1] units.
        tol: bracket width; default ``eps_max / 256``.
        restarts: PGD random starts per probe.
        steps: PGD steps per probe (10, step eps/4, as Table S1).
        native_per_unit, native_units: to report eps also in native units (1400 HU for the CT window); ``None``:
            the input space's, or no native eps and ``"gray levels of 255"`` (see
            :meth:`~monai_adv.handlers.evaluator_data.EvaluatorDataHandler.native_scale`).
        filename: name of the per-image CSV.
        flag_column: name of the flag column (``flagged``; inference uses ``refer``).
        id_key: key of the item id in the batch; without ids, positions in the loader stand in (single process
            only).
        seed: seed of the PGD random starts. Every image draws from its own streams, keyed by ``(seed, its id,
            probe, restart)`` (``keys`` of :func:`~monai_adv.sensitivity.minimal_flip_eps`), so its bracket does not
            depend on the batch or process it is searched in.
        save_rank: the rank that writes.
        name: logger name; ``None`` uses the engine's logger.
        input_space: how the network input follows from ``u`` (an ``InputSpace``, a pair ``(low, high)``, or
            ``None`` for [0, 1]).
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        q: float = 0.2,
        threshold: float | None = None,
        threshold_file: str | None = None,
        eps_max: float = 0.02,
        tol: float | None = None,
        restarts: int = 2,
        steps: int = 10,
        native_per_unit: float | None = None,
        native_units: str | None = None,
        filename: str = "sensitivity.csv",
        flag_column: str = "flagged",
        id_key: str = "id",
        seed: int = 0,
        save_rank: int = 0,
        name: str | None = None,
        input_space: InputSpace | Sequence[float] | None = None,
    ) -> None:
        super().__init__(input_space, id_key, save_rank, name)
        if threshold is not None and threshold_file is not None:
            raise ValueError("give threshold or threshold_file, not both")
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.q = q
        self.threshold = load_threshold(threshold_file) if threshold_file is not None else threshold
        self.eps_max = eps_max
        self.tol = tol
        self.restarts = restarts
        self.steps = steps
        self.native_per_unit, self.native_units = self.native_scale(native_per_unit, native_units)
        self.filename = filename
        self.flag_column = flag_column
        self.seed = seed
        self.result: SensitivityResult | None = None
        self.summary: dict[str, Any] | None = None

    def _search(self, engine: Engine) -> tuple[list[str], SensitivityResult, torch.Tensor | None]:
        ids, results, labels = [], [], []
        model = self.attack_model(engine)
        for batch_id, images, batch_labels in self.batches(engine, "sensitivity"):
            ids += batch_id
            results.append(
                minimal_flip_eps(
                    model, images, self.eps_max, self.tol, restarts=self.restarts,
                    steps=self.steps, labels=batch_labels, seed=self.seed, keys=[key_of(i) for i in batch_id],
                )
            )
            labels.append(None if batch_labels is None else batch_labels.reshape(-1).cpu())
        has_labels = all(lab is not None for lab in labels)
        return ids, SensitivityResult.cat(results), torch.cat(labels) if has_labels else None

    def __call__(self, engine: Engine) -> None:
        ids, result, labels = self._search(engine)
        self.result = result
        columns = {
            "eps_lo": result.eps_lo, "eps_hi": result.eps_hi, "flipped": result.flipped.double(),
            "prediction": result.prediction.double(), "probability": result.confidence.double(),
            "margin": result.margin.double(),
            "label": (labels if labels is not None else torch.full_like(result.prediction, -1)).double(),
        }
        ids, values = gather_by_id(ids, columns)
        if engine.state.rank != self.save_rank:
            return
        self._write(ids, values)

    def _write(self, ids: list[str], v: dict[str, np.ndarray]) -> None:
        eps_hi = v["eps_hi"]
        # images that never flip (eps_hi = inf) are equally sensitive: the smaller logit margin is referred first
        flagged = (flag_threshold(eps_hi, self.threshold) if self.threshold is not None
                   else flag_fraction(eps_hi, self.q, tiebreak=v["margin"]))
        has_labels = bool((v["label"] >= 0).all())
        native = self.native_per_unit
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "label", "prediction", "probability", "eps_lo", "eps_hi", "eps_hi_native", "flipped",
                         "margin", self.flag_column])
        for i, item_id in enumerate(ids):
            label = self.class_names[int(v["label"][i])] if has_labels else ""
            writer.writerow([
                item_id, label, self.class_names[int(v["prediction"][i])], f"{v['probability'][i]:.6f}",
                f"{v['eps_lo'][i]:.6g}", f"{eps_hi[i]:.6g}", f"{eps_hi[i] * native:.6g}" if native else "",
                int(v["flipped"][i]), f"{v['margin'][i]:.6g}", int(flagged[i]),
            ])
        os.makedirs(self.output_dir, exist_ok=True)
        atomic_write_text(os.path.join(self.output_dir, self.filename), buffer.getvalue())
        self.logger.info(f"sensitivity of {len(ids)} images, {int(flagged.sum())} flagged -> {self.filename}")
        if has_labels:
            self._summarise(eps_hi, flagged, v)

    def _summarise(self, eps_hi: np.ndarray, flagged: np.ndarray, v: dict[str, np.ndarray]) -> None:
        correct = v["prediction"] == v["label"]
        scores = {"sensitivity": eps_hi, "confidence": v["probability"], "margin": v["margin"]}
        if self.threshold is not None:
            main = threshold_triage(eps_hi, correct, self.threshold, rule="sensitivity")
        else:
            main = triage(eps_hi, correct, self.q, tiebreak=v["margin"], rule="sensitivity")
        q = main.fraction_flagged
        others = compare_triage({k: s for k, s in scores.items() if k != "sensitivity"}, correct, q)
        threshold = finite_or_none(main.threshold)
        self.summary = {
            **main.to_dict(),
            "q": self.q if self.threshold is None else None,
            "threshold_native": threshold * self.native_per_unit if self.native_per_unit and threshold is not None else None,
            "native_units": self.native_units,
            "flip_criterion": "PGD changes the model's clean prediction",
            "never_flipped": int((~np.isfinite(eps_hi)).sum()),
            "referred_never_flipped": int((flagged & ~np.isfinite(eps_hi)).sum()),
            "tiebreak": "margin",
            "comparison": {k: r.to_dict() for k, r in others.items()},
            "settings": {"eps_max": self.eps_max, "tol": self.tol, "restarts": self.restarts, "steps": self.steps},
        }
        atomic_write_json(os.path.join(self.output_dir, "triage.json"), self.summary)
        curves = {
            rule: retained_accuracy_curve(score, correct, tiebreak=v["margin"] if rule == "sensitivity" else None)
            for rule, score in scores.items()
        }
        plot_triage_curves(curves, os.path.join(self.output_dir, "triage.png"), "triage", q)
        for rule, r in {"sensitivity": main, **others}.items():
            self.logger.info(
                f"{rule} triage: refer {r.fraction_flagged:.3f} -> accuracy {r.accuracy_all:.4f} all, "
                f"{r.accuracy_retained:.4f} retained"
            )
