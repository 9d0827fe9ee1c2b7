"""substitute_depthwise: idealised filters in place of the depthwise convs of any network.

Tiny networks only (a few channels, 5x5 / 7x7 / 3x3 kernels), so that the whole file runs
in seconds. The central property: a substitute built from an exact model of the stored
filter reproduces the conv's output to float tolerance (the stored kernel is a
cross-correlation kernel used without a flip, docs/theory.md), with stride, dilation,
padding, padding mode and bias kept.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from scalespace_mk import depthwise_convs, substitute_depthwise
from scalespace_mk.networks.layers import AnalyticDepthwiseConv2d, NJetDepthwiseConv2d
from scalespace_mk.networks.substitute import (
    FrozenDepthwiseSubstitute,
    LearnableDepthwiseSubstitute,
    SubstitutedDepthwiseConv2d,
    SubstitutionReport,
)

C = 6


def _dw(k: int, **kw) -> nn.Conv2d:
    kw.setdefault("padding", kw.get("dilation", 1) * (k // 2))
    return nn.Conv2d(C, C, k, groups=C, **kw)


def _net(seed: int = 0) -> nn.Sequential:
    """Stem, then depthwise convs with stride 2, dilation, reflect padding and no bias."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, C, 1),
        _dw(5),
        nn.ReLU(),
        nn.Sequential(_dw(3, stride=2, bias=False), nn.Conv2d(C, C, 1)),
        _dw(3, dilation=2, padding_mode="reflect"),
        _dw(7, padding="same"),
    )
    with torch.no_grad():  # biases large enough to matter
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-1, 1)
    return net.eval()


def _analytic_kernels(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact models a g + b (types 1..8 cycling, moderate scales) of C channels."""
    g = torch.Generator().manual_seed(seed)
    types = [(c + seed) % 8 + 1 for c in range(C)]
    # inside the census' search range (sigma_max = k / 2 = 1.5 for 3x3)
    sx = 0.6 + 0.7 * torch.rand(C, generator=g, dtype=torch.float64)
    sy = 0.6 + 0.7 * torch.rand(C, generator=g, dtype=torch.float64)
    alpha = 0.2 + 0.5 * torch.rand(C, generator=g, dtype=torch.float64)
    gain = torch.where(torch.rand(C, generator=g) > 0.5, 1.0, -1.0).double() * (
        0.5 + torch.rand(C, generator=g, dtype=torch.float64)
    )
    offset = 0.1 * torch.randn(C, generator=g, dtype=torch.float64)
    layer = AnalyticDepthwiseConv2d(
        C,
        k,
        types=types,
        sigma_x=sx,
        sigma_y=sy,
        alpha=alpha,
        gain=gain,
        offset=offset,
        bias=False,
        dtype=torch.float64,
    )
    with torch.no_grad():
        return layer.kernel(torch.float64), layer.types


def _exact_net(k_list=(5, 3, 7), seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    net = nn.Sequential(
        _dw(k_list[0]), _dw(k_list[1], stride=2, bias=False), _dw(k_list[2], dilation=2)
    ).to(dtype)
    with torch.no_grad():
        for i, (_, conv) in enumerate(depthwise_convs(net)):
            w, _ = _analytic_kernels(conv.kernel_size[0], seed + i)
            conv.weight.copy_(w.to(dtype))
    return net


def _x(dtype=torch.float32, channels: int = C, size: int = 17) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(5)).to(
        dtype
    )


# --------------------------------------------------------------------------------------
# finding and selecting layers


def test_depthwise_convs_in_forward_order_with_names():
    net = _net()
    found = depthwise_convs(net)
    assert [n for n, _ in found] == ["1", "3.0", "4", "5"]
    assert all(m.groups == m.in_channels == m.out_channels for _, m in found)
    # the key of the weight in the state dict
    sd = net.state_dict()
    assert all(f"{n}.weight" in sd for n, _ in found)
    with pytest.raises(TypeError, match="nn.Module"):
        depthwise_convs("not a model")


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (None, ["1", "3.0", "4", "5"]),
        (["4", "1"], ["1", "4"]),
        ([0, -1], ["1", "5"]),
        (r"3\..*", ["3.0"]),
        (slice(1, 3), ["3.0", "4"]),
        ((2, None), ["4", "5"]),
        (range(0, 4, 2), ["1", "4"]),
    ],
)
def test_layer_selection(layers, expected):
    _, report = substitute_depthwise(_net(), "random", layers=layers)
    assert report.names == expected
    assert [layer.index for layer in report.layers] == [
        ["1", "3.0", "4", "5"].index(n) for n in expected
    ]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (["features.1"], "layers: 'features.1' is not a depthwise conv"),
        (["3"], r"did you mean '3.0'"),
        ("nothing.*", "matches no depthwise conv"),
        ("(", "not a valid regular expression"),
        (slice(7, 9), "selects none"),
        ([9], "out of range"),
        ([], "empty"),
        (3.5, "layers must be"),
        ([1.5], "entries must be names"),
    ],
)
def test_layer_selection_errors_name_the_argument(layers, message):
    with pytest.raises((ValueError, TypeError), match=message):
        substitute_depthwise(_net(), "random", layers=layers)


def test_bad_kind_seed_and_options_are_named():
    net = _net()
    for kind, msg in [
        ("gauss", "kind must be one of"),
        ("method:Z", "the method must be one of"),
        ("njet:9", "N-jet order must be one of"),
        ("njet", "N-jet order"),
        ("random:1", "takes no argument"),
    ]:
        with pytest.raises(ValueError, match=msg):
            substitute_depthwise(net, kind)
    with pytest.raises(TypeError, match="kind must be a string"):
        substitute_depthwise(net, 3)
    with pytest.raises(ValueError, match="seed must be"):
        substitute_depthwise(net, "random", seed=-1)
    with pytest.raises(ValueError, match=r"options \['sigma'\] are not used by kind 'census'"):
        substitute_depthwise(net, "census", sigma=1.0)
    with pytest.raises(ValueError, match="it takes none"):
        substitute_depthwise(net, "random", learnable=True)
    with pytest.raises(ValueError, match="fit must name a fitted kind"):
        substitute_depthwise(net, "noise", fit="random")
    with pytest.raises(ValueError, match="types must be master-key types"):
        substitute_depthwise(net, "census", types=[0, 9])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        substitute_depthwise(np.zeros(3), "random")


def test_skipped_layers_have_reasons():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(C, C, 4, padding=2, groups=C),  # even
        nn.Conv2d(C, C, (3, 5), padding=(1, 2), groups=C),  # not square
        nn.Conv2d(C, C, 1, groups=C),  # 1x1
        nn.Conv2d(C, C, 17, padding=8, groups=C),  # too large
        _dw(3),
        _dw(7),
    )
    _, report = substitute_depthwise(net, "masterkey")
    reasons = {s["name"]: s["reason"] for s in report.skipped}
    assert "is not an odd size in 3..15" in reasons["0"]
    assert "is not square" in reasons["1"]
    assert "is not an odd size" in reasons["2"] and "is not an odd size" in reasons["3"]
    assert "the master key filters are 7x7" in reasons["4"]
    assert report.names == ["5"]
    # the 2-jet fits anything on 3x3 (8 parameters for 9 taps): skipped, not substituted
    _, report = substitute_depthwise(net, "njet:2", layers=[4, 5])
    assert report.names == ["5"]
    assert "saturated" in report.skipped[0]["reason"]
    assert "skipped" in report.format_table()


# --------------------------------------------------------------------------------------
# exactness: filters that are exact models are reproduced


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_census_of_exact_models_changes_nothing(dtype):
    net = _exact_net(dtype=dtype)
    x = _x(dtype)
    new, report = substitute_depthwise(net, "census")
    assert report.names == ["0", "1", "2"]
    assert all(isinstance(m, FrozenDepthwiseSubstitute) for m in new)
    # the census' scale search stops at ~1e-6 in sigma (3x3 filters are the least
    # determined): R^2 within 1e-8 of 1, kernels within a few float32 ulps
    assert report.r2.min() > 1 - 1e-8
    tol = 3e-5
    torch.testing.assert_close(new(x), net(x), rtol=tol, atol=tol)
    for (_, old), sub in zip(depthwise_convs(net), new, strict=True):
        torch.testing.assert_close(sub.weight, old.weight, rtol=tol, atol=tol)


def test_census_learnable_of_exact_models_changes_nothing():
    net = _exact_net()
    x = _x(torch.float64)
    new, report = substitute_depthwise(net, "census", learnable=True)
    assert all(isinstance(m, LearnableDepthwiseSubstitute) for m in new)
    assert report.r2.min() > 1 - 1e-8 and all(layer.learnable for layer in report.layers)
    torch.testing.assert_close(new(x), net(x), rtol=3e-5, atol=3e-5)


def test_njet_of_exact_jets_changes_nothing():
    torch.manual_seed(1)
    net = nn.Sequential(_dw(5), _dw(7, stride=2)).double()
    with torch.no_grad():
        for _, conv in depthwise_convs(net):
            k = conv.kernel_size[0]
            jet = NJetDepthwiseConv2d(
                C,
                k,
                1,
                sigma_x=torch.linspace(0.7, 1.6, C),
                offset=0.05,
                bias=False,
                dtype=torch.float64,
            )
            conv.weight.copy_(jet.kernel(torch.float64))
    x = _x(torch.float64)
    for learnable in (False, True):
        new, report = substitute_depthwise(net, "njet:1", learnable=learnable)
        assert report.r2.min() > 1 - 1e-9
        assert report.layers[0].counts == {"njet": C}
        torch.testing.assert_close(new(x), net(x), rtol=1e-6, atol=1e-6)


def test_constant_and_zero_filters_are_kept_exactly():
    net = nn.Sequential(_dw(5)).double()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[1] = 0.25
        net[0].weight[2].normal_()
    for kind in ("census", "njet:1", "noise"):
        new, report = substitute_depthwise(net, kind)
        assert torch.equal(new[0].weight[:2], net[0].weight[:2]), kind
        assert report.layers[0].r2[0] == 1.0 and report.layers[0].r2[1] == 1.0


def test_nonfinite_filters_are_refused_with_the_layer_named():
    net = _net()
    with torch.no_grad():
        net[4].weight[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"layer '4' \(index 2\).*channel 2"):
        substitute_depthwise(net, "census")
    # not selected: not looked at
    substitute_depthwise(net, "random", layers=["1"])


# --------------------------------------------------------------------------------------
# the controls


def _weights(model: nn.Module) -> list[np.ndarray]:
    return [
        m.weight.detach().double().numpy()[:, 0]
        for m in model.modules()
        if isinstance(m, nn.Conv2d | SubstitutedDepthwiseConv2d) and m.groups > 1
    ]


def test_random_keeps_each_filter_norm_and_depends_on_seed_only():
    net = _net()
    new, report = substitute_depthwise(net, "random", seed=3)
    for old, sub in zip(_weights(net), _weights(new), strict=True):
        np.testing.assert_allclose(
            np.linalg.norm(sub.reshape(C, -1), axis=1),
            np.linalg.norm(old.reshape(C, -1), axis=1),
            rtol=1e-6,
        )
        assert not np.allclose(sub, old)
    same, _ = substitute_depthwise(net, "random", seed=3)
    other, _ = substitute_depthwise(net, "random", seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(new), _weights(same), strict=True))
    assert not any(np.allclose(a, b) for a, b in zip(_weights(new), _weights(other), strict=True))
    # a layer's draw does not depend on which other layers are selected
    alone, _ = substitute_depthwise(net, "random", seed=3, layers=["4"])
    np.testing.assert_array_equal(alone[4].weight.numpy(), new[4].weight.numpy())
    # frozen: the kernel is a buffer, not a parameter; the bias stays a parameter
    names = dict(new.named_parameters())
    assert "1.weight" not in names and "1.bias" in names and "1.weight" in new.state_dict()


def test_noise_has_the_residual_energy_of_its_fit():
    net = _net().double()
    fit, _ = substitute_depthwise(net, "census")
    new, report = substitute_depthwise(net, "noise", seed=1)
    assert report.options["fit"] == "census"
    for old, f, n in zip(_weights(net), _weights(fit), _weights(new), strict=True):
        e_fit = ((old - f) ** 2).reshape(C, -1).sum(axis=1)
        e_noise = ((old - n) ** 2).reshape(C, -1).sum(axis=1)
        np.testing.assert_allclose(e_noise, e_fit, rtol=1e-9)
        assert not np.allclose(n, f)  # same distance, another direction
    # hence the same R^2 per channel as the fit
    _, rep_fit = substitute_depthwise(net, "census")
    np.testing.assert_allclose(report.r2, rep_fit.r2, rtol=1e-9, atol=1e-12)


def test_noise_at_zero_energy_is_the_identity():
    net = _exact_net(seed=3)
    x = _x(torch.float64)
    new, report = substitute_depthwise(net, "noise", seed=0)
    torch.testing.assert_close(new(x), net(x), rtol=3e-5, atol=3e-5)
    # method-B candidates as the fit: residual energy > 0, so the output moves
    moved, _ = substitute_depthwise(net, "noise", fit="method:B")
    assert not torch.allclose(moved(x), net(x), atol=1e-3)


@settings(max_examples=15, deadline=None)
@given(
    k=st.sampled_from([3, 5, 7]),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3),
)
def test_random_norm_and_r2_property(k, seed, scale):
    torch.manual_seed(seed % 1000)
    net = nn.Sequential(_dw(k)).double()
    with torch.no_grad():
        net[0].weight.mul_(scale)
    new, report = substitute_depthwise(net, "random", seed=seed)
    w = net[0].weight.detach().numpy()[:, 0]
    s = new[0].weight.numpy()[:, 0]
    np.testing.assert_allclose(
        np.linalg.norm(s.reshape(C, -1), axis=1),
        np.linalg.norm(w.reshape(C, -1), axis=1),
        rtol=1e-12,
    )
    # R^2 as an independent computation
    y = w.reshape(C, -1)
    r2 = 1 - ((y - s.reshape(C, -1)) ** 2).sum(1) / ((y - y.mean(1, keepdims=True)) ** 2).sum(1)
    np.testing.assert_allclose(report.layers[0].r2, r2, rtol=1e-10)


# --------------------------------------------------------------------------------------
# configuration kept; state dicts; gradients; caching


def test_stride_dilation_padding_mode_and_bias_survive():
    net = _net()
    x = _x(torch.float32, channels=3, size=19)
    new, _ = substitute_depthwise(net, "random", seed=0)
    # the original convs with the substitute's kernels give the same output
    ref = _net()
    with torch.no_grad():
        for (_, conv), sub in zip(
            depthwise_convs(ref),
            [m for m in new.modules() if isinstance(m, SubstitutedDepthwiseConv2d)],
            strict=True,
        ):
            for attr in ("stride", "dilation", "padding", "padding_mode", "kernel_size"):
                assert getattr(sub, attr) == getattr(conv, attr), attr
            assert (sub.bias is None) == (conv.bias is None)
            conv.weight.copy_(sub.weight)
            if conv.bias is not None:
                torch.testing.assert_close(sub.bias, conv.bias, rtol=0, atol=0)
            exported = sub.to_conv2d()
            assert type(exported) is nn.Conv2d
            torch.testing.assert_close(exported.weight, sub.weight, rtol=0, atol=0)
    torch.testing.assert_close(new(x), ref(x), rtol=0, atol=0)
    assert new(x).shape == net(x).shape == (2, C, 10, 10)


def test_input_model_is_not_modified():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    new, _ = substitute_depthwise(net, "census", learnable=True)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(type(m) is nn.Conv2d for _, m in depthwise_convs(net))
    # the rest is a copy with the same values, not shared
    assert new[0] is not net[0] and torch.equal(new[0].weight, net[0].weight)


@pytest.mark.parametrize(
    ("kind", "opts"), [("random", {}), ("census", {"learnable": True}), ("njet:1", {})]
)
def test_state_dict_round_trip(kind, opts):
    a, _ = substitute_depthwise(_net(0), kind, layers=[1, 3], **opts)
    b, _ = substitute_depthwise(_net(1), kind, layers=[1, 3], seed=9, **opts)
    x = _x(torch.float32, channels=3)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict(), strict=True)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


def test_learnable_gradients_are_the_layers_exact_gradients():
    net = _net().double()
    new, _ = substitute_depthwise(net, "census", learnable=True, layers=["1"])
    sub = new[1]
    gen = sub.generator
    params = {n: p for n, p in gen.named_parameters() if p.requires_grad}
    assert {"sigma_x_raw", "sigma_y_raw", "gain", "offset"} <= set(params)
    x = _x(torch.float64, channels=C, size=9)

    def f(sx, gain):
        out = torch.func.functional_call(
            sub, {"generator.sigma_x_raw": sx, "generator.gain": gain}, (x,)
        )
        return (out**2).sum()

    assert torch.autograd.gradcheck(
        f,
        (
            gen.sigma_x_raw.detach().clone().requires_grad_(),
            gen.gain.detach().clone().requires_grad_(),
        ),
    )
    # and a frozen substitute has no kernel parameters at all
    frozen, _ = substitute_depthwise(net, "census", layers=["1"])
    assert [n for n, _ in frozen[1].named_parameters()] == ["bias"]


def test_frozen_substitute_never_rebuilds_its_kernel(monkeypatch):
    new, _ = substitute_depthwise(_net(), "census")
    import scalespace_mk.networks.layers as layers

    def boom(*a, **k):
        raise AssertionError("kernel rebuilt")

    monkeypatch.setattr(layers, "analytic_basis_kernels", boom)
    x = _x(torch.float32, channels=3)
    new(x)
    new.train()
    new(x).sum().backward()
    assert new[1].bias.grad is not None


def test_training_mode_and_dtype_follow_the_original():
    net = _net().train().to(torch.float64)
    new, _ = substitute_depthwise(net, "random")
    assert new.training and new[1].training
    assert new[1].weight.dtype == torch.float64
    net32 = _net().eval()
    new32, _ = substitute_depthwise(net32, "census", learnable=True)
    assert not new32[1].training and new32[1].weight.dtype == torch.float32


def test_model_that_is_itself_a_depthwise_conv():
    conv = _dw(5)
    new, report = substitute_depthwise(conv, "random")
    assert isinstance(new, FrozenDepthwiseSubstitute) and report.names == [""]


# --------------------------------------------------------------------------------------
# the report


def test_report_table_json_and_repr():
    _, report = substitute_depthwise(_net(), "method:B")
    assert isinstance(report, SubstitutionReport)
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["kind"] == "method:B" and data["filters"] == 4 * C
    layer = data["layers"][1]
    assert layer["name"] == "3.0" and layer["stride"] == [2, 2] and layer["kernel_size"] == 3
    assert len(layer["r2"]) == C and sum(layer["counts"].values()) == C
    assert layer["median_r2"] == pytest.approx(float(np.median(layer["r2"])))
    table = report.format_table()
    assert re.search(r"^\s+1\s+3\.0\s+3\s+2\s+1\s+6\s+-?\d\.\d{4}$", table, re.M), table
    text = repr(report)
    assert text.startswith("SubstitutionReport(kind='method:B'") and len(text.splitlines()) < 30
    assert report.median_r2 == pytest.approx(float(np.median(report.r2)))


def test_report_to_pandas_has_one_row_per_layer_with_its_median_r2():
    pd = pytest.importorskip("pandas")
    _, report = substitute_depthwise(_net(), "method:B")
    frame = report.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["layer"]) == report.names
    assert list(frame["stride"]) == [la.stride[0] for la in report.layers]
    np.testing.assert_allclose(frame["median_r2"], [la.median_r2 for la in report.layers])


# --------------------------------------------------------------------------------------
# replace (checkpoints) goes through the same mechanism


def test_replace_uses_the_substitution_mechanism(tmp_path, capsys):
    from scalespace_mk.cli import main
    from scalespace_mk.networks.checkpoint import replace, save_checkpoint_file

    net = _exact_net(k_list=(5, 7, 7)).float()
    sd = {f"net.{k}": v for k, v in net.state_dict().items()}
    # census of exact models: the checkpoint comes back unchanged (float32 tolerance)
    result = replace({"model": sd, "epoch": 1}, kind="census")
    assert [layer["name"] for layer in result.layers] == [f"model.net.{i}.weight" for i in range(3)]
    for key, value in sd.items():
        torch.testing.assert_close(result.checkpoint["model"][key], value, rtol=3e-5, atol=3e-5)
    assert all(layer["median_r2"] > 1 - 1e-8 for layer in result.layers)
    # the same weights as substitute_depthwise gives for the network itself
    new, _ = substitute_depthwise(net, "random", seed=2)
    rand = replace(sd, kind="random", seed=2).checkpoint
    for i in range(3):
        torch.testing.assert_close(rand[f"net.{i}.weight"], new[i].weight, rtol=0, atol=0)
    # CLI: --kind, and a bad kind named
    path = tmp_path / "c.pt"
    save_checkpoint_file(sd, path)
    assert main(["replace", str(path), "--kind", "njet:1", "--out", str(tmp_path / "o.pt")]) == 0
    assert "median R^2" in capsys.readouterr().out
    assert main(["replace", str(path), "--kind", "gauss", "--out", str(tmp_path / "p.pt")]) == 2
    assert "--kind: kind must be one of" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()


def test_the_example_in_docs_layers_md_runs(capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "layers.md").read_text()
    block = text.split("## Substituting into any network")[1].split("```python")[1]
    exec(compile(block.split("```")[0], "docs/layers.md", "exec"), {})
    out = capsys.readouterr().out
    assert "['1.dw', '2.dw']" in out and "torch.Size([2, 32, 8, 8])" in out


@pytest.mark.parametrize("opts", [{"learnable": True}, {"learn_scales": True}])
def test_method_kinds_learnable_start_at_the_frozen_replacement(opts):
    net = _net().double()
    frozen, rep_f = substitute_depthwise(net, "method:B", layers=[0, 3])
    learn, rep_l = substitute_depthwise(net, "method:B", layers=[0, 3], **opts)
    assert rep_l.layers[0].counts == rep_f.layers[0].counts
    np.testing.assert_allclose(rep_l.r2, rep_f.r2, rtol=1e-6, atol=1e-9)
    for i in (1, 5):
        assert isinstance(learn[i], LearnableDepthwiseSubstitute)
        torch.testing.assert_close(learn[i].weight, frozen[i].weight, rtol=1e-6, atol=1e-7)
    x = _x(torch.float64, channels=3)
    learn(x).square().sum().backward()
    gen = learn[1].generator
    assert gen.gain.grad is not None and gen.offset.grad is not None
    if "learn_scales" in opts:
        assert gen.sigma_x_raw.grad is not None
    with pytest.raises(ValueError, match="learn_scales needs a fitting method"):
        substitute_depthwise(net, "method:masterkey", learn_scales=True)


def test_noise_keeps_each_filter_mean_unless_asked_not_to():
    net = _net().double()
    new, _ = substitute_depthwise(net, "noise", fit="njet:1", seed=0)
    iid, _ = substitute_depthwise(net, "noise", fit="njet:1", seed=0, zero_mean=False)
    for old, n, m in zip(_weights(net), _weights(new), _weights(iid), strict=True):
        np.testing.assert_allclose(n.mean(axis=(1, 2)), old.mean(axis=(1, 2)), atol=1e-12)
        assert np.abs(m.mean(axis=(1, 2)) - old.mean(axis=(1, 2))).max() > 1e-6
        # both at the fit's distance
        np.testing.assert_allclose(
            ((n - old) ** 2).sum(axis=(1, 2)), ((m - old) ** 2).sum(axis=(1, 2)), rtol=1e-9
        )


@settings(max_examples=8, deadline=None)
@given(
    k=st.sampled_from([5, 7]),
    t=st.integers(1, 8),
    sx=st.floats(0.6, 1.8),
    sy=st.floats(0.6, 1.8),
    alpha=st.floats(0.1, 0.9),
    gain=st.floats(0.2, 3.0) | st.floats(-3.0, -0.2),
    offset=st.floats(-0.5, 0.5),
)
def test_census_substitute_reproduces_any_exact_model(k, t, sx, sy, alpha, gain, offset):
    layer = AnalyticDepthwiseConv2d(
        1,
        k,
        types=[t],
        sigma_x=[sx],
        sigma_y=[sy],
        alpha=[alpha],
        gain=[gain],
        offset=[offset],
        bias=False,
        dtype=torch.float64,
    )
    conv = nn.Conv2d(1, 1, k, padding=k // 2, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(layer.kernel(torch.float64))
    new, report = substitute_depthwise(nn.Sequential(conv), "census")
    assert report.layers[0].r2[0] > 1 - 1e-8
    x = torch.randn(1, 1, 11, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scale = float(conv.weight.detach().abs().max())
    torch.testing.assert_close(new(x), conv(x), rtol=0, atol=3e-5 * scale * k)
