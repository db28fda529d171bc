"""``synthetic[:n=...,classes=...,size=...,channels=...]``: a seeded, learnable toy classification set.

Each class has a smooth random prototype image (a coarse random grid upsampled bilinearly); a
sample is its class prototype at a random contrast plus Gaussian pixel noise, clipped to [0, 1].
Nearest-centroid already classifies it well, so a small net trains on it in about a second, while
the noise keeps it from being trivially robust.  Everything is drawn from a numpy Generator seeded
by ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from advbench.datasets.catalog import DATASETS
from advbench.datasets.data import ClassificationData, split_data
from advbench.datasets.options import parse_options, require_range
from advbench.datasets.splits import stratified_split
from advbench.errors import DatasetError
from advbench.task_names import CLASSIFICATION

DEFAULTS = {"n": 600, "classes": 4, "size": 8, "channels": 1}
NOISE_STD = 0.15
GRID = 3  # coarse prototype resolution before upsampling
MAX_VALUES = 200_000_000  # refuse specs that would need more than ~800 MB


def make_synthetic(n: int, classes: int, size: int, channels: int, *, seed: int) -> ClassificationData:
    """Generate the synthetic set: ``n`` images (80% train, 20% test) of shape ``(channels, size, size)``."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((classes, channels, GRID, GRID)))
    protos = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True).numpy()
    lo = protos.min(axis=(1, 2, 3), keepdims=True)
    hi = protos.max(axis=(1, 2, 3), keepdims=True)
    protos = 0.1 + 0.8 * (protos - lo) / np.maximum(hi - lo, 1e-6)  # stretch each prototype to [0.1, 0.9]
    labels = rng.permutation(np.arange(n) % classes)
    contrast = rng.uniform(0.7, 1.0, size=(n, 1, 1, 1))
    noise = rng.normal(0.0, NOISE_STD, size=(n, channels, size, size))
    images = np.clip(0.5 + contrast * (protos[labels] - 0.5) + noise, 0.0, 1.0).astype(np.float32)
    train, test = stratified_split(labels, n // 5, seed=seed)
    x = torch.from_numpy(images)
    return split_data("synthetic", x, labels, train, test, tuple(f"class_{i}" for i in range(classes)))


@DATASETS.register("synthetic", task=CLASSIFICATION)
def load_synthetic(arg: str | None = None, *, seed: int = 0) -> ClassificationData:
    """Parse ``n``, ``classes``, ``size`` and ``channels`` (defaults 600, 4, 8, 1) and build the set.

    Limits: ``classes`` 2..1000, ``n`` at least ``5 * classes`` (so every class reaches the 20% test
    split), ``size`` 2..512, ``channels`` 1 or 3.
    """
    where = "data set 'synthetic'"
    opts = {**DEFAULTS, **parse_options(arg, dict.fromkeys(DEFAULTS, int), where=where)}
    classes = require_range(where, "classes", opts["classes"], 2, 1000)
    n = require_range(where, "n", opts["n"], 5 * classes, 10_000_000)
    size = require_range(where, "size", opts["size"], 2, 512)
    channels = opts["channels"]
    if channels not in (1, 3):
        raise DatasetError(f"{where}: option 'channels' must be 1 or 3, got {channels}")
    if n * channels * size * size > MAX_VALUES:
        raise DatasetError(
            f"{where}: n*channels*size*size = {n * channels * size * size} is too large; lower 'n' or 'size'"
        )
    return make_synthetic(n, classes, size, channels, seed=seed)
