"""Multi-task dense prediction (segmentation, depth, surface normals): the task's metrics and its Experiment.

The victim side of the stealthy multi-task attack (Guo, Zhang, Li et al., arXiv 2411.17936).  This package holds
what is specific to the task; everything else has one home elsewhere:

* :mod:`advbench.multitask.metrics` -- mIoU / depth error / normal angle error, :class:`MultiTaskMetrics`,
  :func:`metric_change` and :func:`stealth_success`;
* :mod:`advbench.multitask.experiment` -- the ``multitask`` Experiment the pipeline runs, and
  :mod:`advbench.multitask.robustness`, per-task metrics before and after an attack;
* the data: :mod:`advbench.datasets.multitask` (:class:`MultiTaskData`, ``synthetic-multitask`` scenes and
  ``nyuv2:/path`` folders);
* the models: :mod:`advbench.models.multitask` (:class:`MultiTaskNet`, in ``MODELS``) and
  :mod:`advbench.models.task_heads` (each task's output, per-sample loss and target format);
* the attacks: :mod:`advbench.attacks.multitask`; training and checkpoints: :mod:`advbench.training.multitask`.
"""

from advbench.multitask.metrics import (
    MultiTaskMetrics,
    degradation,
    evaluate_multitask,
    metric_change,
    per_sample_metrics,
    stealth_success,
)

__all__ = [
    "MultiTaskMetrics",
    "degradation",
    "evaluate_multitask",
    "metric_change",
    "per_sample_metrics",
    "stealth_success",
]
