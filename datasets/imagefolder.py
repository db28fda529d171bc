"""``imagefolder:/path[?size=N]``: class-per-subfolder images read with PIL.

Layout: ``/path/<class>/<image>`` (subfolders of a class folder are searched too).  If ``/path`` has
both ``train/`` and ``test/`` subfolders, each is such a class-per-subfolder tree and is used as
that split; otherwise all images are split 80/20 (stratified, seeded by ``seed``).  Class names are
the sorted folder names of the training tree.

All images are resized (bilinear) to the size of the first training image, or to ``N x N`` with
the ``?size=N`` option.  They are loaded as grayscale (1 channel) if every image is grayscale (PIL
mode ``L`` or ``1``), else as RGB (3 channels).  Files whose suffix is not a common image format are
ignored; files with an image suffix that PIL cannot read raise :class:`DatasetError` naming them.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
from PIL import Image

from advbench.datasets.catalog import DATASETS
from advbench.datasets.data import ClassificationData, int64_labels, uint8_images
from advbench.datasets.options import parse_options, require_range
from advbench.datasets.splits import stratified_split
from advbench.errors import DatasetError, MissingPathError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
GRAY_MODES = frozenset({"L", "1"})
TEST_FRACTION = 0.2


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_tree(root: Path) -> dict[str, list[Path]]:
    """Map each class folder name under ``root`` to its sorted image files; error if there are none."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if not class_dirs:
        raise DatasetError(
            f"image folder '{root}' has no class subfolders; put each class's images in its own folder, "
            f"e.g. '{root}/cat/1.png'"
        )
    tree: dict[str, list[Path]] = {}
    for class_dir in class_dirs:
        files = sorted(
            p for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p)
        )
        if not files:
            raise DatasetError(
                f"class folder '{class_dir}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "add images or remove the folder"
            )
        tree[class_dir.name] = files
    return tree


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


def _parse_arg(arg: str | None) -> tuple[Path, int | None]:
    where = "data set 'imagefolder'"
    if not arg:
        raise DatasetError(f"{where} needs a path: use 'imagefolder:/path/to/folder' (optionally '?size=32')")
    path_text, sep, query = arg.rpartition("?")
    if not sep:
        path_text, query = arg, ""
    opts = parse_options(query.replace("&", ","), {"size": int}, where=where)
    size = opts.get("size")
    if size is not None:
        require_range(where, "size", size, 1, 4096)
    return Path(path_text).expanduser(), size


@DATASETS.register("imagefolder")
def load_imagefolder(arg: str | None, *, seed: int = 0) -> ClassificationData:
    """Load a class-per-subfolder image tree (see the module docstring for layout and options)."""
    root, size = _parse_arg(arg)
    if not root.exists():
        raise MissingPathError(f"image folder '{root}' does not exist; check the path in 'imagefolder:{arg}'")
    if not root.is_dir():
        raise DatasetError(f"image folder path '{root}' is a file, not a folder")
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        present, absent = ("train", "test") if has_train else ("test", "train")
        raise DatasetError(
            f"image folder '{root}' has a '{present}/' subfolder but no '{absent}/'; add '{absent}/' or move the "
            "class folders up so the images are split automatically"
        )
    if has_train:
        train_tree, test_tree = scan_tree(root / "train"), scan_tree(root / "test")
        extra = sorted(set(test_tree) - set(train_tree))
        if extra:
            raise DatasetError(
                f"image folder '{root}/test' has classes {extra} that '{root}/train' lacks; "
                "every test class needs training images"
            )
    else:
        train_tree, test_tree = scan_tree(root), {}
    class_names = tuple(sorted(train_tree))
    index = {name: i for i, name in enumerate(class_names)}

    def read(tree: dict[str, list[Path]]) -> tuple[list[Image.Image], list[int]]:
        items = [(f, index[c]) for c in sorted(tree) for f in tree[c]]
        return [read_image(f) for f, _ in items], [label for _, label in items]

    train_imgs, train_labels = read(train_tree)
    test_imgs, test_labels = read(test_tree)
    mode = "L" if all(img.mode in GRAY_MODES for img in train_imgs + test_imgs) else "RGB"
    target = (size, size) if size is not None else train_imgs[0].size
    x_train = _to_array(train_imgs, mode, target)
    y_train = np.asarray(train_labels, dtype=np.int64)
    if has_train:
        x_test, y_test = _to_array(test_imgs, mode, target), np.asarray(test_labels, dtype=np.int64)
    else:
        if len(y_train) < 2:
            raise DatasetError(
                f"image folder '{root}' holds only {len(y_train)} image; add images or give it train/ and test/ folders"
            )
        train, test = stratified_split(y_train, max(1, round(TEST_FRACTION * len(y_train))), seed=seed)
        x_train, y_train, x_test, y_test = x_train[train], y_train[train], x_train[test], y_train[test]
    return ClassificationData(
        name=f"imagefolder:{arg}",
        x_train=uint8_images(x_train),
        y_train=int64_labels(y_train),
        x_test=uint8_images(x_test),
        y_test=int64_labels(y_test),
        num_classes=len(class_names),
        class_names=class_names,
    )
