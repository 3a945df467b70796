"""The study report: ``report.md`` and its PNG figures in one folder, built only from the stages' output files.

For every bundle: Table 1 (accuracy under each attack at each epsilon) with Figures 2 and 1; Table S5 and Figure 3
(before and after adversarial training); Table 2 (triage by adversarial sensitivity, with confidence and margin
triage at the same fraction). Then the susceptibility comparison across bundles. Every table names the data set our
run used. The paper's data set is named, and its published figures set beside ours in columns labelled as the
paper's, only when our data is that data set (:func:`~monai_adv.study.paper_figures.comparable_dataset`: the data
list our preparation script wrote for it, or the demo data standing in for it); for any other data set the headings
name it and the paper's figures are left out, with one sentence saying which data set they are for. The report holds
no timestamps or output paths, so the same stage outputs always give the same ``report.md``.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_adv.study.paper_figures import (
    ADVERSARIAL_TRAINING_GAIN, CITATION, PAPER_DATASETS, TABLE1, TABLE2, TABLE_S5, TABLE_S5_EPS, comparable_dataset,
    paper_dataset,
)
from monai_adv.sweep import WORST_CASE
from monai_adv.utils import atomic_write_text

__all__ = ["BundleReport", "write_report", "FIGURES"]

ATTACKS = ("FGSM", "PGD", "BIM")
# report figure name suffix -> (stage, file)
FIGURES = {
    "figure1-adversarial-examples.png": ("attack", "adversarial_examples.png"),
    "figure2-accuracy-vs-eps.png": ("attack", "attack_sweep.png"),
    "figure3-before-after.png": ("compare", "robustness_comparison.png"),
    "triage.png": ("triage", "triage.png"),
}


@dataclass
class BundleReport:
    """What the report needs of one bundle: its name, its folder (``<output>/<bundle>``, holding one folder per
    stage), what the data was and the settings it ran with (:class:`~monai_adv.study.setup.BundleSetup`'s ``data``
    and ``settings``)."""

    name: str
    folder: Path
    data: Mapping[str, Any]
    settings: Mapping[str, Any]
    medical: bool = True


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}"


def _paper(value: float | None) -> str:
    return "not reported" if value is None else f"{value:.2f}"


def _signed(points: float | None) -> str:
    return "-" if points is None else f"{points:+.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"report: cannot read {path}: {error}") from error


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as error:
        raise ValueError(f"report: cannot read {path}: {error}") from error


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _native(eps: float, settings: Mapping[str, Any]) -> str:
    per_unit = settings.get("native_per_unit")
    return "-" if not per_unit else f"{eps * float(per_unit):.3g}"


def _units(settings: Mapping[str, Any]) -> str:
    return str(settings.get("native_units") or "native units")


def not_comparable(bundle: BundleReport) -> str | None:
    """The sentence saying that the paper's figures for this bundle are for another data set than ours, or ``None``
    (they are comparable, or the paper has no such bundle)."""
    studied = paper_dataset(bundle.name)
    if studied is None or comparable_dataset(bundle.name, bundle.data) is not None:
        return None
    return (f"The paper's figures for this kind of model are for {studied.dataset} ({studied.column}); this run used "
            f"{data_label(bundle)}, so they are not comparable and are left out.")


def _overstatement(pgd: Mapping[float, float], worst: Mapping[float, float]) -> list[str]:
    """``"+x.xx at eps e"`` per eps that has both: points of accuracy by which PGD lies above the worst case."""
    return [f"{100 * (pgd[e] - w):+.2f} at eps {e:g}" for e, w in sorted(worst.items()) if e in pgd]


def _worst_case_lines(sweep: Mapping[str, Any]) -> list[str]:
    """What the worst-case row is and how far PGD's row lies above it, per eps; nothing without a worst case."""
    rows = sweep["rows"]
    worst = {float(r["eps"]): r["accuracy"] for r in rows if r["attack"] == WORST_CASE}
    if not worst:
        return []
    ensemble = list((sweep.get("settings") or {}).get("ensemble") or {})
    broken = (sweep.get("sweep") or {}).get("ensemble_broken") or {}
    pgd = {float(r["eps"]): r["accuracy"] for r in rows if r["attack"] == "PGD"}
    over = _overstatement(pgd, worst)
    added = [f"{name} {sum(broken.get(name, []))}" for name in ensemble]
    lines = [
        f"**Worst case** (as AutoAttack): an image counts as robust at an eps only if no attack above broke it and "
        f"{', then '.join(ensemble) or 'no further attack'}, each run on the images every attack before it left "
        "correct (and, the balls being nested, not attacked again once broken at a smaller eps), do not either."
        + (f" Images these broke beyond the paper's attacks, over the grid: {', '.join(added)}." if added else ""),
        "",
    ]
    if over:
        lines += [f"PGD-10 overstates robustness by (points of accuracy, PGD minus worst case): {'; '.join(over)}.",
                  ""]
    return lines


def _classes(bundle: BundleReport) -> str:
    names = bundle.settings.get("class_names")
    if not isinstance(names, (list, tuple)) or not names:
        return "- **Classes:** not set (`class_names`)."
    source = ("`adv_class_names`: the bundle's metadata.json names, else the class indices"
              if bundle.settings.get("profile") == "bundle" else "the data list's")
    return f"- **Classes** ({source}, in label order): " + ", ".join(
        f"{k} `{n}`" for k, n in enumerate(names)
    ) + "."


class _Bundle:
    """One bundle's section."""

    def __init__(self, bundle: BundleReport) -> None:
        self.b = bundle
        self.paper = comparable_dataset(bundle.name, bundle.data)  # None: the paper's figures are left out
        self.column = self.paper.column if self.paper else None
        self.ours = f"ours (%), {data_label(bundle)}"
        self.theirs = f"paper (%), {self.paper.dataset}" if self.paper else "paper (%)"
        self.sweep = sweep = _read_json(self.file("attack", "attack_sweep.json"))
        # the native scale the sweep attacked in (read off the bundle's own preprocessing for another bundle)
        scale = sweep.get("settings") or {}
        self.settings = {**bundle.settings,
                         **{k: scale[k] for k in ("native_per_unit", "native_units") if scale.get(k) is not None}}

    def file(self, stage: str, name: str) -> Path:
        return self.b.folder / stage / name

    def figure(self, suffix: str) -> str:
        return f"{self.b.name}-{suffix}"

    def lines(self) -> list[str]:
        b, settings = self.b, self.settings
        if self.paper:
            title = f"## {b.name} ({self.column}: {self.paper.dataset})"
            paper_data = f"- **Data, paper:** {self.paper.dataset}."
        else:
            title = f"## {b.name} ({data_label(b)})"
            paper_data = f"- **Data, paper:** {not_comparable(b) or 'this kind of model is not in the paper.'}"
        size = settings.get("image_size")
        size = " x ".join(str(s) for s in size) if isinstance(size, (list, tuple)) else str(size)
        clean = f"; **paper:** {_paper(TABLE1[self.column][('clean', 0.0)])} %" if self.column else ""
        if settings.get("profile") == "bundle":  # another bundle: its own data list, network and training
            data = f"- **Data, ours:** {b.data.get('label')}."
            trained = ("a trained model given with `--checkpoint`" if settings.get("checkpoint")
                       else "trained by the bundle's own train config")
            model = f"- **Model, ours:** the bundle's network `{settings.get('network') or '?'}`, {trained}."
        else:
            data = (f"- **Data, ours:** {b.data.get('label')}; {b.data.get('n_training')} training images (a 20 % "
                    f"validation split carved by patient), {b.data.get('n_test')} test images.")
            model = (f"- **Model, ours:** PaperVGG16 at width {settings.get('network_width')}, input {size}, batch "
                     f"{settings.get('batch_size')}, at most {settings.get('max_epochs')} epochs (patience "
                     f"{settings.get('patience')}), profile `{settings.get('profile', 'demo')}`.")
        lines = [title, "", data, paper_data, _classes(b), model, self.clean_accuracy() + clean + ".",
                 *self.chance_warning(), ""]
        return lines + self.table1() + self.table_s5() + self.table2()

    def clean_accuracy(self) -> str:
        """The clean test accuracy line: the evaluate stage's metrics, or (another bundle's evaluation writes its own
        files) the sweep's clean pass over the same test data."""
        path = self.file("evaluate", "metrics.json")
        if path.is_file():
            metrics = _read_json(path)
            return (f"- **Clean test accuracy, ours:** {_pct(metrics.get('accuracy'))} % (ROC AUC "
                    f"{metrics.get('roc_auc', float('nan')):.3f}, n = {metrics.get('n')})")
        clean = next(r for r in self.sweep["rows"] if r["attack"] == "clean")
        return (f"- **Clean test accuracy, ours:** {_pct(clean['accuracy'])} % (n = {clean.get('n')}; the sweep's "
                "clean pass: the bundle's own evaluation output is in its `evaluate` folder)")

    def chance_warning(self) -> list[str]:
        """A warning line when the model is no better than always answering one class (the sweep's clean accuracy at
        or below ``1 / K``): its robustness figures then say nothing."""
        clean = next(r["accuracy"] for r in self.sweep["rows"] if r["attack"] == "clean")
        names = self.settings.get("class_names")
        classes = len(names) if isinstance(names, (list, tuple)) and len(names) >= 2 else 2
        if clean is None or clean > 1.0 / classes + 1e-12:
            return []
        return [f"- **Warning:** the clean accuracy ({_pct(clean)} %) is no better than chance for {classes} classes: "
                "the model has not learned the task, and the robustness figures below say nothing about it."]

    # Table 1, Figures 2 and 1 ----------------------------------------------------------------------------------------

    def table1(self) -> list[str]:
        sweep = self.sweep
        rows = sweep["rows"]
        paper = TABLE1.get(self.column, {}) if self.column else {}
        units = _units(self.settings)
        clean = next(r for r in rows if r["attack"] == "clean")
        body = [["no attack", "0", "0", _pct(clean["accuracy"]), _paper(paper.get(("clean", 0.0)))]]
        comparable = self.paper is not None
        attacks = [a for a in ATTACKS if any(r["attack"] == a for r in rows)]
        attacks += sorted({r["attack"] for r in rows} - set(ATTACKS) - {"clean", WORST_CASE})
        attacks += [WORST_CASE] if any(r["attack"] == WORST_CASE for r in rows) else []
        for attack in attacks:
            for row in sorted((r for r in rows if r["attack"] == attack), key=lambda r: float(r["eps"])):
                eps = float(row["eps"])
                published = next((v for (a, e), v in paper.items() if a == attack and _close(e, eps)), None)
                body.append(
                    [attack, f"{eps:g}", _native(eps, self.settings), _pct(row["accuracy"]), _paper(published)]
                )
        header = ["attack", "eps", f"eps ({units})", self.ours, f"{self.theirs}, Table 1"]
        if not comparable:
            header, body = header[:-1], [row[:-1] for row in body]
        lines = [
            "### Table 1: accuracy under attack",
            "",
            f"FGSM, BIM (10 steps of eps/10) and PGD (10 steps of eps/4, random start) on the test set; eps is the "
            f"L-infinity bound on the [0, 1] input and in {units}."
            + (f" The paper's column is its Table 1 ({CITATION}); \"not reported\" where its grid has no such eps."
               if comparable else ""),
            "",
            *_table(header, body),
            *_worst_case_lines(sweep),
        ]
        checks = sweep.get("checks", {})
        failed = [f"{name} ({c.get('message')})" for name, c in checks.items() if c.get("passed") is False]
        if checks:
            verdict = "all passed." if not failed else "FAILED: " + "; ".join(failed)
            lines += [f"Sweep sanity checks: {verdict}", ""]
        lines += [
            f"**Figure 2** (accuracy against eps): ![Figure 2]({self.figure('figure2-accuracy-vs-eps.png')})",
            "",
            f"**Figure 1** (clean and adversarial images with the predicted class and its probability): "
            f"![Figure 1]({self.figure('figure1-adversarial-examples.png')})",
            "",
        ]
        return lines

    # Table S5 and Figure 3 ----------------------------------------------------------------------------------------

    def table_s5(self) -> list[str]:
        rows = _read_csv(self.file("compare", "robustness_comparison.csv"))
        table: dict[tuple[str, str, float], float] = {
            (r["model"], r["attack"], float(r["eps"])): float(r["accuracy"]) for r in rows
        }
        models = list(dict.fromkeys(r["model"] for r in rows))
        if len(models) < 2:
            path = self.file("compare", "robustness_comparison.csv")
            raise ValueError(f"report: {path} compares {models}, not two models")
        before = "original" if "original" in models else models[0]
        after = "adversarially trained" if "adversarially trained" in models else next(m for m in models if m != before)
        grid = sorted({e for (_, a, e) in table if a != "clean"})
        adversarial = self.settings.get("adversarial") or {}
        adv_eps = adversarial.get("adv_eps")
        eps = next((e for e in grid if _close(e, TABLE_S5_EPS)), None)
        if eps is None and adv_eps is not None:
            eps = next((e for e in grid if _close(e, float(adv_eps))), None)
        if eps is None:
            eps = min(grid, key=lambda e: abs(e - TABLE_S5_EPS))
        paper = TABLE_S5.get(self.column) if self.column else None
        attacks = [a for a in (*ATTACKS, WORST_CASE) if any(k[1] == a for k in table)]

        def ours(model: str, attack: str) -> float | None:
            return table.get((model, "clean", 0.0)) if attack == "clean" else table.get((model, attack, eps))

        body = []
        for attack in ["clean", *attacks]:
            label = "no attack" if attack == "clean" else attack
            original = paper["original"].get(attack) if paper else None
            trained = paper["adversarially trained"].get(attack) if paper else None
            body.append(
                [label, _pct(ours(before, attack)), _pct(ours(after, attack)), _paper(original), _paper(trained)]
            )
        gains = [
            (100.0 * (table[(after, a, e)] - table[(before, a, e)]), a, e)
            for a in attacks for e in grid if (after, a, e) in table and (before, a, e) in table
        ]
        best = max(gains) if gains else None
        ratio = adversarial.get("adv_ratio")
        share = "-" if ratio is None else f"{100 * float(ratio):g} %"
        attack_name = str(adversarial.get("adv_attack", "pgd")).upper()
        header = ["attack", f"{self.ours}: original", "ours (%): adversarially trained",
                  f"{self.theirs}, Table S5: original", "paper (%): adversarially trained"]
        if self.paper is None:
            header, body = header[:3], [row[:3] for row in body]
        lines = [
            "### Table S5 and Figure 3: before and after adversarial training",
            "",
            f"Adversarial training (ours): {attack_name}-{adversarial.get('adv_steps')} examples at eps {adv_eps} "
            f"replacing {share} of every batch, from the clean model, "
            + (f"at most {adversarial['max_epochs']} epochs, " if adversarial.get("max_epochs") else "")
            + ("the checkpoint the bundle's own saver keeps (its validation metric now scores white-box PGD examples)"
               if self.settings.get("profile") == "bundle"
               else "the checkpoint with the best white-box PGD accuracy on the validation split")
            + f". Accuracy at eps {eps:g} ({_native(eps, self.settings)} {_units(self.settings)})"
            + (f"; the paper's Table S5 is at eps {TABLE_S5_EPS:g}." if self.paper else "."),
            "",
            *_table(header, body),
        ]
        if best is not None:
            published = ADVERSARIAL_TRAINING_GAIN.get(self.column) if self.column else None
            paper_gain = (f"; paper: {'up to +%.1f points' % published if published is not None else 'not reported'}"
                          if self.paper else "")
            what = ("Largest gain under attack over the grid, ours" if best[0] > 0
                    else "No gain under attack anywhere on the grid; the smallest loss, ours")
            lines += [f"{what}: {best[0]:+.2f} points ({best[1]} at eps {best[2]:g}){paper_gain}.", ""]
        full = []
        for attack in attacks:
            for e in grid:
                a, b = table.get((before, attack, e)), table.get((after, attack, e))
                full.append([attack, f"{e:g}", _pct(a), _pct(b),
                             _signed(None if a is None or b is None else 100.0 * (b - a))])
        lines += [
            "Every eps of the comparison (the data of Figure 3; the paper gives these only as a figure):",
            "",
            *_table(
                ["attack", "eps", "ours (%): original", "ours (%): adversarially trained", "change (points)"], full
            ),
        ]
        if WORST_CASE in attacks and "PGD" in attacks:
            over = {
                model: _overstatement({e: a for (m, k, e), a in table.items() if m == model and k == "PGD"},
                                      {e: a for (m, k, e), a in table.items() if m == model and k == WORST_CASE})
                for model in (before, after)
            }
            lines += [f"PGD-10 overstates robustness by (points of accuracy, PGD minus worst case): {before}: "
                      f"{'; '.join(over[before])}; {after}: {'; '.join(over[after])}.", ""]
        lines += [
            f"**Figure 3** (original dashed, adversarially trained solid): "
            f"![Figure 3]({self.figure('figure3-before-after.png')})",
            "",
        ]
        return lines

    # Table 2 ---------------------------------------------------------------------------------------------------------

    def table2(self) -> list[str]:
        triage = _read_json(self.file("triage", "triage.json"))
        units = triage.get("native_units") or _units(self.settings)
        n = triage.get("n")

        def referred(entry: Mapping[str, Any]) -> str:
            count, fraction = entry.get("n_flagged"), entry.get("fraction_flagged")
            return f"{count} of {n} ({_pct(fraction)} %)" if count is not None and fraction is not None else "-"

        def gain(entry: Mapping[str, Any]) -> float | None:
            all_, kept = entry.get("accuracy_all"), entry.get("accuracy_retained")
            return None if all_ is None or kept is None else 100.0 * (kept - all_)

        threshold = triage.get("threshold")
        native = triage.get("threshold_native")
        rule = (f"eps_hi <= {threshold:.4g}" + (f" ({native:.3g} {units})" if native is not None else "")
                if threshold is not None else "-")
        body = [[
            "ours: adversarial sensitivity (smallest PGD eps that flips the prediction)", data_label(self.b),
            _pct(triage.get("accuracy_all")), _pct(triage.get("accuracy_retained")), _signed(gain(triage)),
            referred(triage), rule,
        ]]
        thresholds = {"confidence": "probability <= {:.4g}", "margin": "logit margin <= {:.4g}"}
        for name, entry in (triage.get("comparison") or {}).items():
            limit = entry.get("threshold")
            body.append([
                f"ours: {name} triage (same fraction)", data_label(self.b), _pct(entry.get("accuracy_all")),
                _pct(entry.get("accuracy_retained")), _signed(gain(entry)), referred(entry),
                thresholds.get(name, "{:.4g}").format(limit) if limit is not None else "-",
            ])
        paper = TABLE2.get(self.column) if self.column else None
        if paper:
            body.append([
                "paper: adversarial sensitivity", f"{self.paper.dataset} (Table 2)", _paper(paper["all"]),
                _paper(paper["retained"]), f"{paper['change']:+.2f}", "about 20 %",
                f"PGD flip below eps {paper['threshold']:g}",
            ])
        elif self.paper:
            body.append(["paper: adversarial sensitivity", "not reported for this data set", "-", "-", "-", "-", "-"])
        q = triage.get("q")
        share = f"{100 * q:g} %" if isinstance(q, (int, float)) else str(q)
        eps_max = (triage.get("settings") or {}).get("eps_max", "-")
        unflipped = triage.get("referred_never_flipped") or 0
        caveat = (
            [f"**{unflipped} of the {triage.get('n_flagged')} referred images never flipped** below eps {eps_max} "
             f"({triage.get('never_flipped')} of {n} test images never did): sensitivity cannot rank them, so they "
             "were referred by the smallest logit margin, and for them this row is margin triage. Raise "
             "`triage_eps_max` to rank them by sensitivity.", ""]
            if unflipped else []
        )
        return [
            "### Table 2: triage by adversarial sensitivity",
            "",
            f"Refer the {share} of test images whose prediction PGD flips at the smallest eps (bisection of the "
            f"bracket [eps_lo, eps_hi] up to eps {eps_max}; images that never flip are ranked by their logit margin), "
            "and report the accuracy of the rest; confidence and margin triage refer as many images by the model's own "
            "uncertainty." + (" The paper's row is its Table 2." if self.paper else ""),
            "",
            *caveat,
            *_table(["rule", "test set", "accuracy, all (%)", "accuracy, retained (%)", "change (points)", "referred",
                     "referral threshold"], body),
            "**Triage curves** (retained accuracy against the fraction referred): "
            f"![triage]({self.figure('triage.png')})",
            "",
        ]


def data_label(bundle: BundleReport) -> str:
    """The data set our run used, in a few words for a table."""
    return str(bundle.data.get("short") or bundle.data.get("label") or "this run's data")


def _susceptibility(result: Mapping[str, Any], bundles: Sequence[BundleReport]) -> list[str]:
    paper = result["paper"]
    by_name = {b.name: b for b in bundles}
    body = []
    for name, item in result["items"].items():
        column = item.get("paper_column")
        published = paper["items"].get(column) if column else None
        bundle = by_name.get(name)
        missing = "not comparable (another data set)" if bundle and not_comparable(bundle) else "not in the paper"
        body.append([
            name, data_label(bundle) if bundle else "-",
            "medical" if item["medical"] else "non-medical",
            _pct(item["clean_accuracy"]), item["text"],
            published["text"] if published else missing,
            (published.get("statement") or "-") if published else "-",
        ])
    ratio = result["ratio"]
    ratio_table1 = paper["ratio_table1"]
    ratio_text = paper["ratio_text_bounds"]
    lines = [
        "## Susceptibility: medical against non-medical models (compare data sets)",
        "",
        f"For each model, the {result['definition']}: the paper's measure of the perturbation needed for attacks to "
        "\"generally succeed\". Ours from this run's attack sweeps; the paper's computed the same way from its Table 1 "
        "(its grid stops at 0.006) and as stated in its Results.",
        "",
        *_table(["bundle", "data, ours", "kind", "clean accuracy, ours (%)", "eps, ours",
                 "eps, paper (Table 1)", "eps, paper (Results text)"], body),
        f"Ratio of medical to non-medical eps (geometric means; below 1: medical models fall at smaller eps): "
        f"**ours {ratio['text']}**; paper {ratio_table1['text']} from Table 1, {ratio_text['text']} with the text's "
        f"bounds (MNIST > 0.07, CIFAR-10 > 0.01).",
        "",
        "**Susceptibility figure** (accuracy relative to clean under PGD; the paper's Table 1 dashed): "
        "![susceptibility](susceptibility.png)",
        "",
    ]
    if ratio["value"] is None and ratio.get("reason", "").startswith("no "):
        lines += ["Our ratio needs a medical and a non-medical bundle: run the study with `--bundles all`.", ""]
    return lines


def write_report(
    folder: str | Path,
    bundles: Sequence[BundleReport],
    comparison_folder: str | Path,
    command: str = "scripts/run_study.py",
) -> Path:
    """Write ``report.md`` and copy the figures into ``folder`` (which should be empty); return ``report.md``.

    Args:
        folder: the report folder.
        bundles: the bundles, in order; each one's stage folders hold their outputs.
        comparison_folder: the ``compare_datasets`` stage's folder (``susceptibility.json`` and ``.png``).
        command: how the study was run, for the header.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    comparison_folder = Path(comparison_folder)
    susceptibility = _read_json(comparison_folder / "susceptibility.json")
    names = ", ".join(f"`{b.name}`" for b in bundles)
    lines = [
        "# Adversarial robustness study",
        "",
        f"The analyses of {CITATION} (*Using Adversarial Images to Assess the Robustness of Deep Learning Models "
        f"Trained on Diagnostic Images in Oncology*), run on the bundles {names} with `monai_adv`'s overlays by "
        f"`{command}`: train, "
        "evaluate, sweep the attacks, adversarially train, sweep again, triage, compare data sets.",
        "",
        "Columns and rows marked **paper** are that article's published figures (its data sets and full-size VGG16 "
        "models); those marked **ours** are this run's, on the data named in each section. With the demo data the "
        "comparison is of method, not of numbers: the demo images are synthetic and small (see the README).",
        "",
        "Contents: " + ", ".join(f"[{b.name}](#{b.name})" for b in bundles) + ", [susceptibility](#susceptibility).",
        "",
    ]
    for bundle in bundles:
        section = _Bundle(bundle)
        lines += [f'<a id="{bundle.name}"></a>', ""] + section.lines()
        for suffix, (stage, name) in FIGURES.items():
            source = bundle.folder / stage / name
            if not source.is_file():
                raise FileNotFoundError(f"report: {bundle.name}: figure {source} is missing")
            shutil.copyfile(source, folder / section.figure(suffix))
    lines += ['<a id="susceptibility"></a>', ""] + _susceptibility(susceptibility, bundles)
    shutil.copyfile(comparison_folder / "susceptibility.png", folder / "susceptibility.png")
    lines += [
        "## Paper's data sets",
        "",
        *_table(["paper column", "data set", "kind"],
                [[d.column, d.dataset, "medical" if d.medical else "non-medical"] for d in PAPER_DATASETS.values()]),
    ]
    return atomic_write_text(folder / "report.md", "\n".join(lines).rstrip() + "\n")
