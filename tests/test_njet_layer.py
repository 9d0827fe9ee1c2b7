"""NJetDepthwiseConv2d: values, gradients, caching, conversions, networks and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scalespace_mk.analysis.jets import family_census
from scalespace_mk.networks.layers import NJetDepthwiseConv2d, make_dwconv, to_conv2d
from scalespace_mk.scalespace.jets import jet_basis

dynamo_function_warning = pytest.mark.filterwarnings(
    "ignore:.*should not be instantiated:DeprecationWarning"
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def _layer(**kw):
    kw.setdefault("dtype", torch.float64)
    kw.setdefault("sigma_x", [0.6, 1.0, 1.7, 2.4])
    return NJetDepthwiseConv2d(4, 5, 2, **kw)


def test_kernel_is_the_weighted_basis_and_forward_is_conv2d():
    layer = _layer(normalized=False, offset=[0.1, 0.0, -0.2, 0.3], bias=[1.0, 2.0, 3.0, 4.0])
    basis = jet_basis(2, [0.6, 1.0, 1.7, 2.4], size=5)
    coef = layer.coefficients.detach().numpy()
    expected = np.einsum("cm,cmrs->crs", coef, basis) + np.array([0.1, 0, -0.2, 0.3])[:, None, None]
    np.testing.assert_allclose(layer.kernel()[:, 0].detach().numpy(), expected, atol=1e-15)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    ref = F.conv2d(x, torch.from_numpy(expected)[:, None], layer.bias, padding=2, groups=4)
    torch.testing.assert_close(layer(x), ref, rtol=0, atol=1e-13)
    conv = to_conv2d(layer)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-13)


def test_scale_normalised_members():
    layer = _layer(normalized=True, coefficients=np.eye(6)[[1, 3, 4, 5]])
    s = np.array([0.6, 1.0, 1.7, 2.4])
    basis = jet_basis(2, s, size=5)
    order = np.array([1, 2, 2, 2])
    expected = basis[np.arange(4), [1, 3, 4, 5]] * (s**order)[:, None, None]
    np.testing.assert_allclose(layer.kernel()[:, 0].detach().numpy(), expected, atol=1e-15)


def test_gradcheck_scales_and_coefficients():
    layer = _layer(anisotropic=True, sigma_y=[0.9, 1.3, 0.7, 2.0])
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    params = (layer.sigma_x_raw, layer.sigma_y_raw, layer.coefficients, layer.offset)

    def f(sx, sy, c, o):
        with torch.no_grad():
            for p, v in zip(params, (sx, sy, c, o), strict=True):
                p.copy_(v)
        layer.clear_cache()
        basis = layer._basis_at(sx.abs(), sy.abs())
        k = torch.einsum("cm,cmhw->chw", c, basis) + o[:, None, None]
        return F.conv2d(x, k[:, None], padding=2, groups=4)

    inputs = tuple(p.detach().clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(f, inputs)
    # and the module's own backward gives the same gradients
    layer2 = _layer(
        anisotropic=True,
        sigma_y=[0.9, 1.3, 0.7, 2.0],
        coefficients=inputs[2].detach().numpy(),
        offset=inputs[3].detach().numpy(),
    )
    layer2(x).square().sum().backward()
    out = f(*inputs)
    out.square().sum().backward()
    torch.testing.assert_close(layer2.sigma_x_raw.grad, inputs[0].grad)
    torch.testing.assert_close(layer2.coefficients.grad, inputs[2].grad)


def test_frozen_scales_are_cached(monkeypatch):
    import scalespace_mk.scalespace.jets as jets

    calls = []
    real = jets.jet_basis_rows

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(jets, "jet_basis_rows", counting)
    layer = _layer(learn_scales=False)
    calls.clear()  # the default initialisation builds the basis once
    x = torch.randn(1, 4, 7, 7, dtype=torch.float64)
    layer(x).sum().backward()
    layer(x).sum().backward()
    assert len(calls) == 1 and layer.coefficients.grad is not None
    assert layer.sigma_x_raw.grad is None
    with torch.no_grad():
        layer.sigma_x_raw.add_(0.1)  # invalidates the cache (version counter)
    layer(x)
    assert len(calls) == 2


def test_from_census_reproduces_the_fitted_models():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 7, 7))
    for opts in ({}, {"anisotropic": True}, {"normalized": True}):
        res = family_census(y, family="njet", order=2, **opts)
        layer = NJetDepthwiseConv2d.from_census(res, dtype=torch.float64)
        np.testing.assert_allclose(layer.kernel()[:, 0].detach().numpy(), res.models(), atol=1e-12)
    with pytest.raises(ValueError, match="family='njet'"):
        NJetDepthwiseConv2d.from_census(family_census(y, family="oriented", order=1))


def test_from_conv_keeps_bias_and_handles_constant_filters():
    conv = torch.nn.Conv2d(3, 3, 7, padding=3, groups=3).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(jet_basis(2, [0.8, 1.2, 1.2], size=7)[:, 4, None]))
        conv.weight[2] = 0.5
    layer = NJetDepthwiseConv2d.from_conv(conv, 2)
    torch.testing.assert_close(layer.kernel(), conv.weight, rtol=0, atol=1e-9)
    torch.testing.assert_close(layer.bias, conv.bias)


@dynamo_function_warning
def test_compile_channels_last_autocast():
    layer = _layer()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    y = torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(y, layer(x), rtol=0, atol=1e-12)
    l32 = NJetDepthwiseConv2d(4, 5, 2)
    xc = torch.randn(2, 4, 8, 8).to(memory_format=torch.channels_last)
    torch.testing.assert_close(l32(xc), l32(xc.contiguous()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert l32(xc).dtype == torch.bfloat16


def test_default_init_and_factory():
    layer = make_dwconv("njet", 64, 7, order=3)
    assert isinstance(layer, NJetDepthwiseConv2d) and layer.coefficients.shape == (64, 10)
    norms = layer.kernel().detach()[:, 0].flatten(1).norm(dim=1)
    assert 0.2 < float(norms.median()) < 1.5  # about nn.Conv2d's default scale
    assert set(layer.state_dict()) == {
        "sigma_x_raw",
        "sigma_y_raw",
        "offset",
        "coefficients",
        "bias",
    }
    with pytest.raises(ValueError, match="order"):
        NJetDepthwiseConv2d(4, 7, 5)
    with pytest.raises(ValueError, match="coefficients must have shape"):
        NJetDepthwiseConv2d(4, 7, 2, coefficients=np.zeros((4, 3)))


def test_convnext_and_training_config():
    from scalespace_mk.networks import create_model
    from scalespace_mk.training.train import TrainConfig

    model = create_model(
        "convnextv2_atto", num_classes=3, dwconv="njet", dwconv_kwargs={"order": 1}
    )
    dw = [m for n, m in model.named_modules() if n.endswith("conv_dw")]
    assert dw and all(isinstance(m, NJetDepthwiseConv2d) and m.order == 1 for m in dw)
    assert TrainConfig(dwconv="njet", njet_order=3).njet_order == 3
    with pytest.raises(ValueError, match="njet_order"):
        TrainConfig(dwconv="njet", njet_order=7)


def test_oriented_layer_kernels_census_and_gradients():
    from scalespace_mk.networks.layers import OrientedDepthwiseConv2d
    from scalespace_mk.scalespace.jets import oriented_kernel

    theta = np.array([0.0, 0.7, 2.0])
    layer = OrientedDepthwiseConv2d(
        3,
        7,
        2,
        sigma=[0.8, 1.2, 1.6],
        theta=theta,
        gain=[1.0, -2.0, 0.5],
        normalized=False,
        dtype=torch.float64,
    )
    expected = np.array([1.0, -2.0, 0.5])[:, None, None] * oriented_kernel(
        2, theta, np.array([0.8, 1.2, 1.6])
    )
    np.testing.assert_allclose(layer.kernel()[:, 0].detach().numpy(), expected, atol=1e-15)
    rng = np.random.default_rng(1)
    y = rng.normal(size=(4, 7, 7))
    for order in (1, 2):
        res = family_census(y, family="oriented", order=order)
        built = OrientedDepthwiseConv2d.from_census(res, dtype=torch.float64)
        np.testing.assert_allclose(built.kernel()[:, 0].detach().numpy(), res.models(), atol=1e-12)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)

    def f(t):
        with torch.no_grad():
            layer.theta.copy_(t)
        w = torch.stack([torch.cos(t) ** 2, 2 * torch.cos(t) * torch.sin(t), torch.sin(t) ** 2], 1)
        k = torch.einsum("cm,cmhw->chw", w * layer.gain[:, None], layer._basis())
        return F.conv2d(x, k[:, None], padding=3, groups=3)

    t0 = torch.tensor(theta, requires_grad=True)
    assert torch.autograd.gradcheck(f, (t0,))
    layer.zero_grad()
    with torch.no_grad():
        layer.theta.copy_(torch.tensor(theta))
    layer(x).square().sum().backward()
    t1 = torch.tensor(theta, requires_grad=True)
    f(t1).square().sum().backward()
    torch.testing.assert_close(layer.theta.grad, t1.grad)
