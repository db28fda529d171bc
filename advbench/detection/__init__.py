"""Object detection under attack: the task's metrics and its Experiment (aerial patch attacks, EVD4UAV,
arXiv 2403.05422).

* :func:`match_detected`, :func:`attack_success` -- which vehicles a detector finds, and the attack success
  rate overall and per altitude, colour, type and class (Sun, Guo et al., arXiv 2403.05422).
* :func:`coco_map`, :func:`coco_map_by` -- AP50 and mAP with pycocotools (Lin et al., ECCV 2014), overall and
  per altitude; :func:`write_coco_detections` writes the results file pycocotools reads.
* :func:`save_detection_grid` -- a PNG of clean vs patched detections (:mod:`advbench.detection.report`).
* :mod:`advbench.detection.experiment` -- the ``detection`` Experiment the pipeline runs, with the pieces of its
  protocol that work on samples and detectors in :mod:`advbench.detection.protocol` (the per-altitude split, the
  victim detector, patched images).

Elsewhere: the data in :mod:`advbench.datasets.detection`, the detectors in :mod:`advbench.models.detectors`,
their training and checkpoints in :mod:`advbench.training.detection`, the patch attacks in
:mod:`advbench.attacks.patch`.

torchvision and pycocotools are imported on first use, so importing this package stays light.
"""

from __future__ import annotations

from advbench.detection.metrics import (
    ASRCount,
    AttackSuccess,
    attack_success,
    coco_ground_truth,
    coco_map,
    coco_map_by,
    coco_results,
    match_detected,
    write_coco_detections,
)
from advbench.detection.report import save_detection_grid

__all__ = [
    "ASRCount",
    "AttackSuccess",
    "attack_success",
    "coco_ground_truth",
    "coco_map",
    "coco_map_by",
    "coco_results",
    "match_detected",
    "save_detection_grid",
    "write_coco_detections",
]
