"""Object detection data sets for advbench: aerial vehicles (EVD4UAV), DOTA, VisDrone and COCO files.

>>> samples = load_detection_dataset("evd4uav:/data/evd4uav?altitude=50m&snow=false")  # doctest: +SKIP
>>> inspect_dataset(samples)["classes"]  # doctest: +SKIP
{'Bus': 12, 'Car': 903, 'Truck': 40}

Every loader returns a list of :class:`DetectionSample` (one per image, boxes in pixels).  Specs (see
:func:`load_detection_dataset`; options follow ``?`` and are joined by ``&``):

* ``evd4uav:/path`` -- EVD4UAV (Sun, Guo et al., arXiv 2403.05422); options ``altitude``, ``snow``,
  ``classes``, ``altitudes``, ``masks``, ``clip``.
* ``dota:/path`` -- DOTA (Xia et al., CVPR 2018); options ``classes``, ``clip``.
* ``visdrone:/path`` -- VisDrone-DET (Zhu et al., TPAMI 2021); options ``classes``, ``clip``.
* ``coco:/path/to/annotations.json`` -- COCO JSON (Lin et al., ECCV 2014); options ``classes``, ``masks``, ``clip``.

:func:`export_coco` writes any samples as COCO JSON that the ``coco`` loader reads back unchanged, and
:func:`inspect_dataset` counts classes, altitudes, attributes and image sizes.  :func:`augment_sample` runs
seeded albumentations pipelines (presets in :data:`DETECTION_AUGMENTATIONS`) that keep boxes, rotated boxes,
masks and attributes in step with the image.  Malformed files raise
:class:`~advbench.errors.DatasetError` naming the file and line; missing folders raise
:class:`~advbench.errors.MissingPathError`.
"""

from __future__ import annotations

from advbench.datasets.detection import coco, dota, evd4uav, visdrone  # noqa: F401  (register loaders)
from advbench.datasets.detection.augment import (
    DETECTION_AUGMENTATIONS,
    AugmentedSample,
    augment_sample,
    detection_pipeline,
    list_detection_augmentations,
)
from advbench.datasets.detection.catalog import (
    DetectionLoader,
    load_detection_dataset,
)
from advbench.datasets.detection.coco import load_coco
from advbench.datasets.detection.dota import DOTA_CLASSES, load_dota
from advbench.datasets.detection.evd4uav import load_evd4uav
from advbench.datasets.detection.evd4uav_meta import EVD4UAV_ALTITUDES, EVD4UAV_CLASSES, EVD4UAV_COLOURS
from advbench.datasets.detection.export import export_coco
from advbench.datasets.detection.sample import DetectionSample
from advbench.datasets.detection.summary import inspect_dataset
from advbench.datasets.detection.synthetic_aerial import generate_aerial_dataset
from advbench.datasets.detection.visdrone import VISDRONE_CLASSES, load_visdrone

__all__ = [
    "generate_aerial_dataset",
    "DETECTION_AUGMENTATIONS",
    "DOTA_CLASSES",
    "EVD4UAV_ALTITUDES",
    "EVD4UAV_CLASSES",
    "EVD4UAV_COLOURS",
    "VISDRONE_CLASSES",
    "AugmentedSample",
    "DetectionLoader",
    "DetectionSample",
    "augment_sample",
    "detection_pipeline",
    "export_coco",
    "inspect_dataset",
    "list_detection_augmentations",
    "load_coco",
    "load_detection_dataset",
    "load_dota",
    "load_evd4uav",
    "load_visdrone",
]
