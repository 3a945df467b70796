"""Output files: permissions, strict JSON, atomic checkpoints, clear errors for a full disk or an unwritable folder."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_adv.bundle_errors import excepthook, final_line
from monai_adv.handlers import AtomicCheckpointSaver, SensitivityTriage, load_threshold
from monai_adv.io import DataError
from monai_adv.utils import (
    OutputDirError,
    WriteError,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def umask_027():
    """Run with umask 027 (group read, no access for others), so that 0o640 is the normal mode of a new file."""
    previous = os.umask(0o027)
    yield 0o640
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def strict_loads(text: str):
    """``json.loads`` that rejects ``NaN``, ``Infinity`` and ``-Infinity``, as strict JSON readers do."""

    def reject(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def raise_enospc(*args, **kwargs):
    """Stand-in for ``torch.save(obj, file)`` on a full disk: writes part of the file, then fails."""
    target = args[1]
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as handle:
            handle.write(b"PK\x03\x04 partial checkpoint")
    else:
        target.write(b"PK\x03\x04 partial checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---------------------------------------------------------------------------------------------------------------------
# 1. permissions


def test_outputs_get_the_normal_permissions_of_the_umask(tmp_path, umask_027):
    text = atomic_write_text(tmp_path / "a" / "report.md", "x\n")
    data = atomic_write_json(tmp_path / "metrics.json", {"n": 1})
    weights = atomic_torch_save(tmp_path / "model.pt", {"w": torch.zeros(2)})
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
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError) as caught:
        atomic_write(path, fail)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert isinstance(caught.value.__cause__, OSError)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    with pytest.raises(KeyError):  # other errors propagate unchanged
        atomic_write(path, lambda tmp: {}["missing"])
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]


# ---------------------------------------------------------------------------------------------------------------------
# 2. strict JSON


def test_json_outputs_refuse_non_finite_numbers(tmp_path):
    path = tmp_path / "summary.json"
    for bad in (math.nan, math.inf, -math.inf, np.float64("nan")):
        with pytest.raises(ValueError, match=r"summary\.json: refusing to write non-finite numbers"):
            atomic_write_json(path, {"nested": [1.0, {"x": bad}]})
    assert list(tmp_path.iterdir()) == []


class Constant(nn.Module):
    """Logits ``[10, -10]`` for every image: class 0, never flipped by any eps in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 2)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([10.0, -10.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def triage_one_image(folder: Path, q: float) -> dict:
    """Run :class:`SensitivityTriage` on a one-image test set (correctly classified, never flipped); return the
    text of ``triage.json`` parsed strictly."""
    from monai.engines import SupervisedEvaluator
    from torch.utils.data import DataLoader

    items = [{"image": torch.full((1, 4, 4), 0.5), "label": torch.tensor(0), "id": "case-1"}]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=1), network=Constant().eval()
    )
    SensitivityTriage(str(folder), ["benign", "malignant"], q=q, eps_max=0.02, restarts=1, steps=2).attach(evaluator)
    evaluator.run()
    return strict_loads((folder / "triage.json").read_text())


def test_one_image_triage_summary_is_strict_json_with_documented_nulls(tmp_path):
    # q=0.2 of one image refers floor(0.2 + 1/2) = 0 images: no threshold (-inf in memory), no flagged accuracy (nan)
    summary = triage_one_image(tmp_path / "q02", q=0.2)
    assert summary["n"] == 1 and summary["n_flagged"] == 0 and summary["never_flipped"] == 1
    assert summary["threshold"] is None and summary["threshold_native"] is None
    assert summary["accuracy_flagged"] is None
    assert summary["accuracy_all"] == summary["accuracy_retained"] == 1.0 and summary["accuracy_gain"] == 0.0
    for rule in ("confidence", "margin"):
        entry = summary["comparison"][rule]
        assert entry["n_flagged"] == 0 and entry["threshold"] is None and entry["accuracy_flagged"] is None
    with pytest.raises(ValueError, match=r"triage\.json: 'threshold' is null: .*it referred no image"):
        load_threshold(tmp_path / "q02" / "triage.json")

    # q=1 refers the image, which never flipped: threshold eps_hi = inf, nothing retained (nan accuracy)
    summary = triage_one_image(tmp_path / "q1", q=1.0)
    assert summary["n_flagged"] == 1 and summary["threshold"] is None
    assert summary["accuracy_retained"] is None and summary["accuracy_gain"] is None
    assert summary["accuracy_flagged"] == 1.0
    with pytest.raises(ValueError, match=r"'threshold' is null: .*never-flipped"):
        load_threshold(tmp_path / "q1" / "triage.json")
    rows = (tmp_path / "q1" / "sensitivity.csv").read_text().splitlines()
    assert rows[1].split(",")[5] == "inf"  # the CSV keeps eps_hi = inf (never flipped)


# ---------------------------------------------------------------------------------------------------------------------
# 3. atomic checkpoints


class Trainer:
    """A tiny Ignite engine whose ``acc`` metric and weights change every epoch (set before the saver runs)."""

    def __init__(self) -> None:
        self.net = nn.Linear(3, 2)
        self.engine = Engine(lambda engine, batch: None)

        @self.engine.on(Events.EPOCH_COMPLETED)
        def update(engine):
            with torch.no_grad():
                self.net.weight.fill_(float(engine.state.epoch))
            engine.state.metrics["acc"] = engine.state.epoch / 10

    def run(self, epochs: int) -> None:
        self.engine.run([0], max_epochs=epochs)


def test_atomic_checkpoint_saver_writes_loadable_files_with_normal_permissions(tmp_path, umask_027):
    trainer = Trainer()
    AtomicCheckpointSaver(
        str(tmp_path / "models"), {"model": trainer.net}, save_key_metric=True, key_metric_name="acc",
        key_metric_filename="model.pt", save_final=True, final_filename="final.pt", save_interval=1, n_saved=1,
    ).attach(trainer.engine)
    trainer.run(3)
    folder = tmp_path / "models"
    assert sorted(p.name for p in folder.iterdir()) == ["final.pt", "model.pt", "model_epoch=3.pt"]
    for name in ("final.pt", "model.pt", "model_epoch=3.pt"):
        state = torch.load(folder / name, weights_only=True)
        assert torch.equal(state["weight"], torch.full((2, 3), 3.0)), name
        assert mode(folder / name) == umask_027, name


def test_atomic_checkpoint_saver_keeps_the_previous_file_when_a_save_fails(tmp_path, monkeypatch):
    trainer = Trainer()
    folder = tmp_path / "models"
    AtomicCheckpointSaver(
        str(folder), {"model": trainer.net}, save_key_metric=True, key_metric_name="acc",
        key_metric_filename="model.pt", save_interval=1, n_saved=1,
    ).attach(trainer.engine)
    trainer.run(1)
    good = {name: (folder / name).read_bytes() for name in ("model.pt", "model_epoch=1.pt")}
    monkeypatch.setattr(torch, "save", raise_enospc)
    with pytest.raises(WriteError) as caught:
        trainer.run(2)  # epoch 2 has a better metric: both savers write, the first one fails midway
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder / "model.pt")
    assert sorted(p.name for p in folder.iterdir()) == sorted(good)  # no temporary or partial file
    for name, content in good.items():
        assert (folder / name).read_bytes() == content, name
        assert torch.equal(torch.load(folder / name, weights_only=True)["weight"], torch.ones(2, 3))


def test_atomic_checkpoint_saver_rotation_keeps_the_old_file_until_the_new_one_is_saved(tmp_path, monkeypatch):
    trainer = Trainer()
    folder = tmp_path / "models"
    AtomicCheckpointSaver(str(folder), {"model": trainer.net}, save_interval=1, n_saved=1).attach(trainer.engine)
    trainer.run(1)
    monkeypatch.setattr(torch, "save", raise_enospc)
    with pytest.raises(WriteError):
        trainer.run(2)
    assert [p.name for p in folder.iterdir()] == ["model_epoch=1.pt"]
    torch.load(folder / "model_epoch=1.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------------------------------
# 4. a full disk as the last line of a failed bundle run


def config_failure(function) -> RuntimeError:
    """The exception MONAI's bundle runner raises when a config expression calling ``function`` fails."""
    from monai.bundle import ConfigExpression

    with pytest.raises(RuntimeError, match="Failed to evaluate") as caught:
        ConfigExpression(config="$f()", globals={"f": function}).evaluate()
    return caught.value


def last_stderr_line(capsys, exc: BaseException) -> str:
    printed = []
    excepthook(type(exc), exc, exc.__traceback__, previous=lambda *args: printed.append(args[1]))
    assert printed == [exc]  # the full traceback is still printed first
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_excepthook_names_the_unwritable_output_last(tmp_path, capsys, monkeypatch):
    target = tmp_path / "out" / "models" / "model.pt"
    monkeypatch.setattr(torch, "save", raise_enospc)
    wrapped = config_failure(lambda: atomic_torch_save(target, {"w": torch.zeros(1)}))
    assert last_stderr_line(capsys, wrapped) == f"error: cannot write {target}: No space left on device"

    def read_only():
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/out/eval/triage.json")

    assert last_stderr_line(capsys, config_failure(read_only)) == (
        "error: cannot write /out/eval/triage.json: Read-only file system"
    )

    def denied():  # not known to be a write: reported as an access error
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/image.dcm")

    assert last_stderr_line(capsys, config_failure(denied)) == "error: cannot access /data/image.dcm: Permission denied"

    def other():
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/data/x")

    assert final_line(config_failure(other)) is None
    bare = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert final_line(bare) is None  # unwrapped: the traceback already ends with it


# ---------------------------------------------------------------------------------------------------------------------
# 5. unwritable output folders, before any work


def test_ensure_writable_dir_creates_and_proves_the_folder(tmp_path):
    folder = ensure_writable_dir(tmp_path / "a" / "b", setting="output_dir")
    assert folder == tmp_path / "a" / "b" and folder.is_dir() and list(folder.iterdir()) == []
    assert ensure_writable_dir(str(folder)) == folder  # an existing folder is fine


def test_ensure_writable_dir_names_the_setting_and_the_path(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match=rf"^output_dir = {blocker}/eval: cannot create the folder: Not a directory"):
        ensure_writable_dir(blocker / "eval")
    with pytest.raises(OutputDirError, match=rf"^ckpt_dir = {blocker}: exists and is not a folder$"):
        ensure_writable_dir(blocker, setting="ckpt_dir")

    folder = tmp_path / "eval"
    folder.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputDirError, match=rf"^output_dir = {folder}: cannot write in the folder: Read-only file system$"):
        ensure_writable_dir(folder)
    monkeypatch.undo()

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(OutputDirError, match=rf"^output_dir = {tmp_path}/new: cannot create the folder: Permission denied$"):
        ensure_writable_dir(tmp_path / "new")
    monkeypatch.undo()

    # a DataError: a failed bundle run prints it as its last line
    wrapped = config_failure(lambda: ensure_writable_dir(blocker / "eval"))
    assert isinstance(wrapped.__cause__, DataError)
    assert last_stderr_line(capsys, wrapped).startswith(f"monai_adv.utils.OutputDirError: output_dir = {blocker}/eval:")


@pytest.mark.skipif(IS_ROOT, reason="root ignores permission bits; the cases above cover the errors by monkeypatching")
def test_ensure_writable_dir_read_only_folder(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputDirError, match=rf"^output_dir = {folder}: cannot write in the folder: Permission denied$"):
            ensure_writable_dir(folder)
        with pytest.raises(OutputDirError, match="cannot create the folder: Permission denied"):
            ensure_writable_dir(folder / "sub")
    finally:
        folder.chmod(0o755)
