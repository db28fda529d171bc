"""Training, saving and loading of multi-task dense-prediction models.

:func:`train_multitask` fits a model from the multi-task models of :data:`~advbench.models.registry.MODELS` with
Adam on the unweighted sum of the task losses of :mod:`advbench.multitask.metrics` (cross-entropy, depth L1, ``1 -
cos`` for normals), with horizontal flips as augmentation (the x component of the normals flips with the image),
and reports the test metrics.  These models are the victims of the stealthy multi-task attack (Guo, Zhang, Li et
al., arXiv 2411.17936).  Checkpoints are safetensors with ``task: "multitask"`` metadata, so
:func:`load_multitask_model` refuses classifier, detector and SOD checkpoints. """

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from advbench.checkpoints import load_state_strict, read_checkpoint, require_task, save_task_checkpoint
from advbench.datasets.multitask import MultiTaskData, load_multitask_dataset
from advbench.errors import CheckpointError, ConfigError, UnknownNameError
from advbench.models.multitask import MultiTaskNet, create_multitask_model
from advbench.models.task_heads import IGNORE_INDEX, check_tasks, get_task
from advbench.multitask.metrics import MultiTaskMetrics, evaluate_multitask
from advbench.records import device_name
from advbench.training.dense import fit_dense

STD_FLOOR = 1e-3


def _check_hyper(epochs: int, batch_size: int, lr: float) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train_multitask: {name} must be a positive int, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"train_multitask: lr must be a positive number, got {lr!r}")


def _flip_half_the_batches(x: torch.Tensor, targets: Mapping[str, torch.Tensor],
                           gen: torch.Generator) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
    """Augmentation: :func:`flip_batch` on a coin toss from ``gen``."""
    return flip_batch(x, targets) if bool(torch.rand((), generator=gen) < 0.5) else (x, targets)


def flip_batch(x: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mirror images and targets left-right; normals also negate their x component (camera coordinates)."""
    flipped = {task: t.flip(-1) for task, t in targets.items()}
    if "normal" in flipped:
        sign = torch.tensor([-1.0, 1.0, 1.0], dtype=flipped["normal"].dtype).view(1, 3, 1, 1)
        flipped["normal"] = flipped["normal"] * sign
    return x.flip(-1), flipped


def baseline_metrics(data: MultiTaskData, tasks: Sequence[str]) -> dict[str, float]:
    """Test metrics of constant predictions fitted on the training set: the majority class, the median valid
    depth and the (normalised) mean valid normal.  A useful model must clearly beat them."""
    tasks = check_tasks(tasks, available=data.tasks)
    n, (h, w) = len(data.x_test), data.input_size
    outputs: dict[str, torch.Tensor] = {}
    for task in tasks:
        train = data.targets_train[task]
        if task == "seg":
            labelled = train[train != IGNORE_INDEX]
            majority = int(torch.bincount(labelled, minlength=data.num_classes).argmax()) if labelled.numel() else 0
            outputs[task] = torch.full((n, h, w), majority, dtype=torch.int64)
        elif task == "depth":
            valid = train[train > 0]
            outputs[task] = torch.full((n, 1, h, w), float(valid.median()) if valid.numel() else 1.0)
        elif task == "normal":
            mean = train.permute(1, 0, 2, 3).flatten(1).sum(1)
            mean = F.normalize(mean, dim=0) if float(mean.norm()) > 0 else torch.tensor([0.0, 0.0, -1.0])
            outputs[task] = mean.view(1, 3, 1, 1).expand(n, 3, h, w)
    metrics = MultiTaskMetrics(tasks, num_classes=data.num_classes if "seg" in tasks else None)
    metrics.update(outputs, data.targets_test)
    return metrics.compute()


def train_multitask(
    data: MultiTaskData | str,
    *,
    tasks: Sequence[str] | str | None = None,
    arch: str = "mtl-unet",
    epochs: int = 25,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    augment: bool = True,
    model_options: dict[str, Any] | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[MultiTaskNet, dict[str, Any]]:
    """Train multi-task model ``arch`` on ``data`` (a :class:`MultiTaskData` or a spec for
    :func:`~advbench.datasets.multitask.load_multitask_dataset`); returns the model (eval mode) and a summary.

    ``tasks`` (default: every task of ``data``) picks the heads.  Loss: the sum of the tasks' mean per-sample losses;
    Adam with a cosine learning-rate decay to 5% of ``lr``; the depth head starts at the median training depth.
    All randomness (initialisation, shuffling, flips) follows ``seed``.  The summary holds the hyperparameters, the
    first and final epoch losses (also per task), ``test_metrics`` (headline metric per task), ``test_details``
    and ``baseline_test_metrics`` (constant predictions, see :func:`baseline_metrics`).  Batches are drawn and
    flipped on the CPU and trained on ``device``; the model is returned there.
    """
    _check_hyper(epochs, batch_size, lr)
    if isinstance(data, str):
        data = load_multitask_dataset(data, seed=seed)
    if not isinstance(data, MultiTaskData):
        raise ConfigError(f"train_multitask: data must be a MultiTaskData or a data set spec string, got "
                          f"{type(data).__name__}")
    tasks = check_tasks(data.tasks if tasks is None else tasks, available=data.tasks, what="train_multitask: tasks")
    mean = data.x_train.mean(dim=(0, 2, 3))
    std = data.x_train.std(dim=(0, 2, 3)).clamp(min=STD_FLOOR)
    num_classes = data.num_classes if "seg" in tasks else 1
    class_names = data.class_names if "seg" in tasks else None
    with torch.random.fork_rng(devices=[]):  # layer init uses torch's global generator
        torch.manual_seed(seed)
        model = create_multitask_model(arch, tasks, num_classes, mean=mean.tolist(), std=std.tolist(),
                                       input_size=data.input_size, class_names=class_names, **(model_options or {}))
    model.check_input(data.x_train[:1])  # a size the net cannot take fails now
    if "depth" in tasks:
        valid = data.targets_train["depth"][data.targets_train["depth"] > 0]
        if valid.numel():
            model.init_depth_prior(float(valid.median()))
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)

    def loss_fn(net: torch.nn.Module, x: torch.Tensor,
                targets: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = net(x)
        losses = {t: get_task(t).loss(outputs[t], targets[t]).mean() for t in tasks}
        return torch.stack(list(losses.values())).sum(), losses

    started = time.perf_counter()
    history = fit_dense(model, data.x_train, lambda idx: {t: data.targets_train[t][idx] for t in tasks}, loss_fn,
                        epochs=epochs, batch_size=batch_size, lr=lr, generator=gen,
                        augment=_flip_half_the_batches if augment else None, device=device, desc=f"train {arch}",
                        progress=progress)
    epoch_losses, task_losses = history.epoch_losses, history.part_losses
    seconds = time.perf_counter() - started
    dev = torch.device(device)
    details = evaluate_multitask(model, data.x_test.to(dev), {t: v.to(dev) for t, v in data.targets_test.items()},
                                 details=True)
    summary = {
        "arch": arch,
        "dataset": data.name,
        "tasks": list(tasks),
        "num_classes": model.num_classes,
        "class_names": list(class_names) if class_names is not None else None,
        "model_options": dict(model.options),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "augment": augment,
        "steps": history.steps,
        "n_train": n,
        "n_test": len(data.x_test),
        "input_size": list(data.input_size),
        "first_loss": epoch_losses[0],
        "final_loss": epoch_losses[-1],
        "first_task_losses": task_losses[0],
        "final_task_losses": task_losses[-1],
        "train_seconds": round(seconds, 3),
        "test_metrics": {t: details[t][get_task(t).metric] for t in tasks},
        "test_details": details,
        "baseline_test_metrics": baseline_metrics(data, tasks),
        "higher_is_better": {t: get_task(t).higher_is_better for t in tasks},
    }
    if dev.type != "cpu":  # only off the CPU, so CPU summaries keep their fields
        summary["device"] = device_name(dev)
    return model, summary


def save_multitask_model(model: MultiTaskNet, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (.safetensors + JSON sidecar) with the metadata :func:`load_multitask_model` needs.

    The sidecar holds ``task: "multitask"``, ``arch``, ``tasks``, ``num_classes``, ``class_names``,
    ``model_options``, ``normalization`` and ``input_size``, then the entries of ``metadata`` (for example
    ``{"dataset": ..., "training": summary}``), which cannot override those.
    """
    return save_task_checkpoint(model, path, metadata, model_type=MultiTaskNet, label="multi-task")


def load_multitask_model(path: str | Path) -> MultiTaskNet:
    """Rebuild a model saved by :func:`save_multitask_model` (no pickled code runs); returns it in eval mode.

    A checkpoint whose metadata does not say ``task: "multitask"`` (a classifier, a detector, an SOD model, bare
    weights) is refused with :class:`~advbench.errors.CheckpointError`, as is one whose tensors do not fit its
    architecture.
    """
    state, meta = read_checkpoint(path)
    require_task(meta, path, "multitask", "a multi-task model",
                 "pass a checkpoint written by `advbench train-multitask` or save_multitask_model")
    arch = meta.get("arch")
    norm = meta.get("normalization") or {}
    try:
        model = create_multitask_model(str(arch), meta.get("tasks") or (), meta.get("num_classes", 4),
                                       mean=norm.get("mean", (0.5, 0.5, 0.5)), std=norm.get("std", (0.25,) * 3),
                                       input_size=meta.get("input_size"), class_names=meta.get("class_names"),
                                       **(meta.get("model_options") or {}))
    except (ConfigError, UnknownNameError) as exc:
        raise CheckpointError(f"{path}: its metadata cannot rebuild the model ({exc})") from exc
    load_state_strict(model, state, path, f"multi-task architecture '{arch}' {meta.get('model_options')} with "
                                          f"tasks {meta.get('tasks')}")
    model.checkpoint_meta = meta
    model.checkpoint_path = str(path)
    return model.eval()
