"""Checkpoints: read weights-only, loaded only into the architecture they fit, one error naming the file otherwise."""

import os
import re

import pytest
import torch
from ignite.engine import Engine

from monai_adv.checkpoints import CheckpointError, load_network_state, read_checkpoint
from monai_adv.handlers import StrictCheckpointLoad
from monai_adv.io import DataError
from monai_adv.networks import PaperVGG16

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def vgg(**kwargs) -> PaperVGG16:
    """The demo profile's network (32 x 32, width 1/8, two classes) with ``kwargs`` changed."""
    profile = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "input_size": 32, "width": 0.125}
    return PaperVGG16(**{**profile, **kwargs})


def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_unchanged(net: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_matching_checkpoints_load_bare_under_model_and_with_ddp_prefix(tmp_path):
    source = vgg()
    for name, payload in {
        "bare.pt": source.state_dict(),
        "wrapped.pt": {"model": source.state_dict(), "epoch": torch.tensor(3)},
        "ddp.pt": {f"module.{k}": v for k, v in source.state_dict().items()},
    }.items():
        torch.save(payload, tmp_path / name)
        target = vgg()
        load_network_state(target, tmp_path / name)
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items()), name


@pytest.mark.parametrize(
    "other, expected",
    [
        ({"width": 0.25}, r"features\.0\.weight \(16, 1, 3, 3\) in the file, \(8, 1, 3, 3\) in the network"),
        ({"num_classes": 3}, r"classifier\.7\.weight \(3, 128\) in the file, \(2, 128\) in the network"),
        ({"in_channels": 3}, r"features\.0\.weight \(8, 3, 3, 3\) in the file, \(8, 1, 3, 3\) in the network"),
        ({"spatial_dims": 3}, r"features\.0\.weight \(8, 1, 3, 3, 3\) in the file, \(8, 1, 3, 3\) in the network"),
        ({"batch_norm": True}, r"unexpected keys, first: \['features\.1\.weight'"),
    ],
)
def test_checkpoint_of_another_architecture_names_the_file_and_what_differs(tmp_path, other, expected):
    path = tmp_path / "model.pt"
    torch.save(vgg(**other).state_dict(), path)
    net = vgg()
    before = weights(net)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r": checkpoint of another architecture") as info:
        load_network_state(net, path)
    message = str(info.value)
    assert re.search(expected, message), message
    assert "The config builds PaperVGG16(spatial_dims=2, in_channels=1, num_classes=2, input_size=(32, 32))" in message
    assert "with 1 input channels and 8 filters" in message  # the architecture the config expects, from its shapes
    assert_unchanged(net, before)


def test_unrelated_state_dict_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "resnet.pt"
    resnet_like = {"conv1.weight": torch.zeros(4, 1, 7, 7), "fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}
    torch.save(resnet_like, path)
    net = vgg()
    before = weights(net)
    with pytest.raises(CheckpointError) as info:
        load_network_state(net, path)
    message = str(info.value)
    assert message.startswith(f"{path}: checkpoint of another architecture")
    assert "missing keys, first: ['normalise.mean', 'normalise.std', 'features.0.weight'" in message
    assert "3 unexpected keys, first: ['conv1.weight', 'fc.weight', 'fc.bias']" in message
    assert "the file holds [2-D first conv conv1.weight with 1 input channels and 4 filters, 2 outputs" in message
    assert_unchanged(net, before)


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "model.pt"
    torch.save({"features.0.weight": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r": not a weights-only PyTorch checkpoint: it "
                       r"holds a pickled Python object \(\w+\.mkdir\)") as info:
        read_checkpoint(path)
    assert not marker.exists()
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe load
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_network_state(vgg(), path)


def test_missing_corrupt_and_truncated_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "none.pt")) + ": checkpoint file not found"):
        read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint" * 20)
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "garbage.pt")) + ": not a"):
        read_checkpoint(tmp_path / "garbage.pt")
    torch.save(vgg().state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "truncated.pt")) + r": not a readable PyTorch "
                       r"checkpoint \(corrupt or truncated\?\)"):
        read_checkpoint(tmp_path / "truncated.pt")
    assert issubclass(CheckpointError, DataError)


def test_non_state_dicts_and_non_finite_weights_name_the_file(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"tensor\.pt: holds Tensor, not a network state dict"):
        load_network_state(vgg(), tmp_path / "tensor.pt")
    torch.save({"features.0.weight": torch.zeros(1), "note": "hello"}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match=r"mixed\.pt: not a network state dict: 1 entries are not tensors, e\.g\. "
                       r"\['note'\]"):
        load_network_state(vgg(), tmp_path / "mixed.pt")
    state = vgg().state_dict()
    state["classifier.2.weight"][0, :3] = float("nan")
    torch.save(state, tmp_path / "diverged.pt")
    with pytest.raises(CheckpointError, match=r"diverged\.pt: classifier\.2\.weight has 3 NaN or infinite values"):
        load_network_state(vgg(), tmp_path / "diverged.pt")


def test_handler_loads_when_the_engine_starts_and_stops_it_with_the_named_error(tmp_path):
    source, target = vgg(), vgg()
    torch.save(source.state_dict(), tmp_path / "model.pt")
    engine = Engine(lambda engine, batch: None)
    StrictCheckpointLoad(tmp_path / "model.pt", {"model": target}).attach(engine)
    engine.run([0], max_epochs=1)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())

    torch.save(vgg(width=0.25).state_dict(), tmp_path / "wide.pt")
    engine = Engine(lambda engine, batch: None)
    StrictCheckpointLoad(tmp_path / "wide.pt", {"model": vgg()}).attach(engine)
    with pytest.raises(CheckpointError, match=r"wide\.pt: checkpoint of another architecture"):
        engine.run([0], max_epochs=1)

    optimizer = torch.optim.SGD(target.parameters(), lr=0.1)
    torch.save({"model": source.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "both.pt")
    StrictCheckpointLoad(tmp_path / "both.pt", {"model": vgg(), "optimizer": optimizer})()
    torch.save({"model": source.state_dict()}, tmp_path / "model_only.pt")
    with pytest.raises(CheckpointError, match=r"model_only\.pt: no 'optimizer' entry in the checkpoint"):
        StrictCheckpointLoad(tmp_path / "model_only.pt", {"model": vgg(), "optimizer": optimizer})()
