"""Output files: permissions, strict JSON, atomic checkpoints, clear errors for a full disk or an unwritable folder."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from monai_adv.utils import atomic_write, atomic_write_json, atomic_write_text


@pytest.fixture
def umask_027():
    """Run with umask 027 (group read, no access for others), so that 0o640 is the normal mode of a new file."""
    previous = os.umask(0o027)
    yield 0o640
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------------------------------------------------------------
# 1. permissions


def test_outputs_get_the_normal_permissions_of_the_umask(tmp_path, umask_027):
    text = atomic_write_text(tmp_path / "a" / "report.md", "x\n")
    data = atomic_write_json(tmp_path / "metrics.json", {"n": 1})
    weights = atomic_write(tmp_path / "model.pt", lambda tmp: torch.save({"w": torch.zeros(2)}, tmp))
    raw = atomic_write(tmp_path / "blob.bin", lambda tmp: Path(tmp).write_bytes(b"1"))
    with open(tmp_path / "plain.txt", "w") as handle:  # what a plain open() gives
        handle.write("x")
    assert mode(tmp_path / "plain.txt") == umask_027
    for path in (text, data, weights, raw):
        assert mode(path) == umask_027, path
    # replacing a file of other permissions gives the normal ones too
    os.chmod(data, 0o600)
    atomic_write_json(data, {"n": 2})
    assert mode(data) == umask_027 and json.loads(data.read_text()) == {"n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "blob.bin", "metrics.json", "model.pt", "plain.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = atomic_write_text(tmp_path / "out.csv", "old\n")

    def fail(tmp):
        Path(tmp).write_text("half")
        raise KeyError("fail")

    with pytest.raises(KeyError):
        atomic_write(path, fail)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
