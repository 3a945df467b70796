import pytest
import torch

from monai_adv.networks import PaperVGG16


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_table_s2_parameter_count():
    model = PaperVGG16(spatial_dims=2, in_channels=3, num_classes=2, input_size=224)
    assert n_params(model) == 121_676_610
    assert model.classifier[2].in_features == 7 * 7 * 512


def test_head_follows_input_size():
    assert PaperVGG16(in_channels=3, input_size=116).classifier[2].in_features == 3 * 3 * 512
    assert PaperVGG16(in_channels=3, input_size=32).classifier[2].in_features == 512
    assert PaperVGG16(in_channels=1, input_size=(64, 96), width=0.125).classifier[2].in_features == 2 * 3 * 64


def test_forward_2d_and_3d_shapes():
    net2 = PaperVGG16(spatial_dims=2, in_channels=1, num_classes=2, input_size=32, width=0.125).eval()
    assert net2(torch.rand(3, 1, 32, 32)).shape == (3, 2)
    net3 = PaperVGG16(spatial_dims=3, in_channels=1, num_classes=1, input_size=32, width=0.0625).eval()
    assert net3(torch.rand(2, 1, 32, 32, 32)).shape == (2, 1)


def test_width_scales_every_layer():
    narrow = PaperVGG16(in_channels=1, input_size=32, width=0.125)
    convs = [m.out_channels for m in narrow.features if isinstance(m, torch.nn.Conv2d)]
    assert convs == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert [m.out_features for m in narrow.classifier if isinstance(m, torch.nn.Linear)] == [512, 128, 2]


def test_normalisation_is_the_first_layer():
    net = PaperVGG16(in_channels=1, input_size=32, width=0.125, norm_mean=0.5, norm_std=0.25).eval()
    x = torch.full((1, 1, 32, 32), 0.75)
    assert torch.allclose(net.normalise(x), torch.ones_like(x))
    assert set(dict(net.named_buffers())) >= {"normalise.mean", "normalise.std"}


def test_torchscript_matches_eager():
    net = PaperVGG16(in_channels=1, input_size=32, width=0.125).eval()
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-6)


def test_imagenet_weights_from_local_file_average_rgb_for_one_channel(tmp_path):
    source = PaperVGG16(in_channels=3, input_size=32)
    convs = [i for i, m in enumerate(source.features) if isinstance(m, torch.nn.Conv2d)]
    # torchvision layout: features.<index in torchvision's Sequential>, which has no normalise layer
    state = {f"features.{j}.{k}": getattr(source.features[i], k) for j, i in enumerate(convs) for k in ("weight", "bias")}
    state["classifier.0.weight"] = torch.zeros(4096, 25088)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    gray = PaperVGG16(in_channels=1, input_size=32, pretrained_path=path)
    first = gray.features[0].weight
    assert first.shape == (64, 1, 3, 3)
    assert torch.allclose(first, source.features[0].weight.mean(dim=1, keepdim=True))
    assert torch.equal(gray.features[convs[-1]].weight, source.features[convs[-1]].weight)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="too small"):
        PaperVGG16(input_size=16)
    with pytest.raises(ValueError, match="spatial_dims"):
        PaperVGG16(spatial_dims=1)
    with pytest.raises(FileNotFoundError, match="not found"):
        PaperVGG16(in_channels=1, input_size=32, pretrained_path="/nonexistent/vgg16.pth")
    with pytest.raises(ValueError, match="width=1"):
        PaperVGG16(in_channels=1, input_size=32, width=0.5, pretrained_path="/nonexistent/vgg16.pth")
