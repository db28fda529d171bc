"""Multi-task dense-prediction networks: the ``MODELS`` registry and :class:`MultiTaskNet`.

:class:`MultiTaskNet` uses hard parameter sharing (Caruana, "Multitask Learning", Machine Learning 1997): one
shared U-Net trunk (Ronneberger, Fischer and Brox, MICCAI 2015; the blocks of :mod:`advbench.models.unet`) computes
full-resolution features, and a small head per task turns them into that task's prediction -- segmentation logits,
positive depth (softplus) and unit surface normals -- as in the NYUv2 multi-task victims of the stealthy multi-task
attack (Guo, Zhang, Li et al., arXiv 2411.17936).  Normalisation lives inside the model
(attacks never normalise: they see [0, 1] images); inputs are [0,1] images.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advbench.errors import ConfigError, InputError
from advbench.models.registry import MODELS
from advbench.models.task_heads import DEFAULT_TASKS, check_tasks, get_task
from advbench.models.unet import ConvBlock, UpBlock, fitting_size
from advbench.task_names import MULTITASK

#: Architectures register in the one model registry, :data:`advbench.models.registry.MODELS`, with task MULTITASK.

DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)
#: Keyword arguments of every factory that describe the wrapper, not the architecture.
WRAPPER_ARGS = ("tasks", "num_classes", "mean", "std", "input_size", "class_names")


def _int_option(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"MultiTaskNet: {name} must be an int between {lo} and {hi}, got {value!r}")
    return value


class MultiTaskNet(nn.Module):
    """Shared U-Net trunk plus one head per task; ``forward(x)`` returns ``{task: prediction}``.

    ``x`` is ``(B,3,H,W)`` in [0,1] with ``H`` and ``W`` divisible by ``2**levels``.  Outputs: ``seg`` logits
    ``(B,num_classes,H,W)``, ``depth`` metres ``(B,1,H,W)`` (softplus, so > 0), ``normal`` unit vectors
    ``(B,3,H,W)``.  ``tasks`` is any non-empty subset of the registered tasks; ``model.tasks`` lists them in
    canonical order.  Each head is a 3x3 convolution, GroupNorm and ReLU, then a 1x1 convolution.

    >>> net = MultiTaskNet(tasks=("depth", "seg"), num_classes=3, base=4, levels=2)
    >>> {k: tuple(v.shape) for k, v in net(torch.rand(2, 3, 16, 16)).items()}
    {'seg': (2, 3, 16, 16), 'depth': (2, 1, 16, 16)}
    """

    def __init__(self, tasks: Sequence[str] = DEFAULT_TASKS, num_classes: int = 4, base: int = 16, *,
                 levels: int = 3, arch: str = "mtl-unet", mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD, input_size: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks, what="MultiTaskNet: tasks")
        self.num_classes = _int_option("num_classes", num_classes, 2 if "seg" in self.tasks else 1, 1000)
        self.base = _int_option("base", base, 1, 512)
        self.levels = _int_option("levels", levels, 1, 6)
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape[1] != 3 or std_t.shape[1] != 3 or bool((std_t <= 0).any()):
            raise ConfigError(f"MultiTaskNet: mean and std need 3 values (one per RGB channel), std > 0; got "
                              f"mean={list(mean)}, std={list(std)}")
        if class_names is not None and "seg" in self.tasks and len(class_names) != num_classes:
            raise ConfigError(f"MultiTaskNet: {len(class_names)} class_names for num_classes={num_classes}; give one "
                              "name per class")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.arch = arch
        self.options = {"base": self.base, "levels": self.levels}
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.class_names = tuple(str(c) for c in class_names) if class_names is not None else None
        widths = [base * 2**i for i in range(levels + 1)]
        self.stem = ConvBlock(3, widths[0])
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1]) for i in range(levels))
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i]) for i in reversed(range(levels)))
        self.heads = nn.ModuleDict({
            task: nn.Sequential(
                nn.Conv2d(base, base, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(8, base), base),
                nn.ReLU(inplace=True), nn.Conv2d(base, get_task(task).channels(self.num_classes), 1))
            for task in self.tasks
        })

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (``2**levels``)."""
        return 2**self.levels

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is ``(B,3,H,W)`` float with H, W multiples of ``2**levels``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise InputError(f"multi-task model '{self.arch}' expects [0,1] float images (B,3,H,W), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        h, w = int(x.shape[2]), int(x.shape[3])
        if h % self.multiple or w % self.multiple:
            fit_h, fit_w = fitting_size(h, w, self.multiple)
            raise InputError(f"multi-task model '{self.arch}' (levels={self.levels}) needs height and width divisible "
                             f"by {self.multiple}, got {h}x{w}; resize the images to e.g. {fit_h}x{fit_w} (nyuv2 data: "
                             f"add ?size=N with N divisible by {self.multiple}) or build the model with fewer levels")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared full-resolution features ``(B, base, H, W)`` of [0,1] images ``x``."""
        self.check_input(x)
        feats = self.stem((x - self.mean) / self.std)
        skips = []
        for block in self.down:
            skips.append(feats)
            feats = block(F.max_pool2d(feats, 2))
        for block, skip in zip(self.up, reversed(skips), strict=True):
            feats = block(feats, skip)
        return feats

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(x)
        return {task: get_task(task).activate(head(feats)) for task, head in self.heads.items()}

    @torch.no_grad()
    def init_depth_prior(self, metres: float) -> None:
        """Start the depth head at a constant ``metres`` (a zero last layer whose bias is softplus^-1(metres))."""
        if "depth" not in self.heads:
            raise ConfigError(f"init_depth_prior: this model has no depth head (tasks: {', '.join(self.tasks)})")
        if not math.isfinite(metres) or metres <= 0:
            raise ConfigError(f"init_depth_prior: metres must be a positive number, got {metres!r}")
        last = self.heads["depth"][-1]
        last.weight.mul_(0.1)
        last.bias.fill_(metres + math.log(-math.expm1(-metres)))

    def normalization(self) -> dict[str, list[float]]:
        """The per-channel mean and std applied to the input."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def metadata(self) -> dict[str, Any]:
        """What :func:`advbench.training.multitask.load_multitask_model` needs to rebuild this model."""
        return {"task": "multitask", "arch": self.arch, "tasks": list(self.tasks), "num_classes": self.num_classes,
                "class_names": None if self.class_names is None else list(self.class_names),
                "model_options": dict(self.options), "normalization": self.normalization(),
                "input_size": None if self.input_size is None else list(self.input_size)}


@MODELS.register("mtl-unet", task=MULTITASK)
def mtl_unet(*, tasks: Sequence[str] = DEFAULT_TASKS, num_classes: int = 4, base: int = 16, levels: int = 3,
             mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
             input_size: Sequence[int] | None = None, class_names: Sequence[str] | None = None) -> MultiTaskNet:
    """A shared U-Net trunk (Ronneberger et al., MICCAI 2015) with a head per task; see :class:`MultiTaskNet`."""
    return MultiTaskNet(tasks, num_classes, base, levels=levels, arch="mtl-unet", mean=mean, std=std,
                        input_size=input_size, class_names=class_names)


def create_multitask_model(name: str, tasks: Sequence[str] | str = DEFAULT_TASKS, num_classes: int = 4, *,
                           mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
                           input_size: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                           **options: Any) -> MultiTaskNet:
    """Build multi-task architecture ``name`` (``list_models(task=MULTITASK)``) with heads for ``tasks``.

    ``tasks`` is a list or a comma-separated string of task names (unknown ones raise
    :class:`~advbench.errors.UnknownNameError` listing the known tasks).  ``options`` go to the architecture
    (``mtl-unet``: ``base``, ``levels``); unknown ones raise :class:`ConfigError` listing the valid ones.

    >>> model = create_multitask_model("mtl-unet", "seg,normal", num_classes=3, base=4, levels=2)
    >>> model.tasks, tuple(model(torch.rand(1, 3, 8, 8))["normal"].shape)
    (('seg', 'normal'), (1, 3, 8, 8))
    """
    factory = MODELS.get(name, task=MULTITASK)
    params = inspect.signature(factory).parameters.values()
    valid = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in WRAPPER_ARGS]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"multi-task model '{name}' has no option {', '.join(unknown)}; valid options: "
                          f"{', '.join(valid) or '(none)'}")
    return factory(tasks=check_tasks(tasks), num_classes=num_classes, mean=mean, std=std, input_size=input_size,
                   class_names=class_names, **options)
