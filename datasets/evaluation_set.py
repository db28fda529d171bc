"""Evaluation sets: the fixed, reproducible samples an attack is evaluated on, read the way the field reads them.

:func:`load_evaluation_set` turns a data set spec into an :class:`EvaluationSet`: the selected test
images as one float32 NCHW tensor in [0, 1], their labels, a stable id per sample and the records
(source, selection, preprocessing) that make the run reproducible and hashable.

Where the samples come from
    * ``imagefolder:/path`` -- the folder is an evaluation set as it stands and is never split.  A
      folder of class subfolders (ImageNet's validation images in their class-folder layout, for
      example) is used whole.  If it has a ``val/`` or a ``test/`` subfolder (each a class tree), that
      tree is used; with both, ``?split=val`` or ``?split=test`` says which (``?split=NAME`` reads any
      subfolder, ``train`` included).  When a ``train/`` subfolder sits beside the tree read, class
      indices follow ``train/``'s sorted class folders, so labels match a model trained on it.  A
      single tree trained with ``?holdout=F`` is evaluated on the same held-out files when the spec
      keeps ``?holdout=F`` (the split is seeded by ``split_seed``, as in training).  Only the selected
      files are decoded: the tree is listed, the samples are chosen, then just those images are read.
      Class names are the folder names (an ImageNet synset such as ``n01440764`` stays as it is; mapping
      it to a model's outputs is the caller's business).  Sample ids are paths relative to the tree read.
    * ``cifar10:/path`` and ``cifar100:/path`` -- only the test file and the meta file are read (see
      :mod:`advbench.datasets.cifar`); the training batches need not be on disk.
    * any other registered scheme (``digits``, ``mnist5k``, ``synthetic...``) -- the test split of
      ``load_dataset(spec, seed=split_seed)``.  Array sets use the ids ``"test:<index>"``.

The fixed order
    Every source has one fixed order (folders: classes sorted by folder name, then files sorted by
    their relative path; array sets: the order of the test split).  Indices in a sample list refer to
    it, and selected samples are returned in it (a sample list keeps its own order).

Selection
    ``n_samples=None`` (or at least the number available) takes every sample; asking for more than
    there are adds a warning naming both numbers.  Otherwise ``selection="balanced"`` (the default)
    spreads the ``n`` slots over the classes as evenly as possible -- each class gets ``n // K`` or one
    more, a class with fewer samples gives its unused slots to the others, and which classes get the
    extra slot is drawn with the seed -- then picks the samples within each class at random, all from
    ``numpy.random.default_rng(seed)``.  ``selection="first"`` takes the first ``n`` of the fixed order,
    which for a class-sorted folder means the first classes only.  ``samples=PATH`` evaluates a fixed
    list instead (as RobustBench does with its ImageNet subset): a text file with one entry per line
    (``#`` starts a comment) or a JSON list; an entry is an index into the fixed order, a sample id
    (``n01440764/ILSVRC2012_val_00000293.JPEG``, ``test:17``; leading folders beyond the id are
    ignored) or a bare file name if only one sample has it.  ``n_samples`` then takes the first ``n``
    entries of the list.

Preprocessing
    Without :class:`Preprocessing`, images keep their native size (``?size=N`` resizes every image to
    ``N x N`` as before), and a folder whose selected images differ in size is an error.  With it, each
    image's shorter side is resized to ``resize`` and the centre ``crop x crop`` square is cut out.  This
    is how timm evaluates ImageNet models: the shorter side is scaled to ``floor(crop / crop_pct)`` (so a
    224 crop with the usual ``crop_pct`` 0.875 resizes to 256) before the centre crop, and the longer
    side keeps the aspect ratio, truncated to an integer, as in torchvision's ``Resize``.

Nothing here downloads anything, and all randomness comes from explicit seeded generators.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import advbench.datasets.imagefolder as imagefolder
from advbench.datasets.catalog import DATASETS, load_dataset, parse_spec
from advbench.datasets.cifar import LAYOUTS, read_test_set
from advbench.datasets.data import check_images, check_labels, uint8_images
from advbench.errors import ConfigError, DatasetError, InputError, MissingPathError
from advbench.task_names import CLASSIFICATION

#: Interpolation name -> PIL resampling filter.
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
#: Interpolations that :meth:`Preprocessing.apply_tensor` runs in torch (antialiased, within one grey level of PIL);
#: the rest go through PIL's 32-bit float images, which support every filter (torch's ``nearest-exact`` picks a
#: different source pixel than PIL's nearest where a pixel centre falls exactly on a boundary).
_TORCH_MODES = ("bilinear", "bicubic")
#: The valid values of ``selection``.
SELECTIONS = ("balanced", "first", "list")
_CHUNK = 256  # images per apply_tensor call when preprocessing an in-memory set


# --------------------------------------------------------------------------- preprocessing


def _positive_int(name: str, value: object, hint: str) -> int:
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < 1:
        raise ConfigError(f"preprocessing: {name} must be a positive int, got {value!r}; {hint}")
    return number


@dataclass(frozen=True)
class Preprocessing:
    """How images become model inputs: resize the shorter side to `resize`, then centre-crop `crop` x `crop`.

    The longer side is scaled by the same factor and truncated to an integer; the crop is centred with
    its offsets rounded (both as torchvision's ``Resize`` and ``CenterCrop`` do).  ``interpolation`` is
    one of :data:`INTERPOLATIONS`.  :meth:`from_crop_pct` builds it the way timm does.
    """

    crop: int  # final square side, e.g. 224
    resize: int  # shorter side before the crop, e.g. 256 (= floor(crop / crop_pct) as timm computes it)
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest | lanczos | box | hamming

    def __post_init__(self) -> None:
        crop = _positive_int("crop", self.crop, "pass the model's input side, e.g. --input-size 224")
        resize = _positive_int("resize", self.resize, "pass the shorter side to resize to before the crop, e.g. 256")
        if resize < crop:
            raise ConfigError(f"preprocessing: resize ({resize}) is smaller than crop ({crop}), so a {crop}x{crop} "
                              f"centre crop would not fit; use resize >= crop (or crop_pct <= 1)")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"preprocessing: unknown interpolation {self.interpolation!r}; valid interpolations: "
                              f"{', '.join(INTERPOLATIONS)}")
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "resize", resize)

    @classmethod
    def from_crop_pct(cls, crop: int, crop_pct: float = 0.875, interpolation: str = "bilinear") -> Preprocessing:
        """timm's convention: resize the shorter side to ``floor(crop / crop_pct)``, then centre-crop ``crop``.

        ``crop_pct`` is the fraction of the resized image the crop keeps (0.875 turns 224 into 256 -> 224;
        1.0 resizes straight to ``crop``).
        """
        crop = _positive_int("crop", crop, "pass the model's input side, e.g. --input-size 224")
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, Real) or not 0.0 < float(crop_pct) <= 1.0:
            raise ConfigError(f"preprocessing: crop_pct must be a number in (0, 1], got {crop_pct!r}; timm models "
                              "use 0.875 to 1.0")
        return cls(crop=crop, resize=math.floor(crop / float(crop_pct)), interpolation=interpolation)

    def describe(self) -> dict[str, Any]:
        """The plain-data record of this preprocessing, for the run record and the config hash."""
        return {"resize": self.resize, "crop": self.crop, "interpolation": self.interpolation}

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after resizing the shorter side of a ``width x height`` image to ``resize``."""
        if width <= height:
            return self.resize, int(self.resize * height / width)
        return int(self.resize * width / height), self.resize

    def crop_offsets(self, width: int, height: int) -> tuple[int, int]:
        """``(left, top)`` of the centred ``crop x crop`` square in a ``width x height`` image."""
        return int(round((width - self.crop) / 2.0)), int(round((height - self.crop) / 2.0))

    def apply_pil(self, img: Image.Image) -> Image.Image:
        """Resize ``img``'s shorter side and centre-crop it; the result is ``crop x crop`` in ``img``'s mode."""
        if not isinstance(img, Image.Image):
            raise InputError(f"Preprocessing.apply_pil expects a PIL image, got {type(img).__name__}")
        size = self.resized_size(*img.size)
        if size != img.size:
            img = img.resize(size, INTERPOLATIONS[self.interpolation])
        left, top = self.crop_offsets(*size)
        return img.crop((left, top, left + self.crop, top + self.crop))

    def apply_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The same resize and centre crop on an NCHW float batch in [0, 1]; the output is clamped to [0, 1].

        Bilinear and bicubic use torch's antialiased interpolation (batched, on ``x``'s device; within one
        grey level of :meth:`apply_pil`); nearest, lanczos, box and hamming run PIL's own filters on 32-bit
        float images, channel by channel, on the CPU.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            desc = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"Preprocessing.apply_tensor expects a float NCHW batch, got a {desc}")
        height, width = int(x.shape[2]), int(x.shape[3])
        new_w, new_h = self.resized_size(width, height)
        if (new_w, new_h) != (width, height):
            if self.interpolation in _TORCH_MODES:
                x = F.interpolate(x, size=(new_h, new_w), mode=self.interpolation, antialias=True)
            else:
                x = _resize_with_pil(x, (new_w, new_h), INTERPOLATIONS[self.interpolation])
        left, top = self.crop_offsets(new_w, new_h)
        return x[:, :, top : top + self.crop, left : left + self.crop].clamp(0.0, 1.0).contiguous()


def _resize_with_pil(x: torch.Tensor, size: tuple[int, int], resample: Image.Resampling) -> torch.Tensor:
    """Resize every channel of an NCHW batch with a PIL filter on mode-``F`` (float32) images."""
    planes = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((*planes.shape[:2], size[1], size[0]), dtype=np.float32)
    for i in range(planes.shape[0]):
        for c in range(planes.shape[1]):
            out[i, c] = np.asarray(Image.fromarray(planes[i, c], mode="F").resize(size, resample))
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def _preprocess_in_memory(x: torch.Tensor, preprocessing: Preprocessing | None) -> torch.Tensor:
    """``x`` preprocessed in chunks (so intermediates stay small), or ``x`` itself without preprocessing."""
    if preprocessing is None:
        return x.contiguous()
    out = torch.empty((len(x), x.shape[1], preprocessing.crop, preprocessing.crop), dtype=torch.float32)
    for start in range(0, len(x), _CHUNK):
        out[start : start + _CHUNK] = preprocessing.apply_tensor(x[start : start + _CHUNK])
    return out


# --------------------------------------------------------------------------- the evaluation set


@dataclass(frozen=True, eq=False)
class EvaluationSet:
    """The selected samples of an evaluation, with what is needed to record and reproduce the selection.

    ``x`` is float32 NCHW in [0, 1] (only the selected samples), ``y`` int64 indices into
    ``class_names``; ``sample_ids[i]`` names sample ``i`` (a relative file path for folders,
    ``"test:<index>"`` for array sets).  ``source``, ``selection`` and ``preprocessing`` are plain data
    for the run record and config hash; ``warnings`` are messages the user must see.  Validated on
    construction; treat the tensors as read-only.
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]
    sample_ids: tuple[str, ...]
    source: dict[str, Any]
    selection: dict[str, Any]
    preprocessing: dict[str, Any] | None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        name = str(self.source.get("spec", "evaluation set")) if isinstance(self.source, dict) else "evaluation set"
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "sample_ids", tuple(self.sample_ids))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        if not self.class_names:
            raise DatasetError(f"evaluation set '{name}': class_names is empty; give one name per class")
        check_images(name, "x", self.x)
        check_labels(name, "y", self.y, len(self.x), len(self.class_names))
        if len(self.sample_ids) != len(self.x):
            raise DatasetError(f"evaluation set '{name}': {len(self.sample_ids)} sample ids for {len(self.x)} "
                               "images; give one id per image")

    @property
    def num_classes(self) -> int:
        """The number of classes (``len(class_names)``), not only those present in the selection."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True, eq=False)
class EvaluationStream:
    """The selected samples of an evaluation before any is decoded: labels, ids and records, and :meth:`read`.

    Sample ``i`` is the ``i``-th selected sample (``sample_ids[i]``, label ``labels[i]``); :meth:`read` decodes
    the samples asked for, so a streamed evaluation holds only one batch of images.  ``fingerprint()`` is a
    SHA-256 over the bytes the selected samples are decoded from (each file's content for folders, the
    array for in-memory sets) and the labels: the data's identity for the config hash, known before any
    image is decoded.  The reader is pickled with the stream (DataLoader workers and Dask tasks get a copy).
    """

    labels: np.ndarray
    positions: np.ndarray
    class_names: tuple[str, ...]
    sample_ids: tuple[str, ...]
    source: dict[str, Any]
    selection: dict[str, Any]
    preprocessing: dict[str, Any] | None
    warnings: tuple[str, ...]
    reader: Callable[[np.ndarray], torch.Tensor]
    fingerprint_parts: Callable[[np.ndarray], Iterator[bytes]]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read(self, indices: Any) -> torch.Tensor:
        """The images of selected samples ``indices`` (positions in the selection), float32 NCHW in [0, 1]."""
        return self.reader(self.positions[np.asarray(indices, dtype=np.int64)])

    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the first selected sample (decodes that one image)."""
        c, h, w = self.read([0]).shape[1:]
        return int(c), int(h), int(w)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in self.fingerprint_parts(self.positions):
            digest.update(part)
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def decode_all(self) -> EvaluationSet:
        """Every selected sample decoded into one :class:`EvaluationSet` (for small sets and the Python API)."""
        return EvaluationSet(
            x=self.reader(self.positions),
            y=torch.from_numpy(self.labels.copy()),
            class_names=self.class_names,
            sample_ids=self.sample_ids,
            source=self.source,
            selection=self.selection,
            preprocessing=self.preprocessing,
            warnings=self.warnings,
        )


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    """Everything known about a spec's available samples before any image is decoded."""

    split: str
    labels: np.ndarray  # int64, in the fixed order
    ids: tuple[str, ...]
    class_names: tuple[str, ...]
    read: Callable[[np.ndarray], torch.Tensor]  # positions in the fixed order -> preprocessed images
    fingerprint: Callable[[np.ndarray], Iterator[bytes]]  # positions -> the raw bytes they are decoded from
    select: Callable[[np.ndarray], None] = lambda positions: None  # told the selection once, before any read


def _array_source(x: torch.Tensor | np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
                  preprocessing: Preprocessing | None) -> _Source:
    """A source over an in-memory test split (``x`` float in [0, 1], or uint8 as read from disk)."""
    def read(positions: np.ndarray) -> torch.Tensor:
        index = np.asarray(positions, dtype=np.int64)
        chosen = uint8_images(x[index]) if isinstance(x, np.ndarray) else x[torch.from_numpy(index)]
        return _preprocess_in_memory(chosen, preprocessing)

    def fingerprint(positions: np.ndarray) -> Iterator[bytes]:
        index = np.asarray(positions, dtype=np.int64)
        for start in range(0, len(index), _CHUNK):
            chunk = x[index[start : start + _CHUNK]] if isinstance(x, np.ndarray) else \
                x[torch.from_numpy(index[start : start + _CHUNK])].numpy()
            yield np.ascontiguousarray(chunk).tobytes()

    labels = np.asarray(labels, dtype=np.int64)
    ids = tuple(f"test:{i}" for i in range(len(labels)))
    return _Source("test", labels, ids, tuple(class_names), read, fingerprint)


def _choose_tree(spec: imagefolder.FolderSpec) -> tuple[Path, str]:
    """The class tree an evaluation of ``spec`` reads, and the split name recorded for it."""
    root = spec.root
    if spec.split is not None:
        if spec.holdout is not None:
            raise DatasetError(f"'{spec.spec}' gives both 'split' and 'holdout'; holdout applies to a folder that "
                               "is one class tree, so drop one of them")
        tree = root / spec.split
        if not tree.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise DatasetError(f"'{spec.spec}': image folder '{root}' has no '{spec.split}/' subfolder; its "
                               f"subfolders are {present}")
        return tree, spec.split
    named = [name for name in ("train", "val", "test") if (root / name).is_dir()]
    if spec.holdout is not None:
        if named:
            raise DatasetError(f"'{spec.spec}': image folder '{root}' has a '{named[0]}/' subfolder, but "
                               "'holdout' applies to a folder that is one class tree; drop '?holdout='")
        return root, "holdout"
    if "val" in named and "test" in named:
        raise DatasetError(f"image folder '{root}' has both 'val/' and 'test/'; say which to evaluate with "
                           f"'{spec.with_option('split=val')}' or '{spec.with_option('split=test')}'")
    for name in ("val", "test"):
        if name in named:
            return root / name, name
    if named:  # train/ alone
        raise DatasetError(f"image folder '{root}' has a 'train/' subfolder but no 'val/' or 'test/'; add one, or "
                           f"evaluate on the training images with '{spec.with_option('split=train')}'")
    return root, "folder"


def _training_classes(root: Path, tree: Path) -> tuple[str, ...] | None:
    """The sorted class folder names of ``root/train`` when ``tree`` is another subfolder beside it."""
    train = root / "train"
    if tree == root or tree == train or not train.is_dir():
        return None
    names = tuple(sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")))
    return names or None


def _folder_source(arg: str | None, preprocessing: Preprocessing | None, split_seed: int,
                   channels: int | None = None) -> _Source:
    spec = imagefolder.parse_folder_arg(arg)
    if spec.size is not None and preprocessing is not None:
        raise DatasetError(f"'{spec.spec}' resizes every image to {spec.size}x{spec.size} with '?size=', but a "
                           f"resize {preprocessing.resize} + centre crop {preprocessing.crop} preprocessing (from "
                           "--input-size or the model's config) was given too; use only one of '?size=N' and "
                           "--input-size")
    tree_root, split = _choose_tree(spec)
    tree = imagefolder.scan_tree(tree_root)
    class_names = _training_classes(spec.root, tree_root) or tuple(sorted(tree))
    items = imagefolder.tree_items(tree, class_names)
    labels = np.asarray([label for _, label in items], dtype=np.int64)
    if spec.holdout is not None:
        _, held_out = imagefolder.holdout_split(spec.root, labels, spec.holdout, seed=split_seed)
        keep = np.sort(held_out)
        items, labels = [items[i] for i in keep], labels[keep]
    paths = [path for path, _ in items]
    ids = tuple(path.relative_to(tree_root).as_posix() for path in paths)

    decided: list[int] = [] if channels is None else [channels]
    selected: list[np.ndarray] = []

    def select(positions: np.ndarray) -> None:
        selected[:] = [positions]

    def read(positions: np.ndarray) -> torch.Tensor:
        if not decided:  # once, over the whole selection, so every batch of a stream has the same channels
            decided.append(_folder_channels([paths[i] for i in (selected[0] if selected else positions)]))
        return _decode_images(spec, [paths[i] for i in positions], preprocessing, decided[0])

    def fingerprint(positions: np.ndarray) -> Iterator[bytes]:
        for i in positions:  # the encoded files: hashing them costs a read, not a decode
            yield ids[i].encode("utf-8") + b"\0" + hashlib.sha256(paths[i].read_bytes()).digest()

    return _Source(split, labels, ids, class_names, read, fingerprint, select)


def _folder_channels(paths: list[Path]) -> int:
    """1 when every image of a selection is grayscale, else 3 (read from the file headers: nothing is decoded)."""
    for path in paths:
        try:
            with Image.open(path) as img:
                if img.mode not in imagefolder.GRAY_MODES:
                    return 3
        except (OSError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"cannot read image '{path}': {exc}; remove or replace the file") from exc
    return 1


def _decode_images(spec: imagefolder.FolderSpec, paths: list[Path],
                   preprocessing: Preprocessing | None, channels: int | None = None) -> torch.Tensor:
    """Decode just ``paths`` into one float32 NCHW tensor: ``channels`` (1 or 3, the model's) when given, else
    1 channel if all are grayscale and RGB otherwise (so a selection of grayscale images from an RGB folder
    still gives a model its 3 channels).  A stream passes the channels it decided once for the whole folder."""
    out: torch.Tensor | None = None
    first: tuple[Path, tuple[int, int]] | None = None
    all_gray = channels != 3
    for k, path in enumerate(paths):
        img = imagefolder.read_image(path)
        gray = img.mode in imagefolder.GRAY_MODES if channels is None else channels == 1
        all_gray &= gray
        img = img.convert("L" if gray else "RGB")
        if preprocessing is not None:
            img = preprocessing.apply_pil(img)
        elif spec.size is not None and img.size != (spec.size, spec.size):
            img = img.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
        if first is None:
            first = (path, img.size)
            out = torch.empty((len(paths), 3, img.size[1], img.size[0]), dtype=torch.float32)
        elif img.size != first[1]:
            (w0, h0), (w1, h1) = first[1], img.size
            raise DatasetError(
                f"images of '{spec.spec}' differ in size: '{first[0]}' is {w0}x{h0} but '{path}' is {w1}x{h1} "
                "(width x height); pass --input-size N to resize and centre-crop every image as the model "
                "expects, or add '?size=N' to the spec to resize every image to N x N"
            )
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8)).to(torch.float32).div_(255.0)
        out[k] = pixels.unsqueeze(0) if gray else pixels.permute(2, 0, 1)  # type: ignore[index]
    if out is None:  # pragma: no cover - a selection is never empty
        raise DatasetError(f"'{spec.spec}': no images were selected")
    return out[:, :1].contiguous() if all_gray else out


def _source(scheme: str, arg: str | None, spec: str, preprocessing: Preprocessing | None,
            split_seed: int, channels: int | None = None) -> _Source:
    if scheme == "imagefolder":
        return _folder_source(arg, preprocessing, split_seed, channels)
    if scheme in LAYOUTS:
        x, labels, class_names = read_test_set(LAYOUTS[scheme], arg)
        return _array_source(x, labels, class_names, preprocessing)
    data = load_dataset(spec, seed=split_seed)
    return _array_source(data.x_test, data.y_test.numpy(), data.class_names, preprocessing)


# --------------------------------------------------------------------------- selection


def balanced_indices(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """``n`` positions spread over the classes of ``labels`` as evenly as possible, sorted ascending.

    Every class gets ``n // K`` or one more slot; a class with fewer samples takes them all and its
    unused slots go to the others.  Which classes get the extra slot, and which samples fill each
    class's slots, are drawn from ``numpy.random.default_rng(seed)``.
    """
    labels = np.asarray(labels)
    if not 0 < n <= len(labels):
        raise DatasetError(f"cannot select {n} of {len(labels)} samples; need 0 < n <= {len(labels)}")
    rng = np.random.default_rng(seed)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = np.zeros_like(counts)
    left = n
    while True:  # give every class with room an equal share; classes that run out pass the rest on
        open_classes = np.flatnonzero(take < counts)
        share = left // len(open_classes)
        if share == 0:
            break
        given = np.minimum(counts[open_classes] - take[open_classes], share)
        take[open_classes] += given
        left -= int(given.sum())
    if left:  # fewer slots left than classes with room: a seeded draw decides who gets one more
        take[rng.permutation(np.flatnonzero(take < counts))[:left]] += 1
    parts = [rng.permutation(np.flatnonzero(inverse == c))[: take[c]] for c in range(len(counts))]
    return np.sort(np.concatenate(parts))


_INT = re.compile(r"[+-]?\d+")
_JSON_SPACE = " \t\r\n"


def _strip_comment(line: str) -> str:
    """``line`` without a comment: one that starts the line, or a ``#`` after whitespace."""
    stripped = line.strip()
    if stripped.startswith("#"):
        return ""
    match = re.search(r"\s#", stripped)
    return stripped[: match.start()].strip() if match else stripped


def _json_entries(path: Path, text: str) -> list[tuple[int, object]]:
    """The items of a JSON list with the line each starts on (json.loads checks the text first)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"sample list '{path}' is not valid JSON (line {exc.lineno}: {exc.msg}); give a JSON "
                           "list of indices or file names, or a text file with one entry per line") from None
    if not isinstance(data, list):
        raise DatasetError(f"sample list '{path}' holds a JSON {type(data).__name__}; give a JSON list of sample "
                           "indices or file names")
    decoder, entries = json.JSONDecoder(), []
    pos = text.index("[") + 1
    for _ in data:  # walk the (valid) text again to learn where each item starts
        while text[pos] in _JSON_SPACE or text[pos] == ",":
            pos += 1
        value, end = decoder.raw_decode(text, pos)
        entries.append((text.count("\n", 0, pos) + 1, value))
        pos = end
    return entries


def _read_list(path: Path) -> list[tuple[int, object]]:
    """``(line number, entry)`` pairs of a sample list file, in file order."""
    if not path.is_file():
        raise MissingPathError(f"sample list '{path}' does not exist; give a text file with one sample index or "
                               "file name per line, or a JSON list")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read sample list '{path}' ({exc}); give a UTF-8 text or JSON file") from exc
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        entries = _json_entries(path, text)
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            content = _strip_comment(line)
            if content:
                entries.append((number, int(content) if _INT.fullmatch(content) else content))
    if not entries:
        raise DatasetError(f"sample list '{path}' lists no samples; add one sample index or file name per line")
    return entries


def _resolve_list(path: Path, entries: list[tuple[int, object]], ids: tuple[str, ...], spec: str) -> np.ndarray:
    """Positions in the fixed order for the entries of a sample list (see the module docstring)."""
    exact = {sample_id: i for i, sample_id in enumerate(ids)}
    by_name: dict[str, list[int]] = {}
    for i, sample_id in enumerate(ids):
        by_name.setdefault(sample_id.rsplit("/", 1)[-1], []).append(i)
    n, seen, positions = len(ids), {}, []
    hint = f"entries are indices 0..{n - 1} or sample ids such as '{ids[0]}'"
    for line, entry in entries:
        where = f"sample list '{path}', line {line}"
        if isinstance(entry, bool) or not isinstance(entry, int | str):
            raise DatasetError(f"{where}: {entry!r} is neither a sample index nor a file name; {hint}")
        if isinstance(entry, int):
            if not 0 <= entry < n:
                raise DatasetError(f"{where}: index {entry} is out of range; {spec} has {n} samples, numbered "
                                   f"0..{n - 1}")
            position = entry
        else:
            key = entry.strip().replace("\\", "/")
            parts = key.split("/")
            found = next((exact[s] for s in ("/".join(parts[k:]) for k in range(len(parts))) if s in exact), None)
            if found is None and len(parts) == 1:
                matches = by_name.get(key, [])
                if len(matches) > 1:
                    raise DatasetError(f"{where}: file name '{key}' is ambiguous ('{ids[matches[0]]}', "
                                       f"'{ids[matches[1]]}', ...); write its path relative to the class tree")
                found = matches[0] if matches else None
            if found is None:
                raise DatasetError(f"{where}: '{entry}' is not a sample of {spec}; {hint}")
            position = found
        if position in seen:
            raise DatasetError(f"{where}: sample '{ids[position]}' is listed twice (first on line {seen[position]}); "
                               "list each sample once")
        seen[position] = line
        positions.append(position)
    return np.asarray(positions, dtype=np.int64)


def _checked_int(name: str, value: object, *, minimum: int | None = None, need: str = "an int") -> int:
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or (minimum is not None and number < minimum):
        raise DatasetError(f"{name} must be {need}, got {value!r}")
    return number


# --------------------------------------------------------------------------- the front door


def open_evaluation_set(spec: str, *, n_samples: int | None = None, selection: str = "balanced", seed: int = 0,
                        split_seed: int = 0, preprocessing: Preprocessing | None = None,
                        samples: str | Path | None = None, channels: int | None = None) -> EvaluationStream:
    """The selected samples of ``spec``, listed and labelled but not decoded: :meth:`EvaluationStream.read` decodes
    the ones asked for, so a streamed evaluation holds one batch of images at a time (see the module docstring for
    sources and conventions; :func:`load_evaluation_set` decodes the whole selection at once).

    ``channels`` (1 or 3, the model's input channels) fixes how image-folder files are decoded; without it a
    folder's selection is grayscale only when every selected image is (decided once, from the file headers, so
    every batch has the same channels).

    ``n_samples``: how many (``None``: all); ``selection``: ``"balanced"`` (seeded by ``seed``) or
    ``"first"``; ``samples``: a sample list file, which takes precedence over ``selection`` (``"list"``
    is accepted for it); ``split_seed``: the seed of a split the data set itself makes (``digits``,
    ``synthetic``, ``imagefolder:...?holdout=F``), as ``load_dataset``'s ``seed``; ``preprocessing``:
    resize + centre crop, or ``None`` to keep the native size.  Bad input raises
    :class:`~advbench.errors.DatasetError` (or a subclass) saying how to fix it.
    """
    if n_samples is not None:
        n_samples = _checked_int("n_samples (--n-samples)", n_samples, minimum=1,
                                 need="an int >= 1 (or None for all samples)")
    seed = _checked_int("seed", seed, minimum=0, need="an int >= 0")
    split_seed = _checked_int("split_seed", split_seed, minimum=0, need="an int >= 0")
    if selection not in SELECTIONS:
        raise DatasetError(f"unknown sample selection {selection!r}; valid selections: {', '.join(SELECTIONS)}")
    if selection == "list" and samples is None:
        raise DatasetError("selection 'list' needs a sample list file: pass samples=PATH (--samples)")
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise ConfigError(f"preprocessing must be a Preprocessing or None, got {type(preprocessing).__name__}")
    scheme, arg = parse_spec(spec)
    DATASETS.get(scheme, task=CLASSIFICATION)  # fail fast with the list of known names
    spec = spec.strip()
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3 (the model's input channels), got {channels!r}")
    source = _source(scheme, arg, spec, preprocessing, split_seed, channels)
    available = len(source.labels)
    warnings: list[str] = []
    if samples is not None:
        list_path = Path(samples).expanduser()
        method = "list"
        positions = _resolve_list(list_path, _read_list(list_path), source.ids, spec)
        if n_samples is not None and n_samples > len(positions):
            warnings.append(f"--n-samples {n_samples} asked for more than the {len(positions)} samples listed in "
                            f"{list_path}; evaluating all {len(positions)}")
        positions = positions[:n_samples]
    else:
        method = selection
        if n_samples is not None and n_samples > available:
            warnings.append(f"--n-samples {n_samples} asked for more than the {available} samples of {spec}; "
                            f"evaluating all {available}")
        if n_samples is None or n_samples >= available:
            positions = np.arange(available)
        elif method == "first":
            positions = np.arange(n_samples)
        else:
            positions = balanced_indices(source.labels, n_samples, seed=seed)
    source.select(np.asarray(positions, dtype=np.int64))
    sample_ids = tuple(source.ids[i] for i in positions)
    record: dict[str, Any] = {"method": method}
    if method == "balanced":
        record["seed"] = seed
    record.update(n=len(positions), n_available=available,
                  ids_sha256=hashlib.sha256("\n".join(sample_ids).encode("utf-8")).hexdigest())
    return EvaluationStream(
        labels=np.ascontiguousarray(source.labels[positions], dtype=np.int64),
        positions=np.asarray(positions, dtype=np.int64),
        class_names=source.class_names,
        sample_ids=sample_ids,
        source={"spec": spec, "split": source.split, "n_available": available},
        selection=record,
        preprocessing=None if preprocessing is None else preprocessing.describe(),
        warnings=tuple(warnings),
        reader=source.read,
        fingerprint_parts=source.fingerprint,
    )


def load_evaluation_set(spec: str, *, n_samples: int | None = None, selection: str = "balanced", seed: int = 0,
                        split_seed: int = 0, preprocessing: Preprocessing | None = None,
                        samples: str | Path | None = None, channels: int | None = None) -> EvaluationSet:
    """The samples of ``spec`` an evaluation runs on, decoded into one tensor (see :func:`open_evaluation_set`
    for the arguments, and the module docstring for sources and conventions)."""
    stream = open_evaluation_set(spec, n_samples=n_samples, selection=selection, seed=seed, split_seed=split_seed,
                                 preprocessing=preprocessing, samples=samples, channels=channels)
    return stream.decode_all()
