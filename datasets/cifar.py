"""``cifar10:/path`` and ``cifar100:/path``: the CIFAR "python version" files already on the user's disk.

CIFAR-10 (``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/``): ``data_batch_1`` ..
``data_batch_5``, ``test_batch`` and ``batches.meta``; the batches hold ``labels`` and the meta file
``label_names``.

CIFAR-100 (``cifar-100-python.tar.gz`` unpacks to ``cifar-100-python/``): ``train``, ``test`` and
``meta``; the 100 fine classes are used (``fine_labels`` / ``fine_label_names``), the 20 coarse
super-classes are ignored.

The spec's path is that folder or its parent.  Every file is a pickled dict whose ``data`` entry is
a uint8 array of shape (N, 3072) (three 32x32 planes, red, green, blue); the files are read with the
restricted unpickler in :mod:`advbench.datasets.safe_pickle`, so a tampered file cannot run code.
:func:`~advbench.datasets.catalog.load_dataset` (training) needs every file; an evaluation
(:func:`~advbench.datasets.evaluation_set.load_evaluation_set`) reads only the test file and the
meta file (:func:`read_test_set`).  Nothing is ever downloaded; the split is the official one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advbench.datasets.catalog import DATASETS
from advbench.datasets.data import ClassificationData, int64_labels, uint8_images
from advbench.datasets.safe_pickle import safe_load_pickle
from advbench.errors import DatasetError, MissingPathError
from advbench.task_names import CLASSIFICATION

IMAGE_SHAPE = (3, 32, 32)
HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarLayout:
    """The file names and dict keys of one CIFAR variant's python-version archive."""

    title: str  # "CIFAR-10", used in messages
    scheme: str  # "cifar10", the spec scheme
    folder_name: str  # the folder the archive unpacks to
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: str  # key of the label list in each batch
    names_key: str  # key of the class-name list in the meta file

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)

    def unpacked(self, names: tuple[str, ...]) -> str:
        """``"a, b and c as unpacked from the ... archive (url)"``."""
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        return f"{listed} as unpacked from the '{self.title} python version' archive ({HOMEPAGE})"

    def how_to_fix(self) -> str:
        """The sentence that tells the user which files the folder must hold."""
        return f"the folder must hold {self.unpacked(self.files)}"


CIFAR10 = CifarLayout(
    title="CIFAR-10",
    scheme="cifar10",
    folder_name="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    labels_key="labels",
    names_key="label_names",
)
CIFAR100 = CifarLayout(
    title="CIFAR-100",
    scheme="cifar100",
    folder_name="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    labels_key="fine_labels",
    names_key="fine_label_names",
)
LAYOUTS = {layout.scheme: layout for layout in (CIFAR10, CIFAR100)}


def resolve_folder(layout: CifarLayout, path_text: str | None) -> Path:
    """The folder holding ``layout``'s files: ``path_text`` itself or its ``layout.folder_name`` child."""
    if not path_text:
        raise DatasetError(f"data set '{layout.scheme}' needs a path: use '{layout.scheme}:/path/to/"
                           f"{layout.folder_name}'")
    path = Path(path_text).expanduser()
    if not path.exists():
        raise MissingPathError(f"{layout.title} folder '{path}' does not exist; {layout.how_to_fix()}")
    if not path.is_dir():
        raise DatasetError(f"{layout.title} path '{path}' is a file, not a folder; {layout.how_to_fix()}")
    if not any((path / name).exists() for name in layout.files) and (path / layout.folder_name).is_dir():
        return path / layout.folder_name
    return path


def require_files(layout: CifarLayout, folder: Path, names: tuple[str, ...], purpose: str) -> None:
    """Raise :class:`DatasetError` naming the first of ``names`` missing from ``folder`` (before parsing any)."""
    for name in names:
        if not (folder / name).is_file():
            raise DatasetError(f"{layout.title} file '{folder / name}' is missing; {purpose} needs "
                               f"{layout.unpacked(names)}")


def _as_str(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _read_dict(layout: CifarLayout, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{layout.title} file '{path}' is missing; {layout.how_to_fix()}")
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DatasetError(f"{layout.title} file '{path}' holds a {type(obj).__name__}, expected a dict; "
                           f"{layout.how_to_fix()}")
    return {_as_str(k): v for k, v in obj.items()}


def read_batch(layout: CifarLayout, path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into ``(uint8 images (N,3,32,32), int64 labels (N,))``, validating both."""
    batch = _read_dict(layout, path)
    data, labels = batch.get("data"), batch.get(layout.labels_key)
    where = f"{layout.title} batch '{path}'"
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError(f"{where} lacks a 'data' array or a '{layout.labels_key}' list; {layout.how_to_fix()}")
    size = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        raise DatasetError(f"{where}: 'data' must be a uint8 array of shape (N, {size}), got {data.dtype} "
                           f"{data.shape}; replace the file")
    try:
        labels_arr = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: '{layout.labels_key}' is not a list of ints ({exc}); replace the file") from exc
    if labels_arr.ndim != 1 or not np.issubdtype(labels_arr.dtype, np.integer) or len(labels_arr) != len(data):
        raise DatasetError(f"{where}: '{layout.labels_key}' must be {len(data)} integers, got {labels_arr.dtype} "
                           f"{labels_arr.shape}; replace the file")
    if len(labels_arr) and (labels_arr.min() < 0 or labels_arr.max() >= num_classes):
        raise DatasetError(f"{where}: labels must lie in [0, {num_classes}), found [{labels_arr.min()}, "
                           f"{labels_arr.max()}]; replace the file")
    return data.reshape(-1, *IMAGE_SHAPE), labels_arr.astype(np.int64)


def read_class_names(layout: CifarLayout, path: Path) -> tuple[str, ...]:
    """The class names stored in the meta file (``label_names`` / ``fine_label_names``)."""
    names = _read_dict(layout, path).get(layout.names_key)
    if not isinstance(names, list | tuple) or len(names) < 2:
        raise DatasetError(f"{layout.title} meta file '{path}' lacks a '{layout.names_key}' list; "
                           f"{layout.how_to_fix()}")
    return tuple(_as_str(n) for n in names)


def read_test_set(layout: CifarLayout, arg: str | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Only the test file and the meta file: ``(uint8 images (N,3,32,32), int64 labels, class names)``."""
    folder = resolve_folder(layout, arg)
    require_files(layout, folder, (layout.test_file, layout.meta_file), "an evaluation")
    class_names = read_class_names(layout, folder / layout.meta_file)
    x, y = read_batch(layout, folder / layout.test_file, len(class_names))
    return x, y, class_names


def load_cifar(layout: CifarLayout, arg: str | None) -> ClassificationData:
    """The whole data set (every training batch and the test batch) as a :class:`ClassificationData`."""
    folder = resolve_folder(layout, arg)
    require_files(layout, folder, layout.files, "training")
    class_names = read_class_names(layout, folder / layout.meta_file)
    train = [read_batch(layout, folder / name, len(class_names)) for name in layout.train_files]
    x_test, y_test = read_batch(layout, folder / layout.test_file, len(class_names))
    return ClassificationData(
        name=f"{layout.scheme}:{arg}",
        x_train=uint8_images(np.concatenate([x for x, _ in train])),
        y_train=int64_labels(np.concatenate([y for _, y in train])),
        x_test=uint8_images(x_test),
        y_test=int64_labels(y_test),
        num_classes=len(class_names),
        class_names=class_names,
    )


@DATASETS.register("cifar10", task=CLASSIFICATION)
def load_cifar10(arg: str | None, *, seed: int = 0) -> ClassificationData:
    """CIFAR-10 from local python batches: 50,000/10,000 3x32x32 images (pixel / 255), 10 classes.

    ``seed`` is accepted for a uniform loader signature and ignored (CIFAR-10 has an official split).
    """
    return load_cifar(CIFAR10, arg)


@DATASETS.register("cifar100", task=CLASSIFICATION)
def load_cifar100(arg: str | None, *, seed: int = 0) -> ClassificationData:
    """CIFAR-100 from local python files: 50,000/10,000 3x32x32 images (pixel / 255), 100 fine classes.

    ``seed`` is accepted for a uniform loader signature and ignored (CIFAR-100 has an official split).
    """
    return load_cifar(CIFAR100, arg)
