"""The parts of the detection experiment that work on detection samples and detectors, not on batches.

The experiment itself (EVD4UAV's protocol, Sun, Guo et al., arXiv 2403.05422; run through the
one pipeline) is :class:`advbench.detection.experiment.DetectionExperiment`.  It takes from here:

- :func:`split_by_group`: the seeded per-altitude split into patch-training and held-out test images;
- :func:`altitude_subset`: the training images of some altitudes only (the cross-altitude study);
- :func:`resolve_detector`: a detector from a checkpoint, or from an architecture trained on the training split
  only when first needed (so a run answered from the results store never trains one);
- :func:`load_images` and :func:`patch_images`: the images read from disk, and the images with a patch on every
  vehicle roof at its deployed (unjittered) placement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advbench.attacks.patch import PatchAttack
from advbench.attacks.patches import NO_JITTER, apply_patch_each, rotated_or_axis_boxes
from advbench.datasets.detection import DetectionSample
from advbench.errors import InputError
from advbench.models.detectors import Detector
from advbench.models.registry import MODELS
from advbench.progress import progress_bar
from advbench.task_names import DETECTION
from advbench.training.detection import DetectorTrainConfig, load_detector, train_detector


def split_by_group(samples: Sequence[DetectionSample], train_fraction: float, seed: int,
                   key: str = "altitude") -> tuple[list[DetectionSample], list[DetectionSample]]:
    """A seeded split that keeps each ``key`` group's share in both parts (every group gets >= 1 test image)."""
    gen = torch.Generator().manual_seed(seed)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(str(getattr(s, key) or "all"), []).append(i)
    train, test = [], []
    for name in sorted(groups):
        members = groups[name]
        order = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
        cut = min(len(order) - 1, max(1, round(train_fraction * len(order)))) if len(order) > 1 else 0
        train += order[:cut]
        test += order[cut:]
    if not train:
        raise InputError(f"the data set has too few images ({len(samples)}) to split into training and test parts")
    return [samples[i] for i in sorted(train)], [samples[i] for i in sorted(test)]


def altitude_subset(samples: Sequence[DetectionSample], altitudes: Sequence[str]) -> list[DetectionSample]:
    """The samples whose altitude is one of ``altitudes``; an altitude the training split lacks is an error."""
    present = sorted({str(s.altitude) for s in samples})
    wanted = set(altitudes)
    if not wanted or not wanted <= set(present):
        raise InputError(f"patch altitudes {list(altitudes)}: the training split has altitudes {present}; "
                         "pick some of those")
    return [s for s in samples if str(s.altitude) in wanted]


@dataclass
class DetectorSource:
    """Where a detector comes from: its identity (goes into the run's config) and how to get it.

    A checkpoint is loaded at once (cheap, and its classes are checked early); a registered architecture is
    trained on the training split only when :meth:`get` is first called, so a run already in the results
    store never pays for the training.
    """

    identity: dict[str, Any]
    _train: Callable[[], tuple[Detector, dict[str, Any]]] | None = None
    _detector: Detector | None = None
    training: dict[str, Any] | None = None

    def get(self) -> Detector:
        if self._detector is None:
            assert self._train is not None
            self._detector, summary = self._train()
            self.training = {"arch": self.identity["arch"], "final_loss": round(summary["final_loss"], 4)}
        return self._detector


def resolve_detector(spec: str, train: Sequence[DetectionSample], *, seed: int, epochs: int, progress: bool,
                     arch: str | None = None, image_size: tuple[int, int] | None = None,
                     device: str = "cpu", role: str = "") -> DetectorSource:
    """A checkpoint path is loaded (bare weights need ``arch`` and ``image_size``; the classes are the data
    set's); a registered architecture name is trained on ``train`` (seeded) when first needed.  Either way
    the detector ends up on ``device``.  ``role`` (e.g. ``"surrogate"``) names a detector other than the
    victim in the training's progress bars."""
    path = Path(spec).expanduser()
    if path.exists():
        from advbench.checkpoints import file_sha256

        names = train[0].class_names if arch is not None else None
        det = load_detector(path, arch=arch, class_names=names, image_size=image_size)
        if tuple(det.class_names) != tuple(train[0].class_names):
            raise InputError(f"detector {path} knows classes {list(det.class_names)} but the data set has "
                             f"{list(train[0].class_names)}; train it on this data set's classes")
        identity = {"checkpoint": str(path), "sha256": file_sha256(path), "arch": det.arch,
                    **({"image_size": list(image_size)} if image_size is not None else {})}
        return DetectorSource(identity, _detector=det.to(device))
    if spec in MODELS.names(task=DETECTION):
        # the role only names the bars; the victim's keep the plain ``train ARCH`` name
        named = {"role": role} if role and progress else {}

        def fit() -> tuple[Detector, dict[str, Any]]:
            return train_detector(train, DetectorTrainConfig(arch=spec, epochs=epochs, seed=seed), progress=progress,
                                  device=device, **named)

        return DetectorSource({"arch": spec, "trained_here": {"epochs": epochs, "seed": seed}}, _train=fit)
    raise InputError(f"detector '{spec}' is neither a checkpoint file nor an architecture "
                     f"({', '.join(MODELS.names(task=DETECTION))}); train one with `advbench train-detector`")


def patch_images(images: Sequence[torch.Tensor], samples: Sequence[DetectionSample], patch: torch.Tensor,
                 attack: PatchAttack) -> list[torch.Tensor]:
    """The test images with ``patch`` on every vehicle roof (no jitter: the deployed placement)."""
    rboxes = [rotated_or_axis_boxes(s.boxes, s.rotated_boxes) for s in samples]
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(images), 16):  # batched placement, in chunks that bound the memory
            out += apply_patch_each(images[start:start + 16], patch, rboxes[start:start + 16], attack.placement,
                                    NO_JITTER)
    return out


def load_images(samples: Sequence[DetectionSample], *, progress: bool = False,
                desc: str = "load images") -> list[torch.Tensor]:
    """Every sample's image, read from disk; ``progress`` shows a bar on stderr counting them."""
    with progress_bar(total=len(samples), desc=desc, unit="image", enabled=progress) as bar:
        images = []
        for s in samples:
            images.append(s.load_image())
            bar.update(1)
    return images
