"""Tests of scalespace_mk.training.datasets (no network: every file is written into tmp_path)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from scalespace_mk.training import datasets as dsm
from scalespace_mk.training.datasets import (
    BUILTIN_PHOTOS,
    CIFAR_ARCHIVES,
    BuiltinPatchDataset,
    CorruptImageError,
    DatasetSpec,
    EpochSampler,
    build_dataset,
    build_loader,
    load_cifar_pickle,
    parse_dataset_spec,
)

Image = pytest.importorskip("PIL.Image")

COLOURS = {"ant": (200, 10, 10), "bee": (10, 200, 10), "cat": (10, 10, 200)}


def _write_folder(root: Path, *, sizes=((40, 30), (30, 50), (64, 64))) -> Path:
    """root/{train,val}/<class>/ with uniformly coloured PNG images of several sizes."""
    for split in ("train", "val"):
        for name, colour in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for k, (w, h) in enumerate(sizes):
                Image.new("RGB", (w, h), colour).save(d / f"img{k}.png")
            (d / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------ spec grammar


def test_parse_spec_grammar():
    assert parse_dataset_spec("imagenet:/data/in1k") == DatasetSpec("folder", "/data/in1k")
    assert parse_dataset_spec("/data/in1k") == DatasetSpec("folder", "/data/in1k")
    assert parse_dataset_spec("folder:rel/dir").path == "rel/dir"
    assert parse_dataset_spec("cifar10:/x") == DatasetSpec("cifar10", "/x")
    assert parse_dataset_spec("CIFAR100:") == DatasetSpec("cifar100", None)
    assert parse_dataset_spec("builtin") == DatasetSpec("builtin", None, {})
    b = parse_dataset_spec("builtin:train=100,val=20,patch=16,classes=4,seed=3")
    assert b.options == {"train": 100, "val": 20, "patch": 16, "classes": 4, "seed": 3}
    s = parse_dataset_spec("synthetic:64,classes=5")
    assert s.kind == "synthetic" and s.options == {"n": 64, "classes": 5}
    assert parse_dataset_spec(r"C:\data\imagenet").kind == "folder"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "non-empty"),
        ("builtin:size=3", "not understood"),
        ("builtin:train=abc", "integer"),
        ("synthetic:x", "sample count"),
        ("imagenet:", "image folder"),
    ],
)
def test_parse_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_dataset_spec(spec)


# ------------------------------------------------------------------ image folders


def test_image_folder_train_and_val(tmp_path):
    root = _write_folder(tmp_path / "data")
    ds, k = build_dataset(str(root), split="val", image_size=16)
    assert k == 3 and ds.classes == ["ant", "bee", "cat"]
    assert len(ds) == 9 and not ds.crops_on_load
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.shape == (3, 16, 16) and img.dtype == torch.uint8
        colour = COLOURS[ds.classes[label]]
        assert torch.equal(
            img, torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand_as(img)
        )
    tr, k2 = build_dataset("imagenet:" + str(root), split="train", image_size=12, seed=1)
    assert k2 == 3 and tr.crops_on_load and len(tr) == 9
    again, _ = build_dataset("folder:" + str(root), split="train", image_size=12, seed=1)
    assert torch.equal(tr[4][0], again[4][0])  # seeded random crops in the main process
    assert tr[4][0].shape == (3, 12, 12)


def test_image_folder_val_centre_crop_values(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
    # left half black, right half white; the centre crop of a 40 x 20 image is columns 10..30
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 20:] = 255
    Image.fromarray(arr).save(root / "val" / "a" / "x.png")
    Image.fromarray(arr).save(root / "train" / "a" / "x.png")
    ds, _ = build_dataset(str(root), split="val", image_size=20, crop_pct=1.0)
    img = ds[0][0]
    assert torch.all(img[:, :, :9] == 0) and torch.all(img[:, :, 11:] == 255)


def test_jpeg_draft_keeps_crop_geometry(tmp_path):
    """Large JPEGs are decoded at reduced scale (draft mode); the crop box must follow."""
    root = tmp_path / "d"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
    arr = np.zeros((600, 800, 3), np.uint8)
    arr[:, 400:] = 255  # left half black, right half white
    Image.fromarray(arr).save(root / "val" / "a" / "x.jpg", quality=95)
    Image.fromarray(arr).save(root / "train" / "a" / "x.jpg", quality=95)
    ds, _ = build_dataset(str(root), split="val", image_size=30, crop_pct=1.0)
    img = ds[0][0].int()  # centre 600 x 600 crop: columns 100..700, edge at column 15 of 30
    assert img[:, :, :13].max() < 20 and img[:, :, 17:].min() > 235
    tr, _ = build_dataset(
        str(root), split="train", image_size=30, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    img = tr[0][0].int()  # the fallback crop is the same centre square
    assert img[:, :, :13].max() < 20 and img[:, :, 17:].min() > 235


def test_val_uses_training_classes(tmp_path):
    root = _write_folder(tmp_path / "d")
    import shutil

    shutil.rmtree(root / "val" / "ant")
    ds, k = build_dataset(str(root), split="val", image_size=8)
    assert k == 3 and ds.classes == ["ant", "bee", "cat"]
    assert sorted(set(ds.targets)) == [1, 2]


def test_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(str(tmp_path / "nope"), split="train", image_size=8)
    (tmp_path / "d" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val"):
        build_dataset(str(tmp_path / "d"), split="val", image_size=8)
    with pytest.raises(ValueError, match="no class sub-folders"):
        build_dataset(str(tmp_path / "d"), split="train", image_size=8)
    with pytest.raises(ValueError, match="split"):
        build_dataset(str(tmp_path / "d"), split="test", image_size=8)


def test_unreadable_files_are_skipped_with_one_warning(tmp_path):
    root = _write_folder(tmp_path / "d")
    (root / "train" / "bee" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "train" / "cat" / "empty.png").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="skipped 2 of 11") as record:
        ds, _ = build_dataset(str(root), split="train", image_size=8)
    assert len(record) == 1
    assert len(ds) == 9 and ds.num_skipped == 2
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        build_dataset(str(root), split="train", image_size=8, strict=True)


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])


def test_truncated_image_is_replaced_at_load_time(tmp_path):
    root = _write_folder(tmp_path / "d")
    _truncated_jpeg(root / "val" / "ant" / "img0a.png.jpg")
    ds, _ = build_dataset(str(root), split="val", image_size=8)  # header check passes
    assert len(ds) == 10
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith(".jpg")][0]
    with pytest.warns(RuntimeWarning, match="cannot decode"):
        img, label = ds[bad]
    assert torch.equal(img[:, 0, 0], torch.tensor(COLOURS[ds.classes[label]], dtype=torch.uint8))
    assert torch.equal(ds[bad][0], img)  # known-bad index: no second warning, same fallback
    strict, _ = build_dataset(str(root), split="val", image_size=8, strict=True)
    with pytest.raises(CorruptImageError, match=r"img0a\.png\.jpg"):
        strict[bad]


def test_corrupt_image_does_not_kill_workers(tmp_path):
    root = _write_folder(tmp_path / "d")
    _truncated_jpeg(root / "val" / "bee" / "zz.jpg")
    ds, _ = build_dataset(str(root), split="val", image_size=8)
    loader, _ = build_loader(ds, batch_size=4, shuffle=False, num_workers=2, seed=0)
    labels = torch.cat([y for _, y in loader])
    assert labels.shape == (10,)


# ------------------------------------------------------------------ CIFAR


def _write_cifar(root: Path, name: str, n_train: int = 6, n_test: int = 4) -> dict:
    info = CIFAR_ARCHIVES[name]
    folder = root / info.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    k = 10 if name == "cifar10" else 100
    written = {}
    per_file = {f: n_train for f in info.train_files} | {f: n_test for f in info.test_files}
    for fname, n in per_file.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, k, n)]
        batch = {
            b"batch_label": b"batch",
            b"data": data,
            info.label_key: labels,
            b"filenames": [b"f%d.png" % i for i in range(n)],
        }
        if name == "cifar100":
            batch[b"coarse_labels"] = [v // 5 for v in labels]
        with open(folder / fname, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)  # the official files are protocol-2 pickles
        written[fname] = (data, labels)
    names = [b"class%d" % i for i in range(k)]
    with open(folder / info.meta_file, "wb") as fh:
        pickle.dump({info.names_key: names}, fh, protocol=2)
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_pickles(tmp_path, name):
    written = _write_cifar(tmp_path, name)
    info = CIFAR_ARCHIVES[name]
    ds, k = build_dataset(f"{name}:{tmp_path}", split="train", image_size=32)
    assert k == (10 if name == "cifar10" else 100)
    assert len(ds) == 6 * len(info.train_files)
    data, labels = written[info.train_files[0]]
    img, label = ds[2]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
    assert torch.equal(img, torch.from_numpy(data[2].reshape(3, 32, 32)))
    assert label == labels[2]
    assert ds.classes[1] == "class1"
    val, _ = build_dataset(f"{name}:{tmp_path / info.folder}", split="val", image_size=16)
    assert len(val) == 4 and val[0][0].shape == (3, 16, 16)
    data, labels = written[info.test_files[0]]
    mean_in = data[0].reshape(3, 32, 32).astype(np.float64).mean()
    assert abs(val[0][0].double().mean().item() - mean_in) < 4  # resized, same content


def test_cifar_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_cifar"):
        build_dataset(f"cifar10:{tmp_path}", split="train", image_size=32)


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_restricted_unpickler_rejects_code(tmp_path):
    target = tmp_path / "pwned"
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({b"data": _Evil(str(target))}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle posix.mkdir|os"):
        load_cifar_pickle(bad)
    assert not target.exists()
    arr = tmp_path / "ok"
    arr.write_bytes(pickle.dumps({b"data": np.arange(6, dtype=np.uint8)}, protocol=4))
    assert np.array_equal(load_cifar_pickle(arr)[b"data"], np.arange(6))
    lst = tmp_path / "list"
    lst.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match="dict"):
        load_cifar_pickle(lst)


def test_cifar_archive_constants():
    c10, c100 = CIFAR_ARCHIVES["cifar10"], CIFAR_ARCHIVES["cifar100"]
    assert c10.md5 == "c58f30108f718f92721af3b95e74349a"
    assert c100.md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert c10.sha256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert c100.sha256 == "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
    assert c10.url.startswith("https://www.cs.toronto.edu/~kriz/")
    assert set(c10.member_md5) == {*c10.train_files, *c10.test_files, c10.meta_file}


def _tar_with(path: Path, members: dict[str, bytes], *, link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tar.addfile(ti, io.BytesIO(payload))
        if link is not None:
            ti = tarfile.TarInfo(link)
            ti.type = tarfile.SYMTYPE
            ti.linkname = "/etc/passwd"
            tar.addfile(ti)
    return path


@pytest.mark.parametrize(
    ("members", "link", "match"),
    [
        ({"../evil.txt": b"x"}, None, r"'\.\.'"),
        ({"/abs/evil.txt": b"x"}, None, "absolute"),
        ({"ok/a.txt": b"x"}, "ok/link", "link"),
    ],
)
def test_safe_extract_rejects_unsafe_members(tmp_path, members, link, match):
    archive = _tar_with(tmp_path / "a.tar.gz", members, link=link)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ValueError, match=match):
        dsm._safe_extract(archive, dest)
    assert list(dest.iterdir()) == []


def test_fetch_verified_checks_hashes(tmp_path, server):
    root, base, _ = server
    src = root / "src.bin"
    src.write_bytes(b"payload" * 1000)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "file.bin"
    with pytest.raises(ValueError, match="checksum mismatch"):
        dsm._fetch_verified(f"{base}/src.bin", dest, md5=md5, sha256="0" * 64, progress=False)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # temp file removed
    dsm._fetch_verified(f"{base}/src.bin", dest, md5=md5, sha256=sha, progress=False)
    assert dest.read_bytes() == src.read_bytes()


def test_download_cifar_offline_pipeline(tmp_path, monkeypatch, server):
    """download -> verify -> safe extract -> member md5, from a local HTTP server."""
    staging = tmp_path / "staging"
    _write_cifar(staging, "cifar10", n_train=2, n_test=2)
    folder = staging / "cifar-10-batches-py"
    archive = server[0] / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    blob = archive.read_bytes()
    fake = dsm.CifarArchive(
        **{
            **CIFAR_ARCHIVES["cifar10"].__dict__,
            "url": f"{server[1]}/cifar-10-python.tar.gz",
            "md5": hashlib.md5(blob).hexdigest(),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "size": len(blob),
            "member_md5": {
                p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()
            },
        }
    )
    monkeypatch.setitem(dsm.CIFAR_ARCHIVES, "cifar10", fake)
    root = tmp_path / "cache"
    out = dsm.download_cifar("cifar10", root, progress=False)
    assert out == root / "cifar-10-batches-py"
    ds, _ = build_dataset(f"cifar10:{root}", split="train", image_size=32)
    assert len(ds) == 10
    assert not [p for p in root.iterdir() if p.name.startswith(".extract-")]
    bad = dsm.CifarArchive(**{**fake.__dict__, "sha256": "1" * 64})
    monkeypatch.setitem(dsm.CIFAR_ARCHIVES, "cifar10", bad)
    with pytest.raises(ValueError, match="checksum mismatch"):
        dsm.download_cifar("cifar10", tmp_path / "other", progress=False)


# ------------------------------------------------------------------ builtin and synthetic


def test_builtin_task_deterministic_balanced_disjoint():
    tr = BuiltinPatchDataset(split="train", size=400, image_size=16, patch=16)
    va = BuiltinPatchDataset(split="val", size=200, image_size=16, patch=16)
    again = BuiltinPatchDataset(split="train", size=400, image_size=16, patch=16)
    assert tr.num_classes == len(BUILTIN_PHOTOS) == 10
    assert torch.equal(tr.positions, again.positions)
    assert torch.bincount(tr.targets).tolist() == [40] * 10
    for c, name in enumerate(tr.classes):
        photo = dsm._load_photo(name)
        cover = {}
        for split_ds in (tr, va):
            m = torch.zeros(photo.shape[1:], dtype=torch.bool)
            for r, col in split_ds.positions[split_ds.targets == c].tolist():
                m[r : r + 16, col : col + 16] = True
            cover[split_ds.split] = m
        assert not (cover["train"] & cover["val"]).any()  # no shared pixel
    img, label = va[7]
    r, col = va.positions[7].tolist()
    assert torch.equal(img, dsm._load_photo(va.classes[label])[:, r : r + 16, col : col + 16])


def test_builtin_spec_and_resize():
    ds, k = build_dataset("builtin:train=30,classes=3,patch=24", split="train", image_size=32)
    assert (len(ds), k) == (30, 3) and ds[0][0].shape == (3, 32, 32)
    val, _ = build_dataset("builtin:val=12", split="val", image_size=8)
    assert len(val) == 12 and val[3][0].dtype == torch.uint8
    with pytest.raises(ValueError, match="smaller patch"):
        BuiltinPatchDataset(split="val", size=4, image_size=100, patch=100)
    with pytest.raises(ValueError, match="classes"):
        BuiltinPatchDataset(split="val", size=4, image_size=8, classes=11)


def test_builtin_val_differs_from_train():
    tr = BuiltinPatchDataset(split="train", size=50, image_size=8, seed=0)
    va = BuiltinPatchDataset(split="val", size=50, image_size=8, seed=0)
    assert not torch.equal(tr.positions, va.positions)


def test_synthetic_dataset():
    ds, k = build_dataset("synthetic:20,classes=4", split="train", image_size=8)
    assert (len(ds), k) == (20, 4)
    a, la = ds[5]
    b, _ = ds[5]
    assert torch.equal(a, b) and la == 1 and a.dtype == torch.uint8
    val, _ = build_dataset("synthetic:20,classes=4", split="val", image_size=8)
    assert not torch.equal(val[5][0], a)
    with pytest.raises(IndexError):
        ds[20]


# ------------------------------------------------------------------ loaders


def test_loader_seeded_and_epochs():
    ds, _ = build_dataset("synthetic:40,classes=5", split="train", image_size=4)
    l1, s1 = build_loader(ds, batch_size=8, shuffle=True, seed=3)
    l2, s2 = build_loader(ds, batch_size=8, shuffle=True, seed=3)
    e0 = torch.cat([y for _, y in l1])
    assert torch.equal(e0, torch.cat([y for _, y in l2]))
    s1.set_epoch(1)
    e1 = torch.cat([y for _, y in l1])
    s2.set_epoch(1)
    assert torch.equal(e1, torch.cat([y for _, y in l2]))
    order0 = list(iter(EpochSampler(40, shuffle=True, seed=3)))
    assert sorted(order0) == list(range(40)) and order0 != list(range(40))
    s1.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in l1]), e0)
    lf, _ = build_loader(ds, batch_size=16, shuffle=False, drop_last=True)
    assert [len(y) for _, y in lf] == [16, 16]


def test_loader_distributed_partitions():
    ds, _ = build_dataset("synthetic:10", split="train", image_size=4)
    seen = []
    for rank in range(2):
        loader, sampler = build_loader(
            ds, batch_size=5, shuffle=True, distributed=True, rank=rank, world_size=2, seed=1
        )
        sampler.set_epoch(2)
        seen.append(list(iter(sampler)))
    assert len(seen[0]) == len(seen[1]) == 5
    assert sorted(seen[0] + seen[1]) == list(range(10))
    with pytest.raises(ValueError, match="process group"):
        build_loader(ds, batch_size=5, shuffle=True, distributed=True)


def test_loader_workers_match_main_process():
    ds, _ = build_dataset("builtin:train=24", split="train", image_size=8)
    l0, _ = build_loader(ds, batch_size=6, shuffle=True, seed=0, num_workers=0)
    l2, _ = build_loader(ds, batch_size=6, shuffle=True, seed=0, num_workers=2)
    for (x0, y0), (x2, y2) in zip(l0, l2, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_random_crops_keyed_by_epoch(tmp_path):
    """Decode-time crops depend on (seed, epoch, index) only: any worker count, resumable."""
    root = tmp_path / "d"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        for k in range(4):
            arr = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / "train" / name / f"{k}.png")
    ds5, _ = build_dataset(str(root), split="train", image_size=8, seed=5)
    ds6, _ = build_dataset(str(root), split="train", image_size=8, seed=6)

    def epoch(ds, workers: int, e: int) -> torch.Tensor:
        loader, sampler = build_loader(ds, batch_size=4, shuffle=True, num_workers=workers, seed=0)
        sampler.set_epoch(e)  # a fresh loader at epoch e = a resumed run
        return torch.cat([x for x, _ in loader])

    first = epoch(ds5, 0, 1)
    assert torch.equal(first, epoch(ds5, 2, 1))
    assert not torch.equal(first, epoch(ds5, 0, 0))
    assert not torch.equal(first, epoch(ds6, 0, 1))
    img, label = ds5[(3, 1)]
    assert torch.equal(img, ds5[(3, 1)][0]) and label == ds5.targets[3]


# ------------------------------------------------------------------ Fashion-MNIST (idx files)


def _idx_bytes(arr: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: magic 0x0000 08 ndim, big-endian sizes, data."""
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def _write_fashion(root: Path, *, n_train=6, n_val=4, gz=True) -> dict[str, np.ndarray]:
    import gzip

    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_val, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_val) * 3) % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        data = _idx_bytes(arr)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    arrays = _write_fashion(tmp_path, gz=gz)
    ds = dsm.FashionMNISTDataset(tmp_path, split="val", verify=False)
    assert len(ds) == 4 and ds.num_classes == 10 and ds.classes[9] == "Ankle boot"
    img, label = ds[2]
    assert img.dtype == torch.uint8 and img.shape == (3, 28, 28)
    for c in range(3):  # the grey level replicated to RGB, unchanged at 28 px
        np.testing.assert_array_equal(img[c].numpy(), arrays["t10k-images-idx3-ubyte"][2])
    assert label == 6
    small = dsm.FashionMNISTDataset(tmp_path, split="train", size=3, image_size=14, verify=False)
    assert len(small) == 3 and small[1][0].shape == (3, 14, 14) and small[1][1] == 1
    # a constant image stays constant through the resize
    const = dsm._resize_uint8(torch.full((1, 28, 28), 77, dtype=torch.uint8), 56)
    assert int(const.min()) == int(const.max()) == 77


def test_fashion_mnist_checksums_and_errors(tmp_path):
    _write_fashion(tmp_path)
    # the tiny files are not the published ones: the checksum check names the file and fix
    with pytest.raises(ValueError, match=r"train-images.*does not match.*reinstall"):
        build_dataset(f"fashion-mnist:{tmp_path}", split="train", image_size=28)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build_dataset(f"fashion-mnist:{tmp_path / 'absent'}", split="train", image_size=28)
    with pytest.raises(ValueError, match="size must be at most"):
        dsm.FashionMNISTDataset(tmp_path, split="val", size=5, verify=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    arrays = _write_fashion(bad, gz=False)
    data = _idx_bytes(arrays["t10k-images-idx3-ubyte"])
    (bad / "t10k-images-idx3-ubyte").write_bytes(data[:-5])  # truncated
    with pytest.raises(ValueError, match="truncated or damaged"):
        dsm.FashionMNISTDataset(bad, split="val", verify=False)
    (bad / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + data[4:])  # float idx
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        dsm.FashionMNISTDataset(bad, split="val", verify=False)


def test_fashion_mnist_checksums_are_those_of_the_files(tmp_path):
    """The sha256 the reader computes is that of the uncompressed idx bytes."""
    import gzip

    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data = _idx_bytes(arr)
    (tmp_path / "x.gz").write_bytes(gzip.compress(data))
    got, digest = dsm._read_idx(tmp_path / "x.gz")
    np.testing.assert_array_equal(got, arr)
    assert digest == hashlib.sha256(data).hexdigest()


def test_fashion_mnist_spec_grammar():
    assert parse_dataset_spec("fashion-mnist") == DatasetSpec("fashion-mnist", None, {})
    assert parse_dataset_spec("fashion-mnist:/d") == DatasetSpec("fashion-mnist", "/d", {})
    got = parse_dataset_spec("fashion-mnist:/d,train=100,val=20")
    assert got == DatasetSpec("fashion-mnist", "/d", {"train": 100, "val": 20})
    assert parse_dataset_spec("fashion-mnist:,val=5").options == {"val": 5}
    assert parse_dataset_spec("fashion-mnist:train=7") == DatasetSpec(
        "fashion-mnist", None, {"train": 7}
    )
    with pytest.raises(ValueError, match="fashion-mnist accepts train=INT, val=INT"):
        parse_dataset_spec("fashion-mnist:/d,patch=3")


@pytest.mark.skipif(
    not (dsm.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist is not installed",
)
def test_installed_fashion_mnist_verifies():
    ds, k = build_dataset("fashion-mnist:,val=50", split="val", image_size=28)
    assert (len(ds), k) == (50, 10)
    # the published test set starts with an ankle boot, a pullover and two trousers
    assert [ds[i][1] for i in range(4)] == [9, 2, 1, 1]


def test_resize_box_matches_pillow_bicubic():
    """The whole-pixel crop + resize (torch antialiased bicubic on uint8) equals Pillow's
    ``crop(box).resize(size, BICUBIC)`` (what torchvision's RandomResizedCrop computes) to
    within one grey level, for down- and upsampling; a fractional box goes through Pillow's
    ``resize(box=...)`` exactly."""
    from scalespace_mk.training.decoding import _resize_box

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:75, 0:100] / 100.0
    arr = np.stack([np.sin(6.28 * (k + 1) * xx + 3 * yy) for k in range(3)], -1)
    arr = (127.5 + 90 * arr + rng.normal(0, 10, arr.shape)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    cases = [((0, 0, 100, 75), 40), ((10, 5, 60, 60), 24), ((30, 20, 12, 16), 30)]
    cases += [((0, 30, 45, 45), 20), ((55, 0, 45, 75), 64)]
    for box, size in cases:
        left, top, w, h = box
        got = _resize_box(img, tuple(float(v) for v in box), size).numpy().astype(int)
        crop = img.crop((left, top, left + w, top + h))
        want = np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))
        diff = np.abs(got - want.transpose(2, 0, 1).astype(int))
        assert got.shape == (3, size, size)
        assert diff.max() <= 1 and diff.mean() < 0.3, (box, diff.mean(), diff.max())
    frac = (10.5, 5.25, 50.0, 40.0)
    got = _resize_box(img, frac, 16).numpy()
    want = np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC, box=(10.5, 5.25, 60.5, 45.25)))
    assert np.array_equal(got, want.transpose(2, 0, 1))
    # a box of the output size is cut, not resampled
    same = _resize_box(img, (7.0, 3.0, 16.0, 16.0), 16).numpy()
    assert np.array_equal(same, arr[3:19, 7:23].transpose(2, 0, 1))


def test_pixels_view_is_pillows_pixels(monkeypatch):
    """The zero-copy Arrow view of an RGB image holds its R, G, B values; the loader gives
    the same crops through it as through the copying fallback."""
    import scalespace_mk.training.decoding as dsm

    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    view, keep = dsm._pixels_view(img)
    assert view.shape[:2] == (37, 53) and np.array_equal(view[..., :3], arr)
    boxes = [((3.0, 4.0, 30.0, 25.0), 16), ((0.0, 0.0, 53.0, 37.0), 40), ((9.0, 2.0, 8.0, 8.0), 8)]
    fast = [dsm._resize_box(img, box, size) for box, size in boxes]
    monkeypatch.setattr(dsm, "_pixels_view", lambda rgb: (np.array(rgb), None))
    slow = [dsm._resize_box(img, box, size) for box, size in boxes]
    for a, b in zip(fast, slow, strict=True):
        assert a.shape == b.shape and a.is_contiguous() and torch.equal(a, b)
