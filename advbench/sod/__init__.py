"""Salient object detection (SOD): metrics, training and the robustness protocol live here; the data and the
models live in their homes (listed below) and are re-exported for convenience.

The victim task of the adversarial cloud attack and DefenseNet (Sun, Fu, Li et al., arXiv
2306.17431):

* :mod:`advbench.datasets.sod` -- :class:`SODData`, ``eorssd:/path`` folders and ``synthetic-sod`` scenes;
* :mod:`advbench.models.unet` -- :class:`UNet` (Ronneberger et al., MICCAI 2015), also as a residual image-to-image net;
* :mod:`advbench.models.sod` -- the ``SOD_MODELS`` registry and :class:`SODModel` ([0,1] images -> logits);
* :mod:`advbench.sod.metrics` -- MAE, F-measure, S-measure, E-measure;
* :mod:`advbench.sod.training` -- :func:`train_sod`, :func:`save_sod_model`, :func:`load_sod_model`.
"""

from advbench.datasets.sod import (
    SOD_DATASETS,
    SODData,
    generate_sod_scenes,
    list_sod_datasets,
    load_sod_dataset,
    write_sod_folder,
)
from advbench.models.sod import SOD_MODELS, SODModel, create_sod_model, list_sod_models
from advbench.models.unet import UNet
from advbench.sod.metrics import SODMetrics, sod_metrics
from advbench.sod.training import evaluate_sod, load_sod_model, save_sod_model, train_sod

__all__ = [
    "SOD_DATASETS",
    "SOD_MODELS",
    "SODData",
    "SODMetrics",
    "SODModel",
    "UNet",
    "create_sod_model",
    "evaluate_sod",
    "generate_sod_scenes",
    "list_sod_datasets",
    "list_sod_models",
    "load_sod_dataset",
    "load_sod_model",
    "save_sod_model",
    "sod_metrics",
    "train_sod",
    "write_sod_folder",
]
