"""Object detection under attack: metrics and reports for aerial patch attacks (EVD4UAV, arXiv 2403.05422).

* :func:`match_detected`, :func:`attack_success` -- which vehicles a detector finds, and the attack success
  rate overall and per altitude, colour, type and class (Sun, Guo et al., arXiv 2403.05422).
* :func:`coco_map`, :func:`coco_map_by` -- AP50 and mAP with pycocotools (Lin et al., ECCV 2014), overall and
  per altitude; :func:`write_coco_detections` writes the results file pycocotools reads.
* :func:`save_detection_grid` -- a PNG of clean vs patched detections.

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
