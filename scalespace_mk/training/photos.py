"""Natural photographs, offline: the colour photos a machine already has, split by photo into
calibration and evaluation sets, cut into deterministic multi-scale crops.

Sources (each found without a download):

- ``skimage``: scikit-image's bundled colour photographs (astronaut, chelsea, coffee, rocket,
  the left view of the stereo motorcycle);
- ``sklearn``: scikit-learn's sample images (``china.jpg``, ``flower.jpg``), located on disk
  without importing scikit-learn;
- ``mate``: the photographs of the Debian package ``mate-backgrounds``
  (``/usr/share/backgrounds/mate/nature/*.jpg``, GPL-2+);
- ``folder:/path`` (or a plain existing folder): every image file under a user's folder;
- ``imagenet:/path``: a labelled folder ``root/<class>/<image>`` (any ImageFolder; with the
  1000 WordNet-id folders of ImageNet the labels are the ImageNet class indices), which adds
  true top-1 accuracy.

``builtin`` means ``skimage,sklearn,mate`` (the ones present). Every photo carries its source,
licence and SHA-256, and :meth:`PhotoSet.manifest` writes them out with the split, so a result
names exactly the pixels it was measured on.

The split is by photo (never crops of one photo on both sides) and deterministic: photos are
ordered by SHA-256 of ``seed:sha256-of-file`` and the first ``round(eval_fraction * n)`` go to
evaluation. Crops are deterministic too (no random numbers): at each scale ``s`` a square of
side ``s * min(H, W)`` is placed on a ``grid x grid`` lattice of positions spanning the photo
(one centred position at ``s = 1``), resized to ``size`` pixels (bicubic, Pillow) and
normalised with the ImageNet mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalespace_mk import limits
from scalespace_mk.networks.mobilenet import IMAGENET_MEAN, IMAGENET_STD  # their one home

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOURCES",
    "CropSet",
    "Photo",
    "PhotoSet",
    "build_photo_set",
    "find_photos",
    "make_crops",
    "split_photos",
]


#: named sources of :func:`find_photos` (``builtin`` is all three)
SOURCES = ("skimage", "sklearn", "mate")

#: default crop scales (fraction of the shorter side) and positions per axis
DEFAULT_SCALES = (1.0, 0.7, 0.5, 0.35)
DEFAULT_GRID = 3

_IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

_SKIMAGE = {  # file in skimage/data -> licence (from the skimage.data docstrings)
    "astronaut.png": "public domain (NASA Great Images)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "rocket.jpg": "public domain (SpaceX)",
    "motorcycle_left.png": "Middlebury stereo data set 2014 (research use; see "
    "skimage.data.stereo_motorcycle)",
}
_SKLEARN = {
    "china.jpg": "CC BY 2.0 (danielbuechele, Flickr)",
    "flower.jpg": "CC BY 2.0 (vultilion, Flickr)",
}
_MATE_ROOT = Path("/usr/share/backgrounds/mate/nature")


class PhotoSetError(ValueError):
    """A photo source that cannot be used (named in the message, with the fix)."""


@dataclass(frozen=True)
class Photo:
    """One photograph: where it is, where it came from, under which licence, its checksum.

    ``label`` is the class index for labelled folders (``imagenet:``), else None.
    """

    name: str
    path: str
    source: str
    licence: str
    sha256: str
    width: int
    height: int
    label: int | None = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the files without importing the package
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _open_size(path: Path) -> tuple[int, int, str]:
    """(width, height, mode) from the header; ValueError for unreadable or huge files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            mode = img.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable image: {exc}") from exc
    if w * h > limits.IMAGE_PIXELS_MAX:
        raise ValueError(
            f"{str(path)!r} has {w}x{h} pixels, above the limit of {limits.IMAGE_PIXELS_MAX}"
        )
    return w, h, mode


def _photo(path: Path, name: str, source: str, licence: str, label: int | None = None) -> Photo:
    w, h, _ = _open_size(path)
    return Photo(name, str(path), source, licence, _sha256(path), w, h, label)


def _from_named(source: str) -> list[Photo]:
    if source == "skimage":
        root = _package_dir("skimage")
        table, base = _SKIMAGE, (root / "data" if root else None)
    elif source == "sklearn":
        root = _package_dir("sklearn")
        table, base = _SKLEARN, (root / "datasets" / "images" if root else None)
    else:  # mate
        base = _MATE_ROOT
        table = {p.name: "GPL-2+ (mate-backgrounds)" for p in sorted(base.glob("*.jpg"))}
    if base is None or not base.is_dir():
        return []
    out = []
    for fname, licence in table.items():
        path = base / fname
        if path.is_file():
            out.append(_photo(path, f"{source}:{Path(fname).stem}", source, licence))
    return out


def _image_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        out.extend(
            Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(_IMAGE_ENDINGS)
        )
    return out


def _from_folder(root: Path, licence: str) -> list[Photo]:
    if not root.is_dir():
        raise PhotoSetError(f"photos: folder {str(root)!r} does not exist")
    out, bad = [], []
    for path in _image_files(root):
        try:
            out.append(_photo(path, f"folder:{path.relative_to(root)}", "folder", licence))
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        warnings.warn(
            f"photos: skipped {len(bad)} unreadable file(s) under {str(root)!r}; first: {bad[0]}",
            RuntimeWarning,
            stacklevel=3,
        )
    return out


def _from_labelled(root: Path, licence: str) -> tuple[list[Photo], list[str]]:
    from scalespace_mk.training.datasets import ImageFolderDataset

    if not root.is_dir():
        raise PhotoSetError(f"photos: labelled folder {str(root)!r} does not exist")
    ds = ImageFolderDataset(root, image_size=8, verify="header")
    out = []
    for path, label in ds.samples:
        p = Path(path)
        out.append(_photo(p, f"imagenet:{p.relative_to(root)}", "imagenet", licence, label))
    return out, list(ds.classes)


def find_photos(
    sources: str | Sequence[str] = "builtin", *, licence: str = "user's own (not recorded)"
) -> tuple[list[Photo], list[str] | None]:
    """Collect photographs from ``sources``.

    Parameters
    ----------
    sources : str or sequence of str
        Comma-separated names: ``builtin``, ``skimage``, ``sklearn``, ``mate``,
        ``folder:/path`` (or an existing folder), ``imagenet:/path`` (labelled).
    licence : str
        Licence recorded for photos from a user's folder.

    Returns
    -------
    photos : list of Photo
        In source order, duplicates (same SHA-256) dropped.
    classes : list of str or None
        Class names of a labelled folder (label order), else None.
    """
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    if not sources:
        raise PhotoSetError("photos: no source given; use e.g. 'builtin' or 'folder:/path'")
    photos: list[Photo] = []
    classes: list[str] | None = None
    for src in sources:
        if src == "builtin":
            for name in SOURCES:
                photos.extend(_from_named(name))
        elif src in SOURCES:
            photos.extend(_from_named(src))
        elif src.startswith("imagenet:"):
            if classes is not None:
                raise PhotoSetError("photos: give at most one labelled folder (imagenet:)")
            found, classes = _from_labelled(Path(src.partition(":")[2]), licence)
            photos.extend(found)
        elif src.startswith("folder:") or Path(src).is_dir():
            photos.extend(_from_folder(Path(src.partition("folder:")[2] or src), licence))
        else:
            raise PhotoSetError(
                f"photos: unknown source {src!r}; use builtin, skimage, sklearn, mate, "
                "folder:/path or imagenet:/path"
            )
    seen: set[str] = set()
    unique = []
    for p in photos:
        if p.sha256 not in seen:
            seen.add(p.sha256)
            unique.append(p)
    if classes is not None and any(p.label is None for p in unique):
        raise PhotoSetError(
            "photos: a labelled folder (imagenet:) cannot be mixed with unlabelled sources"
        )
    return unique, classes


def split_photos(
    photos: Sequence[Photo], *, eval_fraction: float = 0.5, seed: int = 0
) -> tuple[list[Photo], list[Photo]]:
    """Split ``photos`` BY PHOTO into (calibration, evaluation), deterministically.

    The order is the SHA-256 of ``f"{seed}:{photo.sha256}"``; the first
    ``round(eval_fraction * n)`` photos (at least one, and at least one left for calibration
    when ``n >= 2``) are the evaluation set. The split depends only on the files' contents
    and ``seed``, not on paths or the order of sources.
    """
    if not 0.0 < float(eval_fraction) < 1.0:
        raise PhotoSetError(f"eval_fraction must lie in (0, 1); got {eval_fraction!r}")
    n = len(photos)
    if n < 2:
        raise PhotoSetError(
            f"photos: a calibration/evaluation split needs at least 2 photos; found {n}"
        )
    order = sorted(
        photos, key=lambda p: hashlib.sha256(f"{int(seed)}:{p.sha256}".encode()).hexdigest()
    )
    k = min(max(1, round(eval_fraction * n)), n - 1)
    return order[k:], order[:k]


def _boxes(width: int, height: int, scales: Sequence[float], grid: int) -> list[tuple]:
    """Square crop boxes (left, top, right, bottom), in source pixels."""
    out = []
    short = min(width, height)
    for s in scales:
        side = s * short
        g = 1 if s >= 1.0 else grid
        xs = [(width - side) / 2] if g == 1 else np.linspace(0, width - side, g).tolist()
        ys = [(height - side) / 2] if g == 1 else np.linspace(0, height - side, g).tolist()
        for top in ys:
            for left in xs:
                out.append((left, top, left + side, top + side, float(s)))
    return out


def _crops_of(photo: Photo, size: int, scales: Sequence[float], grid: int) -> torch.Tensor:
    from PIL import Image

    from scalespace_mk.training.decoding import _to_rgb

    with Image.open(photo.path) as img:
        img.load()
        rgb = img if img.mode == "RGB" else _to_rgb(img)
        out = [
            np.asarray(
                rgb.resize((size, size), Image.Resampling.BICUBIC, box=box[:4]), dtype=np.uint8
            )
            for box in _boxes(rgb.size[0], rgb.size[1], scales, grid)
        ]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _centre_crop(photo: Photo, size: int, crop_pct: float = 0.875) -> torch.Tensor:
    """ImageNet evaluation protocol: the centre ``crop_pct`` of the shorter side."""
    from PIL import Image

    from scalespace_mk.training.decoding import _to_rgb

    with Image.open(photo.path) as img:
        img.load()
        rgb = img if img.mode == "RGB" else _to_rgb(img)
        w, h = rgb.size
        side = min(w, h) * crop_pct
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        arr = np.array(rgb.resize((size, size), Image.Resampling.BICUBIC, box=box), np.uint8)
    return torch.from_numpy(arr[None]).permute(0, 3, 1, 2).contiguous()


@dataclass
class CropSet:
    """Crops of photos, normalised, with the photo each came from.

    Attributes
    ----------
    images : torch.Tensor
        ``float32 [n, 3, size, size]``, ImageNet-normalised RGB.
    photo : torch.Tensor
        ``int64 [n]``: index into ``photos`` of the photo each crop was cut from (the
        bootstrap resamples these, not crops).
    labels : torch.Tensor or None
        ``int64 [n]`` true classes (labelled sets only).
    photos : list of Photo
    """

    images: torch.Tensor
    photo: torch.Tensor
    labels: torch.Tensor | None
    photos: list[Photo] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_photos(self) -> int:
        """Number of photos the crops come from."""
        return len(self.photos)


def make_crops(
    photos: Sequence[Photo],
    *,
    size: int = 160,
    scales: Sequence[float] = DEFAULT_SCALES,
    grid: int = DEFAULT_GRID,
    centre: bool = False,
) -> CropSet:
    """Cut deterministic crops of ``photos`` (see the module docstring).

    Parameters
    ----------
    photos : sequence of Photo
    size : int
        Side of each crop in pixels (>= 8).
    scales : sequence of float
        Crop sides as fractions of the shorter photo side, each in (0, 1].
    grid : int
        Positions per axis for scales below 1 (>= 1).
    centre : bool
        One ImageNet-protocol centre crop (87.5 % of the shorter side) per photo instead.

    Returns
    -------
    CropSet
        ``len(scales_below_1) * grid**2 + (1.0 in scales)`` crops per photo.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise PhotoSetError(f"crop size must be an integer >= 8 pixels; got {size!r}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise PhotoSetError(f"grid must be an integer >= 1; got {grid!r}")
    scales = [float(s) for s in scales]
    if not scales or not all(0.0 < s <= 1.0 for s in scales):
        raise PhotoSetError(f"crop scales must lie in (0, 1]; got {scales!r}")
    if not photos:
        raise PhotoSetError("photos: no photos to crop")
    chunks, owner, labels = [], [], []
    for i, photo in enumerate(photos):
        crops = _centre_crop(photo, size) if centre else _crops_of(photo, size, scales, grid)
        chunks.append(crops)
        owner.extend([i] * crops.shape[0])
        labels.extend([-1 if photo.label is None else photo.label] * crops.shape[0])
    x = torch.cat(chunks).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    has_labels = all(p.label is not None for p in photos)
    return CropSet(
        images=x.contiguous(),
        photo=torch.tensor(owner, dtype=torch.int64),
        labels=torch.tensor(labels, dtype=torch.int64) if has_labels else None,
        photos=list(photos),
    )


@dataclass
class PhotoSet:
    """Photos split into calibration and evaluation, with their crops."""

    calibration: CropSet
    evaluation: CropSet
    classes: list[str] | None
    settings: dict[str, Any]

    def manifest(self) -> dict[str, Any]:
        """JSON-ready description: every photo (source, licence, sha256, size, split) and the
        crop settings."""
        photos = []
        for split, crops in (("calibration", self.calibration), ("evaluation", self.evaluation)):
            counts = torch.bincount(crops.photo, minlength=crops.num_photos).tolist()
            for p, n in zip(crops.photos, counts, strict=True):
                photos.append({**asdict(p), "split": split, "crops": int(n)})
        return {
            "settings": dict(self.settings),
            "classes": None if self.classes is None else len(self.classes),
            "calibration": {"photos": self.calibration.num_photos, "crops": len(self.calibration)},
            "evaluation": {"photos": self.evaluation.num_photos, "crops": len(self.evaluation)},
            "photos": photos,
        }


def build_photo_set(
    sources: str | Sequence[str] = "builtin",
    *,
    size: int = 160,
    scales: Sequence[float] = DEFAULT_SCALES,
    grid: int = DEFAULT_GRID,
    eval_fraction: float = 0.5,
    seed: int = 0,
    centre: bool | None = None,
    licence: str = "user's own (not recorded)",
) -> PhotoSet:
    """Find photos, split them by photo and cut their crops.

    ``centre=None`` means centre crops for a labelled folder (the ImageNet evaluation
    protocol) and multi-scale crops otherwise. Other parameters: see :func:`find_photos`,
    :func:`split_photos` and :func:`make_crops`.
    """
    photos, classes = find_photos(sources, licence=licence)
    if not photos:
        raise PhotoSetError(
            f"photos: found no photographs in {sources!r}; install scikit-image / "
            "scikit-learn / mate-backgrounds or pass folder:/path"
        )
    calib, evaluation = split_photos(photos, eval_fraction=eval_fraction, seed=seed)
    centre = classes is not None if centre is None else bool(centre)
    kw = {"size": size, "scales": scales, "grid": grid, "centre": centre}
    settings = {
        "sources": sources if isinstance(sources, str) else ",".join(sources),
        "size": size,
        "scales": [float(s) for s in scales],
        "grid": grid,
        "centre": centre,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }
    return PhotoSet(make_crops(calib, **kw), make_crops(evaluation, **kw), classes, settings)
