"""The substitution study on tiny networks: measures, bootstrap, recovery, the study itself."""

from __future__ import annotations

import copy
import importlib.util
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from scalespace_mk.substitution import measures as ms
from scalespace_mk.substitution import recovery as rc


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 1),
        nn.BatchNorm2d(6),
        nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 7),
    )


@dataclass
class _Layer:
    name: str
    index: int
    kernel_size: int = 3
    stride: tuple = (1, 1)
    channels: int = 6
    r2: np.ndarray = field(default_factory=lambda: np.ones(6))

    @property
    def median_r2(self) -> float:
        return float(np.median(self.r2))


@dataclass
class _Report:
    layers: list
    skipped: list = field(default_factory=list)

    @property
    def names(self):
        return [layer.name for layer in self.layers]

    @property
    def median_r2(self):
        return float(np.median(np.concatenate([layer.r2 for layer in self.layers])))


def fake_substitute(model, kind, *, layers=None, seed=0, **options):
    """'same': filters unchanged; 'random': i.i.d. filters (frozen parameters) per seed."""
    out = copy.deepcopy(model)
    rows = []
    for i, name in enumerate(["2", "5"]):
        conv = out.get_submodule(name)
        if kind == "random":
            g = torch.Generator().manual_seed(1000 * seed + i)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        rows.append(_Layer(name, i, r2=np.ones(6) if kind == "same" else np.zeros(6)))
    return out, _Report(rows)


def images(n=12, seed=0, size=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


# ---------------------------------------------------------------- measures


def test_network_agrees_with_itself():
    net = tiny_net().eval()
    x = images()
    photo = torch.arange(12) // 3
    ref = ms.predict(net, x)
    agree = ms.compare(ref, ms.predict(net, x), photo, n_boot=200)
    assert agree.top1.value == agree.top1.low == agree.top1.high == 1.0
    assert agree.top5.value == 1.0
    assert agree.kl.value == pytest.approx(0.0, abs=1e-12)
    assert agree.crops == 12 and agree.photos == 4


def test_measures_by_hand():
    ref = torch.tensor([[2.0, 1.0, 0.0, -1.0, -2.0, -3.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    sub = torch.tensor([[2.0, 1.0, 0.0, -1.0, -2.0, -3.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    per = ms.crop_measures(ref, sub)
    assert per["top1"].tolist() == [1.0, 0.0]
    # top-5 of ref row 2: classes 1..5; of sub row 2: classes 0..4 -> 4 shared
    assert per["top5"].tolist() == [1.0, 0.8]
    p = np.exp(ref[1].double().numpy()) / np.exp(ref[1].double().numpy()).sum()
    q = np.exp(sub[1].double().numpy()) / np.exp(sub[1].double().numpy()).sum()
    assert per["kl"][0].item() == pytest.approx(0.0, abs=1e-12)
    assert per["kl"][1].item() == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-12)
    labels = torch.tensor([0, 0])
    agree = ms.compare(ref, sub, torch.tensor([0, 1]), labels, n_boot=200)
    assert agree.accuracy.value == 1.0 and agree.accuracy_original.value == 0.5


def test_bootstrap_resamples_photos_not_crops():
    # photo 0: three crops worth 1; photo 1: one crop worth 0 -> mean 3/4; a replicate is
    # 1 (photo 0 twice), 0 (photo 1 twice) or 3/4, each extreme with probability 1/4
    values, photo = np.array([1.0, 1.0, 1.0, 0.0]), np.array([5, 5, 5, 9])
    est = ms.bootstrap_over_photos(values, photo, n_boot=4000, seed=1)
    assert est.value == 0.75 and est.low == 0.0 and est.high == 1.0
    # crops resampled independently would rarely reach 0; one photo per crop is that case
    one_each = ms.bootstrap_over_photos(values, np.arange(4), n_boot=4000, seed=1)
    assert one_each.low > 0.0
    same = ms.bootstrap_over_photos(np.full(6, 0.3), np.arange(6) // 2, n_boot=100)
    assert same.low == pytest.approx(0.3) and same.high == pytest.approx(0.3)
    with pytest.raises(ValueError, match="n_boot"):
        ms.bootstrap_over_photos(values, photo, n_boot=10)
    with pytest.raises(ValueError, match="finite"):
        ms.bootstrap_over_photos([np.nan, 1.0], [0, 1])


def test_mix_layers_and_layer_views():
    net = tiny_net().eval()
    sub, report = fake_substitute(net, "random", seed=0)
    x, photo = images(), torch.arange(12) // 3
    torch.testing.assert_close(ms.predict(ms.mix_layers(net, sub, []), x), ms.predict(net, x))
    torch.testing.assert_close(
        ms.predict(ms.mix_layers(net, sub, ["2.weight", "5"]), x), ms.predict(sub, x)
    )
    with pytest.raises(ValueError, match="nope"):
        ms.mix_layers(net, sub, ["nope"])
    sens = ms.layer_sensitivity(net, sub, report.names, x, photo, n_boot=200)
    assert [row["name"] for row in sens] == ["2", "5"]
    ref = ms.predict(net, x)
    one = ms.compare(ref, ms.predict(ms.mix_layers(net, sub, ["5"]), x), photo, n_boot=200)
    assert sens[1]["kl"]["value"] == pytest.approx(one.kl.value)
    first = ms.progressive(net, sub, report.names, x, photo, order="first", n_boot=200)
    last = ms.progressive(net, sub, report.names, x, photo, order="last", n_boot=200)
    assert [r["n"] for r in first] == [0, 1, 2]
    assert first[0]["top1_agreement"]["value"] == 1.0 and first[0]["kl"]["value"] == 0.0
    assert first[2]["kl"]["value"] == pytest.approx(last[2]["kl"]["value"])
    assert first[1]["kl"]["value"] == pytest.approx(sens[0]["kl"]["value"])
    assert last[1]["kl"]["value"] == pytest.approx(sens[1]["kl"]["value"])


# ---------------------------------------------------------------- recovery


def test_batchnorm_re_estimation_matches_the_batch_statistics():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5)).eval()
    net[1].momentum = 0.3
    x = images(10)
    rc.recalibrate_batchnorm(net, x, batch_size=64)
    h = net[0](x).detach()
    torch.testing.assert_close(net[1].running_mean, h.mean((0, 2, 3)))
    torch.testing.assert_close(net[1].running_var, h.var((0, 2, 3), unbiased=True))
    assert net[1].momentum == 0.3 and not net.training and not net[1].training
    # equal batches: the cumulative average of batch means is the overall mean
    rc.recalibrate_batchnorm(net, x, batch_size=5)
    torch.testing.assert_close(net[1].running_mean, h.mean((0, 2, 3)))
    assert int(net[1].num_batches_tracked) == 2
    plain = nn.Linear(2, 2)
    assert rc.recalibrate_batchnorm(plain, x) is plain


def test_distillation_trains_all_but_the_substituted_filters():
    teacher = tiny_net(0).eval()
    student, report = fake_substitute(teacher, "random", seed=1)
    train, frozen = rc.split_parameters(student, report.names)
    assert frozen == ["2.weight", "5.weight"]
    assert "0.weight" in train and "9.weight" in train and "1.weight" in train
    x, ev = images(16, seed=0), images(12, seed=1)
    photo = torch.arange(12) // 3
    trained, result = rc.distill(
        student,
        teacher,
        x,
        steps=40,
        substituted=report.names,
        seed=0,
        lr=1e-2,
        batch_size=8,
        eval_images=ev,
        eval_photo=photo,
        eval_at=[20],
        n_boot=200,
    )
    assert [s for s, _ in result.curve] == [0, 20, 40]
    torch.testing.assert_close(trained[2].weight, student[2].weight)
    torch.testing.assert_close(trained[5].weight, student[5].weight)
    assert not torch.equal(trained[0].weight, student[0].weight)
    assert not torch.equal(trained[9].weight, student[9].weight)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert result.curve[-1][1].kl.value < result.curve[0][1].kl.value
    d = result.to_dict()
    assert d["frozen_tensors"] == 2 and len(d["curve"]) == 3
    # the input networks are untouched and trainable again
    assert all(p.requires_grad for p in student.parameters())
    # same seed, same result
    again, _ = rc.distill(
        student, teacher, x, steps=40, substituted=report.names, seed=0, lr=1e-2, batch_size=8
    )
    torch.testing.assert_close(again[0].weight, trained[0].weight)
    with pytest.raises(ValueError, match="steps"):
        rc.distill(student, teacher, x, steps=-1)


def test_zero_steps_change_nothing():
    teacher = tiny_net(0).eval()
    student, report = fake_substitute(teacher, "random")
    out, result = rc.distill(student, teacher, images(), steps=0, substituted=report.names)
    for a, b in zip(out.state_dict().values(), student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert result.losses == []


# ---------------------------------------------------------------- the study


class _Photos:
    def __init__(self):
        from scalespace_mk.training.photos import CropSet

        self.calibration = CropSet(images(16, 0), torch.arange(16) // 4, None, [None] * 4)
        self.evaluation = CropSet(images(12, 1), torch.arange(12) // 3, None, [None] * 4)

    def manifest(self):
        return {"photos": []}


def test_study_identity_agrees_and_controls_do_not():
    from scalespace_mk.substitution.study import StudyConfig, run_study, summary_rows

    lines: list[str] = []
    cfg = StudyConfig(
        kinds=("same", "random"),
        seeds=(0, 1),
        distill_steps=6,
        distill_eval=(3,),
        distill_batch=8,
        n_boot=200,
        progressive_counts=(1,),
    )
    study = run_study(tiny_net(0), _Photos(), cfg, substitute=fake_substitute, log=lines.append)
    same, rand = study["kinds"]
    assert same["seeded"] is False and rand["seeded"] is True
    assert len(rand["runs"]) == 2  # a fresh draw per seed
    assert rand["runs"][0]["direct"]["kl"] != rand["runs"][1]["direct"]["kl"]
    assert same["runs"][0]["direct"] == same["runs"][1]["direct"]  # one network
    assert same["runs"][0]["direct"]["top1_agreement"]["value"] == 1.0
    assert same["runs"][0]["direct"]["kl"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert [s["name"] for s in same["sensitivity"]] == ["2", "5"]
    assert same["sensitivity"][0]["median_r2"] == 1.0
    assert [r["n"] for r in same["progressive"]["first"]] == [0, 1, 2]
    assert [p["step"] for p in same["runs"][1]["distilled"]["curve"]] == [0, 3, 6]
    assert rand["runs"][0]["direct"]["kl"]["value"] > 0
    rows = summary_rows(study)
    assert rows[0]["direct"]["value"] == 1.0 and rows[0]["distilled"]["n"] == 2
    assert any("distill" in line for line in lines)
    import json

    json.dumps(study, allow_nan=False)


@pytest.mark.skipif(
    importlib.util.find_spec("scalespace_mk.networks.substitute") is None,
    reason="substitute_depthwise not merged yet",
)
def test_study_with_the_real_substitution():
    from scalespace_mk.substitution.study import StudyConfig, run_study

    cfg = StudyConfig(
        kinds=("census", "noise", "random"),
        seeds=(0, 1),
        n_boot=200,
        sensitivity=False,
        progressive=False,
    )
    study = run_study(tiny_net(0), _Photos(), cfg)
    kinds = {k["kind"]: k for k in study["kinds"]}
    assert kinds["random"]["seeded"] and len(kinds["random"]["runs"]) == 2
    r = [run["direct"]["kl"]["value"] for run in kinds["random"]["runs"]]
    assert r[0] != r[1]  # a fresh draw per seed
    assert all(math.isfinite(v) for v in r)


def test_predict_makes_no_graph_and_returns_cpu_logits():
    net = tiny_net()
    x = torch.randn(5, 3, 8, 8)
    logits = ms.predict(net, x, batch_size=2)
    assert not logits.requires_grad and logits.device.type == "cpu"
    assert logits.dtype == torch.float64 and logits.shape == (5, 7)
    with torch.no_grad():
        np.testing.assert_allclose(logits.numpy(), net.eval()(x).double().numpy(), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the network on the GPU)")
def test_predict_cuda_network_on_cpu_crops():
    net = tiny_net()
    x = torch.randn(9, 3, 16, 16)
    cpu = ms.predict(copy.deepcopy(net), x, batch_size=4)
    gpu = ms.predict(copy.deepcopy(net).cuda(), x, batch_size=4)  # crops stay on the CPU
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
