"""Salient object detection (SOD): the task's metrics and its Experiment live here.

The victim task of the adversarial cloud attack and DefenseNet (Sun, Fu, Li et al., arXiv
2306.17431).  This package holds what is specific to the task; everything else has one home elsewhere:

* :mod:`advbench.sod.metrics` -- MAE, F-measure, S-measure, E-measure;
* :mod:`advbench.sod.experiment` -- the ``sod`` Experiment the pipeline runs, and
  :mod:`advbench.sod.robustness`, the rows of its protocol (clean, adversarial cloud, PGD; undefended and through
  DefenseNet);
* the data: :mod:`advbench.datasets.sod` (:class:`SODData`, ``eorssd:/path`` folders, ``synthetic-sod`` scenes);
* the models: :mod:`advbench.models.sod` (:class:`SODModel`, registered in ``advbench.models.registry.MODELS``) and
  :mod:`advbench.models.unet` (:class:`UNet`, Ronneberger et al., MICCAI 2015);
* training and checkpoints: :mod:`advbench.training.sod`.
"""

from advbench.sod.metrics import SODMetrics, evaluate_sod, sod_metrics

__all__ = ["SODMetrics", "evaluate_sod", "sod_metrics"]
