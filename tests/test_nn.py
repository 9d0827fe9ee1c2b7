"""Tests of scalespace_mk.networks.layers: analytic and master-key depthwise layers."""

from __future__ import annotations

import copy
import gc
import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import scalespace_mk.networks.layers as snn
from scalespace_mk.networks.layers import (
    DEFAULT_ALPHA,
    DEFAULT_SCALES,
    AnalyticDepthwiseConv2d,
    MasterKeyDepthwiseConv2d,
    analytic_basis_kernels,
    analytic_depthwise_kernels,
    make_dwconv,
    to_conv2d,
)
from scalespace_mk.scalespace.models import masterkey_model

TYPES = np.array([1, 2, 3, 4, 5, 6, 7, 8, 7, 8, 1, 5])
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# dynamo (torch 2.13) instantiates autograd.Function objects while tracing them and warns
dynamo_function_warning = pytest.mark.filterwarnings(
    "ignore:.*should not be instantiated:DeprecationWarning"
)


#: one intra-op thread for every test here (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def random_params(n=12, seed=0, low=0.0, high=2.5):
    rng = np.random.default_rng(seed)
    sx, sy = rng.uniform(low, high, n), rng.uniform(low, high, n)
    return sx, sy, rng.uniform(-1, 1, n), rng.uniform(-2, 2, n), rng.uniform(-0.3, 0.3, n)


def reference(types, sx, sy, alpha, *, size=7, mode="paper"):
    """Per-channel models from scalespace_mk.scalespace.models (the independent loop)."""
    out = []
    for t, a, b, c in zip(types, sx, sy, alpha, strict=True):
        t = int(t)
        out.append(
            masterkey_model(
                t, a, None if t == 7 else b, alpha=c if t == 7 else None, size=size, mode=mode
            )
        )
    return np.stack(out)


def small_layer(**kw):
    sx, sy, al, ga, of = random_params(seed=3, low=0.3, high=1.8)
    kw.setdefault("dtype", torch.float64)
    return AnalyticDepthwiseConv2d(
        len(TYPES),
        types=TYPES,
        sigma_x=sx,
        sigma_y=sy,
        alpha=al,
        gain=ga,
        offset=of,
        bias=np.linspace(-1, 1, len(TYPES)),
        **kw,
    )


@pytest.fixture
def count_builds(monkeypatch):
    """Count calls of the vectorised model builder."""
    calls = []
    original = snn.analytic_basis_kernels

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(snn, "analytic_basis_kernels", counting)
    return calls


# --------------------------------------------------------------------------------------
# functional


@pytest.mark.parametrize("mode", ["paper", "full"])
@pytest.mark.parametrize("size", [3, 7, 9])
def test_basis_equals_masterkey_model_per_channel(mode, size):
    sx, sy, al, _, _ = random_params(seed=size)
    sx[:2] = 0.0  # sigma = 0 (the delta) is a legal scale
    sy[4] = 0.0
    got = analytic_basis_kernels(
        TYPES, torch.tensor(sx), torch.tensor(sy), torch.tensor(al), size=size, mode=mode
    )
    assert got.shape == (len(TYPES), 1, size, size) and got.dtype == torch.float64
    ref = reference(TYPES, sx, sy, al, size=size, mode=mode)
    np.testing.assert_allclose(got[:, 0].numpy(), ref, rtol=0, atol=1e-12)


def test_affine_kernels_and_numpy_inputs():
    sx, sy, al, ga, of = random_params(seed=1)
    got = analytic_depthwise_kernels(TYPES, sx, sy, al, ga, of)
    ref = ga[:, None, None] * reference(TYPES, sx, sy, al) + of[:, None, None]
    np.testing.assert_allclose(got[:, 0].numpy(), ref, rtol=0, atol=1e-12)
    # the doc example: type 8 at sigma 0 is the delta; offset on every tap
    w = analytic_depthwise_kernels([8], 0.0, gain=2.0, offset=0.5)
    expected = np.full((7, 7), 0.5)
    expected[3, 3] = 2.5
    np.testing.assert_array_equal(w[0, 0].numpy(), expected)


def test_response_signs_follow_the_models():
    # types 5/6 respond to x / y with +1 (convolution at the centre, y up); at small
    # scales the paper-mode cropping and reflect boundary change that by < 1e-3
    w = analytic_basis_kernels([5, 6, 2, 1], [0.4, 0.5, 0.45, 0.3], [0.5, 0.4, 0.3, 0.35])
    w = w[:, 0]
    xs = torch.arange(-3, 4, dtype=torch.float64)
    ys = -xs[:, None]  # y = m - r for rows r = 0..6
    assert float((w[0] * -xs[None, :]).sum()) == pytest.approx(1.0, abs=1e-3)
    assert float((w[1] * -ys).sum()) == pytest.approx(1.0, abs=1e-3)
    # half-grid models: type 2 (delta_x-) is centred at x = +1/2, type 1 (delta_y+) at
    # y = -1/2 (weighted by |h|)
    assert float((w[2].abs() * xs[None, :]).sum() / w[2].abs().sum()) > 0.3
    assert float((w[3].abs() * ys).sum() / w[3].abs().sum()) < -0.3


def test_functional_dtype_device_and_clamp():
    w = analytic_basis_kernels(torch.tensor([8, 5]), torch.tensor([0.7, 0.9], dtype=torch.float32))
    assert w.dtype == torch.float32
    # scales beyond sigma_max are clamped to it
    a = analytic_basis_kernels([8], [20.0], sigma_max=4.0)
    b = analytic_basis_kernels([8], [4.0], sigma_max=4.0)
    assert torch.equal(a, b)


def test_gradcheck_functional_float64():
    sx, sy, al, ga, of = random_params(seed=4, low=0.3, high=1.6)
    args = tuple(torch.tensor(v, requires_grad=True) for v in (sx, sy, al, ga, of))
    for mode in ("paper", "full"):
        assert torch.autograd.gradcheck(
            lambda *a, mode=mode: analytic_depthwise_kernels(TYPES, *a, mode=mode), args
        )


def test_gradient_at_sigma_zero_is_zero_and_finite():
    s = torch.zeros(len(TYPES), dtype=torch.float64, requires_grad=True)
    analytic_depthwise_kernels(TYPES, s, s, torch.ones(len(TYPES))).square().sum().backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_layer_gradients_match_finite_differences():
    layer = small_layer()
    x = torch.randn(2, len(TYPES), 6, 6, dtype=torch.float64)
    names = ["sigma_x_raw", "sigma_y_raw", "alpha", "gain", "offset", "bias"]
    params = {n: getattr(layer, n).detach().clone().requires_grad_() for n in names}

    def f(*values):
        return torch.func.functional_call(layer, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, tuple(params.values()))


# --------------------------------------------------------------------------------------
# module forward


def test_layer_output_equals_conv2d_with_generated_kernels():
    layer = small_layer()
    x = torch.randn(3, len(TYPES), 9, 8, dtype=torch.float64)
    w = analytic_depthwise_kernels(
        TYPES, layer.sigma_x, layer.sigma_y, layer.alpha, layer.gain, layer.offset
    )
    expected = F.conv2d(x, w, layer.bias, padding=3, groups=len(TYPES))
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    ref = reference(
        TYPES, *(t.detach().numpy() for t in (layer.sigma_x, layer.sigma_y, layer.alpha))
    )
    ref = (
        layer.gain.detach().numpy()[:, None, None] * ref
        + layer.offset.detach().numpy()[:, None, None]
    )
    np.testing.assert_allclose(layer.weight[:, 0].detach().numpy(), ref, rtol=0, atol=1e-12)


def test_default_layer_uses_method_b_scales_and_cyclic_types():
    layer = AnalyticDepthwiseConv2d(10, dtype=torch.float64)
    assert layer.types.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 1, 2]
    assert layer.sigma_x.tolist() == [DEFAULT_SCALES[t][0] for t in layer.types.tolist()]
    assert layer.sigma_y.tolist() == [DEFAULT_SCALES[t][1] for t in layer.types.tolist()]
    assert layer.alpha[6].item() == DEFAULT_ALPHA and layer.alpha[0].item() == 0.0
    assert dict(layer.named_buffers()).keys() == {"types"}


def test_raw_scales_are_mirrored_by_abs():
    layer = small_layer()
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)
    y = layer(x)
    with torch.no_grad():
        layer.sigma_x_raw.neg_()
    assert torch.all(layer.sigma_x >= 0)
    torch.testing.assert_close(layer(x), y, rtol=0, atol=1e-13)


def test_channels_last_gives_the_same_result():
    layer = small_layer()
    x = torch.randn(2, len(TYPES), 11, 10, dtype=torch.float64)
    y = layer(x)
    y_cl = layer(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, rtol=0, atol=1e-12)
    layer32 = small_layer(dtype=torch.float32)
    x32 = x.float().to(memory_format=torch.channels_last)
    torch.testing.assert_close(layer32(x32), y.float(), rtol=1e-5, atol=1e-5)


def test_bf16_autocast_on_cpu_is_close():
    layer = small_layer(dtype=torch.float32)
    x = torch.randn(2, len(TYPES), 12, 12)
    y = layer(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = layer(x)
    assert y16.dtype == torch.bfloat16
    y16.float().square().sum().backward()  # gradients reach the float32 scales
    assert torch.isfinite(layer.sigma_x_raw.grad).all() and layer.sigma_x_raw.grad.abs().sum() > 0
    y16 = y16.detach()
    assert float((y16.float() - y).abs().max()) < 0.05 * float(y.abs().max())
    # the kernel itself is built in float64 regardless of autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        k = layer.kernel()
    assert k.dtype == torch.float32
    torch.testing.assert_close(k, layer.kernel(), rtol=0, atol=0)
    # and a bf16 input without autocast gets a bf16 kernel
    assert layer(x.bfloat16()).dtype == torch.bfloat16


@dynamo_function_warning
def test_compile_aot_eager_fullgraph_matches_eager():
    layer = small_layer()
    x = torch.randn(2, len(TYPES), 8, 8, dtype=torch.float64)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    torch.testing.assert_close(y, layer(x), rtol=0, atol=1e-12)
    y.square().sum().backward()
    g = layer.sigma_x_raw.grad.clone()
    layer.zero_grad()
    layer(x).square().sum().backward()
    torch.testing.assert_close(g, layer.sigma_x_raw.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch-internal (jit, Function)
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation:UserWarning")
def test_compile_inductor_matches_eager():
    # inductor's C++ compilation takes ~30 s on a 2-core CPU: forward only, no_grad
    layer = small_layer(dtype=torch.float32).eval()
    x = torch.randn(1, len(TYPES), 8, 8)
    with torch.no_grad():
        y = torch.compile(layer)(x)
        torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-5)


def test_masterkey_layer_values_and_variants():
    rng = np.random.default_rng(5)
    filters = rng.normal(size=(3, 5, 5))
    assignment = [2, 0, 1, 1, 2]
    gain, offset = rng.normal(size=5), rng.normal(size=5)
    layer = MasterKeyDepthwiseConv2d(
        5, filters, assignment, gain=gain, offset=offset, dtype=torch.float64
    )
    expected = gain[:, None, None] * filters[assignment] + offset[:, None, None]
    np.testing.assert_allclose(layer.weight[:, 0].detach().numpy(), expected, atol=1e-15)
    assert layer.gain.requires_grad and layer.offset.requires_grad
    x = torch.randn(2, 5, 7, 7, dtype=torch.float64)
    ref = F.conv2d(x, torch.tensor(expected)[:, None], layer.bias, padding=2, groups=5)
    torch.testing.assert_close(layer(x), ref, rtol=0, atol=1e-12)

    fb = MasterKeyDepthwiseConv2d(
        5, filters, assignment, gain=gain, variant="f+b", dtype=torch.float64
    )
    assert not fb.gain.requires_grad and fb.offset.requires_grad and fb.bias.requires_grad
    with torch.no_grad():
        fb.offset.copy_(torch.arange(5.0))
    np.testing.assert_allclose(
        fb.weight[:, 0].detach().numpy(),
        gain[:, None, None] * filters[assignment] + np.arange(5.0)[:, None, None],
        atol=1e-15,
    )
    fb(x).sum().backward()
    assert fb.gain.grad is None
    # d/d offset of sum(conv) = sum over outputs of the window sums of x: nonzero
    assert torch.all(fb.offset.grad != 0)
    frozen = MasterKeyDepthwiseConv2d(5, filters, variant="frozen")
    assert [n for n, p in frozen.named_parameters() if p.requires_grad] == ["bias"]
    assert frozen.assignment.tolist() == [0, 1, 2, 0, 1]  # cyclic default


# --------------------------------------------------------------------------------------
# caching


def test_cache_hit_in_eval_no_grad(count_builds):
    layer = small_layer().eval()
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ys = [layer(x) for _ in range(4)]
    assert len(count_builds) == 1
    assert all(torch.equal(y, ys[0]) for y in ys)
    with torch.inference_mode():
        layer(x)
    with torch.no_grad():  # an inference-mode tensor is not reused outside it
        torch.testing.assert_close(layer(x), ys[0], rtol=0, atol=0)


def test_first_use_under_inference_mode_does_not_poison_training(monkeypatch):
    monkeypatch.setattr(snn, "_BANKS", {})  # as if the package were freshly imported
    layer = small_layer()
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        y = layer(x)
    layer(x).sum().backward()
    assert torch.isfinite(layer.sigma_x_raw.grad).all()
    torch.testing.assert_close(layer(x).detach(), y.clone(), rtol=0, atol=0)


def test_cache_hit_when_all_kernel_parameters_frozen(count_builds):
    layer = small_layer(learn_scales=False, learn_gain=False, learn_offset=False)
    assert layer.training
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        layer(x).sum().backward()
    assert len(count_builds) == 1
    assert layer.bias.grad is not None and x.grad is not None


def test_frozen_scales_cache_the_model_part_only(count_builds):
    layer = small_layer(learn_scales=False)
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)
    grads = []
    for _ in range(3):
        layer.zero_grad()
        layer(x).square().sum().backward()
        grads.append(layer.gain.grad.clone())
    assert len(count_builds) == 1
    assert torch.all(grads[0] != 0) and torch.equal(grads[0], grads[2])
    # same gradient as a layer whose scales are learnable (no caching)
    ref = small_layer()
    ref(x).square().sum().backward()
    torch.testing.assert_close(grads[0], ref.gain.grad, rtol=1e-12, atol=1e-12)


def test_no_cache_when_training_scales(count_builds):
    layer = small_layer()
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)
    for _ in range(3):
        layer(x).sum().backward()
    assert len(count_builds) == 3
    # eval mode with grad enabled still gives parameter gradients (never a stale kernel)
    layer.eval().zero_grad()
    layer(x).sum().backward()
    assert torch.all(layer.sigma_x_raw.grad[TYPES != 8] != 0)


def test_cache_invalidation(count_builds):
    layer = small_layer().eval()
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)

    def fwd():
        with torch.no_grad():
            return layer(x)

    y0 = fwd()
    assert len(count_builds) == 1
    with torch.no_grad():  # in-place edit (what optimisers do)
        layer.sigma_x_raw.mul_(1.5)
    y1 = fwd()
    assert len(count_builds) == 2 and not torch.allclose(y0, y1)
    fresh = copy.deepcopy(layer)
    fresh.clear_cache()
    torch.testing.assert_close(y1, fresh(x).detach(), rtol=0, atol=0)

    other = small_layer()
    with torch.no_grad():
        other.gain.add_(1.0)
    layer.load_state_dict(other.state_dict())
    y2 = fwd()
    assert len(count_builds) == 4  # +1 for fresh above
    torch.testing.assert_close(y2, other.eval()(x).detach(), rtol=0, atol=0)

    n = len(count_builds)
    layer.train()
    layer.eval()
    fwd()
    assert len(count_builds) == n + 1

    layer.to(torch.float32)
    y3 = layer(x.float())
    assert y3.dtype == torch.float32 and len(count_builds) == n + 2
    torch.testing.assert_close(y3, y2.float(), rtol=1e-5, atol=1e-5)

    # .data edits bypass the version counter: clear_cache() is the documented remedy
    layer.offset.data.add_(1.0)
    layer.clear_cache()
    with torch.no_grad():
        assert not torch.allclose(layer(x.float()), y3)


def test_cache_is_not_state_and_survives_pickling():
    layer = small_layer().eval()
    x = torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
    assert set(dict(layer.named_buffers())) == {"types"}
    assert set(layer.state_dict()) == {
        "types",
        "sigma_x_raw",
        "sigma_y_raw",
        "alpha",
        "gain",
        "offset",
        "bias",
    }
    clone = pickle.loads(pickle.dumps(layer))
    assert clone._cache == {}
    with torch.no_grad():
        torch.testing.assert_close(clone(x), y, rtol=0, atol=0)


def test_state_dict_round_trip():
    layer = small_layer()
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    target = AnalyticDepthwiseConv2d(len(TYPES), dtype=torch.float64)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, len(TYPES), 8, 8, dtype=torch.float64)
    assert torch.equal(target.types, layer.types)
    torch.testing.assert_close(target(x), layer(x), rtol=0, atol=0)


def test_forward_mutates_no_state():
    layer = small_layer()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    versions = [p._version for p in layer.parameters()]
    layer(torch.randn(1, len(TYPES), 8, 8, dtype=torch.float64)).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert versions == [p._version for p in layer.parameters()]


def test_ddp_single_process_gloo(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        layer = small_layer()
        ref = copy.deepcopy(layer)
        ddp = DDP(layer)
        x = torch.randn(2, len(TYPES), 8, 8, dtype=torch.float64)
        ddp(x).square().sum().backward()
        ref(x).square().sum().backward()
        for p, q in zip(layer.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12)
    finally:
        # free the DDP wrapper (its reducer holds the process group) while the group lives:
        # freed after destroy_process_group, gloo's destructor once hung joining its
        # threads (a full-suite run, 2026-12-06)
        ddp = None
        gc.collect()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------
# conversion


@pytest.mark.parametrize("kind", ["analytic", "masterkey"])
def test_to_conv2d_round_trip(kind):
    if kind == "analytic":
        layer = small_layer()
    else:
        layer = MasterKeyDepthwiseConv2d(
            6,
            np.random.default_rng(0).normal(size=(8, 7, 7)),
            [7, 6, 5, 4, 3, 2],
            gain=np.arange(1.0, 7.0),
            dtype=torch.float64,
        )
    conv = to_conv2d(layer)
    assert type(conv) is nn.Conv2d and conv.groups == layer.channels
    assert conv.padding == (3, 3)
    x = torch.randn(2, layer.channels, 9, 9, dtype=torch.float64)
    assert torch.equal(conv(x), layer(x))
    copied = to_conv2d(conv)
    assert copied is not conv and torch.equal(copied(x), conv(x))
    nobias = to_conv2d(MasterKeyDepthwiseConv2d(2, np.eye(3)[None], bias=False))
    assert nobias.bias is None


def make_known_conv(seed=11, channels=16):
    rng = np.random.default_rng(seed)
    types = np.tile(np.arange(1, 9), channels // 8)
    sx, sy = rng.uniform(0.5, 1.5, channels), rng.uniform(0.5, 1.5, channels)
    al = rng.uniform(0.2, 1.0, channels)
    a = rng.uniform(0.5, 2.0, channels) * rng.choice([-1.0, 1.0], channels)
    b = rng.uniform(-0.1, 0.1, channels)
    w = a[:, None, None] * reference(types, sx, sy, al) + b[:, None, None]
    conv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(w)[:, None])
    return conv, dict(types=types, sigma_x=sx, sigma_y=sy, alpha=al, a=a, b=b)


def test_from_conv_recovers_known_types_and_scales():
    conv, truth = make_known_conv()
    layer = AnalyticDepthwiseConv2d.from_conv(conv)
    assert layer.types.tolist() == truth["types"].tolist()
    is7 = truth["types"] == 7
    np.testing.assert_allclose(layer.sigma_x.detach().numpy(), truth["sigma_x"], atol=1e-5)
    np.testing.assert_allclose(
        layer.sigma_y.detach().numpy()[~is7], truth["sigma_y"][~is7], atol=1e-5
    )
    np.testing.assert_allclose(layer.alpha.detach().numpy()[is7], truth["alpha"][is7], atol=1e-5)
    np.testing.assert_allclose(layer.gain.detach().numpy(), truth["a"], rtol=1e-5)
    assert layer.gain.dtype == torch.float64 and torch.equal(layer.bias, conv.bias)
    x = torch.randn(2, 16, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        err = (layer(x) - conv(x)).abs().max() / conv(x).abs().max()
    assert float(err) < 1e-5


def test_from_census_accepts_records_mappings_and_results():
    from scalespace_mk.analysis.census import census

    conv, truth = make_known_conv(seed=2, channels=8)
    result = census(conv.weight[:, 0].detach().numpy())
    a = AnalyticDepthwiseConv2d.from_census(result, dtype=torch.float64)
    b = AnalyticDepthwiseConv2d.from_census(result.records(), dtype=torch.float64)
    mapping = {k: getattr(result, k) for k in ("sigma_x", "sigma_y", "alpha", "a", "b")}
    c = AnalyticDepthwiseConv2d.from_census(
        {"type": result.type, **mapping}, dtype=torch.float64, learn_scales=False
    )
    for layer in (b, c):
        torch.testing.assert_close(layer.kernel(), a.kernel(), rtol=0, atol=0)
    assert not c.sigma_x_raw.requires_grad and a.sigma_x_raw.requires_grad
    np.testing.assert_allclose(
        a.kernel()[:, 0].detach().numpy(), conv.weight[:, 0].detach().numpy(), atol=1e-6
    )
    with pytest.raises(ValueError, match="lacks the fields"):
        AnalyticDepthwiseConv2d.from_census([{"type": 1, "sigma_x": 1.0}])
    with pytest.raises(ValueError, match="types 1..8"):
        AnalyticDepthwiseConv2d.from_census(
            [{"type": "dxx", "sigma_x": 1.0, "sigma_y": 1.0, "a": 1.0, "b": 0.0}]
        )
    with pytest.raises(ValueError, match="NaN"):
        AnalyticDepthwiseConv2d.from_census(
            [{"type": 1, "sigma_x": float("nan"), "sigma_y": 1.0, "a": 1.0, "b": 0.0}]
        )
    with pytest.raises(TypeError, match="census result"):
        AnalyticDepthwiseConv2d.from_census(3.0)


def test_from_conv_rejects_non_depthwise_convs():
    with pytest.raises(ValueError, match="depthwise"):
        AnalyticDepthwiseConv2d.from_conv(nn.Conv2d(4, 4, 7, padding=3))
    with pytest.raises(ValueError, match="depthwise"):
        AnalyticDepthwiseConv2d.from_conv(nn.Conv2d(4, 4, 7, padding=1, groups=4))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        AnalyticDepthwiseConv2d.from_conv(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="discgauss"):
        AnalyticDepthwiseConv2d.from_conv(
            nn.Conv2d(4, 4, 7, padding=3, groups=4), method="samplgauss"
        )


# --------------------------------------------------------------------------------------
# factory


def test_make_dwconv_kinds():
    learned = make_dwconv("learned", 16)
    assert type(learned) is nn.Conv2d and learned.groups == 16 and learned.padding == (3, 3)

    mk = make_dwconv("masterkey", 16, dtype=torch.float64)  # the published 8 filters
    assert isinstance(mk, MasterKeyDepthwiseConv2d)
    assert mk.assignment.tolist() == [c % 8 for c in range(16)]
    flat = mk.filters.reshape(8, -1)
    torch.testing.assert_close(flat.sum(1), torch.zeros(8, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(8, dtype=torch.float64))
    mk_types = make_dwconv("masterkey", 3, types=[8, 1, 7], variant="f+b")
    assert mk_types.assignment.tolist() == [7, 0, 6] and mk_types.variant == "f+b"

    ideal = make_dwconv("idealized", 16, dtype=torch.float64)
    assert isinstance(ideal, AnalyticDepthwiseConv2d)
    assert not ideal.sigma_x_raw.requires_grad and ideal.gain.requires_grad
    k = ideal.kernel()[:, 0].reshape(16, -1)
    torch.testing.assert_close(k.sum(1), torch.zeros(16, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(k.norm(dim=1), torch.ones(16, dtype=torch.float64))
    assert ideal.sigma_x.tolist()[:8] == [DEFAULT_SCALES[t][0] for t in range(1, 9)]

    learn = make_dwconv("learnable", 8, sigma=0.7, types=[5] * 8, normalize=False)
    assert learn.sigma_x_raw.requires_grad and torch.all(learn.sigma_y == 0.7)
    assert torch.all(learn.gain == 1.0)


def test_make_dwconv_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        make_dwconv("gaussian", 8)
    with pytest.raises(ValueError, match="learn_scales"):
        make_dwconv("idealized", 8, learn_scales=True)
    with pytest.raises(ValueError, match="kernel_size"):
        make_dwconv("masterkey", 8, kernel_size=5)
    with pytest.raises(ValueError, match="accepts only"):
        make_dwconv("learned", 8, sigma=1.0)
    with pytest.raises(ValueError, match="either sigma"):
        make_dwconv("learnable", 8, sigma=1.0, sigma_x=1.0)


def test_networks_build_with_analytic_dwconvs():
    from scalespace_mk.networks import create_model, depthwise_convs

    for kind, cls in (
        ("learnable", AnalyticDepthwiseConv2d),
        ("masterkey", MasterKeyDepthwiseConv2d),
    ):
        model = create_model("convnextv2_test", num_classes=5, dwconv=kind)
        assert all(isinstance(m, cls) for _, m in depthwise_convs(model))
        out = model(torch.randn(2, 3, 32, 32))
        out.sum().backward()
        assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_layers_can_be_built_on_the_meta_device():
    with torch.device("meta"):
        layers = [make_dwconv(k, 16) for k in ("learnable", "idealized", "masterkey")]
        layers.append(AnalyticDepthwiseConv2d(8, types=[7] * 8))
    for layer in layers:
        tensors = list(layer.parameters()) + list(layer.buffers())
        assert all(t.device.type == "meta" for t in tensors)
    assert sum(p.numel() for p in layers[0].parameters()) == 6 * 16
    for layer in layers[:3]:  # shape inference on meta tensors runs the whole forward
        y = layer(torch.empty(2, 16, 8, 8, device="meta"))
        assert y.shape == (2, 16, 8, 8) and y.device.type == "meta"


# --------------------------------------------------------------------------------------
# errors


def test_input_errors():
    with pytest.raises(ValueError, match="types must hold master-key types 1..8"):
        AnalyticDepthwiseConv2d(2, types=[0, 9])
    with pytest.raises(ValueError, match="length channels"):
        AnalyticDepthwiseConv2d(3, types=[1, 2])
    with pytest.raises(ValueError, match="sigma_x must be finite"):
        AnalyticDepthwiseConv2d(2, sigma_x=[1.0, float("nan")])
    with pytest.raises(ValueError, match="sigma_y"):
        AnalyticDepthwiseConv2d(2, sigma_x=1.0, sigma_y=-1.0)
    with pytest.raises(ValueError, match="gain must be finite"):
        AnalyticDepthwiseConv2d(2, gain=[1.0, float("inf")])
    with pytest.raises(ValueError, match="kernel_size"):
        AnalyticDepthwiseConv2d(2, 6)
    with pytest.raises(ValueError, match="mode"):
        AnalyticDepthwiseConv2d(2, mode="exact")
    with pytest.raises(ValueError, match="channels"):
        AnalyticDepthwiseConv2d(0)
    with pytest.raises(ValueError, match="alpha"):
        analytic_basis_kernels([7], 1.0)
    with pytest.raises(ValueError, match=r"shape \[C\]"):
        analytic_basis_kernels([1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="integers"):
        analytic_basis_kernels(torch.tensor([True]), 1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        analytic_basis_kernels([1], 1.0, sigma_max=0.0)
    layer = AnalyticDepthwiseConv2d(4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\] with C = 4"):
        layer(torch.randn(1, 3, 8, 8))
    with torch.no_grad():
        layer.alpha[1] = float("nan")
    with pytest.raises(ValueError, match="alpha must be finite"):
        layer(torch.randn(1, 4, 8, 8))
    f = np.ones((2, 3, 3))
    f[:, 1, 1] = 2.0
    with pytest.raises(ValueError, match="length channels"):
        MasterKeyDepthwiseConv2d(3, f, [0, 1])
    with pytest.raises(ValueError, match="indices 0..1"):
        MasterKeyDepthwiseConv2d(2, f, [0, 2])
    with pytest.raises(ValueError, match="integer filter indices"):
        MasterKeyDepthwiseConv2d(2, f, [0.0, 1.0])
    with pytest.raises(ValueError, match="variant"):
        MasterKeyDepthwiseConv2d(2, f, variant="fb")
    with pytest.raises(ValueError, match="NaN"):
        MasterKeyDepthwiseConv2d(2, np.full((1, 3, 3), np.nan))
    with pytest.raises(TypeError, match="layer must be"):
        to_conv2d(nn.Linear(2, 2))


# --------------------------------------------------------------------------------------
# GPU


@cuda
def test_cuda_matches_cpu_and_autocast():
    layer = small_layer(dtype=torch.float32)
    x = torch.randn(2, len(TYPES), 16, 16)
    y = layer(x)
    gpu = copy.deepcopy(layer).cuda()
    torch.testing.assert_close(gpu(x.cuda()).cpu(), y, rtol=1e-4, atol=1e-4)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype):
            y16 = gpu(x.cuda().to(memory_format=torch.channels_last))
        assert y16.dtype == dtype
        assert float((y16.float().cpu() - y).abs().max()) < 0.05 * float(y.abs().max())
    y16.float().sum().backward()
    assert torch.isfinite(gpu.sigma_x_raw.grad).all()
    gpu.eval()
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), y, rtol=1e-4, atol=1e-4)
