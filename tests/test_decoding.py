"""Decode-time crops (scalespace_mk.training.decoding): rows-limited JPEG decoding is exact,
draft decoding changes values by about a grey level and never the box, the one-box sampler
draws the batched sampler's boxes, and every fallback gives the same crops."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

Image = pytest.importorskip("PIL.Image")

import scalespace_mk.training.decoding as dec  # noqa: E402
from scalespace_mk.training.augment import (  # noqa: E402
    sample_resized_crop_box,
    sample_resized_crop_boxes,
)
from scalespace_mk.training.datasets import ImageFolderDataset, build_dataset  # noqa: E402

needs_arrow = pytest.mark.skipif(
    dec._block_bytes() == 0, reason="rows-limited decoding needs Pillow >= 11.2 (Arrow export)"
)
#: the JPEG decoders of decode_crop that this machine has
DECODERS = [
    "pillow",
    pytest.param(
        "simplejpeg",
        marks=pytest.mark.skipif(
            not dec.simplejpeg_available(), reason="simplejpeg is not installed"
        ),
    ),
]


def _photo(height: int, width: int, *, noise: float, seed: int = 0) -> np.ndarray:
    """A smooth synthetic 'photo': one slanted sinusoid per channel plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    arr = np.stack(
        [np.sin(2 * np.pi * (1.5 + c) * xx + 2 * np.pi * (c + 0.5) * yy) for c in range(3)], -1
    )
    return (127.5 + 90 * arr + rng.normal(0, noise, arr.shape)).clip(0, 255).astype(np.uint8)


def _jpeg(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, quality=90, **kw)
    return path


def _full(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@needs_arrow
@pytest.mark.parametrize("kw", [{}, {"progressive": True}, {"subsampling": 0}])
def test_rows_limited_decode_is_bit_identical(tmp_path, kw):
    """Decoding rows [0, r) gives the full decode's first r rows exactly (baseline 4:2:0,
    progressive, 4:4:4); the rows below are left undecoded (zero)."""
    path = _jpeg(tmp_path / "p.jpg", _photo(90, 120, noise=10), **kw)
    full = _full(path)
    for rows in (1, 7, 8, 17, 45, 89):
        with Image.open(path) as img:
            assert dec._load_rows(img, rows) is True
            view, keep = dec._pixels_view(img)
            assert keep is not None and view.shape == (90, 120, 4)
            assert np.array_equal(view[:rows, :, :3], full[:rows]), rows
            assert not view[rows:].any()
    with Image.open(path) as img:  # all rows: a plain decode
        assert dec._load_rows(img, 90) is False
        assert np.array_equal(np.asarray(img), full)


@needs_arrow
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("train", [True, False])
def test_decode_crop_equals_crop_of_full_decode(tmp_path, train, decoder):
    """Without draft, the loader's crop is the crop of the fully decoded image, bit for bit
    (either decoder)."""
    path = _jpeg(tmp_path / "p.jpg", _photo(150, 200, noise=12))
    img = Image.fromarray(_full(path))
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        got = dec.decode_crop(
            str(path), 48, train=train, generator=gen, draft=False, decoder=decoder
        )
        if train:
            box = sample_resized_crop_box(150, 200, generator=torch.Generator().manual_seed(seed))
        else:
            box = dec._center_box(200, 150, 48, 0.875)
        want = dec._resize_box(img, tuple(float(v) for v in box), 48)
        assert got.dtype == torch.uint8 and got.shape == (3, 48, 48)
        assert torch.equal(got, want), seed


@needs_arrow
@pytest.mark.parametrize("decoder", DECODERS)
def test_damage_below_the_crop_is_not_read_above_it_is_reported(tmp_path, decoder):
    """A file cut short: a crop in the intact top rows decodes to the intact file's crop; a
    crop that needs the missing rows raises OSError (and the dataset with strict=True raises
    CorruptImageError), as a full decode does. simplejpeg refuses the file and hands it, with
    the box already drawn, to Pillow: the same outcome."""
    from scalespace_mk.training.datasets import CorruptImageError

    arr = _photo(160, 160, noise=12)
    whole = _jpeg(tmp_path / "whole.jpg", arr)
    data = whole.read_bytes()
    cut = tmp_path / "d" / "a" / "cut.jpg"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(data[: len(data) // 2])
    seed = next(  # a seed whose box lies in the first quarter of the rows (certainly intact)
        k
        for k in range(500)
        if sum(
            sample_resized_crop_box(
                160,
                160,
                scale=(0.01, 0.01),
                ratio=(1, 1),
                generator=torch.Generator().manual_seed(k),
            )[1::2]
        )
        <= 40
    )
    box = sample_resized_crop_box(
        160, 160, scale=(0.01, 0.01), ratio=(1, 1), generator=torch.Generator().manual_seed(seed)
    )
    top = dec.decode_crop(
        str(cut),
        16,
        train=True,
        scale=(0.01, 0.01),
        ratio=(1, 1),
        generator=torch.Generator().manual_seed(seed),
        draft=False,
        decoder=decoder,
    )
    want = dec._resize_box(Image.fromarray(_full(whole)), tuple(map(float, box)), 16)
    assert torch.equal(top, want)
    with Image.open(cut) as img:
        assert dec._load_rows(img, 40) is True
        assert np.array_equal(dec._pixels_view(img)[0][:40, :, :3], _full(whole)[:40])
    with pytest.raises(OSError):
        dec.decode_crop(str(cut), 16, train=False, crop_pct=1.0, decoder=decoder)
    ds = ImageFolderDataset(
        tmp_path / "d", image_size=16, train=False, strict=True, decoder=decoder
    )
    with pytest.raises(CorruptImageError, match="cut.jpg"):
        ds[0]


@needs_arrow
def test_fallbacks_give_the_same_crops(tmp_path, monkeypatch):
    """Images that cannot take rows-limited decoding (above one Pillow memory block) and
    decodes whose rows cannot be checked (no Arrow view) are decoded whole: same crops."""
    path = _jpeg(tmp_path / "p.jpg", _photo(120, 160, noise=12))

    def crops():
        return [
            dec.decode_crop(
                str(path),
                40,
                train=True,
                generator=torch.Generator().manual_seed(s),
                decoder="pillow",
            )
            for s in range(6)
        ]

    fast = crops()
    stopped_early: list[bool] = []  # per decode: whether it stopped above the last row
    real = dec._load_rows

    def spy(img, rows):
        stopped_early.append(real(img, rows))
        return stopped_early[-1]

    monkeypatch.setattr(dec, "_load_rows", spy)
    assert all(torch.equal(a, b) for a, b in zip(fast, crops(), strict=True))
    # some crops were decoded rows-limited, so the fallbacks below take another path
    assert any(stopped_early)
    monkeypatch.setattr(dec, "_load_rows", real)
    monkeypatch.setattr(dec, "_block_bytes", lambda: 0)
    assert all(torch.equal(a, b) for a, b in zip(fast, crops(), strict=True))
    monkeypatch.undo()
    monkeypatch.setattr(dec, "_pixels_view", lambda rgb: (np.array(rgb), None))
    assert all(torch.equal(a, b) for a, b in zip(fast, crops(), strict=True))


def test_draft_scale_keeps_the_crop_at_least_the_output_side():
    for side, size in itertools.product(range(1, 600, 7), (1, 16, 64, 224)):
        s = dec.draft_scale(side, size)
        assert s in (1, 2, 4, 8)
        assert side / s >= size or s == 1
        assert s == 8 or side / (2 * s) < size  # the largest such scale


@needs_arrow
def test_draft_crop_is_close_to_full_decode_and_keeps_the_box(tmp_path, monkeypatch):
    """Draft decoding (DCT-domain 1/2, 1/4, 1/8) on a smooth photo with mild noise: the same
    box (mapped x -> x / s into the reduced image), the same size and dtype, and pixel values
    within a mean absolute difference of 1 grey level (measured 0.26-0.47) and 8 at most
    (measured 4) of the full decode + bicubic crop."""
    path = _jpeg(tmp_path / "big.jpg", _photo(600, 800, noise=4))
    seen: list[tuple[float, ...]] = []
    real = dec._resize_box
    monkeypatch.setattr(
        dec, "_resize_box", lambda rgb, box, size: seen.append(box) or real(rgb, box, size)
    )
    scales, diffs = [], []
    for seed in range(16):
        # Pillow for both (simplejpeg never drafts: its full decode would bypass the spy)
        kw = {"train": True, "scale": (0.3, 1.0), "decoder": "pillow"}
        a = dec.decode_crop(
            str(path), 64, generator=torch.Generator().manual_seed(seed), draft=True, **kw
        )
        b = dec.decode_crop(
            str(path), 64, generator=torch.Generator().manual_seed(seed), draft=False, **kw
        )
        box_draft, box_full = seen[-2], seen[-1]
        s = box_full[2] / box_draft[2]
        assert s == dec.draft_scale(min(box_full[2:]), 64)
        assert all(abs(u * s - v) < 1e-9 for u, v in zip(box_draft, box_full, strict=True))
        assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape == (3, 64, 64)
        d = (a.int() - b.int()).abs()
        scales.append(s)
        diffs.append((d.float().mean().item(), d.max().item()))
    assert len(set(scales) - {1}) >= 2  # the draft path ran, at several scales
    drafted = [d for d, s in zip(diffs, scales, strict=True) if s > 1]
    assert max(m for m, _ in drafted) < 1.0 and max(x for _, x in drafted) <= 8, drafted
    assert any(m > 0 for m, _ in drafted)  # and it does change values


def test_draft_geometry_on_an_edge(tmp_path):
    """A vertical black/white edge lands on the same output column with and without draft."""
    arr = np.zeros((600, 800, 3), np.uint8)
    arr[:, 400:] = 255
    path = _jpeg(tmp_path / "edge.jpg", arr)
    for crop_pct in (1.0, 0.75):
        out = [
            dec.decode_crop(str(path), 30, train=False, crop_pct=crop_pct, draft=d).float()
            for d in (True, False)
        ]
        cols = [o.mean(dim=(0, 1)) for o in out]
        edge = [int(torch.argmax((c > 127.5).int())) for c in cols]
        assert edge[0] == edge[1] == 15
        assert (out[0] - out[1]).abs().mean() < 3.0


def test_draft_defaults_and_validation(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        _jpeg(root / split / "a" / "x.jpg", _photo(40, 60, noise=2))
    tr, _ = build_dataset(str(root), split="train", image_size=8)
    va, _ = build_dataset(str(root), split="val", image_size=8)
    assert tr.draft is True and va.draft is False
    off, _ = build_dataset(str(root), split="train", image_size=8, draft=False)
    assert off.draft is False
    with pytest.raises(TypeError, match="draft"):
        ImageFolderDataset(root / "train", image_size=8, draft="yes")


@needs_arrow
def test_evaluation_crop_does_not_depend_on_draft_by_default(tmp_path):
    """Evaluation (draft off by default) of a large JPEG is the full-decode centre crop."""
    path = _jpeg(tmp_path / "big.jpg", _photo(600, 800, noise=6))
    got = dec.decode_crop(str(path), 32, train=False)
    want = dec._resize_box(Image.fromarray(_full(path)), dec._center_box(800, 600, 32, 0.875), 32)
    assert torch.equal(got, want)
    # asked for, evaluation is drafted too (the 525 px centre crop at 1/8): close, not equal
    (tmp_path / "val" / "a").mkdir(parents=True)
    path.rename(tmp_path / "val" / "a" / "big.jpg")
    drafted = ImageFolderDataset(tmp_path / "val", image_size=32, draft=True)[0][0]
    d = (drafted.int() - want.int()).abs().float()
    assert not torch.equal(drafted, want) and d.mean() < 1.0 and d.max() <= 8


def test_one_box_sampler_draws_the_batched_boxes():
    """sample_resized_crop_box equals sample_resized_crop_boxes(1, ...)[0] for the same
    generator state, over sizes where the tries succeed and where the fallback is taken."""
    sizes = [(375, 500), (500, 375), (7, 300), (300, 7), (1, 1), (60, 80)]
    params = [((0.08, 1.0), (3 / 4, 4 / 3)), ((1.0, 1.0), (0.1, 10.0)), ((0.9, 1.0), (2.0, 3.0))]
    for (h, w), (scale, ratio) in itertools.product(sizes, params):
        for seed in range(60):
            a = sample_resized_crop_boxes(
                1, h, w, scale=scale, ratio=ratio, generator=torch.Generator().manual_seed(seed)
            )[0]
            b = sample_resized_crop_box(
                h, w, scale=scale, ratio=ratio, generator=torch.Generator().manual_seed(seed)
            )
            assert tuple(int(v) for v in a.tolist()) == b and all(isinstance(v, int) for v in b)


def test_one_box_sampler_is_the_random_resized_crop_distribution():
    """Control against a direct computation of the same draws in float64 numpy."""
    gen = torch.Generator().manual_seed(11)
    boxes = np.array([sample_resized_crop_box(375, 500, generator=gen) for _ in range(3000)])
    left, top, w, h = boxes.T
    assert (left >= 0).all() and (top >= 0).all()
    assert (left + w <= 500).all() and (top + h <= 375).all()
    frac = w * h / (375 * 500)
    # area fraction ~ U(0.08, 1) among accepted tries (mean 0.54 before rejection of boxes
    # that do not fit, which removes large ones): the mean lies in (0.4, 0.55)
    assert 0.4 < frac.mean() < 0.55
    assert 0.7 < (w / h).min() and (w / h).max() < 1.45


def test_jpeg_in_memory_has_one_tile():
    """The premise of rows-limited decoding: Pillow reads a JPEG as one 'jpeg' tile."""
    buf = io.BytesIO()
    Image.fromarray(_photo(20, 30, noise=1)).save(buf, "JPEG")
    buf.seek(0)
    with Image.open(buf) as img:
        assert len(img.tile) == 1 and img.tile[0][0] == "jpeg" and img.mode == "RGB"


# --------------------------------------------------------------------------------------------
# simplejpeg, the default JPEG decoder where installed
# --------------------------------------------------------------------------------------------

needs_simplejpeg = pytest.mark.skipif(
    not dec.simplejpeg_available(), reason="simplejpeg is not installed"
)


def _crops(path: Path, decoder: str, *, size: int = 32, seeds: int = 8, **kw):
    """Training crops of seeds 0..seeds-1 and the centre crop, with the generators' states
    after each draw."""
    out = []
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        crop = dec.decode_crop(str(path), size, train=True, generator=gen, decoder=decoder, **kw)
        out.append((crop, gen.get_state()))
    out.append((dec.decode_crop(str(path), size, train=False, decoder=decoder, **kw), None))
    return out


def _same(a, b) -> None:
    for (x, gx), (y, gy) in zip(a, b, strict=True):
        assert torch.equal(x, y)
        assert (gx is None and gy is None) or torch.equal(gx, gy)


@needs_simplejpeg
@pytest.mark.parametrize(
    "kind", ["baseline", "444", "progressive", "grey", "large-drafted", "odd-size"]
)
def test_simplejpeg_gives_pillows_crops_and_draws(tmp_path, kind, monkeypatch):
    """simplejpeg and Pillow (both libjpeg-turbo, same settings) give the same crops, bit for
    bit, and draw the same boxes from the generator (its state afterwards is equal), for
    4:2:0, 4:4:4, progressive, greyscale JPEGs and a large one whose crops are drafted (handed
    to Pillow after the box is drawn)."""
    shape, kw = {"large-drafted": (600, 800), "odd-size": (61, 97)}.get(kind, (90, 130)), {}
    arr = _photo(*shape, noise=10)
    if kind == "grey":
        arr = arr[..., 0]
    kw = {"444": {"subsampling": 0}, "progressive": {"progressive": True}}.get(kind, {})
    path = _jpeg(tmp_path / "p.jpg", arr, **kw)
    opts = {"scale": (0.3, 1.0)} if kind == "large-drafted" else {}
    calls = _spy_simplejpeg(monkeypatch)
    _same(_crops(path, "simplejpeg", **opts), _crops(path, "pillow", **opts))
    # every kind has crops that simplejpeg decodes (the centre crop at least)
    assert calls.count("decode_jpeg") >= 1


def _spy_simplejpeg(monkeypatch) -> list[str]:
    """Record the names of the simplejpeg functions called."""
    import simplejpeg

    calls: list[str] = []
    for name in ("decode_jpeg", "decode_jpeg_header"):
        real = getattr(simplejpeg, name)
        monkeypatch.setattr(
            simplejpeg,
            name,
            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k),
        )
    return calls


@needs_simplejpeg
def test_crops_in_the_upper_half_go_to_pillows_rows_limited_decode(tmp_path, monkeypatch):
    """A crop that ends above half the image's rows is decoded by Pillow down to its last
    row (cheaper than simplejpeg's full decode); one that ends lower by simplejpeg; the crops
    are the full decode's either way."""
    path = _jpeg(tmp_path / "p.jpg", _photo(200, 200, noise=8))
    img = Image.fromarray(_full(path))
    calls = _spy_simplejpeg(monkeypatch)
    seen = {True: 0, False: 0}
    for seed in range(40):
        box = sample_resized_crop_box(200, 200, generator=torch.Generator().manual_seed(seed))
        calls.clear()
        got = dec.decode_crop(
            str(path), 24, train=True, generator=torch.Generator().manual_seed(seed), draft=False
        )
        upper = box[1] + box[3] < dec._SJ_ROWS * 200
        assert ("decode_jpeg" in calls) is not upper, (seed, box)
        assert torch.equal(got, dec._resize_box(img, tuple(map(float, box)), 24))
        seen[upper] += 1
    assert min(seen.values()) >= 3  # both ways were taken


@needs_simplejpeg
def test_simplejpeg_hands_what_it_does_not_take_to_pillow(tmp_path, monkeypatch):
    """CMYK JPEGs and PNGs never reach simplejpeg; a JPEG with a recoverable defect ("corrupt
    JPEG data: extraneous bytes", which simplejpeg's strict mode refuses) is decoded by Pillow
    with the box already drawn: the crops and draws are Pillow's in every case."""
    import simplejpeg

    arr = _photo(70, 90, noise=8)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(arr).convert("CMYK").save(cmyk, quality=90)
    png = tmp_path / "p.png"
    Image.fromarray(arr).save(png)
    good = _jpeg(tmp_path / "good.jpg", arr).read_bytes()
    junk = tmp_path / "junk.jpg"
    sos = good.index(b"\xff\xda")
    junk.write_bytes(good[:sos] + b"\x00\x13\x37" + good[sos:])  # bytes before a marker
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(junk.read_bytes())
    calls = _spy_simplejpeg(monkeypatch)
    for path, reaches in ((cmyk, {"decode_jpeg_header"}), (png, set()), (junk, None)):
        calls.clear()
        _same(_crops(path, "simplejpeg", seeds=3), _crops(path, "pillow", seeds=3))
        if reaches is not None:
            assert set(calls) == reaches, path.name
        else:  # refused at the header or at the decode, never decoded by simplejpeg
            assert "decode_jpeg_header" in calls, path.name


@needs_simplejpeg
def test_simplejpeg_limits_and_errors(tmp_path, monkeypatch):
    """max_pixels is checked from the header before decoding; above Pillow's decompression
    bomb limit the file goes to Pillow, which warns (naming the file); a truncated file raises
    as with Pillow; the decoder option is validated."""
    path = _jpeg(tmp_path / "p.jpg", _photo(40, 50, noise=4))
    with pytest.raises(ValueError, match="max_pixels"):
        dec.decode_crop(str(path), 8, train=False, max_pixels=1999, decoder="simplejpeg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(RuntimeWarning, match="p.jpg"):
        dec.decode_crop(str(path), 8, train=False, decoder="simplejpeg")
    monkeypatch.undo()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:300])
    for decoder in ("simplejpeg", "pillow"):
        with pytest.raises(OSError):
            dec.decode_crop(str(cut), 8, train=False, crop_pct=1.0, decoder=decoder)
    with pytest.raises(ValueError, match="decoder"):
        ImageFolderDataset(tmp_path, image_size=8, decoder="turbo")
    with pytest.raises(ValueError, match="decoder"):
        dec.decode_crop(str(path), 8, train=False, decoder="turbo")


def test_decoder_without_simplejpeg(tmp_path, monkeypatch):
    """Without simplejpeg, 'auto' decodes with Pillow and 'simplejpeg' says how to install it."""
    (tmp_path / "a").mkdir()
    path = _jpeg(tmp_path / "a" / "p.jpg", _photo(40, 50, noise=4))
    want = _crops(path, "pillow", seeds=2)
    monkeypatch.setattr(dec, "_SJ", False)
    assert not dec.simplejpeg_available()
    _same(_crops(path, "auto", seeds=2), want)
    with pytest.raises(ImportError, match="pip install simplejpeg"):
        ImageFolderDataset(tmp_path, image_size=8, decoder="simplejpeg")
