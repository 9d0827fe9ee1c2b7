"""Photo sets (training/photos.py): sources, checksums, the split by photo, crops."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from scalespace_mk.training import photos as ph

PIL = pytest.importorskip("PIL.Image")


def _write(path, seed, size=(40, 30)):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr).save(path)
    return arr


@pytest.fixture
def folder(tmp_path):
    for i in range(6):
        _write(tmp_path / "pics" / f"p{i}.png", i)
    (tmp_path / "pics" / "notes.txt").write_text("not an image")
    return tmp_path / "pics"


def test_folder_photos_have_checksums_and_sizes(folder):
    photos, classes = ph.find_photos(f"folder:{folder}", licence="CC0")
    assert classes is None
    assert [p.name for p in photos] == [f"folder:p{i}.png" for i in range(6)]
    for p in photos:
        assert p.sha256 == hashlib.sha256(Path(p.path).read_bytes()).hexdigest()
        assert (p.width, p.height) == (40, 30)
        assert p.licence == "CC0" and p.source == "folder" and p.label is None
    # a plain folder path works too, and duplicates (same bytes) are dropped
    again, _ = ph.find_photos([str(folder), f"folder:{folder}"])
    assert [p.sha256 for p in again] == [p.sha256 for p in photos]


def test_split_is_by_photo_deterministic_and_order_free(folder):
    photos, _ = ph.find_photos(str(folder))
    calib, evaluation = ph.split_photos(photos, eval_fraction=0.5, seed=3)
    assert len(calib) == 3 and len(evaluation) == 3
    assert not {p.sha256 for p in calib} & {p.sha256 for p in evaluation}
    calib2, eval2 = ph.split_photos(photos[::-1], eval_fraction=0.5, seed=3)
    assert [p.name for p in eval2] == [p.name for p in evaluation]
    # the rule, recomputed independently
    key = {p.name: hashlib.sha256(f"3:{p.sha256}".encode()).hexdigest() for p in photos}
    assert sorted(p.name for p in evaluation) == sorted(sorted(key, key=key.get)[:3])
    with pytest.raises(ValueError, match="eval_fraction"):
        ph.split_photos(photos, eval_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        ph.split_photos(photos[:1])


def test_crops_are_exact_resized_boxes(tmp_path):
    arr = _write(tmp_path / "a" / "x.png", 0, size=(64, 32))
    photos, _ = ph.find_photos(str(tmp_path / "a"))
    crops = ph.make_crops(photos, size=16, scales=(1.0, 0.5), grid=2)
    assert len(crops) == 1 + 4 and crops.num_photos == 1
    assert crops.photo.tolist() == [0] * 5 and crops.labels is None
    # the centred full-height square, resized by Pillow, then normalised
    box = (16, 0, 48, 32)
    want = np.array(PIL.fromarray(arr).resize((16, 16), PIL.Resampling.BICUBIC, box=box))
    mean = torch.tensor(ph.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(ph.IMAGENET_STD).view(3, 1, 1)
    want = (torch.from_numpy(want).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(crops.images[0], want)
    # the grid spans the photo: first crop at the top-left corner, last at bottom-right
    tl = np.array(PIL.fromarray(arr).resize((16, 16), PIL.Resampling.BICUBIC, box=(0, 0, 16, 16)))
    tl = (torch.from_numpy(tl).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(crops.images[1], tl)
    again = ph.make_crops(photos, size=16, scales=(1.0, 0.5), grid=2)
    assert torch.equal(again.images, crops.images)
    with pytest.raises(ValueError, match="crop size"):
        ph.make_crops(photos, size=4)
    with pytest.raises(ValueError, match="scales"):
        ph.make_crops(photos, scales=(1.5,))


def test_labelled_folder_gives_labels_and_centre_crops(tmp_path):
    for c, cls in enumerate(["n001", "n002"]):
        for i in range(2):
            _write(tmp_path / "lab" / cls / f"{i}.png", 10 * c + i)
    ps = ph.build_photo_set(f"imagenet:{tmp_path / 'lab'}", size=8, eval_fraction=0.5)
    assert ps.classes == ["n001", "n002"]
    for crops in (ps.calibration, ps.evaluation):
        assert len(crops) == crops.num_photos  # one centre crop per photo
        assert crops.labels.tolist() == [p.label for p in crops.photos]
    m = ps.manifest()
    assert m["settings"]["centre"] is True and m["classes"] == 2
    assert {p["split"] for p in m["photos"]} == {"calibration", "evaluation"}
    assert sum(p["crops"] for p in m["photos"]) == 4
    with pytest.raises(ValueError, match="mixed"):
        _write(tmp_path / "other" / "z.png", 99)
        ph.find_photos(f"imagenet:{tmp_path / 'lab'},folder:{tmp_path / 'other'}")


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        ph.find_photos("nope")
    with pytest.raises(ValueError, match="does not exist"):
        ph.find_photos(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found no photographs"):
        ph.build_photo_set(f"folder:{tmp_path / 'empty'}")


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image absent")
def test_builtin_photos_are_colour_and_recorded():
    photos, _ = ph.find_photos("skimage")
    names = {p.name for p in photos}
    assert {"skimage:chelsea", "skimage:astronaut"} <= names
    assert all(p.licence and len(p.sha256) == 64 for p in photos)
    ps = ph.build_photo_set("skimage", size=16, scales=(1.0,), grid=1)
    assert len(ps.calibration) + len(ps.evaluation) == len(photos)
