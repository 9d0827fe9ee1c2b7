"""train --dwconv on MobileNetV2 (--arch mobilenet_v2) through substitute_depthwise."""

from __future__ import annotations

import pytest
import torch

from scalespace_mk.networks.mobilenet import mobilenet_v2
from scalespace_mk.networks.substitute import SubstitutedDepthwiseConv2d
from scalespace_mk.training.train import TrainConfig, build_model, deploy_state_dict


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mnv2") / "learned.pt"
    torch.save(mobilenet_v2(num_classes=10).state_dict(), path)
    return path


# (the N-jet kind and the equality with `replace` are tested on small networks in
# test_substitute.py and test_train.py; a MobileNetV2 has 7,136 filters to fit)
@pytest.mark.parametrize("kind", ["idealized"])
def test_mobilenet_depthwise_replaced_and_deployable(source, kind):
    cfg = TrainConfig(arch="mobilenet_v2", dwconv=kind, njet_order=1, replace_from=str(source))
    model, info = build_model(cfg, 10)
    subs = [m for m in model.modules() if isinstance(m, SubstitutedDepthwiseConv2d)]
    assert len(subs) == 17 and len(info["replacement"]) == 17
    assert all(sum(v.values()) > 0 for v in info["replacement"].values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if kind == "learnable":
        assert any(n.endswith("generator.sigma_x_raw") for n in trainable)
    elif kind == "idealized":
        assert any(n.endswith("generator.gain") for n in trainable)
        assert not any("sigma" in n for n in trainable)
    else:
        assert any(n.endswith("generator.coefficients") for n in trainable)
    # the deployed state dict loads into a plain MobileNetV2 with the same outputs
    deployed = deploy_state_dict(model)
    plain = mobilenet_v2(num_classes=10)
    plain.load_state_dict(deployed, strict=True)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=1e-5)


def test_mobilenet_config_errors(source):
    with pytest.raises(ValueError, match="arch"):
        TrainConfig(arch="resnet")
    with pytest.raises(ValueError, match="needs|pass --replace-from or --init"):
        build_model(TrainConfig(arch="mobilenet_v2", dwconv="idealized", init=None), 10)
    # the 2-jet fits anything on 3x3 filters: refused with the reason
    cfg = TrainConfig(arch="mobilenet_v2", dwconv="njet", njet_order=2, replace_from=str(source))
    with pytest.raises(ValueError, match="saturated"):
        build_model(cfg, 10)


def test_train_and_eval_mobilenet_end_to_end(source, tmp_path):
    from scalespace_mk.training.train import evaluate_checkpoint, train

    cfg = TrainConfig(
        arch="mobilenet_v2",
        dwconv="learnable",
        replace_from=str(source),
        data="synthetic:32",
        image_size=32,
        batch_size=16,
        epochs=1,
        max_steps_per_epoch=1,
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["dwconv"] == "learnable"
    result = evaluate_checkpoint(tmp_path / "run" / "last.pt", "synthetic:32")
    assert result["count"] > 0 and 0.0 <= result["acc"] <= 1.0
