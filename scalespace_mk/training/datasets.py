"""Image classification datasets and data loaders without torchvision.

Every dataset built here yields ``(image, label)`` pairs where ``image`` is a ``uint8`` tensor
of shape ``[3, image_size, image_size]`` (RGB, channels first, values 0..255) and ``label`` is
an ``int`` in ``[0, num_classes)``. Fixed-size ``uint8`` samples keep the loader cheap (four
times less memory traffic than float32) and let the heavy augmentation run batched on the
training device (:mod:`scalespace_mk.training.augment`).

Dataset specification strings
-----------------------------
:func:`build_dataset` takes one string ``spec``::

    spec     := "imagenet:" PATH | "folder:" PATH | PATH
              | "cifar10:" [PATH] | "cifar100:" [PATH]
              | "fashion-mnist" [":" [PATH] ["," OPTIONS]]
              | "builtin" [":" OPTIONS]
              | "synthetic:" N ["," OPTIONS]
    OPTIONS  := KEY "=" INT ("," KEY "=" INT)*

``imagenet:PATH``, ``folder:PATH`` or a bare ``PATH``
    An image folder ``PATH/train/<class>/*.JPEG`` and ``PATH/val/<class>/*`` (the layout of a
    prepared ImageNet-1k). Classes are the sorted sub-folder names of ``PATH/train``.
``cifar10:PATH`` and ``cifar100:PATH``
    The official python pickle batches, in ``PATH/cifar-10-batches-py`` (``data_batch_1`` ..
    ``data_batch_5``, ``test_batch``) or ``PATH/cifar-100-python`` (``train``, ``test``);
    ``PATH`` may also be that folder itself. Without ``PATH`` the cache folder
    ``$SCALESPACE_MK_DATA`` (default ``~/.cache/scalespace_mk/datasets``) is used. The ``val``
    split is the official test set.
``fashion-mnist[:PATH]``
    Fashion-MNIST (Zalando, MIT licence; 10 classes of 28 x 28 grey-level clothing photos)
    from the four standard idx files in ``PATH`` (default
    ``/usr/share/datasets/fashion-mnist``, where Debian's package ``dataset-fashion-mnist``
    installs them), gzipped or not; their content is checked against the published
    checksums (see :class:`FashionMNISTDataset`). ``val`` is the official test set. Options
    ``train`` and ``val`` keep the first N images of a split, e.g.
    ``fashion-mnist:,train=10000,val=2000``.
``builtin``
    An offline task cut from photographs bundled with scikit-image (see
    :class:`BuiltinPatchDataset`); options ``train``, ``val`` (sample counts), ``patch``
    (patch side in source pixels), ``classes`` (number of photographs used) and ``seed``, e.g.
    ``builtin:train=5000,val=1000,patch=32``.
``synthetic:N``
    ``N`` deterministic random images (see :class:`SyntheticDataset`), options ``classes``
    and ``seed``, e.g. ``synthetic:2048,classes=1000``. For throughput tests.

Notes
-----
Decoding needs Pillow (optional extra ``train``); the builtin task needs scikit-image. Neither
torchvision nor timm is used.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import shutil
import stat
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import scalespace_mk.limits as limits
from scalespace_mk._checks import check_choice
from scalespace_mk._io import download_verified
from scalespace_mk.training.decoding import (
    DECODERS,
    _center_box,  # noqa: F401 - the decoding helpers lived here before decoding.py
    _check_pixels,
    _in_worker,
    _pixels_view,  # noqa: F401
    _report_bombs,
    _require_pil,
    _resize_box,  # noqa: F401
    _simplejpeg,
    _to_rgb,
    _warn_once_safe,
    decode_crop,
)

_decode_resized = decode_crop  # the name before decoding.py

__all__ = [
    "BUILTIN_PHOTOS",
    "CIFAR_ARCHIVES",
    "IMAGE_EXTENSIONS",
    "image_classes",
    "BuiltinPatchDataset",
    "CIFARDataset",
    "CifarArchive",
    "CorruptImageError",
    "DatasetSpec",
    "EpochSampler",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES",
    "FashionMNISTDataset",
    "ImageFolderDataset",
    "SyntheticDataset",
    "build_dataset",
    "build_loader",
    "default_data_root",
    "download_cifar",
    "load_cifar_pickle",
    "parse_dataset_spec",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
"""File name endings (compared in lower case) that :class:`ImageFolderDataset` loads."""

_SPLITS = ("train", "val")


class CorruptImageError(ValueError):
    """An image file that Pillow cannot open or decode (raised with ``strict=True``)."""


# --------------------------------------------------------------------------------------------
# spec parsing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset specification string (see the module docstring for the grammar).

    Attributes
    ----------
    kind : {'folder', 'cifar10', 'cifar100', 'fashion-mnist', 'builtin', 'synthetic'}
        The dataset family.
    path : str or None
        The data folder (``folder``, ``cifar10``, ``cifar100``, ``fashion-mnist``), ``None``
        otherwise or when omitted.
    options : dict of str to int
        ``key=value`` options (``fashion-mnist``, ``builtin``, ``synthetic``; ``synthetic``
        stores ``N`` as ``options['n']``).
    """

    kind: str
    path: str | None = None
    options: dict[str, int] = field(default_factory=dict)


_OPTION_KEYS = {
    "fashion-mnist": ("train", "val"),
    "builtin": ("train", "val", "patch", "classes", "seed"),
    "synthetic": ("n", "classes", "seed"),
}


def _parse_options(kind: str, text: str, spec: str) -> dict[str, int]:
    options: dict[str, int] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in _OPTION_KEYS[kind]:
            raise ValueError(
                f"spec {spec!r}: option {item!r} is not understood; {kind} accepts "
                f"{', '.join(k + '=INT' for k in _OPTION_KEYS[kind] if k != 'n')}"
            )
        try:
            options[key] = int(value)
        except ValueError:
            raise ValueError(
                f"spec {spec!r}: option {key} must be an integer; got {value!r}"
            ) from None
    return options


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse a dataset specification string.

    Parameters
    ----------
    spec : str
        See the grammar in the module docstring, e.g. ``'imagenet:/data/imagenet'``,
        ``'/data/imagenet'``, ``'cifar10:/data'``, ``'builtin:train=2000,val=500'``,
        ``'synthetic:1024'``.

    Returns
    -------
    DatasetSpec
        The dataset family, its path and its options.

    Raises
    ------
    ValueError
        On an empty spec, an unknown option or a malformed number.

    Examples
    --------
    >>> parse_dataset_spec("builtin:train=100,val=20")
    DatasetSpec(kind='builtin', path=None, options={'train': 100, 'val': 20})
    >>> parse_dataset_spec("synthetic:64,classes=5").options
    {'n': 64, 'classes': 5}
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            "spec must be a non-empty string such as 'imagenet:/path', 'cifar10:/path', "
            f"'builtin' or 'synthetic:1000'; got {spec!r}"
        )
    text = spec.strip()
    head, sep, rest = text.partition(":")
    head_l = head.lower()
    if head_l in ("imagenet", "folder") and sep:
        if not rest:
            raise ValueError(f"spec {spec!r}: give the image folder, e.g. 'imagenet:/data/in1k'")
        return DatasetSpec("folder", rest)
    if head_l in ("cifar10", "cifar100"):
        return DatasetSpec(head_l, rest or None)
    if head_l in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        items = rest.split(",")
        path = items[0].strip() if items and "=" not in items[0] else ""
        more = ",".join(items[1:] if path or (items and not items[0].strip()) else items)
        options = _parse_options("fashion-mnist", more, spec)
        return DatasetSpec("fashion-mnist", path or None, options)
    if head_l == "builtin":
        return DatasetSpec("builtin", None, _parse_options("builtin", rest, spec))
    if head_l == "synthetic":
        first, _, more = rest.partition(",")
        try:
            n = int(first)
        except ValueError:
            raise ValueError(
                f"spec {spec!r}: synthetic needs a sample count, e.g. 'synthetic:1000'"
            ) from None
        options = {"n": n, **_parse_options("synthetic", more, spec)}
        from scalespace_mk.limits import check_count

        check_count("synthetic samples", n, option=f"spec {spec!r}: the sample count N")
        if "classes" in options:
            check_count("classes", options["classes"], option=f"spec {spec!r}: classes")
        return DatasetSpec("synthetic", None, options)
    return DatasetSpec("folder", text)


def _mix_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends on ``(seed, epoch, index)`` (splitmix64-style mixing)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index)) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) >> 1


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------


def _image_files_under(folder: Path) -> tuple[list[str], list[str]]:
    """``(regular image files, non-regular files with image endings)`` under ``folder``,
    sorted, links followed; nothing is opened."""
    out, special = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for fname in sorted(filenames):
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(dirpath, fname)
                try:
                    regular = stat.S_ISREG(os.stat(path).st_mode)
                except OSError:  # a dangling link: let the verification report it
                    regular = True
                (out if regular else special).append(path)
    return out, special


def image_classes(root: str | os.PathLike[str]) -> list[str]:
    """The class folders of ``root``: sub-folders holding at least one image file (regular
    file with an ending in :data:`IMAGE_EXTENSIONS`), sorted. Training and validation both
    use this list, so a folder of GIFs only is dropped from both, before the first step."""
    found = sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=True))
    return [name for name in found if _image_files_under(Path(root) / name)[0]]


class ImageFolderDataset(Dataset):
    """Images in ``root/<class>/...`` decoded with Pillow, without torchvision.

    Parameters
    ----------
    root : str or path
        Folder with one sub-folder per class (searched recursively, following links).
    image_size : int
        Output side in pixels (>= 1).
    train : bool, default False
        ``True``: random resized crop on decode (``scale``, ``ratio``, bicubic, as timm's
        ``RandomResizedCropAndInterpolation``); ``False``: resize the shorter side to
        ``image_size / crop_pct`` and centre-crop.
    classes : sequence of str, optional
        Class names in label order. Default: the sorted sub-folder names of ``root``. Pass the
        training classes when building a validation set so that labels agree.
    crop_pct : float, default 0.875
        Centre-crop fraction for evaluation, in (0, 1].
    scale : (float, float), default (0.08, 1.0)
        Area fraction range of the random crop.
    ratio : (float, float), default (3/4, 4/3)
        Aspect ratio (width / height) range of the random crop.
    verify : {'header', 'full', 'none'}, default 'header'
        Check at construction: ``'header'`` opens every file (reads its header only),
        ``'full'`` decodes every file, ``'none'`` trusts the list. Unreadable files are
        dropped with one warning that gives the count (or, with ``strict``, raise).
    strict : bool, default False
        Raise :class:`CorruptImageError` naming the file instead of skipping it.
    max_pixels : int or None, default :data:`scalespace_mk.limits.IMAGE_PIXELS_MAX`
        Largest image (width x height) decoded; larger files are treated like corrupt ones
        (checked from the header, before decoding). None: no cap beyond Pillow's own.
    seed : int, default 0
        Seed of the random crops. Through :func:`build_loader` (whose sampler yields
        ``(index, epoch)`` keys) the crop of a sample depends only on ``(seed, epoch, index)``:
        the same for any number of workers and after a resume. Plain integer indexing uses
        a generator seeded with ``seed`` (main process) or torch's per-worker RNG.
    progress : bool, default False
        Show a tqdm bar while verifying.
    draft : bool, optional
        Let JPEGs whose crop is at least twice ``image_size`` on its shorter side be decoded
        at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg's draft mode; far cheaper on large
        photos). The crop box is the same; pixel values differ slightly from a full decode
        (about one grey level on average on smooth photos). Default: ``train`` (on for
        training crops, off for evaluation, whose output then does not depend on how large
        the file is). See :mod:`scalespace_mk.training.decoding`.
    decoder : {'auto', 'pillow', 'simplejpeg'}, default 'auto'
        JPEG decoder at full scale: simplejpeg when installed (``'auto'``; the ``train``
        extra installs it; libjpeg-turbo without Pillow's per-file overhead, the same pixels
        here), else Pillow. Other formats, drafted decodes and files simplejpeg refuses are
        decoded by Pillow.

    Notes
    -----
    JPEGs that Pillow decodes are decoded only down to the crop's last row (bit-identical to
    a full decode).
    A file that passes the construction check but fails to decode later (e.g. truncated data)
    is replaced by the next readable sample, and the first such failure in each process is
    reported with one warning; a DataLoader worker never dies from a bad image unless
    ``strict``. ``num_skipped`` counts the files dropped at construction.
    """

    crops_on_load: bool
    wants_epoch = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int,
        train: bool = False,
        classes: Sequence[str] | None = None,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        verify: str = "header",
        strict: bool = False,
        seed: int = 0,
        progress: bool = False,
        max_pixels: int | None = limits.IMAGE_PIXELS_MAX,
        draft: bool | None = None,
        decoder: str = "auto",
    ) -> None:
        _require_pil()
        if draft is not None and not isinstance(draft, bool):
            raise TypeError(f"draft must be True, False or None (= train); got {draft!r}")
        check_choice("decoder", decoder, DECODERS)
        _simplejpeg(decoder)  # decoder='simplejpeg' without the package: ImportError now
        self.decoder = decoder
        if max_pixels is not None and (
            isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1
        ):
            raise ValueError(f"max_pixels must be a positive integer or None; got {max_pixels!r}")
        self.max_pixels = max_pixels
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
        self.image_size = _check_positive_int("image_size", image_size)
        if not (0.0 < float(crop_pct) <= 1.0):
            raise ValueError(f"crop_pct must lie in (0, 1]; got {crop_pct!r}")
        self.crop_pct = float(crop_pct)
        self.scale = _check_range("scale", scale, low=0.0, high=1.0)
        self.ratio = _check_range("ratio", ratio, low=0.0, high=math.inf)
        check_choice("verify", verify, ("header", "full", "none"))
        self.train = bool(train)
        self.draft = self.train if draft is None else draft
        self.crops_on_load = self.train
        self.strict = bool(strict)
        found = sorted(
            entry.name for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=True)
        )
        files = {name: self._image_files(name) for name in found}
        empty = [name for name in found if not files[name]]
        if empty:  # a folder without images is not a class (its label would never occur)
            warnings.warn(
                f"ignored {len(empty)} class folder(s) under {str(self.root)!r} that hold no "
                f"image files ({', '.join(IMAGE_EXTENSIONS)}): {empty[:5]}",
                RuntimeWarning,
                stacklevel=2,
            )
            found = [name for name in found if files[name]]
        if classes is None:
            classes = found
        self.classes = list(classes)
        if not self.classes:
            raise ValueError(
                f"image folder {str(self.root)!r} has no class sub-folders; expected "
                "root/<class>/<image files>"
            )
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(
                f"image folder {str(self.root)!r} has class folders that are not among the "
                f"{len(self.classes)} given classes: {unknown[:5]}"
            )
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        samples: list[tuple[str, int]] = []
        for name in found:
            label = self.class_to_idx[name]
            samples.extend((path, label) for path in files[name])
        self.skipped_files: list[str] = []
        if verify != "none":
            samples = self._verify(samples, full=(verify == "full"), progress=progress)
        if not samples:
            raise ValueError(
                f"image folder {str(self.root)!r} holds no readable image files with endings "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._failed: set[int] = set()

    def _image_files(self, name: str) -> list[str]:
        """The image files under ``root/name``, sorted (links followed); only regular files.

        A FIFO, socket or device with an image ending is never opened (reading it could
        block for ever): it is skipped with a warning, or refused with ``strict``.
        """
        out, special = _image_files_under(self.root / name)
        if special:
            message = (
                f"{len(special)} file(s) with image endings under {str(self.root / name)!r} "
                f"are not regular files (FIFO, socket or device; first: {special[0]!r})"
            )
            if self.strict:
                raise CorruptImageError(f"{message}; remove them (--strict-data)")
            warnings.warn(f"skipped {message}", RuntimeWarning, stacklevel=3)
        return out

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def num_skipped(self) -> int:
        """Number of files dropped at construction because Pillow could not read them."""
        return len(self.skipped_files)

    def _verify(
        self, samples: list[tuple[str, int]], *, full: bool, progress: bool
    ) -> list[tuple[str, int]]:
        from tqdm.auto import tqdm

        Image = _require_pil()
        kept: list[tuple[str, int]] = []
        disable = not progress or not sys.stderr.isatty()
        for path, label in tqdm(samples, desc="verify images", disable=disable):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    with Image.open(path) as img:
                        _check_pixels(img, path, self.max_pixels)
                        if full:
                            _to_rgb(img)
                _report_bombs(caught, path)
            except Exception as exc:
                if self.strict:
                    raise CorruptImageError(f"cannot read image file {path!r}: {exc}") from exc
                self.skipped_files.append(path)
                continue
            kept.append((path, label))
        if self.skipped_files:
            warnings.warn(
                f"skipped {len(self.skipped_files)} of {len(samples)} image files under "
                f"{str(self.root)!r} that Pillow cannot read (first: "
                f"{self.skipped_files[0]!r}); pass strict=True to raise instead",
                RuntimeWarning,
                stacklevel=3,
            )
        return kept

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, epoch: int | None = None) -> torch.Tensor:
        """Decode sample ``index`` (no fallback); raises on an unreadable file.

        With ``epoch`` the random crop is a pure function of ``(seed, epoch, index)``;
        without it the crop uses the dataset's generator (main process) or torch's
        per-worker RNG (DataLoader workers).
        """
        path = self.samples[index][0]
        if not self.train:  # the centre crop draws nothing
            generator = None
        elif epoch is not None:
            generator = torch.Generator().manual_seed(_mix_seed(self.seed, epoch, index))
        else:
            generator = None if _in_worker() else self._generator
        return decode_crop(
            path,
            self.image_size,
            train=self.train,
            crop_pct=self.crop_pct,
            scale=self.scale,
            ratio=self.ratio,
            generator=generator,
            max_pixels=self.max_pixels,
            draft=self.draft,
            decoder=self.decoder,
        )

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Return ``(uint8 [3, S, S], label)`` for ``index`` or for a key ``(index, epoch)``
        (as yielded by the sampler of :func:`build_loader`)."""
        epoch = None
        if isinstance(index, tuple):
            index, epoch = index
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {n} samples")
        index %= n
        tries = min(n, 32)
        for step in range(tries):
            j = (index + step) % n
            if j in self._failed:
                continue
            try:
                return self.load(j, epoch), self.samples[j][1]
            except Exception as exc:
                path = self.samples[j][0]
                if self.strict:
                    raise CorruptImageError(f"cannot decode image file {path!r}: {exc}") from exc
                if not self._failed:
                    _warn_once_safe(
                        f"cannot decode image file {path!r} ({exc}); replacing it by the next "
                        "readable sample (further failures in this process are not reported)"
                    )
                self._failed.add(j)
        raise CorruptImageError(
            f"{tries} consecutive image files from index {index} in {str(self.root)!r} could "
            "not be decoded"
        )


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarArchive:
    """Where to get one CIFAR archive and how to read it.

    Attributes
    ----------
    url, filename, md5, sha256, size
        Official download address, archive name, checksums and size in bytes.
    folder : str
        Folder the archive extracts to.
    train_files, test_files : tuple of str
        Pickle batches of the two splits.
    meta_file : str
        Pickle with the class names.
    label_key, names_key : bytes
        Keys of the labels in a batch and of the class names in the meta file.
    member_md5 : dict of str to str
        md5 of every extracted file, checked after download.
    """

    url: str
    filename: str
    md5: str
    sha256: str
    size: int
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    member_md5: dict[str, str]


CIFAR_ARCHIVES: dict[str, CifarArchive] = {
    "cifar10": CifarArchive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        size=170_498_071,
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        member_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": CifarArchive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        filename="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        size=169_001_437,
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        member_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
}
"""Official CIFAR archives (URLs and checksums as published by the authors and used by
torchvision and keras)."""


def _numpy_core() -> Any:
    core = getattr(np, "_core", None)
    if core is None:  # numpy < 2
        core = np.core
    return core


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    core = _numpy_core()
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays, dtypes and plain Python containers."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def __init__(self, file: Any, *, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name} from {self._source!r}: CIFAR batches "
                "may only contain numpy arrays, dtypes, lists, dicts, numbers and strings"
            ) from None


def load_cifar_pickle(path: str | os.PathLike[str]) -> dict[bytes, Any]:
    """Load one CIFAR python batch with a restricted unpickler.

    Parameters
    ----------
    path : str or path
        A batch (``data_batch_1``, ``test``, ...) or meta file of the official python version.

    Returns
    -------
    dict
        The batch dictionary with ``bytes`` keys (the files were written by Python 2), e.g.
        ``b'data'`` (``uint8 [N, 3072]``, channel-major RGB 32 x 32) and ``b'labels'`` or
        ``b'fine_labels'``.

    Raises
    ------
    pickle.UnpicklingError
        When the file references anything other than numpy array reconstruction
        (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``) or
        ``_codecs.encode``: no other callable is ever imported or run.
    ValueError
        When the file does not hold a dictionary.
    """
    with open(path, "rb") as fh:
        obj = _RestrictedUnpickler(fh, source=str(path)).load()
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR file {str(path)!r} must hold a dict; got {type(obj).__name__}")
    return obj


def default_data_root() -> Path:
    """Return the dataset cache folder: ``$SCALESPACE_MK_DATA`` or
    ``~/.cache/scalespace_mk/datasets``."""
    env = os.environ.get("SCALESPACE_MK_DATA")
    return Path(env) if env else Path.home() / ".cache" / "scalespace_mk" / "datasets"


def _cifar_folder(name: str, root: str | os.PathLike[str] | None) -> Path:
    info = CIFAR_ARCHIVES[name]
    base = Path(root) if root is not None else default_data_root()
    if base.name == info.folder:
        return base
    return base / info.folder


class _ImagesInMemory(Dataset):
    """A dataset held in memory: images ``data`` (uint8) and labels ``targets``, ``classes``."""

    crops_on_load = False
    data: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.data.shape[0])


class CIFARDataset(_ImagesInMemory):
    """CIFAR-10 or CIFAR-100 from the official python pickle batches.

    Parameters
    ----------
    name : {'cifar10', 'cifar100'}
        Which dataset; CIFAR-100 uses the 100 fine labels.
    root : str or path, optional
        Folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` (or that folder itself);
        default :func:`default_data_root`.
    split : {'train', 'val'}
        ``'train'``: the 50,000 training images; ``'val'``: the 10,000 official test images.
    image_size : int, default 32
        Output side; other than 32 the images are resized (bicubic, antialiased) on access.
    download : bool, default False
        Fetch and verify the archive with :func:`download_cifar` when files are missing.

    Notes
    -----
    All images are held in memory as one ``uint8 [N, 3, 32, 32]`` tensor (150 MiB for the
    training set). The pickles are read by :func:`load_cifar_pickle`, which cannot run code.
    """

    crops_on_load = False

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str] | None = None,
        *,
        split: str = "train",
        image_size: int = 32,
        download: bool = False,
    ) -> None:
        check_choice("name", name, tuple(CIFAR_ARCHIVES))
        check_choice("split", split, _SPLITS)
        self.image_size = _check_positive_int("image_size", image_size)
        info = CIFAR_ARCHIVES[name]
        folder = _cifar_folder(name, root)
        files = info.train_files if split == "train" else info.test_files
        missing = [f for f in files if not (folder / f).is_file()]
        if missing and download:
            folder = download_cifar(name, folder.parent)
            missing = []
        if missing:
            raise FileNotFoundError(
                f"{name} files {missing} are missing in {str(folder)!r}; download them with "
                "scalespace_mk.training.datasets."
                f"download_cifar({name!r}, {str(folder.parent)!r}) or "
                f"build_dataset(..., download=True) (archive {info.url}, md5 {info.md5})"
            )
        data, labels = [], []
        for fname in files:
            batch = load_cifar_pickle(folder / fname)
            if b"data" not in batch or info.label_key not in batch:
                raise ValueError(
                    f"CIFAR file {str(folder / fname)!r} lacks the keys b'data' and "
                    f"{info.label_key!r}; found {sorted(batch)[:6]}"
                )
            arr = np.asarray(batch[b"data"])
            if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 3072:
                raise ValueError(
                    f"CIFAR file {str(folder / fname)!r}: b'data' must be uint8 [N, 3072]; "
                    f"got {arr.dtype} {arr.shape}"
                )
            lab = np.asarray(batch[info.label_key], dtype=np.int64).reshape(-1)
            if lab.shape[0] != arr.shape[0]:
                raise ValueError(
                    f"CIFAR file {str(folder / fname)!r}: {arr.shape[0]} images but "
                    f"{lab.shape[0]} labels"
                )
            data.append(arr)
            labels.append(lab)
        num_classes = 10 if name == "cifar10" else 100
        self.classes = [str(i) for i in range(num_classes)]
        meta = folder / info.meta_file
        if meta.is_file():
            names = load_cifar_pickle(meta).get(info.names_key)
            if isinstance(names, list) and len(names) == num_classes:
                self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        self.data = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
        self.targets = torch.from_numpy(np.concatenate(labels))
        if self.targets.numel() and (
            int(self.targets.min()) < 0 or int(self.targets.max()) >= num_classes
        ):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}); got "
                f"[{int(self.targets.min())}, {int(self.targets.max())}]"
            )
        self.name = name
        self.split = split

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.data[index]
        if self.image_size != 32:
            img = _resize_uint8(img, self.image_size)
        return img, int(self.targets[index])


def _resize_uint8(img: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.nn.functional.interpolate(
        img[None].float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _hash_file(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _fetch_verified(
    url: str,
    dest: Path,
    *,
    md5: str,
    sha256: str,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` with its md5 and sha256 checked (see
    :func:`scalespace_mk._io.download_verified`)."""
    return download_verified(url, dest, sha256=sha256, md5=md5, timeout=timeout, progress=progress)


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive into ``dest``, rejecting absolute paths, ``..`` components,
    links and special files."""
    dest = dest.resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            name = m.name
            parts = Path(name).parts
            if (
                os.path.isabs(name)
                or name.startswith(("/", "\\"))
                or ".." in parts
                or (len(name) > 1 and name[1] == ":")
            ):
                raise ValueError(
                    f"refusing to extract {str(archive)!r}: member {name!r} has an absolute "
                    "path or a '..' component"
                )
            if not (m.isfile() or m.isdir()):
                raise ValueError(
                    f"refusing to extract {str(archive)!r}: member {name!r} is a link or "
                    "special file"
                )
            target = (dest / name).resolve()
            if dest != target and dest not in target.parents:
                raise ValueError(
                    f"refusing to extract {str(archive)!r}: member {name!r} escapes {str(dest)!r}"
                )
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(dest, members=members)


def download_cifar(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download, verify and extract the official CIFAR-10 / CIFAR-100 python archive.

    Parameters
    ----------
    name : {'cifar10', 'cifar100'}
        Which archive (see :data:`CIFAR_ARCHIVES` for URL, md5, sha256 and size).
    root : str or path, optional
        Parent folder; default :func:`default_data_root` (``$SCALESPACE_MK_DATA``).
    progress : bool, default True
        tqdm progress bar (only on a terminal).
    force : bool, default False
        Download again even when the extracted files are present and verify.

    Returns
    -------
    pathlib.Path
        The extracted folder (``root/cifar-10-batches-py`` or ``root/cifar-100-python``).

    Raises
    ------
    ValueError
        On a checksum mismatch (archive or extracted member) or an unsafe tar member.

    Notes
    -----
    The archive goes to a temporary file in ``root``; md5 and sha256 are checked before it is
    moved into place, so nothing unverified is ever extracted. Extraction rejects absolute and
    ``..`` paths, links and special files, then every extracted file's md5 is checked.
    """
    check_choice("name", name, tuple(CIFAR_ARCHIVES))
    info = CIFAR_ARCHIVES[name]
    base = Path(root) if root is not None else default_data_root()
    folder = base / info.folder
    if not force and _members_ok(folder, info):
        return folder
    base.mkdir(parents=True, exist_ok=True)
    archive = base / info.filename
    if force or not archive.is_file() or _hash_file(archive) != (info.md5, info.sha256):
        _fetch_verified(info.url, archive, md5=info.md5, sha256=info.sha256, progress=progress)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=base))
    try:
        _safe_extract(archive, staging)
        extracted = staging / info.folder
        if not _members_ok(extracted, info):
            raise ValueError(
                f"{info.filename} extracted files do not match their published md5 sums"
            )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(extracted, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _members_ok(folder: Path, info: CifarArchive) -> bool:
    for fname, md5 in info.member_md5.items():
        path = folder / fname
        if not path.is_file() or _hash_file(path)[0] != md5:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Fashion-MNIST (idx files)
# --------------------------------------------------------------------------------------------

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package ``dataset-fashion-mnist`` installs the idx files."""

FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train-images": (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train-labels": (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "val-images": (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "val-labels": (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
}
"""The four standard Fashion-MNIST files: role -> (file name, sha256 of the uncompressed
idx bytes). The sha256 values are those of the files whose gzip archives have the
publisher's md5 checksums (github.com/zalandoresearch/fashion-mnist); checking the content
rather than the archive accepts re-compressed copies such as Debian's."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_IDX_TYPES = {0x08: np.uint8}


def _read_idx(path: Path) -> tuple[np.ndarray, str]:
    """Read an idx file (gzipped or not): the array and the sha256 of its idx bytes."""
    import gzip

    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"idx file {str(path)!r} is a damaged gzip archive: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{str(path)!r} is not an unsigned-byte idx file (magic 0x0000 08 NN); "
            f"its first bytes are {raw[:4].hex()}"
        )
    ndim = raw[3]
    head = 4 + 4 * ndim
    if ndim < 1 or len(raw) < head:
        raise ValueError(f"idx file {str(path)!r} has a truncated header ({ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(raw) - head != count:
        raise ValueError(
            f"idx file {str(path)!r} holds {len(raw) - head} data bytes but its header "
            f"declares shape {shape} ({count} bytes): the file is truncated or damaged"
        )
    arr = np.frombuffer(raw, dtype=_IDX_TYPES[raw[2]], offset=head).reshape(shape)
    return arr, digest


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (name, name + ".gz", name.replace("-idx", ".idx")):
        path = folder / candidate
        if path.is_file():
            return path
    return None


class FashionMNISTDataset(_ImagesInMemory):
    """Fashion-MNIST from the four standard idx files (gzipped or not), checksums verified.

    Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, Zalando Research, MIT licence) has
    60,000 training and 10,000 test images of clothing, 28 x 28 grey levels, 10 classes
    (:data:`FASHION_MNIST_CLASSES`). Images are returned as ``uint8 [3, image_size,
    image_size]`` (the grey level replicated to RGB, resized bicubically with antialiasing
    when ``image_size`` is not 28).

    Parameters
    ----------
    root : str or path, optional
        Folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``; default
        :data:`FASHION_MNIST_DIR` (``apt-get install dataset-fashion-mnist``).
    split : {'train', 'val'}
        ``'train'``: the training images; ``'val'``: the official test images.
    image_size : int, default 28
        Output side in pixels.
    size : int, optional
        Keep only the first ``size`` images of the split (default: all).
    verify : bool, default True
        Check the sha256 of the uncompressed idx bytes against :data:`FASHION_MNIST_FILES`
        (about 0.2 s for the training images). Tests of the reader on tiny files turn it off.

    Raises
    ------
    FileNotFoundError
        When a file is missing (the message names the Debian package to install).
    ValueError
        On a checksum mismatch, a malformed idx file, or images and labels that disagree.
    """

    crops_on_load = False

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        split: str = "train",
        image_size: int = 28,
        size: int | None = None,
        verify: bool = True,
    ) -> None:
        check_choice("split", split, _SPLITS)
        self.image_size = _check_positive_int("image_size", image_size)
        folder = Path(root) if root is not None else FASHION_MNIST_DIR
        arrays = []
        for role in (f"{split}-images", f"{split}-labels"):
            name, sha = FASHION_MNIST_FILES[role]
            path = _find_idx(folder, name)
            if path is None:
                raise FileNotFoundError(
                    f"Fashion-MNIST file {name}[.gz] is missing in {str(folder)!r}; install "
                    "it with 'apt-get install dataset-fashion-mnist' (files in "
                    f"{FASHION_MNIST_DIR}) or give the folder as 'fashion-mnist:PATH'"
                )
            arr, digest = _read_idx(path)
            if verify and digest != sha:
                raise ValueError(
                    f"Fashion-MNIST file {str(path)!r} does not match the published data "
                    f"(sha256 of its idx bytes {digest}, expected {sha}); reinstall it "
                    "('apt-get install --reinstall dataset-fashion-mnist')"
                )
            arrays.append(arr)
        images, labels = arrays
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} must "
                "be [N, H, W] and [N] with the same N"
            )
        if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise ValueError(
                f"Fashion-MNIST {split}: labels must lie in [0, 10); got {int(labels.max())}"
            )
        if size is not None:
            size = _check_positive_int("size", size)
            if size > images.shape[0]:
                raise ValueError(
                    f"size must be at most the {images.shape[0]} images of the {split} split; "
                    f"got {size}"
                )
            images, labels = images[:size], labels[:size]
        self.data = torch.from_numpy(np.array(images))  # a writable copy
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.classes = list(FASHION_MNIST_CLASSES)
        self.split = split

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.data[index][None]
        if img.shape[-1] != self.image_size or img.shape[-2] != self.image_size:
            img = _resize_uint8(img, self.image_size)
        return img.expand(3, -1, -1).clone(), int(self.targets[index])


# --------------------------------------------------------------------------------------------
# builtin task: patches of scikit-image photographs
# --------------------------------------------------------------------------------------------

BUILTIN_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "motorcycle",
    "brick",
    "grass",
    "gravel",
)
"""Photographs bundled with scikit-image (no download) that define the builtin classes, in
label order: colour photos (astronaut, chelsea the cat, coffee, rocket, a stained tissue
micrograph, the left view of the stereo motorcycle) and grey-level photos replicated to RGB
(cameraman, brick wall, grass, gravel)."""

_PHOTO_CACHE: dict[str, torch.Tensor] = {}


def _load_photo(name: str) -> torch.Tensor:
    """Return photo ``name`` as ``uint8 [3, H, W]`` (cached in memory)."""
    if name not in _PHOTO_CACHE:
        try:
            import skimage.data as skd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the builtin dataset needs scikit-image; install the 'train' extra: "
                "pip install 'scalespace_mk[train]'"
            ) from exc
        arr = skd.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skd, name)()
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        arr = np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8)
        _PHOTO_CACHE[name] = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return _PHOTO_CACHE[name]


class BuiltinPatchDataset(Dataset):
    """Offline classification task: which photograph does a small patch come from?

    Each class is one photograph of :data:`BUILTIN_PHOTOS` (scikit-image ships them, so
    nothing is downloaded). A sample is a square patch of ``patch`` x ``patch`` source pixels,
    resized to ``image_size`` when the two differ. Sample ``i`` belongs to class
    ``i % classes`` (balanced classes); its position is drawn once from a seeded generator, so
    a given ``(split, size, patch, classes, seed)`` always gives the same samples.

    Train/val split: every photograph is cut into a 4 x 4 grid of blocks; the 4 blocks with
    ``(row + 2 * col) % 4 == 0`` (one per grid row and column) belong to ``val``, the other 12
    to ``train``, and a patch always lies inside a single block. Train and val patches
    therefore never share a pixel, while both splits cover every part of every photograph, so
    validation accuracy measures generalisation to unseen image content. Colour, texture and
    local structure separate the classes; a tiny ConvNeXt learns the task on a CPU in minutes
    (with 32 x 32 patches well above the 10 % chance level).

    Parameters
    ----------
    split : {'train', 'val'}
        Which blocks the patches come from.
    size : int
        Number of samples (>= 1).
    image_size : int
        Output side in pixels.
    patch : int, optional
        Patch side in source pixels; default ``min(image_size, 64)``. It must fit a block
        (the smallest block is 75 x 112 pixels, from the 300 x 451 cat photo).
    classes : int, default 10
        Number of photographs used (the first ``classes`` of :data:`BUILTIN_PHOTOS`), 2..10.
    seed : int, default 0
        Seed of the patch positions (independent of the training seed).
    """

    crops_on_load = False
    grid = 4

    def __init__(
        self,
        *,
        split: str,
        size: int,
        image_size: int,
        patch: int | None = None,
        classes: int = 10,
        seed: int = 0,
    ) -> None:
        check_choice("split", split, _SPLITS)
        self.split = split
        self.size = _check_positive_int("size", size)
        self.image_size = _check_positive_int("image_size", image_size)
        self.patch = _check_positive_int("patch", min(image_size, 64) if patch is None else patch)
        if (
            isinstance(classes, bool)
            or not isinstance(classes, int)
            or not (2 <= classes <= len(BUILTIN_PHOTOS))
        ):
            raise ValueError(
                f"classes must be an integer in [2, {len(BUILTIN_PHOTOS)}]; got {classes!r}"
            )
        self.classes = list(BUILTIN_PHOTOS[:classes])
        self.seed = int(seed)
        photos = [_load_photo(name) for name in self.classes]
        blocks_per_class = [
            self._blocks(p.shape[1], p.shape[2], name)
            for p, name in zip(photos, self.classes, strict=True)
        ]
        rng = np.random.default_rng([self.seed, _SPLITS.index(split), 20240601])
        labels = np.arange(self.size) % classes
        pos = np.empty((self.size, 2), dtype=np.int64)
        for c in range(classes):
            idx = np.nonzero(labels == c)[0]
            blocks = blocks_per_class[c]
            pick = rng.integers(0, len(blocks), size=idx.size)
            for k, b in zip(idx, pick, strict=True):
                r0, r1, c0, c1 = blocks[b]
                pos[k, 0] = rng.integers(r0, r1 - self.patch + 1)
                pos[k, 1] = rng.integers(c0, c1 - self.patch + 1)
        self.positions = torch.from_numpy(pos)
        self.targets = torch.from_numpy(labels.astype(np.int64))

    def _blocks(self, height: int, width: int, name: str) -> list[tuple[int, int, int, int]]:
        g = self.grid
        rows = [round(i * height / g) for i in range(g + 1)]
        cols = [round(j * width / g) for j in range(g + 1)]
        val = self.split == "val"
        blocks = []
        for i in range(g):
            for j in range(g):
                if ((i + 2 * j) % g == 0) != val:
                    continue
                r0, r1, c0, c1 = rows[i], rows[i + 1], cols[j], cols[j + 1]
                if r1 - r0 < self.patch or c1 - c0 < self.patch:
                    raise ValueError(
                        f"patch must fit a {g} x {g} grid block of every photograph; the "
                        f"{name!r} blocks are {r1 - r0} x {c1 - c0} pixels, got patch="
                        f"{self.patch}; use a smaller patch (it is resized to image_size)"
                    )
                blocks.append((r0, r1, c0, c1))
        return blocks

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self.targets[index])
        r, c = (int(v) for v in self.positions[index])
        photo = _load_photo(self.classes[label])
        img = photo[:, r : r + self.patch, c : c + self.patch]
        if self.patch != self.image_size:
            img = _resize_uint8(img, self.image_size)
        return img.clone(), label


# --------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------


class SyntheticDataset(Dataset):
    """Deterministic random images for throughput tests.

    Sample ``i`` is uniform noise from a generator seeded with ``(seed, i)``, shifted by a
    class-dependent brightness per channel so that a model can fit it; its label is
    ``i % classes``. The same index always gives the same image, in any process.

    Parameters
    ----------
    size : int
        Number of samples.
    image_size : int
        Side in pixels.
    classes : int, default 10
        Number of classes (>= 1).
    seed : int, default 0
        Base seed.
    """

    crops_on_load = False

    def __init__(self, *, size: int, image_size: int, classes: int = 10, seed: int = 0) -> None:
        self.size = _check_positive_int("size", size)
        self.image_size = _check_positive_int("image_size", image_size)
        self.classes = [str(i) for i in range(_check_positive_int("classes", classes))]
        self.seed = int(seed)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} is out of range for {self.size} samples")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label = index % self.num_classes
        s = self.image_size
        noise = torch.randint(0, 128, (3, s, s), generator=gen, dtype=torch.int16)
        shift = torch.tensor([(label * 37) % 128, (label * 71) % 128, (label * 13) % 128])
        return (noise + shift.view(3, 1, 1).to(torch.int16)).to(torch.uint8), label


# --------------------------------------------------------------------------------------------
# build_dataset
# --------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _check_range(name: str, value: Any, *, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of numbers; got {value!r}") from None
    if not (low < a <= b <= high) or not math.isfinite(b):
        raise ValueError(
            f"{name} must be a pair (min, max) with {low} < min <= max"
            f"{' <= ' + str(high) if math.isfinite(high) else ''}; got {value!r}"
        )
    return a, b


def build_dataset(
    spec: str,
    *,
    split: str,
    image_size: int,
    download: bool = False,
    strict: bool = False,
    verify: str = "header",
    crop_pct: float = 0.875,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    seed: int = 0,
    draft: bool | None = None,
    decoder: str = "auto",
) -> tuple[Dataset, int]:
    """Build a dataset from a specification string.

    Parameters
    ----------
    spec : str
        ``'imagenet:PATH'``, ``'folder:PATH'`` or ``PATH``, ``'cifar10:PATH'``,
        ``'cifar100:PATH'``, ``'fashion-mnist[:PATH]'``, ``'builtin[:options]'`` or
        ``'synthetic:N[,options]'`` (grammar in the module docstring).
    split : {'train', 'val'}
        Which split. For image folders ``PATH/train`` or ``PATH/val``; for CIFAR ``val`` is the
        official test set; for ``builtin`` the disjoint grid blocks of
        :class:`BuiltinPatchDataset`; for ``synthetic`` the two splits use different seeds.
    image_size : int
        Side of the returned images in pixels.
    download : bool, default False
        CIFAR only: download and verify missing files.
    strict : bool, default False
        Image folders only: raise on an unreadable file instead of skipping it.
    verify : {'header', 'full', 'none'}, default 'header'
        Image folders only: check made at construction (see :class:`ImageFolderDataset`).
    crop_pct : float, default 0.875
        Image folders, ``val``: centre-crop fraction.
    scale, ratio : (float, float)
        Image folders, ``train``: random-resized-crop ranges applied on decode.
    seed : int, default 0
        Image folders: crop seed in the main process; ``synthetic``: default image seed.
    draft : bool, optional
        Image folders: allow DCT-domain reduced decoding of JPEGs whose crop is at least twice
        ``image_size`` (see :class:`ImageFolderDataset`). Default: on for ``train``, off for
        ``val``.
    decoder : {'auto', 'pillow', 'simplejpeg'}, default 'auto'
        Image folders: the JPEG decoder (see :class:`ImageFolderDataset`).

    Returns
    -------
    dataset : torch.utils.data.Dataset
        Yields ``(uint8 tensor [3, image_size, image_size], int label)``. It has attributes
        ``classes`` (names in label order) and ``crops_on_load`` (``True`` when the random
        resized crop was already applied on decode, i.e. image-folder training sets; the
        batched :class:`~scalespace_mk.training.augment.TrainTransform` should then skip its own).
    num_classes : int
        Number of classes.

    Raises
    ------
    ValueError
        On a malformed spec or option, an unknown split, missing class folders.
    FileNotFoundError
        When the data are not where the spec says (the message says what to download).

    Examples
    --------
    >>> ds, k = build_dataset("synthetic:8,classes=4", split="train", image_size=16)
    >>> len(ds), k, tuple(ds[0][0].shape), ds[0][0].dtype
    (8, 4, (3, 16, 16), torch.uint8)
    """
    check_choice("split", split, _SPLITS)
    image_size = _check_positive_int("image_size", image_size)
    parsed = parse_dataset_spec(spec)
    if parsed.kind == "folder":
        root = Path(parsed.path or "")
        if not root.is_dir():
            raise FileNotFoundError(
                f"spec {spec!r}: image folder {str(root)!r} does not exist; expected "
                "PATH/train/<class>/*.JPEG and PATH/val/<class>/*"
            )
        train_dir, split_dir = root / "train", root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"spec {spec!r}: {str(split_dir)!r} does not exist; expected "
                "PATH/train/<class>/... and PATH/val/<class>/..."
            )
        classes = None
        if split != "train" and train_dir.is_dir():
            # the classes training sees: folders with image files (not GIF-only ones)
            classes = image_classes(train_dir)
        ds: Dataset = ImageFolderDataset(
            split_dir,
            image_size=image_size,
            train=(split == "train"),
            classes=classes,
            crop_pct=crop_pct,
            scale=scale,
            ratio=ratio,
            verify=verify,
            strict=strict,
            seed=seed,
            draft=draft,
            decoder=decoder,
        )
        return ds, ds.num_classes
    if parsed.kind in CIFAR_ARCHIVES:
        ds = CIFARDataset(
            parsed.kind, parsed.path, split=split, image_size=image_size, download=download
        )
        return ds, ds.num_classes
    if parsed.kind == "fashion-mnist":
        ds = FashionMNISTDataset(
            parsed.path, split=split, image_size=image_size, size=parsed.options.get(split)
        )
        return ds, ds.num_classes
    if parsed.kind == "builtin":
        opts = parsed.options
        default = 5000 if split == "train" else 1000
        ds = BuiltinPatchDataset(
            split=split,
            size=opts.get(split, default),
            image_size=image_size,
            patch=opts.get("patch"),
            classes=opts.get("classes", len(BUILTIN_PHOTOS)),
            seed=opts.get("seed", 0),
        )
        return ds, ds.num_classes
    opts = parsed.options
    base_seed = opts.get("seed", seed)
    ds = SyntheticDataset(
        size=opts["n"],
        image_size=image_size,
        classes=opts.get("classes", 10),
        seed=base_seed * 2 + (split == "val"),
    )
    return ds, ds.num_classes


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------


class EpochSampler(Sampler[int]):
    """Non-distributed sampler with the :class:`~torch.utils.data.DistributedSampler`
    interface: the order of epoch ``e`` depends only on ``(seed, e)``.

    Parameters
    ----------
    size : int
        Dataset length.
    shuffle : bool
        Random permutation per epoch, or ``0 .. size - 1`` in order.
    seed : int, default 0
        Base seed.

    Notes
    -----
    Call :meth:`set_epoch` before each epoch; a resumed run that calls ``set_epoch(e)`` sees
    exactly the order of the original epoch ``e``.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0) -> None:
        self.size = int(size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of epoch ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())

    def __len__(self) -> int:
        return self.size


class _EpochKeySampler(Sampler[tuple[int, int]]):
    """Wrap a sampler so that it yields ``(index, epoch)`` keys (for datasets whose random
    decode-time crops are keyed by the epoch); ``set_epoch`` is forwarded."""

    def __init__(self, inner: Sampler[int]) -> None:
        self.inner = inner
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch`` (forwarded to the wrapped sampler)."""
        self.epoch = int(epoch)
        self.inner.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((int(i), epoch) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


def _collate(batch: list[Any]) -> Any:
    """``default_collate``, except that ``(uint8 image, int)`` batches in the main process are
    stacked by numpy: torch's multi-threaded stack of many small images stalls on a busy CPU
    (measured 390 vs 31,000 images/s for 224 px on 2 loaded cores). Workers keep
    ``default_collate``, which writes straight into shared memory."""
    from torch.utils.data import default_collate

    if (
        not _in_worker()
        and batch
        and all(
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], torch.Tensor)
            and item[0].dtype == torch.uint8
            and isinstance(item[1], int)
            for item in batch
        )
    ):
        images = torch.from_numpy(np.stack([item[0].numpy() for item in batch]))
        labels = torch.tensor([item[1] for item in batch], dtype=torch.int64)
        return images, labels
    return default_collate(batch)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from torch's per-worker seed."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party code using the legacy RNG
    random.seed(seed)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    distributed: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
) -> tuple[DataLoader, Sampler[int]]:
    """Build a seeded DataLoader and return it with its sampler.

    Parameters
    ----------
    dataset : Dataset
        Map-style dataset yielding ``(uint8 [3, S, S], int)``.
    batch_size : int
        Samples per batch (per process when distributed).
    shuffle : bool
        Shuffle every epoch (``sampler.set_epoch`` selects the permutation).
    num_workers : int, default 0
        Worker processes; with > 0 the workers persist across epochs.
    distributed : bool, default False
        Use a :class:`~torch.utils.data.DistributedSampler` (each rank sees
        ``1 / world_size`` of the data). ``rank`` / ``world_size`` default to the initialised
        process group.
    seed : int, default 0
        Seed of the shuffling (same on every rank) and of the worker RNGs (offset per rank).
    drop_last : bool, default False
        Drop the last incomplete batch (and, when distributed, the uneven tail).
    rank, world_size : int, optional
        Explicit rank and number of replicas (otherwise from ``torch.distributed``).
    pin_memory : bool, optional
        Default: ``torch.cuda.is_available()``.
    prefetch_factor : int, optional
        Batches loaded in advance per worker (torch default 2); only with workers.

    Returns
    -------
    loader : torch.utils.data.DataLoader
        Batches of ``(uint8 [B, 3, S, S], int64 [B])``.
    sampler : Sampler
        Has ``set_epoch(epoch)``: call it before each epoch. For datasets with
        ``wants_epoch = True`` (image-folder sets) it yields ``(index, epoch)`` keys, so the
        random decode-time crops depend only on ``(dataset seed, epoch, index)``.

    Notes
    -----
    Deterministic: with a fixed ``seed`` the batches, including the random crops drawn on
    decode, are identical from run to run, for any ``num_workers``, and a resumed run that
    calls ``set_epoch(e)`` sees exactly the batches of the original epoch ``e``. The worker
    RNGs (used only by datasets that draw randomness without an epoch key) are seeded from a
    ``torch.Generator`` seeded with ``seed + 1_000_003 * rank``.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0; got {num_workers!r}")
    sampler: Sampler[int]
    if distributed:
        import torch.distributed as dist

        if rank is None or world_size is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(
                    "distributed=True needs an initialised torch.distributed process group or "
                    f"explicit rank and world_size; got rank={rank!r}, world_size={world_size!r}"
                )
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        sampler = torch.utils.data.DistributedSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
    else:
        rank = 0
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
    if getattr(dataset, "wants_epoch", False):
        sampler = _EpochKeySampler(sampler)
    generator = torch.Generator().manual_seed(int(seed) + 1_000_003 * int(rank))
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = True
        kwargs["worker_init_fn"] = _seed_worker
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=bool(pin_memory),
        drop_last=drop_last,
        generator=generator,
        collate_fn=_collate,
        **kwargs,
    )
    return loader, sampler
