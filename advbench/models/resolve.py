"""Turn a model spec (see :mod:`advbench.models.specs`) into a victim that takes [0,1] images.

:func:`resolve_model` builds the architecture, loads local weights safely (never a download, never
pickled code), puts the normalization inside the model, and reports everything that changes the numbers:
the weights' SHA-256 and the key they came from, the normalization, the input size and the preprocessing
the model was trained with (timm's pretrained config, torchvision's weight transforms, RobustBench's zoo
entry, or the ``--input-size``/``--crop-pct``/``--interpolation`` flags), the dtype, the quantization and
where gradients come from.

Low-precision and int8 checkpoints (Jacob et al., "Quantization and training of neural networks for
efficient integer-arithmetic-only inference", CVPR 2018, is the scheme ``torch.ao`` implements):

* fp16/bf16 weights are evaluated in float32 by default, and the cast is recorded and warned about;
  ``--dtype float16|bfloat16`` (or ``auto``) evaluates them in their own dtype instead.
* int8 models (``quantized=dynamic|static`` on an architecture spec, or ``torchscript:PATH``) have no input
  gradient.  Black-box attacks run on them directly.  Gradient attacks need a declared source of
  gradients: ``surrogate=PATH`` (the float parent) or, for dynamic quantization, ``gradients=bpda`` (BPDA,
  Athalye et al., ICML 2018: the int8 model's outputs in the forward pass, the gradients of the float
  network with the dequantized int8 weights in the backward pass).  The record says which.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import logging
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench.checkpoints import (
    TORCH_SUFFIXES,
    file_sha256,
    normalize_state_dict,
    read_checkpoint,
    read_metadata,
)
from advbench.errors import CheckpointError, ConfigError, MissingPathError, UnknownNameError
from advbench.models.loading import load_model
from advbench.models.specs import ModelSpec, parse_model_spec
from advbench.models.wrapper import NormalizedModel

log = logging.getLogger("advbench")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
#: Options an architecture spec understands (anything else is passed to a ``py:`` factory or refused).
COMMON_OPTIONS = ("weights", "ema", "quantized", "surrogate", "gradients", "num_classes", "random")


@dataclass(frozen=True)
class ModelOptions:
    """The CLI flags that replace a sidecar: output count, input size, normalization, preprocessing, dtype."""

    num_classes: int | None = None
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"--num-classes must be >= 2, got {self.num_classes}")
        if self.input_size is not None and not 1 <= self.input_size <= 4096:
            raise ConfigError(f"--input-size must be between 1 and 4096 pixels, got {self.input_size}")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise ConfigError(f"--crop-pct must be in (0, 1], e.g. 0.875 (resize 256, crop 224); got {self.crop_pct}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{self.interpolation}'")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("--mean and --std go together: give both (one value per channel each)")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"--std values must be positive, got {list(self.std)}")
        if self.mean is not None and len(self.mean) != len(self.std or ()):
            raise ConfigError(f"--mean has {len(self.mean)} values but --std has {len(self.std or ())}")
        if self.dtype is not None and self.dtype not in (*DTYPES, "auto"):
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)} or auto, got '{self.dtype}'")


@dataclass
class ResolvedModel:
    """A victim ready to attack, and what the run record must say about it."""

    model: nn.Module
    identity: dict[str, Any]
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    preprocessing: dict[str, Any] | None = None
    class_names: tuple[str, ...] | None = None
    differentiable: bool = True
    warnings: list[str] = field(default_factory=list)
    split_seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Arch:
    """What a scheme knows before weights are loaded."""

    build: Callable[[], nn.Module]
    arch: str
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    preprocessing: dict[str, Any] | None = None
    class_names: tuple[str, ...] | None = None
    weights_path: Path | None = None
    key_fixes: tuple[str, ...] = ()
    state: dict[str, torch.Tensor] | None = None  # weights read early (to take the class count from them)
    source_sha256: str | None = None  # a py: model's file
    optional_buffers: tuple[str, ...] = ()  # buffer names a checkpoint may lack (the architecture's values stay)


def preprocessing_entry(crop: int, crop_pct: float, interpolation: str) -> dict[str, Any]:
    """``{"resize": floor(crop / crop_pct), "crop": crop, "interpolation": ...}`` (timm's convention)."""
    return {"resize": int(math.floor(crop / crop_pct)), "crop": int(crop), "interpolation": interpolation}


def imagenet_synsets() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k WordNet ids in the standard class order (from timm's bundled class info)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def _peek_classes(spec: ModelSpec, opts: ModelOptions, default: int, head: str | None
                  ) -> tuple[int, dict[str, torch.Tensor] | None]:
    """The class count: ``--num-classes``, ``num_classes=``, else the rows of the weights' classifier (so a
    10-class fine-tune of an ImageNet architecture loads without flags), else the architecture's default."""
    given = opts.num_classes or spec.option("num_classes")
    if given:
        return int(given), None
    if not spec.option("weights"):
        return default, None
    state, _ = read_checkpoint(Path(str(spec.option("weights"))).expanduser(), ema=bool(spec.option("ema", False)))
    state = normalize_state_dict(state)
    key = f"{head}.weight" if head else None
    if key is None or key not in state:
        matrices = [k for k, v in state.items() if k.endswith(".weight") and getattr(v, "ndim", 0) == 2]
        packed = [k for k, v in state.items() if k.endswith("_packed_params._packed_params")]  # int8 Linear
        key = (packed or matrices or [None])[-1]
    if key is None:
        return default, state
    value = state[key]
    weight = value[0] if isinstance(value, tuple) else value
    return int(weight.shape[0]), state


# --------------------------------------------------------------------------------------------------- schemes
def _timm_arch(spec: ModelSpec, opts: ModelOptions) -> _Arch:
    """``timm:NAME?weights=FILE``: any timm architecture, with weights from a local file (nothing is downloaded)."""
    import timm

    name = spec.name
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        raise UnknownNameError(f"unknown timm model '{name}'" + (f"; close matches: {', '.join(close)}" if close
                                                                 else "; see timm.list_models()"))
    cfg = timm.models.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    head = cfg.get("classifier")
    classes, state = _peek_classes(spec, opts, int(cfg.get("num_classes") or 1000),
                                   head if isinstance(head, str) else None)
    channels, height, _ = cfg.get("input_size", (3, 224, 224))
    size = opts.input_size or int(height)
    fixed = bool(cfg.get("fixed_input_size"))

    def build() -> nn.Module:
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": classes}
        if fixed or opts.input_size:
            try:
                return timm.create_model(name, img_size=size, **kwargs)
            except TypeError:  # CNNs take no img_size
                pass
        return timm.create_model(name, **kwargs)

    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    crop_pct = opts.crop_pct or float(cfg.get("crop_pct", 0.875))
    interpolation = opts.interpolation or str(cfg.get("interpolation", "bilinear"))
    return _Arch(build, f"timm:{name}", (int(channels), size, size), int(classes), mean, std,
                 preprocessing_entry(size, crop_pct, interpolation),
                 imagenet_synsets() if classes == 1000 else None, state=state)


def _torchvision_arch(spec: ModelSpec, opts: ModelOptions) -> _Arch:
    """``torchvision:NAME?weights=FILE``: any torchvision classification model, with weights from a local file."""
    import torchvision

    name = spec.name
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = [k for k in known if name.lower() in k or k in name.lower()][:8]
        raise UnknownNameError(f"unknown torchvision classification model '{name}'"
                               + (f"; close matches: {', '.join(close)}" if close else
                                  "; see torchvision.models.list_models(module=torchvision.models)"))
    crop, resize, interpolation, mean, std, default_classes = 224, 256, "bilinear", IMAGENET_MEAN, IMAGENET_STD, 1000
    try:
        enum = torchvision.models.get_model_weights(name)
        weights = enum.DEFAULT
        t = weights.transforms()  # metadata only: nothing is downloaded
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        interpolation = t.interpolation.value
        mean, std = tuple(t.mean), tuple(t.std)
        default_classes = len(weights.meta.get("categories") or []) or 1000
    except (ValueError, StopIteration, AttributeError, TypeError, KeyError):
        pass
    classes, state = _peek_classes(spec, opts, default_classes, None)
    size = opts.input_size or crop
    if opts.input_size or opts.crop_pct:
        pre = preprocessing_entry(size, opts.crop_pct or crop / resize, opts.interpolation or interpolation)
    else:
        pre = {"resize": resize, "crop": crop, "interpolation": opts.interpolation or interpolation}

    def build() -> nn.Module:
        kwargs: dict[str, Any] = {"weights": None, "num_classes": classes}
        if name.startswith(("inception", "googlenet")):
            # as torchvision builds them for its own weights: auxiliary heads present (their keys are in the
            # checkpoints; eval mode does not use them) and transform_input on
            kwargs.update(aux_logits=True, init_weights=False, transform_input=True)
        return torchvision.models.get_model(name, **kwargs)

    return _Arch(build, f"torchvision:{name}", (3, size, size), int(classes), mean, std, pre,
                 imagenet_synsets() if classes == 1000 else None, state=state)


def import_robustbench():
    """Import ``robustbench`` (architectures and the zoo's model table).

    robustbench 1.1.1 imports the original AutoAttack as ``autoattack``; the package index ships the same
    code as ``pyautoattack``, so that name is registered as an alias first."""
    import sys
    import warnings

    try:
        import pyautoattack
        import pyautoattack.state
    except ImportError as err:
        raise ConfigError("RobustBench models need the 'pyautoattack' package: pip install pyautoattack") from err
    sys.modules.setdefault("autoattack", pyautoattack)
    sys.modules.setdefault("autoattack.state", pyautoattack.state)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import robustbench.model_zoo as zoo
            from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as err:
        raise ConfigError(f"RobustBench models need the 'robustbench' package ({err}); install it as the README "
                          "says (pip install --no-deps robustbench==1.1.1 with its listed needs)") from err
    return zoo, BenchmarkDataset, ThreatModel


RB_DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet": (1000, 224)}
RB_PREPROCESSING = {
    "Res256Crop224": {"resize": 256, "crop": 224, "interpolation": "bilinear"},
    "BicubicRes256Crop224": {"resize": 256, "crop": 224, "interpolation": "bicubic"},
}
#: RobustBench preprocessings that are not "resize the shorter side, centre-crop": Crop288 crops at the native
#: size, Res224 squashes to 224x224.  advbench's preprocessing cannot reproduce them yet, so they are refused.
RB_UNSUPPORTED_PREPROCESSING = ("Crop288", "Res224")


def _robustbench_arch(spec: ModelSpec, opts: ModelOptions) -> _Arch:
    """``robustbench:NAME?dataset=cifar10&threat=Linf&model_dir=DIR``: a RobustBench zoo model, local weights."""
    zoo, BenchmarkDataset, ThreatModel = import_robustbench()
    dataset = str(spec.option("dataset", "cifar10")).lower()
    threat = str(spec.option("threat", "Linf"))
    if dataset not in RB_DATASETS:
        raise ConfigError(f"robustbench: dataset must be one of {', '.join(RB_DATASETS)}, got '{dataset}'")
    threats = {t.value.lower(): t for t in ThreatModel}
    if threat.lower() not in threats:
        raise ConfigError(f"robustbench: threat must be one of {', '.join(t.value for t in ThreatModel)}, got "
                          f"'{threat}'")
    tm = threats[threat.lower()]
    table = zoo.model_dicts[BenchmarkDataset(dataset)][tm]
    if spec.name not in table:
        close = [k for k in table if spec.name.lower()[:6] in k.lower()][:8]
        raise UnknownNameError(f"'{spec.name}' is not in RobustBench's {dataset}/{tm.value} zoo"
                               + (f"; close matches: {', '.join(close)}" if close else ""))
    entry = table[spec.name]
    build = entry["model"]
    timm_name = f"{spec.name.lower().replace('-', '_')}_{dataset}_{tm.value.lower()}"
    import timm

    if timm.is_model(timm_name):  # zoo entries hosted as timm models: RobustBench builds them with timm too
        classes_here = RB_DATASETS[dataset][0]

        def build() -> nn.Module:
            return timm.create_model(timm_name, pretrained=False, num_classes=classes_here)
    elif isinstance(entry.get("gdrive_id"), list):
        raise ConfigError(f"robustbench: '{spec.name}' is an ensemble of several checkpoints, which advbench does not "
                          "load yet; pick a single-model entry")
    if entry.get("preprocessing") in RB_UNSUPPORTED_PREPROCESSING:
        raise ConfigError(f"robustbench: '{spec.name}' is evaluated by RobustBench with its '{entry['preprocessing']}' "
                          "preprocessing (not resize + centre crop), which advbench cannot reproduce yet; its numbers "
                          "would not be comparable")
    if spec.option("weights"):
        path = Path(str(spec.option("weights"))).expanduser()
    else:  # RobustBench's own layout: <model_dir>/<dataset>/<threat>/<name>.pt
        threat_dir = tm.value.replace("_3d", "")
        path = Path(str(spec.option("model_dir", "./models"))).expanduser() / dataset / threat_dir / f"{spec.name}.pt"
    if not path.is_file():
        raise MissingPathError(f"robustbench: no weights at {path}; advbench never downloads. Put the zoo file there "
                               "(model_dir=DIR/<dataset>/<threat>/<name>.pt) or pass weights=PATH")
    classes, size = RB_DATASETS[dataset]
    pre = RB_PREPROCESSING.get(entry.get("preprocessing") or "", None)
    if dataset == "imagenet" and pre is None:
        pre = RB_PREPROCESSING["Res256Crop224"]
    if pre is not None:
        size = pre["crop"]
    # RobustBench models take [0,1] images; any normalization is part of the architecture.
    return _Arch(build, f"robustbench:{dataset}/{tm.value}/{spec.name}", (3, size, size), classes,
                 None, None, pre, imagenet_synsets() if dataset == "imagenet" else None, path,
                 key_fixes=("module.", "model."), optional_buffers=("mu", "sigma", "mean", "std"))


def _py_arch(spec: ModelSpec, opts: ModelOptions) -> _Arch:
    """``py:FILE.py:FUNCTION?key=value``: the network your own Python function builds (runs your code)."""
    file_text, sep, factory = spec.name.rpartition(":")
    if not sep or not file_text.endswith(".py") or not factory.isidentifier():
        raise ConfigError(f"model spec '{spec.text}' must look like py:path/to/file.py:factory_function")
    path = Path(file_text).expanduser()
    if not path.is_file():
        raise MissingPathError(f"model file not found: {path} (from '{spec.text}')")
    kwargs = {k: v for k, v in spec.options.items() if k not in COMMON_OPTIONS}

    def build() -> nn.Module:
        module_name = f"advbench_user_model_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)  # runs the user's own code, as --help says
        fn = getattr(module, factory, None)
        if not callable(fn):
            raise ConfigError(f"{path} has no callable '{factory}'")
        call = dict(kwargs)
        classes = opts.num_classes or spec.option("num_classes")
        if classes and "num_classes" in inspect.signature(fn).parameters:
            call["num_classes"] = int(classes)
        net = fn(**call)
        if not isinstance(net, nn.Module):
            raise ConfigError(f"{path}:{factory}() returned a {type(net).__name__}, not a torch.nn.Module")
        return net

    size = opts.input_size
    arch = _Arch(build, f"py:{path.name}:{factory}", (3, size, size) if size else None,
                 opts.num_classes or spec.option("num_classes"), None, None,
                 preprocessing_entry(size, opts.crop_pct or 0.875, opts.interpolation or "bilinear")
                 if size and opts.crop_pct else None)
    arch.source_sha256 = file_sha256(path)  # the architecture is the user's code: its text is part of the identity
    return arch


def _registered_arch(spec: ModelSpec, opts: ModelOptions) -> _Arch:
    from advbench.models.registry import MODELS
    from advbench.task_names import CLASSIFICATION

    factory = MODELS.get(spec.name, task=CLASSIFICATION)  # unknown names list the known ones
    size = opts.input_size

    def build_for(shape, classes):
        return factory(shape, classes)

    arch = _Arch(lambda: None, spec.name, None, opts.num_classes or spec.option("num_classes"), None, None)
    arch.build = build_for  # type: ignore[assignment]  (built once the data fixes shape and classes)
    if size:
        arch.input_shape = (3, size, size)
    return arch


ARCH_SCHEMES: dict[str, Callable[[ModelSpec, ModelOptions], _Arch]] = {
    "timm": _timm_arch,
    "torchvision": _torchvision_arch,
    "robustbench": _robustbench_arch,
    "py": _py_arch,
}


# --------------------------------------------------------------------------------------------------- weights
def _fit_keys(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], fixes: tuple[str, ...]):
    """Key conventions of foreign checkpoints: strip ``fixes`` prefixes (RobustBench strips ``module.`` and
    ``model.``), or add ``model.`` when the architecture wraps its network in a ``model`` attribute."""
    if set(state) == set(own):
        return state
    candidates = [state]
    stripped = state
    for prefix in fixes:
        stripped = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in stripped.items()}
        candidates.append(stripped)
    candidates.append({f"model.{k}": v for k, v in stripped.items()})
    best = max(candidates, key=lambda c: len(set(c) & set(own)))
    return state if best is state else best


def load_weights_into(net: nn.Module, path: Path, *, ema: bool, fixes: tuple[str, ...], what: str,
                      state: dict[str, torch.Tensor] | None = None, optional_buffers: tuple[str, ...] = ()
                      ) -> tuple[dict[str, Any], torch.dtype]:
    """Load a local weights file into ``net`` strictly; returns its provenance entry and the weights' dtype.

    ``optional_buffers``: buffer names (last component) a checkpoint may lack, such as the normalization
    constants RobustBench architectures define themselves (RobustBench loads those files non-strictly); the
    architecture's values are kept and the entry lists them."""
    if state is None:
        state, _ = read_checkpoint(path, ema=ema)
    state = _fit_keys(state, net.state_dict(), fixes)
    own = net.state_dict()
    buffers = {name for name, _ in net.named_buffers()}
    kept = sorted(k for k in set(own) - set(state) if k in buffers and k.rsplit(".", 1)[-1] in optional_buffers)
    if kept:
        state = {**state, **{k: own[k] for k in kept}}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if hasattr(state[k], "shape") and own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path} does not match {what}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} of another shape "
                              f"(e.g. {wrong[:3]}); check the architecture, --num-classes and --input-size")
    floats = [v.dtype for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    dtype = max(set(floats), key=floats.count) if floats else torch.float32
    net.load_state_dict(state)
    entry: dict[str, Any] = {"path": str(path), "sha256": file_sha256(path), "ema": bool(ema)}
    if kept:
        entry["kept_architecture_buffers"] = kept
    return entry, dtype


def _quantize(net: nn.Module, mode: str, input_shape: tuple[int, int, int]) -> nn.Module:
    """The ``torch.ao`` int8 version of ``net`` (weights still to be loaded): dynamic (Linear layers) or static
    (FX graph mode, x86 back end)."""
    net = net.eval()
    if mode == "dynamic":
        return torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
    if mode == "static":
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        prepared = prepare_fx(net, get_default_qconfig_mapping("x86"), (torch.zeros(1, *input_shape),))
        return convert_fx(prepared)
    raise ConfigError(f"quantized must be dynamic or static (torch.ao int8), got '{mode}'")


class DtypeModel(nn.Module):
    """Runs ``model`` in ``dtype`` (fp16/bf16 checkpoints in their own precision): inputs are cast in, logits
    are returned as float32 so the attacks' arithmetic stays in float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype
        for attr in ("input_shape", "num_classes", "arch"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


class GradientSurrogate(nn.Module):
    """The victim's outputs with a surrogate's input gradients (BPDA, Athalye et al., ICML 2018).

    Without gradient tracking it is exactly the victim.  With it, the value is the victim's logits and the
    gradient flows through ``surrogate`` (the float parent, or the float network with the dequantized int8
    weights)."""

    def __init__(self, victim: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.victim = victim
        self.surrogate = surrogate
        for attr in ("input_shape", "num_classes", "arch"):
            if hasattr(victim, attr):
                setattr(self, attr, getattr(victim, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            exact = self.victim(x).float()
        if not (torch.is_grad_enabled() and x.requires_grad):
            return exact
        approx = self.surrogate(x)
        return approx + (exact - approx).detach()


def dequantized_twin(float_net: nn.Module, quantized: nn.Module) -> nn.Module:
    """``float_net`` with the dequantized weights of its dynamically quantized copy (same module names)."""
    twin = copy.deepcopy(float_net).eval()
    qmods = dict(quantized.named_modules())
    for name, module in twin.named_modules():
        q = qmods.get(name)
        if q is None or not callable(getattr(q, "weight", None)):
            continue
        with torch.no_grad():
            module.weight.copy_(q.weight().dequantize())
            bias = q.bias() if callable(getattr(q, "bias", None)) else None
            if bias is not None and module.bias is not None:
                module.bias.copy_(bias)
    return twin


class ClassSubsetModel(nn.Module):
    """A classifier restricted to some of its outputs: logits ``[:, indices]``, so labels index the subset.

    Used when a data set holds a subset of the model's classes (e.g. 100 ImageNet classes evaluated on a
    1,000-class model): the prediction is taken among those outputs only."""

    def __init__(self, model: nn.Module, indices: list[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("indices", torch.as_tensor(indices, dtype=torch.long))
        self.num_classes = len(indices)
        for attr in ("input_shape", "arch"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).index_select(1, self.indices)


# --------------------------------------------------------------------------------------------------- resolve
def resolve_model(text: str | ModelSpec, opts: ModelOptions | None = None, *,
                  data_shape: tuple[int, int, int] | None = None, data_classes: int | None = None) -> ResolvedModel:
    """Build the victim of model spec ``text`` (see :mod:`advbench.models.specs`; text, or already parsed) with
    the CLI ``opts``.

    ``data_shape``/``data_classes`` fill in what a spec cannot know by itself (a registered architecture with
    a bare state dict, a user's module without ``--input-size``)."""
    opts = opts or ModelOptions()
    spec = text if isinstance(text, ModelSpec) else parse_model_spec(text)
    text = spec.text
    if spec.scheme == "torchscript":
        return _resolve_torchscript(spec, opts, data_shape)
    if is_checkpoint_spec(spec):
        return _resolve_checkpoint(spec, opts)
    unknown = sorted(set(spec.options) - set(COMMON_OPTIONS)) if spec.scheme != "py" else []
    if spec.scheme == "robustbench":
        unknown = [k for k in unknown if k not in ("dataset", "threat", "model_dir")]
    if unknown:
        raise ConfigError(f"model spec '{text}': unknown option(s) {unknown}; valid: {', '.join(COMMON_OPTIONS)}"
                          + (", dataset, threat, model_dir" if spec.scheme == "robustbench" else ""))
    arch = ARCH_SCHEMES[spec.scheme](spec, opts) if spec.scheme else _registered_arch(spec, opts)
    shape = arch.input_shape or (tuple(data_shape) if data_shape else None)
    if shape is not None and data_shape and spec.scheme in ("", "py"):
        shape = (int(data_shape[0]), *shape[1:])  # the channel count is the data's (grayscale or RGB)
    classes = arch.num_classes or data_classes
    # Initialisation is seeded (weights that are loaded overwrite it; random=true runs are reproducible) and
    # leaves the global RNG as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if spec.scheme == "":
            if shape is None or classes is None:
                raise ConfigError(f"'{text}' needs an input shape and a class count: pass --input-size and "
                                  "--num-classes, or a data set")
            net = arch.build(shape, int(classes))  # type: ignore[call-arg]
        else:
            net = arch.build()
    weights_option = spec.option("weights") or (str(arch.weights_path) if arch.weights_path else None)
    quantized = spec.option("quantized")
    warnings_out: list[str] = []
    float_net = copy.deepcopy(net).eval() if quantized else None
    if quantized:
        if shape is None:
            raise ConfigError(f"'{text}': quantized models need --input-size (the example input of torch.ao)")
        net = _quantize(net, str(quantized), shape)
    weights: dict[str, Any] | str = "random"
    dtype = torch.float32
    if weights_option:
        path = Path(str(weights_option)).expanduser()
        weights, dtype = load_weights_into(net, path, ema=bool(spec.option("ema", False)), fixes=arch.key_fixes,
                                           what=f"architecture '{arch.arch}'", state=arch.state,
                                           optional_buffers=arch.optional_buffers)
    elif spec.option("random") is True:
        warnings_out.append(f"{text}: random weights (initialised with seed 0), evaluated on purpose")
    else:
        raise ConfigError(f"model spec '{text}' gives no weights, so it would evaluate an untrained network; add "
                          "'?weights=PATH' (a local file: nothing is downloaded), or '?random=true' to evaluate "
                          "random weights on purpose")
    if weights_option and spec.option("random"):
        raise ConfigError(f"model spec '{text}': weights= and random=true contradict each other; drop one")
    if shape is None:
        raise ConfigError(f"'{text}' needs --input-size (or a data set to take it from)")
    with torch.no_grad():
        try:
            width = int(net.eval()(torch.zeros(1, *shape)).reshape(1, -1).shape[1])
        except RuntimeError as err:
            raise ConfigError(f"'{text}' does not run on inputs of shape {tuple(shape)} ({str(err).splitlines()[0]}); "
                              "check --input-size and the data set") from err
    if classes is not None and width != int(classes):
        raise ConfigError(f"'{text}' outputs {width} logits but {classes} classes were expected; pass --num-classes "
                          f"{width}, or check that the factory or weights build the classifier you mean")
    classes = width
    channels = shape[0]
    mean = opts.mean or arch.mean or (0.0,) * channels
    std = opts.std or arch.std or (1.0,) * channels
    if opts.mean is None and arch.mean is None and spec.scheme in ("", "py") and not arch.arch.startswith(
            ("wrn-", "preact-", "resnet18-cifar", "resnet50-cifar")):
        warnings_out.append(f"{text}: no --mean/--std given, so the network receives [0,1] images without "
                            "normalization")
    model: nn.Module = NormalizedModel(net, mean=mean, std=std, input_shape=shape, num_classes=int(classes),
                                       arch=arch.arch).eval()
    identity: dict[str, Any] = {"spec": text, "name": _display_name(spec), "arch": arch.arch, "weights": weights,
                                "num_classes": int(classes), "input_shape": list(shape),
                                "normalization": {"mean": list(mean), "std": list(std)}}
    if arch.source_sha256:
        identity["source_sha256"] = arch.source_sha256
    resolved = ResolvedModel(model, identity, tuple(shape), int(classes), _preprocessing(arch, opts, shape),
                             arch.class_names if int(classes) == len(arch.class_names or ()) else None,
                             warnings=warnings_out)
    _apply_dtype(resolved, dtype, opts)
    if quantized:
        _declare_gradients(resolved, spec, quantized=str(quantized), float_net=float_net, int8=net, mean=mean, std=std)
    elif spec.option("surrogate") or spec.option("gradients"):
        raise ConfigError(f"'{text}': surrogate= and gradients= apply to int8 (quantized=...) and TorchScript models")
    return resolved


def _display_name(spec: ModelSpec) -> str:
    weights = spec.option("weights")
    base = spec.name.rsplit("/", 1)[-1]
    return f"{base}@{Path(str(weights)).stem}" if weights else base


def _preprocessing(arch: _Arch, opts: ModelOptions, shape) -> dict[str, Any] | None:
    if arch.preprocessing and not (opts.input_size or opts.crop_pct):
        return {**arch.preprocessing, "interpolation": opts.interpolation or arch.preprocessing["interpolation"]}
    if opts.input_size or opts.crop_pct or opts.interpolation:
        size = opts.input_size or (arch.preprocessing or {}).get("crop") or shape[1]
        pct = opts.crop_pct or (size / arch.preprocessing["resize"] if arch.preprocessing else 0.875)
        interp = opts.interpolation or (arch.preprocessing or {}).get("interpolation", "bilinear")
        return preprocessing_entry(int(size), float(pct), str(interp))
    return arch.preprocessing


def _apply_dtype(resolved: ResolvedModel, weights_dtype: torch.dtype, opts: ModelOptions) -> None:
    names = {v: k for k, v in DTYPES.items()}
    stored = names.get(weights_dtype, str(weights_dtype).replace("torch.", ""))
    wanted = opts.dtype or "float32"
    if wanted == "auto":
        wanted = stored if stored in DTYPES else "float32"
    resolved.identity["weights_dtype"] = stored
    resolved.identity["eval_dtype"] = wanted
    if wanted != "float32":
        resolved.model = DtypeModel(resolved.model, DTYPES[wanted]).eval()
    elif stored != "float32":
        resolved.warnings.append(f"{resolved.identity['spec']}: the weights are {stored} and are evaluated in float32 "
                                 f"(the cast is recorded); pass --dtype {stored} to evaluate them in {stored}")


def _declare_gradients(resolved: ResolvedModel, spec: ModelSpec, *, quantized: str, float_net, int8, mean, std) -> None:
    resolved.identity["quantization"] = {"scheme": "torch.ao", "mode": quantized, "dtype": "qint8"}
    resolved.differentiable = False
    resolved.identity["gradients"] = "none (black-box attacks only)"
    surrogate_spec, how = spec.option("surrogate"), spec.option("gradients")
    if surrogate_spec and how:
        raise ConfigError(f"'{spec.text}': give surrogate= or gradients=bpda, not both")
    surrogate: nn.Module | None = None
    if surrogate_spec:
        sur = resolve_model(str(surrogate_spec), _surrogate_options(resolved), data_shape=resolved.input_shape,
                            data_classes=resolved.num_classes)
        surrogate = sur.model
        resolved.identity["gradients"] = {"surrogate": sur.identity}
    elif how == "bpda":
        if quantized != "dynamic":
            raise ConfigError("gradients=bpda (dequantized twin) is available for dynamic quantization; for a "
                              "static int8 model pass surrogate=PATH to its float parent")
        twin = dequantized_twin(float_net, int8)
        surrogate = NormalizedModel(twin, mean=mean, std=std, input_shape=resolved.input_shape,
                                    num_classes=resolved.num_classes, arch="dequantized-twin").eval()
        resolved.identity["gradients"] = "bpda: float network with the dequantized int8 weights"
    elif how is not None:
        raise ConfigError(f"gradients must be 'bpda', got '{how}'")
    if surrogate is not None:
        resolved.model = GradientSurrogate(resolved.model, surrogate).eval()
        resolved.differentiable = True
    resolved.model.differentiable = resolved.differentiable


def _surrogate_options(victim: ResolvedModel) -> ModelOptions:
    """A surrogate sees what the victim sees: same input size and normalization (a differently normalized
    surrogate's gradients would point elsewhere and overstate robustness)."""
    norm = victim.identity.get("normalization") or {}
    shape = victim.input_shape
    return ModelOptions(input_size=int(shape[1]) if shape else None,
                        mean=tuple(norm["mean"]) if norm.get("mean") else None,
                        std=tuple(norm["std"]) if norm.get("std") else None)


def _is_file_spec(name: str) -> bool:
    path = Path(name)
    return path.suffix in (".safetensors", *TORCH_SUFFIXES) or path.is_file()


def is_checkpoint_spec(spec: ModelSpec) -> bool:
    """A plain checkpoint path (read with its sidecar), not an architecture spec."""
    return spec.scheme == "" and set(spec.options) <= {"level"} and _is_file_spec(spec.name)


def _resolve_checkpoint(spec: ModelSpec, opts: ModelOptions) -> ResolvedModel:
    """An advbench checkpoint: weights plus sidecar metadata (arch, input shape, classes, normalization)."""
    path = Path(spec.name)
    if not path.is_file():
        raise MissingPathError(f"checkpoint not found: {path}")
    meta = read_metadata(path)
    if not meta.get("arch"):
        raise CheckpointError(
            f"{path} has no sidecar ({path.with_suffix('.json').name}) naming its architecture; use a spec that "
            f"names it, e.g. --model {shlex.quote(f'timm:NAME?weights={path}')}, "
            f"{shlex.quote(f'torchvision:NAME?weights={path}')}, {shlex.quote(f'resnet20?weights={path}')} or "
            f"{shlex.quote(f'py:file.py:factory?weights={path}')} (with --num-classes/--input-size), "
            "or write the sidecar (README, 'Evaluate your own model')")
    model = load_model(path, num_classes=opts.num_classes)
    level = spec.option("level", None)
    if level is not None:  # one level of a nested checkpoint (Qin et al., 2021)
        from advbench.compression.nested import apply_level

        apply_level(model, level)
    if opts.mean is not None:
        model.mean.copy_(torch.tensor(opts.mean).reshape(model.mean.shape))
        model.std.copy_(torch.tensor(opts.std).reshape(model.std.shape))
    identity = {"path": str(path), "name": path.stem if level is None else f"{path.stem}@level{level}",
                "sha256": file_sha256(path), "arch": model.arch,
                "normalization": model.normalization(), "input_shape": list(model.input_shape),
                "num_classes": model.num_classes}
    compression = meta.get("compression") or {}
    if compression.get("parent_sha256"):  # a compressed child: leaderboards relate it to its parent
        from advbench.compression.checks import family_label

        identity["parent_sha256"] = compression["parent_sha256"]
        identity["compression_ratio"] = compression.get("compression_ratio")
        family = family_label(compression)
        if family is not None:  # only when recorded, so older children keep their identity (and config hash)
            identity["family"] = family
    if level is not None:
        identity["level"] = level
        identity["compression_ratio"] = compression["levels"][level]["compression_ratio"]
    shape = tuple(model.input_shape)
    pre = meta.get("preprocessing")
    if opts.input_size or opts.crop_pct or opts.interpolation:
        pre = preprocessing_entry(opts.input_size or shape[1], opts.crop_pct or 1.0, opts.interpolation or "bilinear")
    names = tuple(meta["class_names"]) if isinstance(meta.get("class_names"), list) else None
    resolved = ResolvedModel(model, identity, shape, model.num_classes, pre, names,
                             split_seed=int(meta.get("training", {}).get("seed", 0)), meta=meta)
    _apply_dtype(resolved, DTYPES.get(getattr(model, "weights_dtype", "float32"), torch.float32), opts)
    return resolved


def _resolve_torchscript(spec: ModelSpec, opts: ModelOptions, data_shape) -> ResolvedModel:
    path = Path(spec.name).expanduser()
    if not path.is_file():
        raise MissingPathError(f"TorchScript file not found: {path}")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise CheckpointError(f"{path} is not a readable TorchScript archive ({str(err).splitlines()[0]})") from err
    unknown = sorted(set(spec.options) - {"surrogate"})
    if unknown:
        raise ConfigError(f"model spec '{spec.text}': TorchScript specs take only surrogate=PATH, not {unknown}")
    channels = int(data_shape[0]) if data_shape else 3
    shape = (channels, opts.input_size, opts.input_size) if opts.input_size else \
        (tuple(data_shape) if data_shape else None)
    if shape is None:
        raise ConfigError(f"'{spec.text}': TorchScript models need --input-size (or a data set to take it from)")
    mean = opts.mean or (0.0,) * shape[0]
    std = opts.std or (1.0,) * shape[0]
    with torch.no_grad():
        classes = int(net.eval()(torch.zeros(1, *shape)).shape[1])
    model = NormalizedModel(net, mean=mean, std=std, input_shape=shape, num_classes=classes, arch="torchscript")
    identity = {"spec": spec.text, "name": path.stem, "arch": "torchscript",
                "weights": {"path": str(path), "sha256": file_sha256(path)}, "num_classes": classes,
                "input_shape": list(shape), "normalization": {"mean": list(mean), "std": list(std)}}
    resolved = ResolvedModel(model.eval(), identity, shape, classes,
                             preprocessing_entry(shape[1], opts.crop_pct or 0.875, opts.interpolation or "bilinear")
                             if (opts.crop_pct or opts.input_size) else None)
    floats = [p.dtype for p in net.parameters() if p.is_floating_point()]
    _apply_dtype(resolved, max(set(floats), key=floats.count) if floats else torch.float32, opts)
    x = torch.zeros(1, *shape, requires_grad=True)
    try:
        with torch.enable_grad():
            differentiable = bool(net(x).requires_grad)
    except RuntimeError:
        differentiable = False
    resolved.differentiable = differentiable
    resolved.identity["gradients"] = "model" if differentiable else "none (black-box attacks only)"
    if spec.option("surrogate"):
        sur = resolve_model(str(spec.option("surrogate")), _surrogate_options(resolved), data_shape=shape,
                            data_classes=classes)
        resolved.model = GradientSurrogate(resolved.model, sur.model).eval()
        resolved.identity["gradients"] = {"surrogate": sur.identity}
        resolved.differentiable = True
    resolved.model.differentiable = resolved.differentiable
    return resolved
