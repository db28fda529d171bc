"""Training, one module per task: what a victim model needs before it is attacked.

* :mod:`advbench.training.classifier` -- :class:`TrainConfig`, :func:`train_classifier` and the epoch loop
  :func:`fit` (standard, PGD and GAT adversarial training through :mod:`advbench.defenses.adversarial_training`);
  its public names are importable from ``advbench.training`` directly;
* :mod:`advbench.training.dense` -- the epoch loop the dense-prediction tasks share;
* :mod:`advbench.training.sod` -- the SOD U-Net: :func:`train_sod`, :func:`save_sod_model`, :func:`load_sod_model`;
* :mod:`advbench.training.multitask` -- the multi-task net and its checkpoints;
* :mod:`advbench.training.detection` -- detectors (Faster R-CNN, FCOS) and their checkpoints.

The task modules are imported on first use, so ``import advbench.training`` stays light.
"""

from advbench.training.classifier import (
    ADVERSARIAL_MODES,
    TrainConfig,
    accuracy,
    fit,
    train_and_save,
    train_classifier,
)

__all__ = ["ADVERSARIAL_MODES", "TrainConfig", "accuracy", "fit", "train_and_save", "train_classifier"]
