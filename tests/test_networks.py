"""Tests of scalespace_mk.networks.convnext (ConvNeXt V1/V2, checkpoints, layer ids)."""

from __future__ import annotations

import argparse
import copy
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from scalespace_mk.networks import (
    ConvNeXt,
    ConvNeXtBlock,
    DropPath,
    LoadResult,
    checkpoint_filter_fn,
    convnext_test,
    convnextv2_atto,
    create_model,
    depthwise_convs,
    drop_path,
    layer_id,
    layer_id_single,
    list_models,
    load_checkpoint,
    model_config,
    to_official_state_dict,
)

# --------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------

# V1: torchvision's published num_params (same parameter inventory as the official code);
# V2: the closed form below, agreeing with the rounded counts of the ConvNeXt-V2 paper
# (3.7M, 5.2M, 9.1M, 15.6M, 28.6M, 89M, 198M, 660M).
EXPECTED_PARAMS = {
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
    "convnext_xlarge": 350_196_968,
    "convnextv2_atto": 3_708_400,
    "convnextv2_femto": 5_233_240,
    "convnextv2_pico": 9_066_280,
    "convnextv2_nano": 15_623_800,
    "convnextv2_tiny": 28_635_496,
    "convnextv2_base": 88_717_800,
    "convnextv2_large": 197_956_840,
    "convnextv2_huge": 660_289_640,
}


def closed_form_params(depths, dims, *, v2, num_classes=1000, in_chans=3):
    """Count ConvNeXt parameters by hand: block = dw 49C+C, LN 2C, fc 8C^2+5C, gamma C/GRN 8C."""
    n = in_chans * dims[0] * 16 + dims[0] + 2 * dims[0]  # stem conv + LN
    for i, (depth, c) in enumerate(zip(depths, dims, strict=True)):
        if i:
            n += 2 * dims[i - 1] + dims[i - 1] * c * 4 + c  # LN + 2x2 conv
        n += depth * (8 * c * c + (65 if v2 else 58) * c)
    return n + 2 * dims[-1] + dims[-1] * num_classes + num_classes  # head LN + fc


def count_on_meta(name, **kw):
    with torch.device("meta"):
        model = create_model(name, **kw)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts_match_published(name):
    assert count_on_meta(name) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", list_models())
def test_parameter_counts_match_closed_form(name):
    cfg = model_config(name)
    expected = closed_form_params(cfg["depths"], cfg["dims"], v2=cfg["use_grn"], num_classes=7)
    assert count_on_meta(name, num_classes=7) == expected


def test_v2_sizes_match_spec_table():
    spec = {
        "atto": ([2, 2, 6, 2], 40),
        "femto": ([2, 2, 6, 2], 48),
        "pico": ([2, 2, 6, 2], 64),
        "nano": ([2, 2, 8, 2], 80),
        "tiny": ([3, 3, 9, 3], 96),
        "base": ([3, 3, 27, 3], 128),
        "large": ([3, 3, 27, 3], 192),
        "huge": ([3, 3, 27, 3], 352),
    }
    for size, (depths, c) in spec.items():
        cfg = model_config(f"convnextv2_{size}")
        assert list(cfg["depths"]) == depths
        assert list(cfg["dims"]) == [c, 2 * c, 4 * c, 8 * c]
        assert cfg["use_grn"] and cfg["ls_init_value"] is None


def test_variant_constructors_use_their_config():
    with torch.device("meta"):
        model = convnextv2_atto(num_classes=0)
    assert model.depths == (2, 2, 6, 2) and model.dims == (40, 80, 160, 320)
    assert isinstance(model.head.fc, nn.Identity)


# --------------------------------------------------------------------------------------
# An independent transcription of the official models (facebookresearch/ConvNeXt and
# ConvNeXt-V2), used to check names, shapes and numerics of the mapping.
# --------------------------------------------------------------------------------------


class OfficialLayerNorm(nn.Module):
    def __init__(self, dim, eps=1e-6, data_format="channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps, self.data_format, self.shape = eps, data_format, (dim,)

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class OfficialGRN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class OfficialBlock(nn.Module):
    def __init__(self, dim, v2):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = OfficialLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = OfficialGRN(4 * dim) if v2 else None
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = None if v2 else nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        y = self.act(self.pwconv1(self.norm(self.dwconv(x).permute(0, 2, 3, 1))))
        if self.grn is not None:
            y = self.grn(y)
        y = self.pwconv2(y)
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class OfficialConvNeXt(nn.Module):
    def __init__(self, depths, dims, num_classes, v2):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(3, dims[0], kernel_size=4, stride=4),
                    OfficialLayerNorm(dims[0], data_format="channels_first"),
                )
            ]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    OfficialLayerNorm(dims[i], data_format="channels_first"),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
            )
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*[OfficialBlock(dims[i], v2) for _ in range(depths[i])])
                for i in range(4)
            ]
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
        return self.head(self.norm(x.mean([-2, -1])))


def randomised(module, seed=0):
    """Fill every parameter with random numbers (so gamma, GRN and norms all matter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def official_twin(name, num_classes=5):
    cfg = model_config(name)
    return OfficialConvNeXt(cfg["depths"], cfg["dims"], num_classes, v2=cfg["use_grn"]).double()


CASES = [
    ("convnext_test", {}),
    ("convnextv2_test", {}),
    ("convnextv2_test", {"conv_mlp": True}),
]


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_official_checkpoint_loads_and_gives_same_logits(name, kw):
    official = randomised(official_twin(name)).eval()
    ours = create_model(name, num_classes=5, **kw).double().eval()
    result = load_checkpoint(ours, {"model": official.state_dict()})
    assert result == LoadResult([], [], [])
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_key_mapping_round_trip(name, kw):
    official = randomised(official_twin(name))
    official_sd = official.state_dict()
    ours = create_model(name, num_classes=5, **kw).double()
    mapped = checkpoint_filter_fn(official_sd, ours)
    target = ours.state_dict()
    assert set(mapped) == set(target)
    for key, value in mapped.items():
        assert value.shape == target[key].shape, key
    ours.load_state_dict(mapped, strict=True)
    back = to_official_state_dict(ours.state_dict())
    assert set(back) == set(official_sd)
    for key, value in official_sd.items():
        assert back[key].shape == value.shape, key
        assert torch.equal(back[key], value), key


def expected_timm_keys(depths, dims, *, v2):
    """timm's ConvNeXt state-dict keys, written out from timm's module structure."""
    keys = {f"stem.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    for s in range(4):
        if s:
            keys |= {f"stages.{s}.downsample.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
        for b in range(depths[s]):
            pre = f"stages.{s}.blocks.{b}."
            mods = ["conv_dw", "norm", "mlp.fc1", "mlp.fc2"] + (["mlp.grn"] if v2 else [])
            keys |= {pre + m + "." + p for m in mods for p in ("weight", "bias")}
            if not v2:
                keys.add(pre + "gamma")
    return keys | {f"head.{m}.{p}" for m in ("norm", "fc") for p in ("weight", "bias")}


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnextv2_atto"])
def test_state_dict_uses_timm_names_and_shapes(name):
    cfg = model_config(name)
    with torch.device("meta"):
        sd = create_model(name).state_dict()
    assert set(sd) == expected_timm_keys(cfg["depths"], cfg["dims"], v2=cfg["use_grn"])
    c = cfg["dims"][0]
    assert sd["stages.0.blocks.0.conv_dw.weight"].shape == (c, 1, 7, 7)
    assert sd["stages.0.blocks.0.conv_dw.bias"].shape == (c,)
    assert sd["stages.1.downsample.1.weight"].shape == (2 * c, c, 2, 2)
    assert sd["stem.0.weight"].shape == (c, 3, 4, 4)
    if cfg["use_grn"]:
        assert sd["stages.0.blocks.0.mlp.grn.weight"].shape == (4 * c,)
    else:
        assert sd["stages.0.blocks.0.gamma"].shape == (c,)
    fc1 = sd["stages.0.blocks.0.mlp.fc1.weight"].shape
    assert fc1 == ((4 * c, c, 1, 1) if cfg.get("conv_mlp") else (4 * c, c))


def test_timm_layout_passes_unchanged_and_wrappers_are_removed():
    model = randomised(create_model("convnextv2_test", num_classes=5))
    sd = model.state_dict()
    for wrapped in (
        sd,
        {"model": sd},
        {"state_dict": sd},
        {"model_ema": sd},
        {f"module.{k}": v for k, v in sd.items()},
    ):
        out = checkpoint_filter_fn(wrapped, model)
        assert list(out) == list(sd)
        assert all(out[k] is sd[k] for k in sd)
    fresh = create_model("convnextv2_test", num_classes=5)
    assert load_checkpoint(fresh, sd) == LoadResult([], [], [])
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_newer_timm_grn_shape_and_conv_mlp_layout_are_reshaped():
    linear = randomised(create_model("convnextv2_test", num_classes=5)).double().eval()
    sd = {
        k: (v.reshape(1, 1, 1, -1) if ".grn." in k else v) for k, v in linear.state_dict().items()
    }
    conv = create_model("convnextv2_test", num_classes=5, conv_mlp=True).double().eval()
    assert load_checkpoint(conv, sd) == LoadResult([], [], [])
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), linear(x), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------
# Reporting of missing / unexpected keys and safe loading
# --------------------------------------------------------------------------------------


def test_strict_load_names_missing_unexpected_and_mismatched_keys():
    source = randomised(create_model("convnext_test", num_classes=3))
    sd = dict(source.state_dict())
    del sd["stages.2.blocks.0.gamma"]
    sd["stages.9.extra.weight"] = torch.zeros(2)
    target = create_model("convnext_test", num_classes=4)
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(ValueError) as info:
        load_checkpoint(target, sd)
    message = str(info.value)
    for fragment in ("stages.2.blocks.0.gamma", "stages.9.extra.weight", "head.fc.weight"):
        assert fragment in message
    for key, value in target.state_dict().items():  # strict failure loads nothing
        assert torch.equal(value, before[key])

    with pytest.warns(UserWarning, match="stages.9.extra.weight"):
        result = load_checkpoint(target, sd, strict=False)
    assert result.missing_keys == ["stages.2.blocks.0.gamma"]
    assert result.unexpected_keys == ["stages.9.extra.weight"]
    assert [m.split(":")[0] for m in result.mismatched_keys] == ["head.fc.bias", "head.fc.weight"]
    after = target.state_dict()
    assert torch.equal(after["stem.0.weight"], sd["stem.0.weight"])
    assert torch.equal(after["head.fc.weight"], before["head.fc.weight"])
    assert torch.equal(after["stages.2.blocks.0.gamma"], before["stages.2.blocks.0.gamma"])


def test_files_round_trip(tmp_path):
    source = randomised(create_model("convnextv2_test", num_classes=5))
    official = to_official_state_dict(source.state_dict())
    torch.save({"model": official}, tmp_path / "official.pth")
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors"
    )
    for path in (tmp_path / "official.pth", str(tmp_path / "w.safetensors")):
        target = create_model("convnextv2_test", num_classes=5)
        assert load_checkpoint(target, path) == LoadResult([], [], [])
        for key, value in target.state_dict().items():
            assert torch.equal(value, source.state_dict()[key]), (path, key)


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    model = create_model("convnext_test", num_classes=5)
    for i, obj in enumerate((_NotATensor(), argparse.Namespace(lr=1.0))):
        path = tmp_path / f"bad{i}.pt"
        torch.save({"model": model.state_dict(), "args": obj}, path)
        with pytest.raises(ValueError, match="refusing to load"):
            load_checkpoint(model, path)
    with pytest.raises(ValueError, match="path_or_state_dict"):
        load_checkpoint(model, tmp_path / "weights.npz")
    with pytest.raises(TypeError, match="path_or_state_dict"):
        load_checkpoint(model, 3)


# --------------------------------------------------------------------------------------
# Depthwise-conv factories
# --------------------------------------------------------------------------------------


class FrozenDW(nn.Module):
    def __init__(self, channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        with torch.no_grad():
            self.conv.weight.fill_(0.5)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def test_callable_dwconv_factory_is_used_in_every_block():
    seen = []

    def factory(channels, kernel_size):
        seen.append((channels, kernel_size))
        return FrozenDW(channels, kernel_size)

    model = create_model("convnext_test", dwconv=factory, num_classes=3, depths=(1, 2, 1, 1))
    assert seen == [(8, 7), (16, 7), (16, 7), (32, 7), (64, 7)]
    convs = depthwise_convs(model)
    assert [name for name, _ in convs] == [
        "stages.0.blocks.0.conv_dw",
        "stages.1.blocks.0.conv_dw",
        "stages.1.blocks.1.conv_dw",
        "stages.2.blocks.0.conv_dw",
        "stages.3.blocks.0.conv_dw",
    ]
    for _, module in convs:
        assert isinstance(module, FrozenDW)
        assert torch.all(module.conv.weight == 0.5)  # the model's init leaves it alone
    model(torch.zeros(1, 3, 32, 32))
    assert all(module.calls == 1 for _, module in convs)
    assert "stages.0.blocks.0.conv_dw.conv.weight" in model.state_dict()


def test_learned_dwconv_matches_the_documented_conv():
    model = create_model("convnext_test")
    (name, conv), *_ = depthwise_convs(model)
    assert name == "stages.0.blocks.0.conv_dw"
    assert isinstance(conv, nn.Conv2d)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (8, 8, 8)
    assert conv.kernel_size == (7, 7) and conv.padding == (3, 3) and conv.bias is not None


def test_bad_dwconv_arguments():
    with pytest.raises(ValueError, match="dwconv"):
        create_model("convnext_test", dwconv="gaussian")
    with pytest.raises(TypeError, match="dwconv"):
        create_model("convnext_test", dwconv=3)
    with pytest.raises(TypeError, match="nn.Module"):
        create_model("convnext_test", dwconv=lambda c, k: torch.zeros(c))
    with pytest.raises(ValueError, match="dwconv_kwargs"):
        create_model("convnext_test", dwconv_kwargs={"sigma": 1.0})


def test_analytic_dwconv_without_nn_module_raises_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scalespace_mk.networks.layers", None)
    with pytest.raises(ImportError, match="scalespace_mk.networks.layers.make_dwconv"):
        create_model("convnextv2_test", dwconv="masterkey")


def test_analytic_dwconv_kinds_are_built_by_make_dwconv(monkeypatch):
    calls = []

    def make_dwconv(kind, channels, kernel_size=7, **kwargs):
        calls.append((kind, channels, kernel_size, kwargs))
        return FrozenDW(channels, kernel_size)

    fake = types.ModuleType("scalespace_mk.networks.layers")
    fake.make_dwconv = make_dwconv
    monkeypatch.setitem(sys.modules, "scalespace_mk.networks.layers", fake)
    model = create_model("convnextv2_test", dwconv="learnable", dwconv_kwargs={"sigma": 0.7})
    assert calls == [("learnable", c, 7, {"sigma": 0.7}) for c in (8, 16, 32, 64)]
    assert all(isinstance(m, FrozenDW) for _, m in depthwise_convs(model))
    assert all(
        b.dwconv_kind == "learnable" for b in model.modules() if isinstance(b, ConvNeXtBlock)
    )


# --------------------------------------------------------------------------------------
# Forward behaviour
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_channels_last_equals_contiguous(name, kw):
    model = randomised(create_model(name, num_classes=5, **kw)).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        out = cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


def test_shapes_and_eval_determinism():
    model = create_model("convnextv2_test", num_classes=10, drop_path_rate=0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (2, 10) and torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    outs = [model(x) for _ in range(4)]
    assert any(not torch.equal(o, outs[0]) for o in outs[1:])


def test_drop_path_identity_in_eval_and_rescales_in_train():
    x = torch.ones(20000, 3)
    assert drop_path(x, 0.25, training=False) is x
    module = DropPath(0.25).eval()
    assert module(x) is x
    torch.manual_seed(0)
    y = DropPath(0.25).train()(x)
    rows = y[:, 0]
    assert torch.all((rows == 0) | (rows == 1 / 0.75))
    assert torch.all(y == rows[:, None])  # whole samples are dropped
    assert abs(float((rows == 0).double().mean()) - 0.25) < 0.02
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)


def test_drop_path_rates_rise_linearly():
    model = create_model("convnext_test", drop_path_rate=0.3, depths=(1, 1, 2, 1))
    blocks = [m for m in model.modules() if isinstance(m, ConvNeXtBlock)]
    probs = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert probs == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3], abs=1e-12)


def test_grad_checkpointing_gives_same_gradients():
    model = randomised(create_model("convnextv2_test", num_classes=3)).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=0, atol=1e-12)


def test_reset_classifier_and_head_init_scale():
    model = create_model("convnext_test", num_classes=10, head_init_scale=0.0)
    assert torch.all(model.head.fc.weight == 0)
    model.reset_classifier(4)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    assert model.get_classifier() is model.head.fc
    model.reset_classifier(0)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 64)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="name"):
        create_model("resnet50")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("convnext_test", num_classes=-1)
    with pytest.raises(ValueError, match="drop_path_rate"):
        create_model("convnext_test", drop_path_rate=1.0)
    with pytest.raises(ValueError, match="depths"):
        ConvNeXt(depths=(1, 1, 1), dims=(8, 16, 32))
    with pytest.raises(ValueError, match="kernel_size"):
        create_model("convnext_test", kernel_size=4)


# --------------------------------------------------------------------------------------
# Optimiser helpers
# --------------------------------------------------------------------------------------


def official_num_layer_group(var_name):
    """Transcription of get_num_layer_for_convnext (facebookresearch/ConvNeXt optim_factory)."""
    num_max_layer = 12
    if var_name.startswith("downsample_layers"):
        stage_id = int(var_name.split(".")[1])
        if stage_id == 0:
            return 0
        if stage_id in (1, 2):
            return stage_id + 1
        return 12
    if var_name.startswith("stages"):
        stage_id = int(var_name.split(".")[1])
        block_id = int(var_name.split(".")[2])
        if stage_id in (0, 1):
            return stage_id + 1
        if stage_id == 2:
            return 3 + block_id // 3
        return 12
    return num_max_layer + 1


def official_num_layer_single(var_name, depths):
    """Transcription of get_num_layer_for_convnext_single (ConvNeXt-V2 optim_factory)."""
    if var_name.startswith("downsample_layers"):
        stage_id = int(var_name.split(".")[1])
        return sum(depths[:stage_id]) + 1
    if var_name.startswith("stages"):
        stage_id = int(var_name.split(".")[1])
        block_id = int(var_name.split(".")[2])
        return sum(depths[:stage_id]) + block_id + 1
    return sum(depths) + 1


@pytest.mark.parametrize("name", ["convnext_base", "convnextv2_tiny"])
def test_layer_ids_follow_the_official_rules(name):
    with torch.device("meta"):
        model = create_model(name)
    names = list(model.state_dict())
    official = list(to_official_state_dict(model.state_dict()))
    assert len(names) == len(official)
    for ours, theirs in zip(names, official, strict=True):
        assert layer_id(ours) == official_num_layer_group(theirs), ours
        assert layer_id(theirs) == official_num_layer_group(theirs), theirs
        assert layer_id_single(ours, model.depths) == official_num_layer_single(
            theirs, model.depths
        )
    assert layer_id("stem.0.weight") == 0
    assert layer_id("stages.2.blocks.26.mlp.fc1.weight") == 11
    assert layer_id("head.fc.weight") == 13
    assert layer_id("stages.3.blocks.0.gamma", num_layers=20) == 20


def test_no_weight_decay_matches_the_official_rule():
    model = create_model("convnext_test")
    skip = model.no_weight_decay()
    official = {n for n, p in model.named_parameters() if p.ndim == 1 or n.endswith(".bias")}
    assert skip == official
    assert {"stem.1.weight", "stages.0.blocks.0.gamma", "head.norm.bias"} <= skip
    assert not {"stem.0.weight", "stages.0.blocks.0.conv_dw.weight", "head.fc.weight"} & skip
    v2 = create_model("convnextv2_test")
    assert "stages.1.blocks.0.mlp.grn.weight" in v2.no_weight_decay()


def test_named_constructor_equals_registry():
    torch.manual_seed(3)
    a = convnext_test(num_classes=2)
    torch.manual_seed(3)
    b = create_model("convnext_test", num_classes=2)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_channels_last_bf16_autocast_close_to_fp32():
    model = randomised(create_model("convnextv2_test", num_classes=5), seed=4).cuda().eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05 * float(ref.abs().max()))
