"""``cifar10:/path``: the standard CIFAR-10 "python version" batches already on the user's disk.

The folder must hold ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta`` (as
unpacked from ``cifar-10-python.tar.gz``); its parent, which holds ``cifar-10-batches-py/``, is
accepted too.  The batches are pickles, so they are read with the restricted unpickler in
:mod:`advbench.datasets.safe_pickle`: a tampered file cannot run code.  Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from advbench.datasets.catalog import DATASETS
from advbench.datasets.data import ClassificationData, int64_labels, uint8_images
from advbench.datasets.safe_pickle import safe_load_pickle
from advbench.errors import DatasetError, MissingPathError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FOLDER_NAME = "cifar-10-batches-py"
IMAGE_SHAPE = (3, 32, 32)
_HOW_TO_FIX = (
    "the folder must hold data_batch_1..data_batch_5, test_batch and batches.meta as unpacked from the "
    "'CIFAR-10 python version' archive (https://www.cs.toronto.edu/~kriz/cifar.html)"
)


def resolve_folder(path_text: str) -> Path:
    """The folder holding the batch files: ``path_text`` itself or its ``cifar-10-batches-py`` child."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise MissingPathError(f"CIFAR-10 folder '{path}' does not exist; {_HOW_TO_FIX}")
    if not path.is_dir():
        raise DatasetError(f"CIFAR-10 path '{path}' is a file, not a folder; {_HOW_TO_FIX}")
    names = (*TRAIN_FILES, TEST_FILE, META_FILE)
    if not any((path / name).exists() for name in names) and (path / FOLDER_NAME).is_dir():
        return path / FOLDER_NAME
    return path


def _as_str(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _read_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 batch file '{path}' is missing; {_HOW_TO_FIX}")
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR-10 file '{path}' holds a {type(obj).__name__}, expected a dict; {_HOW_TO_FIX}")
    return {_as_str(k): v for k, v in obj.items()}


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into ``(uint8 images (N,3,32,32), int64 labels (N,))``, validating both."""
    batch = _read_dict(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError(f"CIFAR-10 batch '{path}' lacks a 'data' array or a 'labels' list; {_HOW_TO_FIX}")
    size = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        raise DatasetError(
            f"CIFAR-10 batch '{path}': 'data' must be a uint8 array of shape (N, {size}), got {data.dtype} "
            f"{data.shape}"
        )
    try:
        labels_arr = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"CIFAR-10 batch '{path}': 'labels' is not a list of ints ({exc})") from exc
    if labels_arr.ndim != 1 or not np.issubdtype(labels_arr.dtype, np.integer) or len(labels_arr) != len(data):
        raise DatasetError(
            f"CIFAR-10 batch '{path}': 'labels' must be {len(data)} integers, got {labels_arr.dtype} {labels_arr.shape}"
        )
    if len(labels_arr) and (labels_arr.min() < 0 or labels_arr.max() >= num_classes):
        raise DatasetError(
            f"CIFAR-10 batch '{path}': labels must lie in [0, {num_classes}), found "
            f"[{labels_arr.min()}, {labels_arr.max()}]"
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels_arr.astype(np.int64)


def read_class_names(path: Path) -> tuple[str, ...]:
    """The ``label_names`` stored in ``batches.meta``."""
    names = _read_dict(path).get("label_names")
    if not isinstance(names, list | tuple) or len(names) < 2:
        raise DatasetError(f"CIFAR-10 meta file '{path}' lacks a 'label_names' list; {_HOW_TO_FIX}")
    return tuple(_as_str(n) for n in names)


@DATASETS.register("cifar10")
def load_cifar10(arg: str | None, *, seed: int = 0) -> ClassificationData:
    """CIFAR-10 from local python batches: 50,000/10,000 3x32x32 images (pixel / 255); the split is fixed.

    ``seed`` is accepted for a uniform loader signature and ignored (CIFAR-10 has an official split).
    """
    if not arg:
        raise DatasetError(f"data set 'cifar10' needs a path: use 'cifar10:/path/to/{FOLDER_NAME}'")
    folder = resolve_folder(arg)
    for name in (*TRAIN_FILES, TEST_FILE, META_FILE):  # report a missing file before parsing anything
        if not (folder / name).is_file():
            raise DatasetError(f"CIFAR-10 batch file '{folder / name}' is missing; {_HOW_TO_FIX}")
    class_names = read_class_names(folder / META_FILE)
    train = [read_batch(folder / name, len(class_names)) for name in TRAIN_FILES]
    x_test, y_test = read_batch(folder / TEST_FILE, len(class_names))
    return ClassificationData(
        name=f"cifar10:{arg}",
        x_train=uint8_images(np.concatenate([x for x, _ in train])),
        y_train=int64_labels(np.concatenate([y for _, y in train])),
        x_test=uint8_images(x_test),
        y_test=int64_labels(y_test),
        num_classes=len(class_names),
        class_names=class_names,
    )
