"""Train a detector on a detection data set, save it, and load detector checkpoints (ours or the user's).

Training is plain supervised detection (each architecture's own losses, AdamW with a cosine schedule),
sized so the small detectors of :mod:`advbench.models.detectors` learn the synthetic EVD4UAV-style
scenes in a few minutes on two CPU cores.  Checkpoints are safetensors with a JSON sidecar (see
:mod:`advbench.checkpoints`), so loading never executes pickled code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from advbench.checkpoints import load_state_strict, read_checkpoint, save_checkpoint
from advbench.datasets.detection import DetectionSample, augment_sample, detection_pipeline
from advbench.errors import CheckpointError, ConfigError, InputError
from advbench.models.detectors import Detector, create_detector
from advbench.progress import progress_bar
from advbench.records import device_name


@dataclass
class DetectorTrainConfig:
    """Hyperparameters of :func:`train_detector` (defaults suit the synthetic aerial scenes).

    ``augment`` names an albumentations preset that keeps boxes consistent (see
    :func:`advbench.datasets.detection.detection_pipeline`); ``None`` or ``"none"`` trains on the raw images.
    """

    arch: str = "fcos-mnv3"
    epochs: int = 30
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: str | None = "dihedral"  # a preset of advbench.datasets.detection.DETECTION_AUGMENTATIONS
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")


def _image_size(samples: Sequence[DetectionSample]) -> tuple[int, int]:
    sizes = {tuple(s.image_size) for s in samples}
    return max(sizes, key=lambda wh: wh[0] * wh[1])


def train_detector(samples: Sequence[DetectionSample], cfg: DetectorTrainConfig, *, progress: bool = True,
                   device: str | torch.device = "cpu", role: str = "") -> tuple[Detector, dict[str, Any]]:
    """Train a fresh ``cfg.arch`` detector on ``samples``; returns it (eval mode, on ``device``) and a summary.

    ``progress`` shows bars on stderr for loading the images and for the optimiser steps; ``role`` (e.g.
    ``"surrogate"``) goes into their names, so a run that trains several detectors tells them apart.

    Images are loaded and augmented on the CPU and moved to ``device`` per batch.  The same seed gives the
    same batches and augmentations on every device.  FCOS then differs by float rounding only; Faster R-CNN's
    box samplers draw from the global generator of ``device`` (seeded from ``cfg.seed``), so on a GPU they pick
    other proposals than on the CPU and the weights differ by more than rounding."""
    device = torch.device(device)
    if not samples:
        raise InputError("the training set is empty; check the data set spec and its filters")
    pipeline = None if cfg.augment in (None, "none") else detection_pipeline(cfg.augment)
    class_names = samples[0].class_names
    det = create_detector(cfg.arch, class_names=class_names, image_size=_image_size(samples), seed=cfg.seed,
                          **cfg.options).to(device)
    name = f"{role} {cfg.arch}" if role else cfg.arch
    with progress_bar(total=len(samples), desc=f"load images ({name})", unit="image", enabled=progress) as bar:
        images = []
        for s in samples:
            images.append(s.load_image())
            bar.update(1)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(samples) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(det.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(50, total // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    det.train()
    history: list[float] = []
    bar = progress_bar(total=total, desc=f"train {name}", unit="step", enabled=progress)
    # torchvision's box samplers draw from the global generator: seed it for this run and restore it afterwards
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    rng.__enter__()
    torch.manual_seed(cfg.seed)
    try:
        for _epoch in range(cfg.epochs):
            order = torch.randperm(len(samples), generator=gen).tolist()
            for start in range(0, len(order), cfg.batch_size):
                batch_imgs, targets = [], []
                for i in order[start:start + cfg.batch_size]:
                    img, boxes, labels = images[i], samples[i].boxes, samples[i].labels
                    if pipeline is not None:
                        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
                        aug = augment_sample(samples[i], img, pipeline, seed=seed)
                        img, boxes, labels = aug.image, aug.boxes, aug.labels
                    batch_imgs.append(img)
                    targets.append({"boxes": boxes, "labels": labels})
                losses = det.training_losses(batch_imgs, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise ConfigError(f"training diverged (loss {float(loss)}); lower lr (now {cfg.lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(det.parameters(), 10.0)
                opt.step()
                sched.step()
                history.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.3f}", refresh=False)
    finally:
        bar.close()
        rng.__exit__(None, None, None)
    det.eval()
    tail = history[-steps_per_epoch:]
    summary = {"config": asdict(cfg), "steps": total, "final_loss": sum(tail) / len(tail),
               "first_loss": history[0], "n_images": len(samples), "class_names": list(class_names)}
    if device.type != "cpu":  # only off the CPU, so CPU summaries keep their fields
        summary["device"] = device_name(device)
    return det, summary


def save_detector(det: Detector, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``det`` as ``path`` (.safetensors) with the metadata :func:`load_detector` rebuilds it from."""
    return save_checkpoint(det, path, {**det.metadata(), **(extra or {})})


def load_detector(path: str | Path, *, arch: str | None = None, class_names: Sequence[str] | None = None,
                  image_size: tuple[int, int] | None = None) -> Detector:
    """Load a detector checkpoint without executing pickled code.

    advbench checkpoints carry their architecture, classes and image size.  For your own weights (a
    ``.pt``/``.pth`` state dict of the same torchvision architecture, with or without the ``model.``
    prefix) pass ``arch``, ``class_names`` and ``image_size``; explicit arguments override the metadata.
    """
    state, meta = read_checkpoint(path)
    if meta and meta.get("task") != "detection":
        raise CheckpointError(f"{path} is a {meta.get('task', 'classifier')} checkpoint, not a detector; "
                              "pass a checkpoint written by `advbench train-detector`")
    arch = arch or meta.get("arch")
    names = class_names or meta.get("class_names")
    size = image_size or meta.get("image_size")
    missing = [n for n, v in (("arch", arch), ("class_names", names), ("image_size", size)) if not v]
    if missing:
        raise CheckpointError(f"{path} has no detector metadata for {', '.join(missing)}; pass them explicitly "
                              "(advbench detect-attack: --detector-arch fcos-mnv3 --image-size 256x192)")
    det = create_detector(str(arch), class_names=list(names), image_size=(int(size[0]), int(size[1])),
                          **meta.get("options", {}))
    if not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    load_state_strict(det, state, path, f"architecture '{arch}' with {len(names)} classes (check --detector-arch)")
    return det.eval()
