"""Handler that sweeps attacks over an epsilon grid on an evaluator's data: the paper's Table 1 and Figures 1 and 2."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_adv.attacks import PGD
from monai_adv.attacks.base import eval_mode
from monai_adv.handlers.collect import evaluator_batches
from monai_adv.reports import plot_accuracy_vs_eps, plot_adversarial_examples
from monai_adv.sweep import AttackFactory, SweepResult, all_passed, attack_sweep, sweep_checks
from monai_adv.utils import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["AttackSweep", "sweep_rows", "write_sweep_csv"]

CSV_COLUMNS = ["attack", "eps", "eps_native", "accuracy", "n", "correct"]
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


class AttackSweep:
    """At the end of an evaluator run, attack its data with every attack at every epsilon and write the results.

    Outputs in ``output_dir`` (each written atomically, on ``save_rank`` only):

    - ``attack_sweep.csv``: columns ``attack, eps, eps_native, accuracy, n, correct``; one ``clean`` row at eps 0,
      then one row per attack and eps (> 0). ``eps`` is in [0, 1] input units, ``eps_native`` in ``native_units``.
    - ``attack_sweep.json``: the same rows, the sanity checks (see :func:`monai_adv.sweep.sweep_checks`), the work
      spent and saved by reuse, and the settings.
    - ``attack_sweep.png``: accuracy against epsilon, one line per attack (the paper's Figure 2).
    - ``adversarial_examples.png``: clean image, adversarial image and amplified perturbation with the predicted
      class probability of each, for the first ``n_examples`` images at ``example_eps`` (Figure 1).

    Accuracies are also logged to TensorBoard when ``summary_writer`` is given (tag ``attack_sweep/<attack>``, step =
    eps in units of 1e-6), and a progress bar shows the batches.

    Args:
        attacks: name -> ``factory(model, eps)`` (e.g. ``monai_adv.attacks.PGD`` or a ``functools.partial`` of it).
        eps_grid: perturbation sizes in [0, 1] units (0 is added).
        output_dir: folder of the outputs.
        class_names: class names, for the example figure.
        native_per_unit: native units per [0, 1] unit (1400 HU for a [-1000, 400] HU window; 255 gray levels).
        native_units: name of the native unit, e.g. ``"HU"``.
        reuse: nested-ball reuse and batch compaction (results are monotone in eps); ``False`` attacks every sample
            at every eps.
        use_predicted_labels: attack and score against the clean predictions instead of the labels (the paper's
            code); accuracy then means "prediction unchanged".
        large_eps: run ``large_eps_attack`` at this eps on the first ``large_eps_samples`` images as a sanity check
            (accuracy must fall to at most ``max_large_eps_accuracy``); ``None`` skips it.
        large_eps_attack: factory of that attack; default PGD with 50 steps of eps/25 (at eps 0.5 the sweep's
            eps/4 sign steps overshoot and stall far from 0 % on an unmasked model).
        black_box: name of a black-box attack in ``attacks`` (e.g. a torchattacks Square through
            :class:`~monai_adv.attacks.LibraryAttack`) that must never beat ``PGD``; ``None`` skips that check.
        example_eps: eps of the example figure; default the grid value closest to 0.004 (the paper's headline).
        n_examples: images in the example figure.
        summary_writer: optional TensorBoard ``SummaryWriter``.
        save_rank: the rank that writes.
        name: logger name; ``None`` uses the engine's logger.
    """

    def __init__(
        self,
        attacks: Mapping[str, AttackFactory],
        eps_grid: Sequence[float],
        output_dir: str,
        class_names: Sequence[str],
        native_per_unit: float | None = None,
        native_units: str = "gray levels of 255",
        reuse: bool = True,
        use_predicted_labels: bool = False,
        large_eps: float | None = 0.5,
        large_eps_attack: AttackFactory | None = None,
        large_eps_samples: int = 64,
        max_large_eps_accuracy: float = 0.05,
        black_box: str | None = None,
        example_eps: float | None = None,
        n_examples: int = 4,
        summary_writer: Any = None,
        save_rank: int = 0,
        name: str | None = None,
    ) -> None:
        if not attacks:
            raise ValueError("AttackSweep needs at least one attack")
        self.attacks = dict(attacks)
        self.eps_grid = sorted({float(e) for e in eps_grid} | {0.0})
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.native_per_unit = native_per_unit
        self.native_units = native_units
        self.reuse = reuse
        self.use_predicted_labels = use_predicted_labels
        self.large_eps = large_eps
        self.large_eps_attack = large_eps_attack
        if large_eps is not None and large_eps_attack is None:
            self.large_eps_attack = partial(PGD, steps=50, step_size=large_eps / 25)
        self.large_eps_samples = large_eps_samples
        self.max_large_eps_accuracy = max_large_eps_accuracy
        self.black_box = black_box
        positive = [e for e in self.eps_grid if e > 0]
        self.example_eps = example_eps if example_eps is not None else min(positive, key=lambda e: abs(e - 0.004))
        self.n_examples = n_examples
        self.summary_writer = summary_writer
        self.save_rank = save_rank
        self.logger = logging.getLogger(name) if name else None
        self.result: SweepResult | None = None
        self.report: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        model = engine.network
        results, large, examples = [], [], None
        for _, images, labels in evaluator_batches(engine, "attack sweep"):
            labels = None if self.use_predicted_labels else labels
            results.append(attack_sweep(model, images, labels, self.attacks, self.eps_grid, reuse=self.reuse))
            seen = sum(r.n for r in large)
            if self.large_eps is not None and seen < self.large_eps_samples:
                k = self.large_eps_samples - seen
                attack = {LARGE_EPS_NAME: self.large_eps_attack}
                large.append(
                    attack_sweep(model, images[:k], None if labels is None else labels[:k], attack, [self.large_eps])
                )
            if examples is None:
                examples = (images[: self.n_examples], labels)
        if not results:
            raise ValueError("AttackSweep: the evaluator's data loader yielded no batch")
        self.result = _all_reduce(sum(results))
        large_result = _all_reduce(sum(large)) if large else None
        if engine.state.rank != self.save_rank:
            return
        key = engine.state.key_metric_name
        clean = engine.state.metrics.get(key) if key and not self.use_predicted_labels else None
        checks = sweep_checks(
            self.result,
            clean_accuracy=clean,
            large_eps=large_result,
            large_eps_attack=LARGE_EPS_NAME,
            max_large_eps_accuracy=self.max_large_eps_accuracy,
            black_box=self.black_box,
        )
        self._write(engine, checks, examples)

    def _write(self, engine: Engine, checks: Mapping[str, Any], examples: tuple[torch.Tensor, Any] | None) -> None:
        rows = sweep_rows(self.result, self.native_per_unit)
        os.makedirs(self.output_dir, exist_ok=True)
        write_sweep_csv(os.path.join(self.output_dir, "attack_sweep.csv"), rows)
        self.report = {
            "rows": rows,
            "checks": {k: {"passed": c.passed, "message": c.message, "values": c.values} for k, c in checks.items()},
            "all_checks_passed": all_passed(checks),
            "sweep": self.result.to_dict(),
            "settings": {
                "attacks": {name: repr(factory) for name, factory in self.attacks.items()},
                "eps_grid": self.eps_grid,
                "native_per_unit": self.native_per_unit,
                "native_units": self.native_units,
                "reuse": self.reuse,
                "labels": "predicted" if self.use_predicted_labels else "true",
            },
        }
        atomic_write_json(os.path.join(self.output_dir, "attack_sweep.json"), self.report)
        plot_accuracy_vs_eps(
            rows, os.path.join(self.output_dir, "attack_sweep.png"), "accuracy under attack",
            self.native_per_unit, self.native_units,
        )
        if examples is not None:
            self._plot_examples(engine.network, *examples)
        for row in rows:
            self.logger.info(
                f"{row['attack']:>6} eps={row['eps']:<8g} accuracy={row['accuracy']:.4f} (n={row['n']})"
            )
            if self.summary_writer is not None:
                self.summary_writer.add_scalar(f"attack_sweep/{row['attack']}", row["accuracy"], round(row["eps"] * 1e6))
        for check in checks.values():
            status = {True: "PASS", False: "FAIL", None: "n/a"}[check.passed]
            self.logger.info(f"check {check.name}: {status}: {check.message}")
        work = {a: w["grad_passes_saved"] for a, w in self.report["sweep"]["work"].items()}
        self.logger.info(f"gradient passes saved by reuse: {work} -> {self.output_dir}/attack_sweep.*")

    def _plot_examples(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        with eval_mode(model), torch.no_grad():
            clean_logits = model(images)
        truth = clean_logits.argmax(1) if labels is None else labels[: len(images)].reshape(-1)
        adversarial, probabilities = {}, {"clean": _softmax(clean_logits)}
        for name, factory in self.attacks.items():
            if name == self.black_box:
                continue
            adv = factory(model, self.example_eps)(images, truth).detach()
            with eval_mode(model), torch.no_grad():
                probabilities[name] = _softmax(model(adv))
            adversarial[name] = adv.cpu().numpy()
        plot_adversarial_examples(
            images.cpu().numpy(), adversarial, probabilities, [int(t) for t in truth], self.class_names,
            self.example_eps, os.path.join(self.output_dir, "adversarial_examples.png"),
        )


def _all_reduce(result: SweepResult) -> SweepResult:
    """Sum the counts of a sweep over all ranks (no-op when not distributed). Per-sample flags stay local."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return result
    attacks = result.attacks
    counts = torch.tensor([result.n, result.clean_correct, *[c for a in attacks for c in result.correct[a]]])
    dist.all_reduce(counts)
    values = counts.tolist()
    per_attack = len(result.eps)
    correct = {a: values[2 + i * per_attack : 2 + (i + 1) * per_attack] for i, a in enumerate(attacks)}
    return SweepResult(result.eps, values[0], values[1], correct, result.work, {}, result.reuse)
