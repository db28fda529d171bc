"""Salient object detection (SOD): the metrics, training and the robustness protocol live here.

The victim task of the adversarial cloud attack and DefenseNet (Sun, Fu, Li et al., arXiv
2306.17431).  This package holds what is specific to the task; everything else has one home elsewhere:

* :mod:`advbench.sod.metrics` -- MAE, F-measure, S-measure, E-measure;
* :mod:`advbench.sod.training` -- :func:`train_sod`, :func:`save_sod_model`, :func:`load_sod_model`;
* :mod:`advbench.sod.robustness` -- the rows of the DefenseNet study;
* the data: :mod:`advbench.datasets.sod` (:class:`SODData`, ``eorssd:/path`` folders, ``synthetic-sod`` scenes);
* the models: :mod:`advbench.models.sod` (:class:`SODModel`, registered in ``advbench.models.registry.MODELS``) and
  :mod:`advbench.models.unet` (:class:`UNet`, Ronneberger et al., MICCAI 2015);
* the experiment: :mod:`advbench.experiments.sod`.
"""

from advbench.sod.metrics import SODMetrics, sod_metrics
from advbench.sod.training import evaluate_sod, load_sod_model, save_sod_model, train_sod

__all__ = ["SODMetrics", "evaluate_sod", "load_sod_model", "save_sod_model", "sod_metrics", "train_sod"]
