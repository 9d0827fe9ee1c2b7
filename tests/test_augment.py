"""Tests of scalespace_mk.training.augment: values, not only shapes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scalespace_mk.training.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RAND_AUGMENT_OPS,
    AugmentConfig,
    EvalTransform,
    SoftTargetCrossEntropy,
    TrainTransform,
    _apply_op,
    denormalize,
    mixup_cutmix,
    normalize,
    rand_augment,
    random_erasing,
    random_resized_crop,
    resized_crop,
    sample_resized_crop_boxes,
    smooth_one_hot,
    soft_target_cross_entropy,
    to_float,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uint8_batch(b: int = 4, h: int = 24, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, h, w), generator=_gen(seed), dtype=torch.uint8)


# ------------------------------------------------------------------ normalisation


def test_to_float_and_normalize_values():
    x = _uint8_batch()
    f = to_float(x)
    assert f.dtype == torch.float32
    assert torch.equal(f * 255.0, x.float())
    n = normalize(x)
    b, c, i, j = 1, 2, 3, 4
    expected = (x[b, c, i, j].item() / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    assert n[b, c, i, j].item() == pytest.approx(expected, abs=1e-6)


def test_normalize_inverse():
    x = _uint8_batch()
    back = denormalize(normalize(x))
    torch.testing.assert_close(back, x.float() / 255.0, atol=1e-6, rtol=0)
    y = torch.rand(2, 3, 5, 5, generator=_gen(1))
    torch.testing.assert_close(normalize(denormalize(y)), y, atol=1e-6, rtol=0)


def test_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(torch.zeros(1, 3, 2, 2), mean=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        normalize(torch.zeros(3, 2, 2))
    with pytest.raises(TypeError):
        normalize(np.zeros((1, 3, 2, 2)))


# ------------------------------------------------------------------ crops


def test_resized_crop_integer_box_is_exact_slice():
    x = _uint8_batch(2, 32, 40)
    boxes = torch.tensor([[3.0, 5.0, 16.0, 16.0], [0.0, 10.0, 16.0, 16.0]])
    out = resized_crop(x, boxes, 16)
    ref = torch.stack([x[0, :, 5:21, 3:19], x[1, :, 10:26, 0:16]]).float() / 255.0
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    flipped = resized_crop(x, boxes, 16, flip=torch.tensor([True, False]))
    torch.testing.assert_close(flipped[0], ref[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped[1], ref[1], atol=1e-5, rtol=0)


def test_resized_crop_full_box_matches_interpolate():
    x = torch.rand(2, 3, 12, 12, generator=_gen(2))
    boxes = torch.tensor([[0.0, 0.0, 12.0, 12.0]] * 2)
    up = resized_crop(x, boxes, 24)
    ref = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, ref, atol=1e-5, rtol=0)


def test_crop_boxes_inside_and_in_range():
    boxes = sample_resized_crop_boxes(2000, 60, 80, generator=_gen(3))
    left, top, w, h = boxes.unbind(1)
    assert torch.all(left >= 0) and torch.all(top >= 0)
    assert torch.all(left + w <= 80) and torch.all(top + h <= 60)
    assert torch.equal(boxes, boxes.round())
    frac = w * h / (60 * 80)
    # rounding of w and h moves the area a little outside the nominal range
    assert frac.min() > 0.08 * 0.7 and frac.max() <= 1.0
    r = w / h
    assert r.min() > 0.75 * 0.85 and r.max() < 4 / 3 / 0.85
    # the two log-ratio halves are both used
    assert (r < 0.9).any() and (r > 1.1).any()


def test_crop_boxes_fallback_is_centre_crop():
    # a square target larger than the short side never fits: centre crop with ratio 1
    boxes = sample_resized_crop_boxes(3, 20, 40, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(boxes, torch.tensor([[10.0, 0.0, 20.0, 20.0]] * 3))


def test_random_resized_crop_seeded():
    x = _uint8_batch(4, 40, 40)
    a = random_resized_crop(x, 16, generator=_gen(5))
    b = random_resized_crop(x, 16, generator=_gen(5))
    c = random_resized_crop(x, 16, generator=_gen(6))
    assert a.shape == (4, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


# ------------------------------------------------------------------ random erasing


def test_random_erasing_p0_identity_and_p1_rectangles():
    x = normalize(_uint8_batch(16, 32, 32))
    assert torch.equal(random_erasing(x, p=0.0, generator=_gen()), x)
    out, boxes = random_erasing(x, p=1.0, generator=_gen(7), return_boxes=True)
    for i in range(16):
        left, top, w, h = (int(v) for v in boxes[i])
        assert w > 0 and h > 0
        frac = w * h / (32 * 32)
        assert 0.02 * 0.6 <= frac <= 1 / 3 * 1.3
        mask = torch.zeros(32, 32, dtype=torch.bool)
        mask[top : top + h, left : left + w] = True
        assert torch.equal(out[i][:, ~mask], x[i][:, ~mask])  # outside: untouched
        assert not torch.isclose(out[i][:, mask], x[i][:, mask]).all()  # inside: noise
    with pytest.raises(TypeError, match="normalised"):
        random_erasing(_uint8_batch())


def test_random_erasing_rate():
    x = torch.zeros(400, 3, 16, 16)
    _, boxes = random_erasing(x, p=0.25, generator=_gen(8), return_boxes=True)
    rate = (boxes[:, 2] > 0).float().mean().item()
    assert abs(rate - 0.25) < 0.07


# ------------------------------------------------------------------ labels, losses


def test_smooth_one_hot_values():
    y = torch.tensor([0, 3, 9])
    t = smooth_one_hot(y, 10, smoothing=0.1)
    assert t.shape == (3, 10)
    torch.testing.assert_close(t.sum(1), torch.ones(3), atol=1e-7, rtol=0)
    assert t[1, 3].item() == pytest.approx(1 - 0.1 + 0.01, abs=1e-7)
    assert t[1, 0].item() == pytest.approx(0.01, abs=1e-7)
    assert torch.equal(smooth_one_hot(y, 10), F.one_hot(y, 10).float())
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        smooth_one_hot(torch.tensor([10]), 10)


def test_soft_target_cross_entropy_matches_torch():
    logits = torch.randn(6, 7, generator=_gen(9))
    y = torch.tensor([0, 1, 2, 3, 4, 6])
    for eps in (0.0, 0.1, 0.3):
        ours = SoftTargetCrossEntropy()(logits, smooth_one_hot(y, 7, smoothing=eps))
        ref = F.cross_entropy(logits, y, label_smoothing=eps)
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, y), F.cross_entropy(logits, y), atol=1e-7, rtol=0
    )
    with pytest.raises(ValueError, match="same shape"):
        soft_target_cross_entropy(logits, torch.zeros(6, 5))


# ------------------------------------------------------------------ mixup / cutmix


def test_mixup_weights_and_targets():
    x = torch.rand(6, 3, 8, 8, generator=_gen(10))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    r = mixup_cutmix(x, y, num_classes=10, mixup_alpha=0.8, cutmix_alpha=0.0, generator=_gen(11))
    lam = r.lam
    assert 0.0 < lam < 1.0 and not r.cutmix and r.box is None
    torch.testing.assert_close(r.images, lam * x + (1 - lam) * x.flip(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.targets.sum(1), torch.ones(6), atol=1e-6, rtol=0)
    on, off = 1 - 0.1 + 0.01, 0.01
    for i in range(6):
        j = 5 - i  # partner in the flipped batch
        assert r.targets[i, y[i]].item() == pytest.approx(lam * on + (1 - lam) * off, abs=1e-6)
        assert r.targets[i, y[j]].item() == pytest.approx((1 - lam) * on + lam * off, abs=1e-6)
        assert r.targets[i, 9].item() == pytest.approx(off, abs=1e-7)


def test_cutmix_lambda_is_pasted_area():
    b, h, w = 4, 20, 30
    # constant images with distinct values: a pasted pixel always differs from the original
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, h, w).clone()
    y = torch.tensor([0, 1, 2, 3])
    seen = 0
    for seed in range(20):
        r = mixup_cutmix(
            x, y, num_classes=4, mixup_alpha=0.0, cutmix_alpha=1.0, generator=_gen(seed)
        )
        assert r.cutmix or r.lam == 1.0
        pasted = int((r.images != x)[0, 0].sum()) / (h * w)
        assert r.lam == pytest.approx(1.0 - pasted, abs=1e-12)
        if r.box is not None:
            yl, yh, xl, xh = r.box
            assert r.lam == pytest.approx(1 - (yh - yl) * (xh - xl) / (h * w), abs=1e-12)
            assert torch.all(r.images[0, :, yl:yh, xl:xh] == x[-1, :, yl:yh, xl:xh])
            seen += 1
        t = smooth_one_hot(y, 4, smoothing=0.1)
        torch.testing.assert_close(
            r.targets, r.lam * t + (1 - r.lam) * t.flip(0), atol=1e-6, rtol=0
        )
    assert seen > 10


def test_mix_switch_and_prob():
    x = torch.rand(4, 3, 16, 16, generator=_gen(12))
    y = torch.tensor([0, 1, 2, 3])
    modes = [
        mixup_cutmix(x, y, num_classes=4, switch_prob=1.0, generator=_gen(s)).cutmix
        for s in range(10)
    ]
    assert all(modes)
    modes = [
        mixup_cutmix(x, y, num_classes=4, switch_prob=0.0, generator=_gen(s)).cutmix
        for s in range(10)
    ]
    assert not any(modes)
    r = mixup_cutmix(x, y, num_classes=4, prob=0.0, generator=_gen(0))
    assert r.lam == 1.0 and torch.equal(r.images, x)
    torch.testing.assert_close(r.targets, smooth_one_hot(y, 4, smoothing=0.1))


def test_mixup_lambda_distribution_beta():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.tensor([0, 1])
    lams = [
        mixup_cutmix(x, y, num_classes=2, cutmix_alpha=0.0, mixup_alpha=0.8, generator=_gen(s)).lam
        for s in range(400)
    ]
    # Beta(0.8, 0.8) has mean 1/2 and variance 1 / (4 (2 * 0.8 + 1)) = 0.0962
    assert abs(np.mean(lams) - 0.5) < 0.05
    assert abs(np.var(lams) - 1 / (4 * 2.6)) < 0.02


# ------------------------------------------------------------------ RandAugment


def test_rand_augment_ops_against_definitions():
    x = torch.rand(3, 3, 16, 16, generator=_gen(13))
    one = torch.ones(3)
    torch.testing.assert_close(_apply_op("invert", x, one, one), 1 - x)
    half = torch.full((3,), 0.5)
    sol = _apply_op("solarize", x, half, one)
    torch.testing.assert_close(sol, torch.where(x >= 0.5, 1 - x, x))
    bright = _apply_op("brightness", x, one, one)  # factor 1 + 0.9
    torch.testing.assert_close(bright, (1.9 * x).clamp(0, 1), atol=1e-6, rtol=0)
    dark = _apply_op("brightness", x, one, -one)  # factor 1 - 0.9
    torch.testing.assert_close(dark, 0.1 * x, atol=1e-6, rtol=0)
    post = _apply_op("posterize", x, torch.zeros(3), one)  # 4 bits kept
    torch.testing.assert_close(post, torch.floor(torch.round(x * 255) / 16) * 16 / 255)
    zero = torch.zeros(3)
    for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        torch.testing.assert_close(_apply_op(name, x, zero, one), x, atol=1e-5, rtol=0)
    for name in ("color", "contrast", "sharpness"):  # factor 1 is the identity
        torch.testing.assert_close(_apply_op(name, x, zero, one), x, atol=1e-6, rtol=0)


def test_translate_by_whole_pixels():
    x = torch.rand(1, 3, 10, 20, generator=_gen(14))
    mag = torch.tensor([4.0 / (0.45 * 20)])  # 4 pixels
    out = _apply_op("translate_x", x, mag, torch.ones(1), fill=(0.2, 0.3, 0.4))
    torch.testing.assert_close(out[..., :16], x[..., 4:], atol=1e-5, rtol=0)
    fill = torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1).expand(1, 3, 10, 4)
    torch.testing.assert_close(out[..., 16:], fill, atol=1e-6, rtol=0)


def test_pil_equivalence():
    image_mod = pytest.importorskip("PIL.Image")
    enhance = pytest.importorskip("PIL.ImageEnhance")
    ops = pytest.importorskip("PIL.ImageOps")
    rng = np.random.default_rng(0)
    arr = (rng.random((20, 24, 3)) ** 2 * 200 + 20).astype(np.uint8)
    pil = image_mod.fromarray(arr)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0

    def to_u8(t: torch.Tensor) -> np.ndarray:
        return torch.round(t[0] * 255).permute(1, 2, 0).numpy().astype(np.int64)

    eq = to_u8(_apply_op("equalize", x, torch.ones(1), torch.ones(1)))
    assert np.array_equal(eq, np.asarray(ops.equalize(pil), dtype=np.int64))
    ac = to_u8(_apply_op("auto_contrast", x, torch.ones(1), torch.ones(1)))
    assert np.abs(ac - np.asarray(ops.autocontrast(pil), dtype=np.int64)).max() <= 1
    m = torch.tensor([0.5])
    sharp = to_u8(_apply_op("sharpness", x, m, torch.ones(1)))  # factor 1.45
    ref = np.asarray(enhance.Sharpness(pil).enhance(1.45), dtype=np.int64)
    assert np.abs(sharp - ref).max() <= 1
    color = to_u8(_apply_op("color", x, m, -torch.ones(1)))  # factor 0.55
    ref = np.asarray(enhance.Color(pil).enhance(0.55), dtype=np.int64)
    assert np.abs(color - ref).max() <= 2


def test_geometric_ops_match_pil():
    image_mod = pytest.importorskip("PIL.Image")
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    arr = gaussian_filter(rng.random((21, 21, 3)) * 255, (2, 2, 0)).astype(np.uint8)
    pil = image_mod.fromarray(arr)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0
    fill = (124, 116, 104)
    bil = image_mod.Resampling.BILINEAR
    f, c = 0.27, -0.27 * 21 / 2  # shear about the image centre
    refs = {
        "rotate": pil.rotate(27, resample=bil, fillcolor=fill),
        "shear_x": pil.transform(
            pil.size, image_mod.AFFINE, (1, f, c, 0, 1, 0), bil, fillcolor=fill
        ),
        "shear_y": pil.transform(
            pil.size, image_mod.AFFINE, (1, 0, 0, f, 1, c), bil, fillcolor=fill
        ),
    }
    for name, ref in refs.items():
        out = _apply_op(name, x, torch.tensor([0.9]), torch.ones(1))
        got = torch.round(out[0] * 255).permute(1, 2, 0).numpy()
        diff = np.abs(got - np.asarray(ref, dtype=np.float64))[5:16, 5:16]
        assert diff.max() <= 1, name


def test_rand_augment_batch_properties():
    x = _uint8_batch(8, 16, 16)
    a = rand_augment(x, generator=_gen(15))
    b = rand_augment(x, generator=_gen(15))
    c = rand_augment(x, generator=_gen(16))
    assert a.shape == (8, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(rand_augment(x, num_ops=0), to_float(x))
    torch.testing.assert_close(rand_augment(x, prob=0.0, generator=_gen(1)), to_float(x))
    with pytest.raises(ValueError, match="backend"):
        rand_augment(x, backend="pil")
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(x, magnitude=11)
    assert len(RAND_AUGMENT_OPS) == 15


def test_rand_augment_kornia_backend_seeded():
    pytest.importorskip("kornia")
    x = _uint8_batch(4, 16, 16)
    state = torch.random.get_rng_state()
    a = rand_augment(x, backend="kornia", generator=_gen(17), groups=2)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG left alone
    b = rand_augment(x, backend="kornia", generator=_gen(17), groups=2)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


# ------------------------------------------------------------------ transforms


def test_train_transform_outputs_and_determinism():
    cfg = AugmentConfig(image_size=16, num_classes=5)
    tt = TrainTransform(cfg)
    x = _uint8_batch(6, 24, 24)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    xa, ta = tt(x, y, generator=_gen(18))
    xb, tb = tt(x, y, generator=_gen(18))
    xc, _ = tt(x, y, generator=_gen(19))
    assert xa.shape == (6, 3, 16, 16) and ta.shape == (6, 5)
    assert xa.dtype == torch.float32 and torch.isfinite(xa).all()
    assert torch.equal(xa, xb) and torch.equal(ta, tb) and not torch.equal(xa, xc)
    torch.testing.assert_close(ta.sum(1), torch.ones(6), atol=1e-6, rtol=0)
    assert ta.min() >= 0.1 / 5 - 1e-7  # label smoothing floor


def test_train_transform_without_mixing_or_crop():
    cfg = AugmentConfig(
        image_size=8,
        num_classes=3,
        random_resized_crop=False,
        hflip=0.0,
        rand_augment_ops=0,
        random_erasing=0.0,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        label_smoothing=0.0,
    )
    x = _uint8_batch(2, 8, 8)
    y = torch.tensor([2, 0])
    out, t = TrainTransform(cfg)(x, y)
    torch.testing.assert_close(out, normalize(x))
    assert torch.equal(t, F.one_hot(y, 3).float())
    with pytest.raises(ValueError, match="8 x 8"):
        TrainTransform(cfg)(_uint8_batch(2, 9, 9), y)
    flip_all = TrainTransform(dataclasses.replace(cfg, hflip=1.0))
    xf = to_float(x)
    before = xf.clone()
    out, _ = flip_all(xf, y)
    torch.testing.assert_close(out, normalize(x.flip(-1)))
    assert torch.equal(xf, before)  # the caller's tensor is not modified


def test_augment_config_validation():
    with pytest.raises(ValueError, match="hflip"):
        AugmentConfig(image_size=8, num_classes=2, hflip=1.5)
    with pytest.raises(ValueError, match="rand_augment_backend"):
        AugmentConfig(image_size=8, num_classes=2, rand_augment_backend="x")
    with pytest.raises(ValueError, match="num_classes"):
        AugmentConfig(image_size=8, num_classes=0)
    light = AugmentConfig.light(32, 10)
    assert light.random_erasing == 0.0 and light.scale == (0.35, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        light.image_size = 3  # type: ignore[misc]


def test_eval_transform_exact_and_deterministic():
    ev = EvalTransform(224, crop_pct=0.875)
    x = _uint8_batch(2, 256, 256)  # shorter side already floor(224 / 0.875) = 256
    out = ev(x)
    torch.testing.assert_close(out, normalize(x[:, :, 16:240, 16:240]))
    assert torch.equal(out, ev(x))
    small = _uint8_batch(2, 8, 8)
    torch.testing.assert_close(EvalTransform(8)(small), normalize(small))  # only normalised
    wide = _uint8_batch(1, 10, 30)
    torch.testing.assert_close(
        EvalTransform(10, crop_pct=1.0)(wide), normalize(wide[:, :, :, 10:20])
    )
    resized = EvalTransform(16)(_uint8_batch(2, 40, 50))
    assert resized.shape == (2, 3, 16, 16) and torch.isfinite(resized).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_transform_cuda_matches_seed():
    cfg = AugmentConfig(image_size=32, num_classes=10)
    x = _uint8_batch(8, 40, 40).cuda()
    y = torch.arange(8).cuda()
    a, ta = TrainTransform(cfg)(x, y, generator=_gen(1))
    b, tb = TrainTransform(cfg)(x, y, generator=_gen(1))
    assert a.is_cuda and torch.equal(a, b) and torch.equal(ta, tb)
    assert math.isclose(float(ta.sum()), 8.0, rel_tol=1e-5)


def test_train_transform_runs_on_one_cpu_thread(monkeypatch):
    """On the CPU the transform runs under ``cpu_threads`` intra-op threads (default 1;
    torch's default of one per core stalled on a busy machine), restores the caller's
    count, and gives the same values whatever the count."""
    import scalespace_mk.training.augment as aug

    seen = []
    real = aug.normalize

    def spy(x, **kw):
        seen.append(torch.get_num_threads())
        return real(x, **kw)

    monkeypatch.setattr(aug, "normalize", spy)
    cfg = aug.AugmentConfig(image_size=16, num_classes=5, random_resized_crop=False)
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    y = torch.randint(0, 5, (6,))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        one = aug.TrainTransform(cfg)(x, y, generator=torch.Generator().manual_seed(1))
        assert seen == [1] and torch.get_num_threads() == 2
        keep = aug.TrainTransform(cfg, cpu_threads=None)
        other = keep(x, y, generator=torch.Generator().manual_seed(1))
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], other[0]) and torch.equal(one[1], other[1])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="cpu_threads"):
            aug.TrainTransform(cfg, cpu_threads=bad)
