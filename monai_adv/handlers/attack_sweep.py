"""Handler that sweeps attacks over an epsilon grid on an evaluator's data: the paper's Table 1 and Figures 1 and 2."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_adv.attacks import PGD
from monai_adv.attacks.base import LinfAttack
from monai_adv.attacks.model_state import eval_mode
from monai_adv.attacks.seeding import key_of, mix_seed
from monai_adv.checkpoints import weights_digest
from monai_adv.distributed import all_reduce_ints, gather_by_id
from monai_adv.handlers.evaluator_data import EvaluatorDataHandler
from monai_adv.input_space import InputSpace
from monai_adv.reports import plot_accuracy_vs_eps, plot_adversarial_examples
from monai_adv.sweep import AttackFactory, SweepResult, SweepWork, all_passed, attack_sweep, sweep_checks
from monai_adv.utils import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["AttackSweep", "sweep_rows", "write_sweep_csv", "ids_digest", "SWEEP_FILES"]

CSV_COLUMNS = ["attack", "eps", "eps_native", "accuracy", "n", "correct"]
SWEEP_FILES = ("attack_sweep.csv", "attack_sweep.json", "attack_sweep.png", "adversarial_examples.png")
"""The files a sweep writes into its ``output_dir`` (the example figure only with ``n_examples``)."""
LARGE_EPS_NAME = "large-eps PGD"


def sweep_rows(result: SweepResult, native_per_unit: float | None) -> list[dict[str, Any]]:
    """One row per (attack, eps) with ``eps_native`` = eps * native_per_unit; eps 0 appears once, as ``clean``."""
    rows = [{"attack": "clean", "eps": 0.0, "accuracy": result.clean_accuracy, "correct": result.clean_correct}]
    for attack in result.attacks:
        for eps, correct in zip(result.eps, result.correct[attack]):
            if eps > 0:
                rows.append({"attack": attack, "eps": eps, "accuracy": correct / result.n, "correct": correct})
    for row in rows:
        row["eps_native"] = row["eps"] * native_per_unit if native_per_unit else None
        row["n"] = result.n
    return rows


def write_sweep_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> None:
    """Write sweep rows (``CSV_COLUMNS`` first, then ``extra`` columns) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*extra, *CSV_COLUMNS], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _softmax(logits: torch.Tensor) -> np.ndarray:
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        logits = torch.cat([1 - p, p], dim=1).log()
    return torch.softmax(logits, dim=1).cpu().numpy()


class AttackSweep(EvaluatorDataHandler):
    """At the end of an evaluator run, attack its data with every attack at every epsilon and write the results.

    Outputs in ``output_dir`` (each written atomically, on ``save_rank`` only):

    - ``attack_sweep.csv``: columns ``attack, eps, eps_native, accuracy, n, correct``; one ``clean`` row at eps 0,
      then one row per attack and eps (> 0). ``eps`` is in [0, 1] input units, ``eps_native`` in ``native_units``.
    - ``attack_sweep.json``: the same rows, the sanity checks (see :func:`monai_adv.sweep.sweep_checks`), the work
      spent and saved by reuse, and the settings.
    - ``attack_sweep.png``: accuracy against epsilon, one line per attack (the paper's Figure 2).
    - ``adversarial_examples.png``: clean image, adversarial image and amplified perturbation with the predicted
      class probability of each, for the first ``n_examples`` images at ``example_eps`` (Figure 1); images in
      ``u`` ([0, 1], the attacks' space), whatever the network reads.

    Accuracies are also logged to TensorBoard when ``summary_writer`` is given (tag ``attack_sweep/<attack>``, step =
    eps in units of 1e-6), and a progress bar shows the batches.

    Per-sample randomness and distributed runs: with ``seed`` (default 0) every sample's attacks draw from streams
    keyed by ``(seed, item id, attack, eps)`` and take the gradient of the sample's own loss (see
    :func:`monai_adv.sweep.attack_sweep`, ``keys``), so no result depends on how the data are batched or sharded.
    Under ``torchrun`` every rank sweeps its shard; per-sample results are gathered by item id (duplicates from padded
    shards dropped, ordered by id) and ``save_rank`` writes: the outputs equal the single-process ones for the same
    seed (bit for bit with :class:`monai_adv.distributed.BatchShardSampler` and the same batch size). The large-eps
    check and the example figure use the ``large_eps_samples`` and ``n_examples`` items with the smallest ids
    (the first ones of a data list sorted by id, whatever the sharding). ``seed=None`` keeps the attacks' global-RNG
    behaviour (torchattacks' semantics), which depends on the batching.

    Network inputs that are not [0, 1] (a z-score, raw HU): give ``input_space`` (see
    :class:`~monai_adv.handlers.evaluator_data.EvaluatorDataHandler`); the attacks then run on ``u`` against the
    network as a function of ``u``, and eps stays a fraction of the window.

    Args:
        attacks: name -> ``factory(model, eps)`` (e.g. ``monai_adv.attacks.PGD`` or a ``functools.partial`` of it).
        eps_grid: perturbation sizes in [0, 1] units (0 is added).
        output_dir: folder of the outputs.
        class_names: class names, for the example figure.
        native_per_unit: native units per [0, 1] unit (1400 HU for a [-1000, 400] HU window; 255 gray levels);
            ``None``: the input space's (none for the default [0, 1] space).
        native_units: name of the native unit, e.g. ``"HU"``; ``None``: the input space's, or
            ``"gray levels of 255"`` (see :meth:`~monai_adv.handlers.evaluator_data.EvaluatorDataHandler.native_scale`).
        reuse: nested-ball reuse and batch compaction (results are monotone in eps); ``False`` attacks every sample
            at every eps.
        use_predicted_labels: attack and score against the clean predictions instead of the labels (the paper's
            code); accuracy then means "prediction unchanged".
        large_eps: run ``large_eps_attack`` at this eps on the first ``large_eps_samples`` images as a sanity check
            (accuracy must fall to at most ``max_large_eps_accuracy``); ``None`` skips it.
        large_eps_attack: factory of that attack; default PGD with 50 steps of eps/25 (at eps 0.5 the sweep's
            eps/4 sign steps overshoot and stall far from 0 % on an unmasked model).
        black_box: name of a black-box attack in ``attacks`` (e.g. a torchattacks Square through
            :class:`~monai_adv.attacks.LibraryAttack`) that must never beat ``PGD``, or in ``ensemble`` (run after
            the gradient attacks) that must break almost nothing they left; ``None`` skips that check.
        ensemble: name -> factory of the attacks that complete the worst case (APGD, Square, ...), each run per eps
            on the images every attack before it left correct; adds the row ``"worst case"``
            (:data:`~monai_adv.sweep.WORST_CASE`). ``None`` (default): no worst case.
        example_eps: eps of the example figure; default the grid value closest to 0.004 (the paper's headline).
        n_examples: images in the example figure.
        summary_writer: optional TensorBoard ``SummaryWriter``.
        seed: seed of the per-sample attack randomness (default 0); ``None``: the global RNG.
        id_key: key of the item id in each batch; without ids, positions in the loader stand in (single process
            only).
        save_rank: the rank that writes.
        name: logger name; ``None`` uses the engine's logger.
        input_space: how the network input follows from ``u`` (an ``InputSpace``, a pair ``(low, high)``, or
            ``None`` for [0, 1]).
    """

    def __init__(
        self,
        attacks: Mapping[str, AttackFactory],
        eps_grid: Sequence[float],
        output_dir: str,
        class_names: Sequence[str],
        native_per_unit: float | None = None,
        native_units: str | None = None,
        reuse: bool = True,
        use_predicted_labels: bool = False,
        large_eps: float | None = 0.5,
        large_eps_attack: AttackFactory | None = None,
        large_eps_samples: int = 64,
        max_large_eps_accuracy: float = 0.05,
        black_box: str | None = None,
        ensemble: Mapping[str, AttackFactory] | None = None,
        example_eps: float | None = None,
        n_examples: int = 4,
        summary_writer: Any = None,
        seed: int | None = 0,
        id_key: str = "id",
        save_rank: int = 0,
        name: str | None = None,
        input_space: InputSpace | Sequence[float] | None = None,
    ) -> None:
        super().__init__(input_space, id_key, save_rank, name)
        if not attacks:
            raise ValueError("AttackSweep needs at least one attack")
        self.attacks = dict(attacks)
        self.eps_grid = sorted({float(e) for e in eps_grid} | {0.0})
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.native_per_unit, self.native_units = self.native_scale(native_per_unit, native_units)
        self.reuse = reuse
        self.use_predicted_labels = use_predicted_labels
        self.large_eps = large_eps
        self.large_eps_attack = large_eps_attack
        if large_eps is not None and large_eps_attack is None:
            self.large_eps_attack = partial(PGD, steps=50, step_size=large_eps / 25)
        if large_eps is not None and large_eps_samples < 1:
            raise ValueError(
                f"AttackSweep: large_eps_samples must be at least 1 with large_eps set, got {large_eps_samples}"
            )
        self.large_eps_samples = large_eps_samples
        self.max_large_eps_accuracy = max_large_eps_accuracy
        self.black_box = black_box
        self.ensemble = None if ensemble is None else dict(ensemble)
        positive = [e for e in self.eps_grid if e > 0]
        self.example_eps = example_eps if example_eps is not None else min(positive, key=lambda e: abs(e - 0.004))
        self.n_examples = n_examples
        self.summary_writer = summary_writer
        self.seed = seed
        self.result: SweepResult | None = None
        self.report: dict[str, Any] | None = None

    def __call__(self, engine: Engine) -> None:
        """Sweep ``engine.network`` and cross-check the clean accuracy with the evaluator's key metric."""
        key = engine.state.key_metric_name
        clean = engine.state.metrics.get(key) if key and not self.use_predicted_labels else None
        self.sweep(engine, clean)

    def sweep(self, engine: Engine, clean_accuracy: float | None = None) -> dict[str, Any] | None:
        """Sweep the evaluator's data against ``engine.network`` and write the outputs (collective under
        ``torchrun``).

        Args:
            engine: the evaluator whose ``data_loader``, ``prepare_batch`` and ``network`` are used.
            clean_accuracy: the evaluator's own clean accuracy, checked against the sweep's (``eps0_is_clean``);
                ``None`` checks the sweep against itself.

        Returns:
            the report (``attack_sweep.json``'s content, also ``self.report``) on ``save_rank``, else ``None``.
        """
        model = self.attack_model(engine)
        results, ids, candidates = [], [], []
        keep = max(self.large_eps_samples if self.large_eps is not None else 0, self.n_examples)
        for batch_id, images, labels in self.batches(engine, "attack sweep"):
            labels = None if self.use_predicted_labels else labels
            keys = None if self.seed is None else [key_of(i) for i in batch_id]
            results.append(
                attack_sweep(
                    model, images, labels, self.attacks, self.eps_grid, reuse=self.reuse, keys=keys,
                    seed=self.seed or 0, ensemble=self.ensemble,
                )
            )
            ids += batch_id
            candidates = _smallest_ids(candidates, batch_id, images, labels, keep)
        self.result, swept_ids = _gather(ids, sum(results))
        large_result = self._large_eps_sweep(model, candidates)
        examples = self._gather_examples(candidates, engine.state.device)
        if engine.state.rank != self.save_rank:
            return None
        identity = {"weights_sha256": weights_digest(engine.network), "ids_sha256": ids_digest(swept_ids)}
        checks = sweep_checks(
            self.result,
            clean_accuracy=clean_accuracy,
            large_eps=large_result,
            large_eps_attack=LARGE_EPS_NAME,
            max_large_eps_accuracy=self.max_large_eps_accuracy,
            black_box=self.black_box,
        )
        self._write(model, checks, examples, identity)
        return self.report

    def _large_eps_sweep(self, model: torch.nn.Module, candidates: list[tuple]) -> SweepResult | None:
        """``large_eps_attack`` on the ``large_eps_samples`` items with the smallest ids over all ranks (every rank
        attacks those it holds; collective)."""
        if self.large_eps is None:
            return None
        chosen = set(gather_by_id([row[0] for row in candidates], {})[0][: self.large_eps_samples])
        mine = [row for row in candidates if row[0] in chosen]
        attack = {LARGE_EPS_NAME: self.large_eps_attack}
        if mine:
            images = torch.stack([row[1] for row in mine])
            labels = None if mine[0][2] is None else torch.stack([row[2] for row in mine])
            keys = None if self.seed is None else [key_of(row[0]) for row in mine]
            local = attack_sweep(model, images, labels, attack, [self.large_eps], keys=keys, seed=self.seed or 0)
        else:
            empty = torch.zeros(0, 2, dtype=torch.bool)
            local = SweepResult((0.0, float(self.large_eps)), 0, 0, {LARGE_EPS_NAME: [0, 0]},
                                {LARGE_EPS_NAME: SweepWork()}, {LARGE_EPS_NAME: empty}, True)
        return _gather([row[0] for row in mine], local)[0]

    def _gather_examples(self, candidates: list[tuple], device: Any) -> tuple[list[str], torch.Tensor, Any] | None:
        """The ``n_examples`` ids, images (and labels) with the smallest ids over all ranks, on every rank."""
        if self.n_examples <= 0 or not candidates:
            return None
        rows = candidates[: self.n_examples]
        labels = [-1 if row[2] is None else int(torch.as_tensor(row[2]).reshape(-1)[0]) for row in rows]
        ids, values = gather_by_id(
            [row[0] for row in rows],
            {"image": torch.stack([row[1] for row in rows]).cpu(), "label": torch.tensor(labels, dtype=torch.int64)},
        )
        images = torch.from_numpy(values["image"][: self.n_examples]).to(device)
        label = values["label"][: self.n_examples]
        return ids[: self.n_examples], images, None if (label < 0).any() else torch.from_numpy(label).to(device)

    def settings(self) -> dict[str, Any]:
        """The settings that decide the sweep's numbers, JSON-ready (``attack_sweep.json``'s ``settings``)."""
        return {
            "attacks": {name: repr(factory) for name, factory in self.attacks.items()},
            "ensemble": None if self.ensemble is None else {n: repr(f) for n, f in self.ensemble.items()},
            "eps_grid": self.eps_grid,
            "native_per_unit": self.native_per_unit,
            "native_units": self.native_units,
            "reuse": self.reuse,
            "labels": "predicted" if self.use_predicted_labels else "true",
            "seed": self.seed,
            "large_eps": self.large_eps,
            "large_eps_attack": repr(self.large_eps_attack),
            "large_eps_samples": self.large_eps_samples,
            "max_large_eps_accuracy": self.max_large_eps_accuracy,
            "black_box": self.black_box,
            "input_space": repr(self.input_space),
        }

    def _write(
        self, model: torch.nn.Module, checks: Mapping[str, Any], examples: tuple[list[str], torch.Tensor, Any] | None,
        identity: Mapping[str, str],
    ) -> None:
        rows = sweep_rows(self.result, self.native_per_unit)
        os.makedirs(self.output_dir, exist_ok=True)
        write_sweep_csv(os.path.join(self.output_dir, "attack_sweep.csv"), rows)
        self.report = {
            "rows": rows,
            "checks": {k: {"passed": c.passed, "message": c.message, "values": c.values} for k, c in checks.items()},
            "all_checks_passed": all_passed(checks),
            "sweep": self.result.to_dict(),
            "settings": self.settings(),
            "identity": dict(identity),
        }
        atomic_write_json(os.path.join(self.output_dir, "attack_sweep.json"), self.report)
        plot_accuracy_vs_eps(
            rows, os.path.join(self.output_dir, "attack_sweep.png"), "accuracy under attack",
            self.native_per_unit, self.native_units,
        )
        if examples is not None:
            self._plot_examples(model, *examples)
        for row in rows:
            self.logger.info(
                f"{row['attack']:>6} eps={row['eps']:<8g} accuracy={row['accuracy']:.4f} (n={row['n']})"
            )
            if self.summary_writer is not None:
                self.summary_writer.add_scalar(
                    f"attack_sweep/{row['attack']}", row["accuracy"], round(row["eps"] * 1e6)
                )
        for check in checks.values():
            status = {True: "PASS", False: "FAIL", None: "n/a"}[check.passed]
            self.logger.info(f"check {check.name}: {status}: {check.message}")
        work = {a: w["grad_passes_saved"] for a, w in self.report["sweep"]["work"].items()}
        self.logger.info(f"gradient passes saved by reuse: {work} -> {self.output_dir}/attack_sweep.*")

    def example_attacks(
        self, model: torch.nn.Module, ids: Sequence[str], images: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The examples of the figure: ``images`` ``u`` ``(N, C, ...)`` in [0, 1] attacked through ``model`` (a function
        of ``u``) by every attack but the black-box one at ``example_eps``, each image seeded by its id as in the
        sweep (so an image's example is its sweep's adversarial image at that eps, whatever else is in the figure).

        Returns:
            ``(truth, adversarial, probabilities)``: the ``(N,)`` labels attacked (the predictions without labels),
            attack -> ``(N, C, ...)`` adversarial images, and ``"clean"``/attack -> ``(N, K)`` probabilities.
        """
        with eval_mode(model), torch.no_grad():
            clean_logits = model(images)
        truth = clean_logits.argmax(1) if labels is None else labels[: len(images)].reshape(-1)
        adversarial, probabilities = {}, {"clean": _softmax(clean_logits)}
        for name, factory in self.attacks.items():
            if name == self.black_box:
                continue
            attack = factory(model, self.example_eps)
            if self.seed is not None and isinstance(attack, LinfAttack):
                stream = key_of(f"{name}@{self.example_eps!r}")
                attack.sample_seeds = [mix_seed(self.seed, key_of(i), stream) for i in ids]
            adv = attack(images, truth).detach()
            with eval_mode(model), torch.no_grad():
                probabilities[name] = _softmax(model(adv))
            adversarial[name] = adv.cpu().numpy()
        return truth, adversarial, probabilities

    def _plot_examples(
        self, model: torch.nn.Module, ids: Sequence[str], images: torch.Tensor, labels: torch.Tensor | None
    ) -> None:
        """The example figure (:meth:`example_attacks`)."""
        truth, adversarial, probabilities = self.example_attacks(model, ids, images, labels)
        plot_adversarial_examples(
            images.cpu().numpy(), adversarial, probabilities, [int(t) for t in truth], self.class_names,
            self.example_eps, os.path.join(self.output_dir, "adversarial_examples.png"),
        )


def _smallest_ids(
    kept: list[tuple], ids: list[str], images: torch.Tensor, labels: torch.Tensor | None, keep: int
) -> list[tuple]:
    """The ``keep`` rows ``(id, image, label)`` with the smallest ids among ``kept`` and this batch (copied out of
    the batch, so it can be freed)."""
    rows = kept + [(i, None, j) for j, i in enumerate(ids)]
    rows = sorted(rows, key=lambda row: row[0])[:keep]
    return [
        row if row[1] is not None
        else (row[0], images[row[2]].clone(), None if labels is None else labels[row[2]].clone())
        for row in rows
    ]


def ids_digest(ids: Sequence[str]) -> str:
    """SHA-256 (hex) of a set of item ids (order and duplicates ignored): which items a sweep covered."""
    return hashlib.sha256("\n".join(sorted(set(map(str, ids)))).encode()).hexdigest()


def _gather(ids: list[str], result: SweepResult) -> tuple[SweepResult, list[str]]:
    """The sweep of all ranks' samples, and their ids: per-sample flags gathered by id (duplicates dropped, sorted
    by id), counts recomputed from them, work summed over ranks (padded duplicates included). Collective; no-op
    reordering when not distributed."""
    attacks = result.attacks
    ensemble = {f"ensemble:{a}": flags for a, flags in result.ensemble_flags.items()}
    unique, values = gather_by_id(ids, {**{a: result.per_sample[a] for a in attacks}, **ensemble})
    per_sample = {a: torch.from_numpy(values[a]).bool() for a in attacks}
    ensemble_flags = {a: torch.from_numpy(values[f"ensemble:{a}"]).bool() for a in result.ensemble_flags}
    correct = {a: [int(c) for c in per_sample[a].sum(0).tolist()] for a in attacks}
    fields = list(SweepWork.__dataclass_fields__)
    totals = all_reduce_ints([getattr(result.work[a], f) for a in attacks for f in fields])
    work = {a: SweepWork(*totals[i * len(fields) : (i + 1) * len(fields)]) for i, a in enumerate(attacks)}
    clean_correct = int(per_sample[attacks[0]][:, 0].sum()) if attacks else 0  # grid[0] is eps 0: clean
    return (SweepResult(result.eps, len(unique), clean_correct, correct, work, per_sample, result.reuse,
                        ensemble_flags), unique)
