"""Multi-task dense prediction (segmentation, depth, surface normals): metrics and training live here; the data,
the models and the task heads live in their homes (listed below) and are re-exported for convenience.

The victim side of the stealthy multi-task attack (Guo, Zhang, Li et al., arXiv 2411.17936):

* :mod:`advbench.datasets.multitask` -- :class:`MultiTaskData`, ``synthetic-multitask`` scenes and ``nyuv2:/path``
  folders;
* :mod:`advbench.models.task_heads` -- the ``TASK_HEADS`` registry: each task's output, per-sample loss and target
  format;
* :mod:`advbench.multitask.metrics` -- mIoU / depth error / normal angle error, :class:`MultiTaskMetrics`,
  :func:`metric_change` and :func:`stealth_success`;
* :mod:`advbench.models.multitask` -- the ``MULTITASK_MODELS`` registry and :class:`MultiTaskNet`;
* :mod:`advbench.multitask.training` -- :func:`train_multitask`, :func:`save_multitask_model`,
  :func:`load_multitask_model`.
"""

from advbench.datasets.multitask import (
    MULTITASK_DATASETS,
    MultiTaskData,
    generate_multitask_scenes,
    list_multitask_datasets,
    load_multitask_dataset,
    normals_from_depth,
    write_multitask_folder,
)
from advbench.models.multitask import MULTITASK_MODELS, MultiTaskNet, create_multitask_model, list_multitask_models
from advbench.models.task_heads import DEFAULT_TASKS, IGNORE_INDEX, TASK_HEADS, TaskHead, check_tasks, higher_is_better
from advbench.multitask.metrics import (
    MultiTaskMetrics,
    degradation,
    evaluate_multitask,
    metric_change,
    per_sample_metrics,
    stealth_success,
)
from advbench.multitask.training import load_multitask_model, save_multitask_model, train_multitask

__all__ = [
    "DEFAULT_TASKS",
    "IGNORE_INDEX",
    "MULTITASK_DATASETS",
    "MULTITASK_MODELS",
    "TASK_HEADS",
    "MultiTaskData",
    "MultiTaskMetrics",
    "MultiTaskNet",
    "TaskHead",
    "check_tasks",
    "create_multitask_model",
    "degradation",
    "evaluate_multitask",
    "generate_multitask_scenes",
    "higher_is_better",
    "list_multitask_datasets",
    "list_multitask_models",
    "load_multitask_dataset",
    "load_multitask_model",
    "metric_change",
    "normals_from_depth",
    "per_sample_metrics",
    "save_multitask_model",
    "stealth_success",
    "train_multitask",
    "write_multitask_folder",
]
