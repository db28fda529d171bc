"""``digits``: scikit-learn's 1,797 8x8 handwritten digits (ships with sklearn, no download)."""

from __future__ import annotations

import numpy as np
import torch

from advbench.datasets.catalog import DATASETS, reject_argument
from advbench.datasets.data import ClassificationData, split_data
from advbench.datasets.splits import stratified_split
from advbench.task_names import CLASSIFICATION

TEST_FRACTION = 0.2


@DATASETS.register("digits", task=CLASSIFICATION)
def load_digits(arg: str | None = None, *, seed: int = 0) -> ClassificationData:
    """sklearn's digits as 1x8x8 images (pixel / 16, so in [0, 1]) with a seeded stratified 80/20 split."""
    reject_argument("digits", arg)
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(labels, round(TEST_FRACTION * len(labels)), seed=seed)
    x = torch.from_numpy(np.clip(images, 0.0, 1.0)[:, None])
    return split_data("digits", x, labels, train, test, tuple(str(i) for i in range(10)))
