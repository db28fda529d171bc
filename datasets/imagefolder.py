"""``imagefolder:/path[?size=N&holdout=F&split=NAME]``: class-per-subfolder images read with PIL.

Layout: ``/path/<class>/<image>`` (subfolders of a class folder are searched too).  Class names are
the sorted folder names; the sample order is fixed: classes by folder name, then files by their
path relative to the class folder.  Files whose suffix is not a common image format are ignored;
files with an image suffix that PIL cannot read raise :class:`DatasetError` naming them.

Training (:func:`~advbench.datasets.catalog.load_dataset`) needs a train and a test split:

* ``/path/train/`` and ``/path/test/``, each such a class tree, are used as the two splits (class
  names come from ``train/``; every test class must also be a training class); or
* a single class tree with ``?holdout=0.2``: that fraction of each class is held out for testing
  (stratified, seeded by the loader's ``seed``).  A folder is never split without being asked to.

Evaluation (:func:`~advbench.datasets.evaluation_set.load_evaluation_set`) reads a folder as it
stands and decodes only the images it selects; ``?split=NAME`` picks the ``val/``, ``test/`` or
other subfolder to read when the choice is ambiguous (see that module).

For training, images are resized (bilinear) to the size of the first training image, or to
``N x N`` with ``?size=N``.  They are loaded as grayscale (1 channel) if every image is grayscale
(PIL mode ``L`` or ``1``), else as RGB (3 channels).  Options may be separated by ``&`` or ``,``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from advbench.datasets.catalog import DATASETS
from advbench.datasets.data import ClassificationData, int64_labels, uint8_images
from advbench.datasets.options import parse_options, require_range
from advbench.datasets.splits import stratified_split
from advbench.errors import DatasetError, MissingPathError
from advbench.spec_query import split_path_query
from advbench.task_names import CLASSIFICATION

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
GRAY_MODES = frozenset({"L", "1"})


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_tree(root: Path) -> dict[str, list[Path]]:
    """Map each class folder name under ``root`` (sorted) to its image files, sorted by their path relative
    to the class folder; hidden files and folders are skipped.  Lists names only: nothing is decoded.
    A tree without class folders, or a class folder without images, raises :class:`DatasetError`."""
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)
    if not class_dirs:
        raise DatasetError(
            f"image folder '{root}' has no class subfolders; put each class's images in its own folder, "
            f"e.g. '{root}/cat/1.png'"
        )
    tree: dict[str, list[Path]] = {}
    for class_dir in class_dirs:
        found = []
        for p in class_dir.rglob("*"):
            rel = p.relative_to(class_dir)
            if p.suffix.lower() in IMAGE_SUFFIXES and all(not part.startswith(".") for part in rel.parts) \
                    and p.is_file():
                found.append((rel.as_posix(), p))
        if not found:
            raise DatasetError(
                f"class folder '{class_dir}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "add images or remove the folder"
            )
        tree[class_dir.name] = [p for _, p in sorted(found, key=lambda item: item[0])]
    return tree


def tree_items(tree: dict[str, list[Path]], class_names: tuple[str, ...]) -> list[tuple[Path, int]]:
    """``(file, label)`` for every image of ``tree`` in the fixed order (classes sorted, then files), where
    the label indexes ``class_names``; a class missing from ``class_names`` raises :class:`DatasetError`."""
    index = {name: i for i, name in enumerate(class_names)}
    items = []
    for name in sorted(tree):
        if name not in index:
            raise DatasetError(f"class folder '{tree[name][0].parent}' is not among the training classes "
                               f"{list(class_names)}; every test class needs training images")
        items.extend((path, index[name]) for path in tree[name])
    return items


def files_by_stem(folder: Path, suffixes: Collection[str], pairing: str) -> dict[str, Path]:
    """The visible files of ``folder`` with one of ``suffixes`` (lower case, with the dot), keyed by stem, for
    pairing files across folders by name; two files with one stem raise :class:`DatasetError` (``pairing``
    names what would be ambiguous, e.g. ``"image/mask pairing"``)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in suffixes:
            continue
        if path.stem in files:
            raise DatasetError(f"'{files[path.stem]}' and '{path}' have the same stem '{path.stem}', so the "
                               f"{pairing} is ambiguous; keep one of them")
        files[path.stem] = path
    return files


def read_image(path: Path) -> Image.Image:
    """Open and fully decode one image, raising DatasetError naming the file if PIL cannot read it."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image file '{path}' ({exc}); fix or delete it") from exc


def _to_array(images: list[Image.Image], mode: str, size: tuple[int, int]) -> np.ndarray:
    """Convert PIL images to a uint8 NCHW array of the given mode and (width, height)."""
    arrays = []
    for img in images:
        img = img.convert(mode)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(arrays)


@dataclass(frozen=True)
class FolderSpec:
    """The parsed argument of an ``imagefolder:`` spec."""

    arg: str
    root: Path
    size: int | None = None  # ?size=N: resize every image to N x N
    holdout: float | None = None  # ?holdout=F: hold out this fraction of each class (single-tree folders)
    split: str | None = None  # ?split=NAME: the subfolder an evaluation reads

    @property
    def spec(self) -> str:
        return f"imagefolder:{self.arg}"

    def with_option(self, option: str) -> str:
        """The spec with one more ``key=value`` option, for error messages that show the fix."""
        return f"{self.spec}{'&' if '?' in self.arg else '?'}{option}"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise ValueError(f"must be a fraction strictly between 0 and 1, e.g. 0.2, got {text}")
    return value


def _subfolder_name(text: str) -> str:
    if not text or "/" in text or "\\" in text or text in {".", ".."}:
        raise ValueError("must be the name of one subfolder, e.g. val")
    return text


def parse_folder_arg(arg: str | None) -> FolderSpec:
    """Parse ``/path[?size=N&holdout=F&split=NAME]`` and check that the folder exists."""
    where = "data set 'imagefolder'"
    if not arg:
        raise DatasetError(f"{where} needs a path: use 'imagefolder:/path/to/folder' (optionally '?size=32')")
    path_text, query = split_path_query(arg)
    schema = {"size": int, "holdout": _fraction, "split": _subfolder_name}
    opts = parse_options(query, schema, where=where)
    if opts.get("size") is not None:
        require_range(where, "size", opts["size"], 1, 4096)
    spec = FolderSpec(arg=arg, root=Path(path_text).expanduser(), **opts)
    if not spec.root.exists():
        raise MissingPathError(f"image folder '{spec.root}' does not exist; check the path in '{spec.spec}'")
    if not spec.root.is_dir():
        raise DatasetError(f"image folder path '{spec.root}' is a file, not a folder; give the folder that holds "
                           "the class folders")
    return spec


def holdout_split(root: Path, labels: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) positions of a single-tree folder's images under ``?holdout=fraction``: each class
    gives its share of test images (stratified), chosen with ``seed``.

    Depends only on the labels in the fixed order, the fraction and ``seed``, so training and evaluation
    hold out the same files."""
    n = len(labels)
    n_test = max(1, round(fraction * n))
    if n < 2 or n_test >= n:
        raise DatasetError(f"image folder '{root}' holds {n} image(s), too few to hold out {fraction} of them; "
                           "add images, change '?holdout=' or give it train/ and test/ folders")
    return stratified_split(labels, n_test, seed=seed)


@DATASETS.register("imagefolder", task=CLASSIFICATION)
def load_imagefolder(arg: str | None, *, seed: int = 0) -> ClassificationData:
    """Load a class-per-subfolder image tree for training (see the module docstring for layout and options)."""
    spec = parse_folder_arg(arg)
    root = spec.root
    if spec.split is not None:
        raise DatasetError(f"'{spec.spec}': option 'split' picks the subfolder an evaluation reads; training reads "
                           "train/ and test/ (or one tree with '?holdout=0.2'), so drop 'split'")
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        present, absent = ("train", "test") if has_train else ("test", "train")
        raise DatasetError(
            f"image folder '{root}' has a '{present}/' subfolder but no '{absent}/'; add '{absent}/', or move the "
            f"class folders up into one tree and add '?holdout=0.2' to hold out a test split"
        )
    if has_train:
        if spec.holdout is not None:
            raise DatasetError(f"image folder '{root}' already has train/ and test/ folders; drop '?holdout=' "
                               "from the spec")
        train_tree, test_tree = scan_tree(root / "train"), scan_tree(root / "test")
        class_names = tuple(sorted(train_tree))
        train_items, test_items = tree_items(train_tree, class_names), tree_items(test_tree, class_names)
        train_imgs = [read_image(path) for path, _ in train_items]
        test_imgs = [read_image(path) for path, _ in test_items]
        reference = train_imgs[0]
    else:
        tree = scan_tree(root)
        if spec.holdout is None:
            raise DatasetError(
                f"image folder '{root}' has no train/ and test/ subfolders, and it is not split without being "
                "asked: add '?holdout=0.2' to hold out 20% of each class for testing "
                f"('{spec.with_option('holdout=0.2')}'), or put the images into train/ and test/ class folders"
            )
        class_names = tuple(sorted(tree))
        items = tree_items(tree, class_names)
        labels = np.asarray([label for _, label in items], dtype=np.int64)
        train, test = holdout_split(spec.root, labels, spec.holdout, seed=seed)
        train_items, test_items = [items[i] for i in train], [items[i] for i in test]
        # decode each file once, in the fixed order; the size reference is the first image of that order
        images = [read_image(path) for path, _ in items]
        train_imgs, test_imgs = [images[i] for i in train], [images[i] for i in test]
        reference = images[0]
    mode = "L" if all(img.mode in GRAY_MODES for img in train_imgs + test_imgs) else "RGB"
    target = (spec.size, spec.size) if spec.size is not None else reference.size
    return ClassificationData(
        name=spec.spec,
        x_train=uint8_images(_to_array(train_imgs, mode, target)),
        y_train=int64_labels(np.asarray([label for _, label in train_items], dtype=np.int64)),
        x_test=uint8_images(_to_array(test_imgs, mode, target)),
        y_test=int64_labels(np.asarray([label for _, label in test_items], dtype=np.int64)),
        num_classes=len(class_names),
        class_names=class_names,
    )
