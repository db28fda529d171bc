"""Building a classifier from a checkpoint (or a fresh one from a registered name).

The checkpoint file format (safetensors + sidecar, safe ``.pt`` reading) is :mod:`advbench.checkpoints`; this
module turns what it reads into a model, so the file format does not depend on the architectures.
"""

from __future__ import annotations

from pathlib import Path

import torch  # noqa: F401 - used by the doctest
from torch import nn

from advbench.checkpoints import TORCH_SUFFIXES, read_checkpoint, sidecar_path
from advbench.errors import CheckpointError
from advbench.models.registry import create_model


def load_model(
    path_or_name: str | Path,
    *,
    arch: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Return a module that takes [0,1] images, from a checkpoint path or a model name.

    A path is read safely (see module doc) and rebuilt from its sidecar metadata; ``arch``,
    ``input_shape`` and ``num_classes`` may fill in metadata a foreign checkpoint lacks.  A name such as
    ``'small_cnn'`` or ``'timm:resnet18'`` builds a fresh, untrained model and then needs
    ``input_shape`` and ``num_classes``.

    >>> m = load_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    >>> m(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    text = str(path_or_name)
    looks_like_path = Path(text).suffix in (".safetensors", *TORCH_SUFFIXES) or "/" in text
    if not looks_like_path:
        if input_shape is None or num_classes is None:
            raise CheckpointError(f"building a fresh '{text}' needs input_shape=(C, H, W) and num_classes=")
        return create_model(text, input_shape=input_shape, num_classes=num_classes)
    state, meta = read_checkpoint(text)
    task = meta.get("task")
    if task not in (None, "classification"):
        how = {"sod": "advbench.training.sod.load_sod_model (`advbench run --model` takes it too)",
               "multitask": "advbench.training.multitask.load_multitask_model (`advbench run --model` takes it too)",
               "detection": "advbench.training.detection.load_detector (`advbench detect-attack --detector`)",
               "defense": "advbench.defenses.defensenet.load_defensenet (`advbench run --defense defensenet:PATH`)"}
        raise CheckpointError(f"{text} is a '{task}' checkpoint (arch {meta.get('arch')!r}), not an image "
                              f"classifier; load it with {how.get(str(task), 'the loader of its task')}")
    arch = arch or meta.get("arch")
    shape = input_shape or meta.get("input_shape")
    classes = num_classes or meta.get("num_classes")
    if not arch or not shape or not classes:
        raise CheckpointError(
            f"{text} has no sidecar metadata ({sidecar_path(text).name}) naming arch, input_shape and "
            "num_classes; pass them to load_model(..., arch=, input_shape=, num_classes=)"
        )
    from advbench.compression.nested import split_level_norms, split_nested

    nested = split_nested(state)  # a nested checkpoint's level masks live beside the weights
    level_norms = split_level_norms(state)  # and so do its per-level BatchNorm statistics
    norm = meta.get("normalization", {})
    model = create_model(arch, input_shape=tuple(shape), num_classes=int(classes),
                         mean=norm.get("mean"), std=norm.get("std"))
    if not any(k.startswith("net.") for k in state):
        state = {**{f"net.{k}": v for k, v in state.items()},
                 **{k: v for k, v in model.state_dict().items() if not k.startswith("net.")}}
    model_state = model.state_dict()
    missing = sorted(set(model_state) - set(state))
    unexpected = sorted(set(state) - set(model_state))
    wrong = sorted(k for k in set(state) & set(model_state) if state[k].shape != model_state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            part for part in (
                f"missing {missing[:4]}" if missing else "",
                f"unexpected {unexpected[:4]}" if unexpected else "",
                f"shape mismatch in {wrong[:4]}" if wrong else "",
            ) if part
        )
        raise CheckpointError(f"{text} does not match architecture '{arch}' {tuple(shape)}: {detail}")
    floats = [str(v.dtype).replace("torch.", "") for k, v in state.items() if k.startswith("net.") and
              v.is_floating_point()]
    model.load_state_dict(state)
    model.weights_dtype = max(set(floats), key=floats.count) if floats else "float32"  # before the float32 copy
    model.checkpoint_meta = meta
    model.checkpoint_path = text
    model.nested_masks = nested
    model.nested_norms = level_norms
    model.eval()
    return model
