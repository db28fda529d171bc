"""Training, saving and loading of SOD models.

:func:`train_sod` fits a model from the SOD models of :data:`~advbench.models.registry.MODELS` with Adam on binary
cross-entropy plus an optional soft-IoU loss (the BCE + IoU combination common in SOD since Qin et al., "BASNet:
Boundary-Aware Salient Object Detection", CVPR 2019), with dihedral augmentation (top-view scenes have no "up"),
and reports the test metrics of :mod:`advbench.sod.metrics`.  Checkpoints are safetensors with ``task: "sod"``
metadata, so :func:`load_sod_model` refuses classifier and detector checkpoints.  These models are the victims of
the adversarial cloud attack (Sun, Fu, Li et al., arXiv 2306.17431). """

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from advbench.checkpoints import load_state_strict, read_checkpoint, require_task, save_task_checkpoint
from advbench.datasets.sod import SODData, load_sod_dataset
from advbench.errors import CheckpointError, ConfigError, UnknownNameError
from advbench.models.sod import SODModel, create_sod_model
from advbench.records import device_name
from advbench.sod.metrics import evaluate_sod, sod_metrics
from advbench.training.dense import fit_dense

STD_FLOOR = 1e-3


def soft_iou_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``1 - sum(p m) / sum(p + m - p m)`` per image (p = sigmoid(logits)), averaged; +1 smoothing on both sides."""
    probs = logits.sigmoid()
    inter = (probs * masks).flatten(1).sum(1)
    union = (probs + masks - probs * masks).flatten(1).sum(1)
    return (1 - (inter + 1) / (union + 1)).mean()


def _dihedral(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 rotations/flips, drawn from ``gen``, applied to a whole batch of images and masks."""
    k = int(torch.randint(4, (), generator=gen))
    flip = bool(torch.rand((), generator=gen) < 0.5)
    x, m = torch.rot90(x, k, dims=(2, 3)), torch.rot90(m, k, dims=(2, 3))
    if flip:
        x, m = x.flip(3), m.flip(3)
    return x, m


def _check_hyper(epochs: int, batch_size: int, lr: float, iou_weight: float) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train_sod: {name} must be a positive int, got {value!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"train_sod: lr must be a positive number, got {lr!r}")
    if not isinstance(iou_weight, (int, float)) or not math.isfinite(iou_weight) or iou_weight < 0:
        raise ConfigError(f"train_sod: iou_weight must be >= 0 (0 trains on BCE alone), got {iou_weight!r}")


def train_sod(
    data: SODData | str,
    *,
    arch: str = "unet-sod",
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    iou_weight: float = 1.0,
    augment: bool = True,
    model_options: dict[str, Any] | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[SODModel, dict[str, Any]]:
    """Train SOD model ``arch`` on ``data`` (an :class:`SODData` or a spec for
    :func:`~advbench.datasets.sod.load_sod_dataset`); returns the model (eval mode) and a summary.

    Loss: ``BCE(logits, mask) + iou_weight * soft_iou_loss``; Adam with a cosine learning-rate decay to 5% of
    ``lr``.  All randomness (initialisation, shuffling, augmentation) follows ``seed``.  The summary holds the
    hyperparameters, the first and final epoch losses, ``test_metrics`` (see :mod:`advbench.sod.metrics`) and
    ``baseline_test_metrics``: those of a constant map equal to the training foreground share, a floor that a
    useful model must clearly beat.  Batches are drawn and augmented on the CPU and trained on ``device``; the
    model is returned there.
    """
    _check_hyper(epochs, batch_size, lr, iou_weight)
    if isinstance(data, str):
        data = load_sod_dataset(data, seed=seed)
    if not isinstance(data, SODData):
        raise ConfigError(f"train_sod: data must be an SODData or a data set spec string, got {type(data).__name__}")
    mean = data.x_train.mean(dim=(0, 2, 3))
    std = data.x_train.std(dim=(0, 2, 3)).clamp(min=STD_FLOOR)
    with torch.random.fork_rng(devices=[]):  # layer init uses torch's global generator
        torch.manual_seed(seed)
        model = create_sod_model(arch, mean=mean.tolist(), std=std.tolist(), input_size=data.input_size,
                                 **(model_options or {}))
    model = model.to(device)
    check = getattr(model.net, "check_input", None)
    if check is not None:
        check(data.x_train[:1])  # a size the net cannot take fails now, not after loading the optimiser
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)

    def loss_fn(net: torch.nn.Module, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits, m)
        if iou_weight:
            loss = loss + iou_weight * soft_iou_loss(logits, m)
        return loss, {}

    started = time.perf_counter()
    history = fit_dense(model, data.x_train, lambda idx: data.m_train[idx], loss_fn, epochs=epochs,
                        batch_size=batch_size, lr=lr, generator=gen, augment=_dihedral if augment else None,
                        device=device, desc=f"train {arch}", progress=progress)
    epoch_losses = history.epoch_losses
    seconds = time.perf_counter() - started
    prior = float(data.m_train.mean())
    summary = {
        "arch": arch,
        "dataset": data.name,
        "model_options": dict(model.options),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "iou_weight": iou_weight,
        "augment": augment,
        "steps": history.steps,
        "n_train": n,
        "n_test": len(data.x_test),
        "input_size": list(data.input_size),
        "first_loss": epoch_losses[0],
        "final_loss": epoch_losses[-1],
        "train_seconds": round(seconds, 3),
        "test_metrics": evaluate_sod(model, data.x_test, data.m_test),
        "baseline_test_metrics": sod_metrics(torch.full_like(data.m_test, prior), data.m_test),
    }
    if torch.device(device).type != "cpu":  # only off the CPU, so CPU summaries keep their fields
        summary["device"] = device_name(device)
    return model, summary


def save_sod_model(model: SODModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (.safetensors + JSON sidecar) with the metadata :func:`load_sod_model` needs.

    The sidecar holds ``task: "sod"``, ``arch``, ``model_options``, ``normalization`` and ``input_size``, then the
    entries of ``metadata`` (for example ``{"dataset": ..., "training": summary}``), which cannot override those.
    """
    return save_task_checkpoint(model, path, metadata, model_type=SODModel, label="SOD")


def load_sod_model(path: str | Path) -> SODModel:
    """Rebuild an SOD model saved by :func:`save_sod_model` (no pickled code runs); returns it in eval mode.

    A checkpoint whose metadata does not say ``task: "sod"`` (a classifier, a detector, bare weights) is refused
    with :class:`~advbench.errors.CheckpointError`, as is one whose tensors do not fit its architecture.
    """
    state, meta = read_checkpoint(path)
    require_task(meta, path, "sod", "an SOD model",
                 "pass a checkpoint written by `advbench train-sod` or save_sod_model")
    arch = meta.get("arch")
    norm = meta.get("normalization") or {}
    try:
        model = create_sod_model(str(arch), mean=norm.get("mean", (0.5, 0.5, 0.5)), std=norm.get("std", (0.25,) * 3),
                                 input_size=meta.get("input_size"), **(meta.get("model_options") or {}))
    except (ConfigError, UnknownNameError) as exc:
        raise CheckpointError(f"{path}: its metadata cannot rebuild the model ({exc})") from exc
    load_state_strict(model, state, path, f"SOD architecture '{arch}' {meta.get('model_options')}")
    model.checkpoint_meta = meta
    model.checkpoint_path = str(path)
    return model.eval()
