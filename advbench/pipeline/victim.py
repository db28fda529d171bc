"""The victim of a run, opened for streaming: the resolved model and the lazily read samples it is evaluated on.

:func:`open_victim` resolves a model spec (see :mod:`advbench.models.resolve`), opens the data set's
evaluation stream with the model's preprocessing and channel count, checks that the two fit (input shape,
classes) and records the provenance of both.  No image is decoded beyond the first one (to learn the input
shape) and, for an in-memory set of another image size, nothing but a per-batch resize is added.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from advbench.errors import ConfigError, InputError, MissingPathError
from advbench.models.resolve import ClassSubsetModel, ModelOptions, ResolvedModel, is_checkpoint_spec, resolve_model
from advbench.models.specs import ModelSpec, parse_model_spec

_STATS_CHUNK = 256


@dataclass
class StreamedVictim:
    """A loaded model, the evaluation stream it is attacked on, and the provenance of both."""

    model: torch.nn.Module
    stream: Any  # advbench.datasets.evaluation_set.EvaluationStream
    resize: Any | None  # a Preprocessing applied per batch to in-memory images of another size, else None
    identity: dict[str, Any]
    data: dict[str, Any]
    split_seed: int
    arch: str | None
    input_shape: tuple[int, int, int]
    differentiable: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return len(self.stream)

    def read(self, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of selected samples ``indices``, as the model takes them."""
        x = self.stream.read(indices)
        if self.resize is not None:
            x = self.resize.apply_tensor(x)
        y = torch.from_numpy(np.ascontiguousarray(self.stream.labels[np.asarray(indices, dtype=np.int64)]))
        return x, y

    def dataset(self) -> SelectionDataset:
        return SelectionDataset(self)


class SelectionDataset(Dataset):
    """Selected sample ``i`` of a victim's stream as ``(image, label)``; a batch of indices is read at once."""

    def __init__(self, victim: StreamedVictim) -> None:
        self.victim = victim

    def __len__(self) -> int:
        return self.victim.n_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.victim.read([index])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.victim.read(indices)


def already_batched(batch: Any) -> Any:
    """The DataLoader collate function for datasets whose ``__getitems__`` returns a whole batch."""
    return batch


def is_fresh_name(spec: ModelSpec) -> bool:
    """A registered architecture name without weights: a freshly initialised (untrained) model.  It must say
    so with ``?random=true``: a bare ``small_cnn`` used to be evaluated and stored as if it were a result."""
    model_spec = spec.text
    if spec.scheme or Path(spec.name).suffix or "/" in spec.name or set(spec.options) - {"random"}:
        return False
    if spec.options.get("random") is not True:
        raise ConfigError(
            f"--model {model_spec} names an architecture without weights, so it would evaluate an untrained "
            f"network; pass a checkpoint, '{spec.name}?weights=PATH', or '{spec.name}?random=true' to evaluate "
            "random weights on purpose")
    return True


def is_folder(dataset: str) -> bool:
    """An image folder whose images the model's preprocessing resizes (unless ``?size=N`` already fixes it)."""
    text = dataset.strip().lower()
    return text.startswith("imagefolder:") and "size=" not in text.partition("?")[2]


def stream_channel_stats(dataset: str, stream: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The training split's per-channel statistics for a fresh model's normalization; the evaluated samples'
    own (read in chunks) when the data set has no training split (an evaluation-only folder, CIFAR test files)."""
    from advbench.datasets import load_dataset
    from advbench.datasets.data import STD_FLOOR
    from advbench.errors import DatasetError

    try:
        return load_dataset(dataset, seed=0).channel_stats()
    except (DatasetError, MissingPathError):
        total = total_sq = None
        count = 0
        for start in range(0, len(stream), _STATS_CHUNK):
            x = stream.read(np.arange(start, min(start + _STATS_CHUNK, len(stream)))).to(torch.float64)
            s, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
            total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
            count += x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(STD_FLOOR)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def open_victim(model_spec: str, dataset: str, *, seed: int = 0, device: str = "cpu",
                options: ModelOptions | None = None, n_samples: int | None = None, selection: str = "balanced",
                samples: str | None = None, class_map: str | None = None) -> StreamedVictim:
    """Resolve the model spec, open the selected evaluation samples as a stream, and check that they fit.

    The samples are drawn with the checkpoint's training seed as split seed, so a model is never evaluated
    on samples it was trained on.  Preprocessing (resize + centre crop) comes from the model (timm's
    pretrained config, torchvision's weight transforms, the RobustBench zoo entry, the sidecar) or the
    ``--input-size``/``--crop-pct``/``--interpolation`` flags; in-memory sets whose images already have the
    model's size are left untouched."""
    from advbench.datasets.evaluation_set import Preprocessing, open_evaluation_set
    from advbench.models.loading import load_model

    options = options or ModelOptions()
    spec = parse_model_spec(model_spec)  # the one place a run's model spec is parsed
    select = {"n_samples": n_samples, "selection": selection, "seed": seed, "samples": samples}
    if is_fresh_name(spec) and options == ModelOptions():
        stream = open_evaluation_set(dataset, split_seed=0, **select)
        shape = stream.input_shape()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = stream_channel_stats(dataset, stream)
            model = load_model(spec.name, input_shape=shape, num_classes=stream.num_classes)
            model.mean.copy_(torch.tensor(mean).reshape(model.mean.shape))
            model.std.copy_(torch.tensor(std).reshape(model.std.shape))
        resolved = ResolvedModel(model, {"name": spec.name, "spec": model_spec, "weights": "random",
                                         "normalization": model.normalization()}, shape,
                                 stream.num_classes, warnings=[f"{model_spec}: random weights, evaluated on purpose"])
    else:
        needs_data = spec.scheme in ("", "py", "torchscript") and not is_checkpoint_spec(spec)
        flags_pre = None
        if needs_data and options.input_size and is_folder(dataset):
            flags_pre = Preprocessing.from_crop_pct(options.input_size, options.crop_pct or 0.875,
                                                    options.interpolation or "bilinear")
        first = open_evaluation_set(dataset, split_seed=0, preprocessing=flags_pre, **select) if needs_data else None
        first_shape = first.input_shape() if first is not None else None
        resolved = resolve_model(spec, options, data_shape=first_shape,
                                 data_classes=first.num_classes if first else None)
        pre = resolved.preprocessing if is_folder(dataset) else None
        channels = resolved.input_shape[0] if resolved.input_shape and resolved.input_shape[0] in (1, 3) else None
        same_channels = channels is None or not is_folder(dataset)  # a folder is decoded to the model's channels
        if first is not None and resolved.split_seed == 0 and same_channels and \
                first.preprocessing == (Preprocessing(**pre).describe() if pre else None):
            stream = first
        else:
            stream = open_evaluation_set(dataset, split_seed=resolved.split_seed, channels=channels,
                                         preprocessing=Preprocessing(**pre) if pre else None, **select)
    warnings_out = [*resolved.warnings, *stream.warnings]
    native = stream.input_shape()
    preprocessing = stream.preprocessing
    expected = tuple(resolved.input_shape or native)
    resize = None
    if native != expected and expected[0] == native[0] and resolved.preprocessing is not None \
            and not is_folder(dataset):
        resize = Preprocessing(**resolved.preprocessing)
        preprocessing = resize.describe()
        native = tuple(resize.apply_tensor(stream.read([0])).shape[1:])
    if native != expected:
        raise InputError(
            f"model {model_spec} expects inputs {expected} but data set {dataset} gives {native}; "
            "pass --input-size (and --crop-pct/--interpolation) to resize and centre-crop, or use a data set "
            "of the model's image size")
    model, class_entry = map_classes(resolved, stream.class_names, class_map, model_spec, dataset)
    data_entry = {"spec": dataset, **{k: v for k, v in stream.source.items() if k != "spec"},
                  "selection": stream.selection, "preprocessing": preprocessing,
                  "fingerprint": stream.fingerprint()}
    if class_entry is not None:
        data_entry["class_map"] = class_entry
    return StreamedVictim(model.to(device), stream, resize, resolved.identity, data_entry, resolved.split_seed,
                          resolved.identity.get("arch") or getattr(model, "arch", None),
                          tuple(int(v) for v in expected), resolved.differentiable, warnings_out)


def read_class_map(path: str, class_names: tuple[str, ...]) -> dict[str, int]:
    """A class map file: JSON ``{"data class name": model output index}`` (or a list of output indices in the
    data set's class order), or text lines ``NAME INDEX``."""
    file = Path(path)
    if not file.is_file():
        raise MissingPathError(f"--class-map file not found: {file}")
    text = file.read_text()
    if file.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--class-map {file} is not valid JSON (line {err.lineno}): {err.msg}") from err
        if isinstance(obj, list):
            if len(obj) != len(class_names):
                raise ConfigError(f"--class-map {file} lists {len(obj)} indices for {len(class_names)} classes")
            obj = dict(zip(class_names, obj, strict=True))
        if not isinstance(obj, dict):
            raise ConfigError(f"--class-map {file} must hold an object {{name: index}} or a list of indices")
        pairs = obj
    else:
        pairs = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ConfigError(f"--class-map {file}, line {lineno}: expected 'CLASS_NAME MODEL_INDEX', got '{line}'")
            pairs[parts[0]] = int(parts[1])
    out = {}
    for name, index in pairs.items():
        if not isinstance(index, int) or isinstance(index, bool):
            raise ConfigError(f"--class-map {file}: the index of '{name}' must be an integer, got {index!r}")
        out[str(name)] = index
    return out


def map_classes(resolved: ResolvedModel, class_names: tuple[str, ...], class_map: str | None, model_spec: str,
                dataset: str) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """The model restricted to the data set's classes, when they are a subset of its outputs.

    The map comes from ``--class-map``, else from the model's own class names (e.g. the ImageNet synsets
    n01440764, ... of a 1,000-class model against an ImageNet-val-style folder); a data set with as many
    classes as the model has outputs is taken in order."""
    model, outputs = resolved.model, int(resolved.num_classes or len(class_names))
    if class_map:
        mapping = read_class_map(class_map, class_names)
        missing = [c for c in class_names if c not in mapping]
        if missing:
            raise ConfigError(f"--class-map {class_map} has no entry for data set classes {missing[:5]}")
        source = f"file:{class_map}"
    elif resolved.class_names and set(class_names) <= set(resolved.class_names) and \
            tuple(class_names) != tuple(resolved.class_names):
        position = {name: i for i, name in enumerate(resolved.class_names)}
        mapping, source = {c: position[c] for c in class_names}, "model class names"
    elif resolved.class_names and tuple(class_names) != tuple(resolved.class_names):
        unknown = [c for c in class_names if c not in set(resolved.class_names)]
        raise InputError(
            f"data set {dataset} has classes the model does not name (e.g. {unknown[:3]}; the model's are "
            f"{list(resolved.class_names[:3])}, ...), so its labels cannot be matched to the outputs by name; rename "
            "the class folders, or pass --class-map FILE (lines 'CLASS_NAME MODEL_INDEX')")
    elif len(class_names) == outputs:
        return model, None
    else:
        raise InputError(
            f"model {model_spec} has {outputs} outputs but data set {dataset} has {len(class_names)} classes; "
            "pass --class-map FILE (lines 'CLASS_NAME MODEL_INDEX') to evaluate on a subset of the model's classes, "
            "or --num-classes to build the model with the data set's class count")
    indices = [mapping[c] for c in class_names]
    bad = [i for i in indices if not 0 <= i < outputs]
    if bad:
        raise ConfigError(f"class map: model indices {bad[:5]} are outside the model's {outputs} outputs")
    if len(set(indices)) != len(indices):
        raise ConfigError("class map: two data set classes map to the same model output")
    entry = {"source": source, "indices": indices,
             "sha256": hashlib.sha256(json.dumps(indices).encode()).hexdigest()}
    return ClassSubsetModel(model, indices).eval(), entry
