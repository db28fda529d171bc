"""Seeded training-time augmentation built on albumentations, applied to NCHW [0, 1] tensors."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from advbench.datasets.data import ClassificationData
from advbench.errors import InputError

if TYPE_CHECKING:
    import albumentations


def _albumentations() -> ModuleType:
    """Import albumentations with its online update check disabled (advbench never touches the network)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def training_augmentation(data: ClassificationData, *, seed: int) -> albumentations.Compose:
    """A seeded augmentation pipeline suited to ``data``'s images.

    Single-channel (digit-like) data gets a small random affine shift (about 10% of the side, at
    least one pixel) and rotation (up to 10 degrees) with black fill; no flips, since a mirrored
    digit is a different symbol.  Multi-channel (RGB) data gets the classic CIFAR recipe: zero-pad
    by 1/8 of the side, random crop back to size, random horizontal flip.  Two pipelines built with
    the same ``seed`` produce the same sequence of augmentations.
    """
    A = _albumentations()
    import cv2

    channels, height, width = data.input_shape
    if channels == 1:
        shift = max(1, round(0.1 * min(height, width)))
        transforms = [
            A.Affine(
                translate_px=(-shift, shift),
                rotate=(-10, 10),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.8,
            )
        ]
    else:
        pad = max(1, round(min(height, width) / 8))
        transforms = [
            A.PadIfNeeded(
                min_height=height + 2 * pad, min_width=width + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0
            ),
            A.RandomCrop(height=height, width=width),
            A.HorizontalFlip(p=0.5),
        ]
    return A.Compose(transforms, seed=seed)


def augment_batch(x: torch.Tensor, pipeline: Callable[..., Mapping[str, Any]]) -> torch.Tensor:
    """Apply ``pipeline`` to each image of an NCHW float batch in [0, 1]; returns a new float32 batch.

    Each image is handed to ``pipeline(image=...)`` as an HWC float32 numpy array; the result is
    clipped to [0, 1] and returned on ``x``'s device with ``x``'s shape.  ``x`` is not modified.
    The pipeline must preserve the image shape.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        desc = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"augment_batch needs a float NCHW tensor, got a {desc}")
    if len(x) == 0:
        return x.detach().to(torch.float32).clone()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"augment_batch needs values in [0, 1], got [{lo}, {hi}]; un-normalise the batch first")
    images = np.array(x.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy(), dtype=np.float32, order="C")
    out = np.empty_like(images)
    for i, image in enumerate(images):
        result = np.asarray(pipeline(image=image)["image"], dtype=np.float32)
        if result.ndim == 2:
            result = result[..., None]
        if result.shape != image.shape:
            raise InputError(
                f"the augmentation pipeline changed an image from HWC {image.shape} to {result.shape}; "
                "augment_batch needs shape-preserving transforms (add a crop or resize back to the input size)"
            )
        out[i] = result
    np.clip(out, 0.0, 1.0, out=out)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device)
