"""What the dense-prediction experiments (SOD, multi-task) share: in-memory tensor pairs served as batches, the
content fingerprint of their data, a checkpoint's identity, the config fields such a run refuses, and run
warnings in the record's shape.  Used by :mod:`advbench.sod.experiment` and :mod:`advbench.multitask.experiment`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from advbench.errors import ConfigError


class TensorPairs(Dataset):
    """Item ``i`` of two in-memory tensors; a list of indices is read as one batch."""

    def __init__(self, x: torch.Tensor, y: Any) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def _take(self, index: Any) -> Any:
        if isinstance(self.y, dict):
            return self.x[index], {k: v[index] for k, v in self.y.items()}
        return self.x[index], self.y[index]

    def __getitem__(self, index: int) -> Any:
        return self._take(index)

    def __getitems__(self, indices: list[int]) -> Any:
        return self._take(torch.as_tensor(indices, dtype=torch.long))


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' bytes (the data set's content identity in a resolved config)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return digest.hexdigest()


def checkpoint_identity(path: str) -> dict[str, Any]:
    """``{"path", "name", "sha256"}`` of a checkpoint file."""
    from advbench.checkpoints import file_sha256

    return {"path": path, "name": Path(path).stem, "sha256": file_sha256(path)}


def check_common(cfg: Any, task: str) -> None:
    """What an SOD or multi-task run cannot take: several models, several eps, a sample list or a class map."""
    if len(cfg.models) != 1:
        raise ConfigError(f"a {task} model is evaluated on its own; pass one --model, got {len(cfg.models)}")
    if len(cfg.eps) != 1:
        raise ConfigError(f"a {task} run takes one --eps, got {len(cfg.eps)}; run each budget on its own")
    if cfg.samples is not None:
        raise ConfigError(f"--samples lists classifier evaluation samples; a {task} run evaluates the first "
                          "--n-samples test images, drop --samples")
    if cfg.class_map is not None:
        raise ConfigError(f"--class-map maps classifier labels; a {task} model has none, drop --class-map")


def run_warnings(warnings: Sequence[str]) -> list[dict[str, str]]:
    return [{"name": "RunWarning", "message": m} for m in warnings]
