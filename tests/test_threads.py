"""monai_adv.threads: the demo profile's thread count from OMP_NUM_THREADS."""

import pytest

from monai_adv.threads import DEMO_THREADS, threads_from_environment


def test_unset_or_empty_gives_the_default(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_from_environment() == DEMO_THREADS == 1
    assert threads_from_environment(default=4) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", " ")
    assert threads_from_environment(default=4) == 4


def test_a_positive_count_is_taken(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert threads_from_environment() == 6


@pytest.mark.parametrize("value", ["0", "-2", "4,2", "all", "1.5"])
def test_any_other_value_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ValueError, match=rf"OMP_NUM_THREADS='{value}': expected a positive whole number"):
        threads_from_environment()
