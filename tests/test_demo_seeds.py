"""``scripts/demo_seeds.py``: the numbers it reads from a study's outputs and issue #13's criteria per seed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "lung_nodule_ct_classification"


@pytest.fixture(scope="module")
def demo_seeds():
    spec = importlib.util.spec_from_file_location("demo_seeds", ROOT / "scripts" / "demo_seeds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_seeds"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["demo_seeds"]


def write_study(folder: Path, clean: float, pgd4: float, original3: float, robust3: float, robust_clean: float,
                retained: float, confidence: float) -> Path:
    """The three files demo_seeds.py reads, as the attack, compare and triage stages write them."""
    stages = folder / BUNDLE
    for stage in ("attack", "compare", "triage"):
        (stages / stage).mkdir(parents=True)
    (stages / "attack" / "attack_sweep.csv").write_text(
        "attack,eps,eps_native,accuracy,n,correct\n"
        f"clean,0,0,{clean},100,0\nPGD,0.002,2.8,0.99,100,0\nPGD,0.004,5.6,{pgd4},100,0\nFGSM,0.004,5.6,0.01,100,0\n"
    )
    (stages / "compare" / "robustness_comparison.csv").write_text(
        "model,attack,eps,eps_native,accuracy,n,correct\n"
        f"original,clean,0,0,{clean},100,0\noriginal,PGD,0.003,4.2,{original3},100,0\n"
        f"adversarially trained,clean,0,0,{robust_clean},100,0\n"
        f"adversarially trained,PGD,0.003,4.2,{robust3},100,0\nadversarially trained,PGD,0.004,5.6,0.02,100,0\n"
    )
    (stages / "triage" / "triage.json").write_text(json.dumps({
        "accuracy_all": clean, "accuracy_retained": retained,
        "comparison": {"confidence": {"accuracy_retained": confidence}, "margin": {"accuracy_retained": 0.0}},
    }))
    return folder


def test_read_seed_takes_each_number_from_its_row(demo_seeds, tmp_path):
    folder = write_study(tmp_path / "s0", 0.90, 0.30, 0.50, 0.72, 0.88, 0.96, 0.95)
    result = demo_seeds.read_seed(folder, BUNDLE, 0)
    assert (result.clean, result.pgd_attack, result.pgd_adv_original, result.pgd_adv_robust) == (0.90, 0.30, 0.50, 0.72)
    assert (result.clean_robust, result.triage_all, result.triage_sensitivity, result.triage_confidence) == (
        0.88, 0.90, 0.96, 0.95)
    assert result.checks(0.5) == {"clean": True, "fragile": True, "adv. training": True, "triage": True}


@pytest.mark.parametrize("numbers, failed", [
    ((0.98, 0.30, 0.50, 0.72, 0.96, 0.99, 0.99), "clean"),  # above 0.97: too easy
    ((0.79, 0.30, 0.50, 0.72, 0.79, 0.90, 0.90), "clean"),
    ((0.90, 0.46, 0.50, 0.72, 0.88, 0.96, 0.95), "fragile"),  # more than half of the clean accuracy
    ((0.90, 0.30, 0.50, 0.69, 0.88, 0.96, 0.95), "adv. training"),  # a gain of 19 points
    ((0.90, 0.30, 0.50, 0.72, 0.79, 0.96, 0.95), "adv. training"),  # clean accuracy 11 points lower
    ((0.90, 0.30, 0.50, 0.72, 0.88, 0.94, 0.95), "triage"),  # confidence triage retains more
])
def test_each_criterion_fails_alone(demo_seeds, tmp_path, numbers, failed):
    result = demo_seeds.read_seed(write_study(tmp_path / "s", *numbers), BUNDLE, 3)
    checks = result.checks(0.5)
    assert [name for name, ok in checks.items() if not ok] == [failed]


def test_the_table_counts_the_seeds_meeting_each_criterion(demo_seeds, tmp_path):
    good = demo_seeds.read_seed(write_study(tmp_path / "a", 0.90, 0.30, 0.50, 0.72, 0.88, 0.96, 0.95), BUNDLE, 0)
    fragile_only_at_07 = demo_seeds.read_seed(
        write_study(tmp_path / "b", 0.90, 0.60, 0.50, 0.60, 0.88, 0.94, 0.95), BUNDLE, 1)
    text = demo_seeds.table([good, fragile_only_at_07], 0.5)
    assert "| 1 | 0.900 | 0.600 | 0.67 | 0.500 | 0.600 | 0.880 | 0.900 | 0.940 | 0.950 | - |" in text
    assert "- fragile: 1 of 2 seeds (seeds 0)" in text and "- triage: 1 of 2 seeds (seeds 0)" in text
    assert "- fragile: 2 of 2 seeds (seeds 0, 1)" in demo_seeds.table([good, fragile_only_at_07], 0.7)
