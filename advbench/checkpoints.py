"""Safe checkpoint reading and writing.

* The native format is safetensors plus a JSON sidecar (``model.safetensors`` → ``model.json``)
  holding the architecture, dataset, input shape, class count, normalization, training config and
  test accuracy.  The same JSON is also stored in the safetensors header metadata, so a lone file
  still loads.
* ``.pt`` / ``.pth`` files are read with ``torch.load(weights_only=True)``: a pickle that would need to
  run code is refused with :class:`~advbench.errors.UnsafeCheckpointError`, which says how to convert it.
* State dicts brought by users are normalised: ``module.`` prefixes (DataParallel) are stripped, and
  ``torch.nn.utils.prune`` pairs ``<layer>.weight_orig`` × ``<layer>.weight_mask`` become ``<layer>.weight``.
* Weights saved as PyTorch's 2:4 semi-structured tensors (``torch.sparse.to_sparse_semi_structured``, Mishra et
  al. 2021, "Accelerating Sparse Deep Neural Networks") are allowed by the safe loader (they are PyTorch's own
  tensor classes, rebuilt from plain tensors) and read back as dense tensors: the CUTLASS layout on any device,
  the cuSPARSELt one, whose packing only the CUDA library can undo, where a GPU is present.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench.errors import CheckpointError, MissingPathError, UnsafeCheckpointError

SIDECAR_KEY = "advbench"


def sidecar_path(path: str | Path) -> Path:
    """``model.safetensors`` → ``model.json``."""
    return Path(path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (checkpoint identity in config hashes and provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` prefixes and fold ``weight_orig``/``weight_mask`` prune pairs into ``weight``.

    >>> state = {"module.fc.weight_orig": torch.tensor([2.0, 3.0]), "module.fc.weight_mask": torch.tensor([1.0, 0.0])}
    >>> {k: v.tolist() for k, v in normalize_state_dict(state).items()}
    {'fc.weight': [2.0, 0.0]}
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    for key in [k for k in out if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        mask = out.pop(base + "_mask", None)
        orig = out.pop(key)
        if mask is not None:
            if mask.shape != orig.shape:
                raise CheckpointError(f"mask shape mismatch for '{base}': mask {tuple(mask.shape)} vs weight "
                                      f"{tuple(orig.shape)}; the checkpoint is inconsistent")
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise CheckpointError(f"the mask of '{base}' is not binary (values other than 0 and 1); "
                                      "torch.nn.utils.prune masks hold only 0 and 1")
        out[base] = orig * mask if mask is not None else orig
    return _keep_metadata(state, out, lambda key: _strip_module(key))


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def _keep_metadata(source: Any, out: dict[str, Any], rename) -> dict[str, Any]:
    """Carry ``state_dict()._metadata`` (per-module format versions) over to a re-keyed copy: int8 ``torch.ao``
    modules need it to read their packed parameters."""
    meta = getattr(source, "_metadata", None)
    if meta is None:
        return out
    from collections import OrderedDict

    kept = OrderedDict(out)
    kept._metadata = OrderedDict((rename(k + ".")[:-1] if k else k, v) for k, v in meta.items())  # type: ignore[attr-defined]
    return kept


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); it may be corrupt") from err
    return tensors, meta


#: Suffixes read as torch files (``.pth.tar`` is timm's training-checkpoint name).
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
#: Where training scripts keep the weights inside a checkpoint dict, in the order they are looked up
#: (timm: ``state_dict`` / ``state_dict_ema``; torchvision references: ``model`` / ``model_ema``).
NESTED_KEYS = ("state_dict", "model", "net", "module")
EMA_KEYS = ("state_dict_ema", "model_ema")


def _semi_structured_classes() -> list[type]:
    """PyTorch's 2:4 semi-structured tensor classes (empty where this torch lacks them)."""
    try:
        from torch.sparse.semi_structured import (
            SparseSemiStructuredTensorCUSPARSELT,
            SparseSemiStructuredTensorCUTLASS,
        )
    except ImportError:  # pragma: no cover - every supported torch has them
        return []
    return [SparseSemiStructuredTensorCUTLASS, SparseSemiStructuredTensorCUSPARSELT]


def densify_semi_structured(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``state`` with every 2:4 semi-structured tensor replaced by its dense form (zeros where it was pruned).

    The CUTLASS layout (values plus index metadata) is unpacked on any device.  The cuSPARSELt layout is packed by
    the CUDA library, so it needs a GPU; without one the error says how to convert the file where one is."""
    classes = tuple(_semi_structured_classes())
    if not classes or not any(isinstance(v, classes) for v in state.values()):
        return state
    out = dict(state)
    for key, value in state.items():
        if not isinstance(value, classes):
            continue
        if type(value).__name__.endswith("CUSPARSELT") and value.packed is not None and not value.packed.is_cuda:
            if not torch.cuda.is_available():
                raise CheckpointError(
                    f"{path}: '{key}' is a cuSPARSELt-packed 2:4 tensor (to_sparse_semi_structured on a GPU), and "
                    "only the CUDA library can unpack it; this machine has no GPU. On a GPU machine, re-save the "
                    "dense form: {k: (v.to_dense() if hasattr(v, 'packed') else v) for k, v in state.items()}")
            value = type(value)(value.shape, value.packed.cuda(), None, None, None, None,
                                fuse_transpose_cusparselt=value.fuse_transpose_cusparselt,
                                alg_id_cusparselt=value.alg_id_cusparselt)
        out[key] = value.to_dense().cpu()
    return _keep_metadata(state, out, lambda key: key)


def _read_torch(path: Path) -> dict[str, Any]:
    import argparse

    try:
        # timm's train.py stores its argparse.Namespace next to the weights; a Namespace only holds plain
        # attributes, so it is allowed, as are PyTorch's semi-structured sparse tensors (rebuilt from plain
        # tensors by torch itself).  Anything else that needs code is refused.
        allowed = [argparse.Namespace, *_semi_structured_classes()]
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on a raw pickle's protocol, before refusing
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" (it calls {found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"{path} is a pickle that needs to run code to load{what}, so it was refused. "
            "Re-save only the tensors, in a trusted environment: "
            "torch.save(model.state_dict(), 'clean.pt') or safetensors.torch.save_file(model.state_dict(), "
            "'model.safetensors')"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        if "TorchScript" in str(err):
            raise CheckpointError(f"{path} is a TorchScript archive, not a state dict; load it with the model spec "
                                  f"'torchscript:{path}'") from err
        raise CheckpointError(f"{path} could not be read as a torch checkpoint ({err}); it may be corrupt") from err
    return obj


def unwrap_state_dict(obj: Any, path: str | Path, *, ema: bool = False) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of a loaded torch checkpoint and the key they were found under (None: the top level).

    Training checkpoints nest the weights (timm: ``state_dict`` and ``state_dict_ema``; torchvision's
    reference scripts: ``model`` and ``model_ema``); ``ema=True`` asks for the EMA copy and fails if there
    is none."""
    key = None
    nested = isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in (*NESTED_KEYS, *EMA_KEYS))
    if nested or (isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values())):
        keys = EMA_KEYS if ema else NESTED_KEYS
        key = next((k for k in keys if isinstance(obj.get(k), dict)), None)
        if key is None:
            what = "an EMA copy (state_dict_ema / model_ema)" if ema else f"weights under {', '.join(NESTED_KEYS)}"
            raise CheckpointError(f"{path} holds no {what}; its top-level keys are {sorted(map(str, obj))[:8]}")
        obj = obj[key]
        if key == "model_ema" and isinstance(obj, dict):  # torch.optim.swa_utils.AveragedModel: "module." keys
            obj = {k: v for k, v in obj.items() if k != "n_averaged"}  # plus its update counter, not a weight
    elif ema:
        raise CheckpointError(f"{path} is a plain state dict with no EMA copy; drop ema=true")
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__})")
    # int8 (torch.ao) state dicts also hold packed-parameter tuples and dtypes next to the tensors
    return obj, key


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata without reading its tensors: the JSON sidecar, else the safetensors header."""
    path = Path(path)
    side = sidecar_path(path)
    if side.exists() and side != path:
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"sidecar {side} is not valid JSON (line {err.lineno}): {err.msg}") from err
    if path.suffix == ".safetensors" and path.exists():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
        except (SafetensorError, OSError, ValueError):
            return {}
        return json.loads(header[SIDECAR_KEY]) if SIDECAR_KEY in header else {}
    return {}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors or torch file without executing pickled code."""
    state, _ = read_checkpoint(path)
    return state


def read_checkpoint(path: str | Path, *, ema: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (normalised, see module doc) and metadata (sidecar JSON, else header metadata); ``ema=True``
    takes the EMA weights of a training checkpoint."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"checkpoint not found: {path}")
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        tensors, header = _read_safetensors(path)
        if SIDECAR_KEY in header:
            meta = json.loads(header[SIDECAR_KEY])
    elif path.suffix in TORCH_SUFFIXES:
        tensors, _ = unwrap_state_dict(_read_torch(path), path, ema=ema)
        tensors = densify_semi_structured(tensors, path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format '{path.suffix}'; use .safetensors, .pt, .pth "
                              "or .pth.tar")
    side = sidecar_path(path)
    if side.exists() and side != path:
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"sidecar {side} is not valid JSON (line {err.lineno}): {err.msg}") from err
    return normalize_state_dict(tensors), meta


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, Any],
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model``'s state (and ``extra`` tensors, such as a nested model's level masks) as safetensors plus
    the JSON sidecar; returns the safetensors path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: checkpoints are written as .safetensors; change the file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    clash = sorted(set(state) & set(extra or {}))
    if clash:
        raise CheckpointError(f"extra tensors {clash[:3]} would overwrite the model's own; rename them")
    state.update({k: v.detach().contiguous().cpu() for k, v in (extra or {}).items()})
    text = json.dumps(metadata, indent=2, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={SIDECAR_KEY: text})
    tmp.replace(path)
    sidecar_path(path).write_text(text + "\n")
    return path


def require_task(meta: dict[str, Any], path: str | Path, task: str, label: str, hint: str) -> None:
    """Refuse a checkpoint whose metadata does not say ``task: <task>``; ``label`` names what was expected
    (e.g. ``"an SOD model"``) and ``hint`` how to get one."""
    found = meta.get("task")
    if found == task:
        return
    kind = f"a {found}" if found else ("a classifier" if "num_classes" in meta else "an unlabelled")
    raise CheckpointError(f"{path} is {kind} checkpoint, not {label} (its metadata lacks task: \"{task}\"); {hint}")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``model.load_state_dict(state)`` after checking every key and shape, with one error that says what is
    missing, unexpected or of another shape (``what`` describes the architecture for the message)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path} does not match {what}: {len(missing)} missing keys (e.g. {missing[:2]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another "
                              f"shape (e.g. {wrong[:2]})")
    model.load_state_dict(state)


def save_task_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None, *,
                         model_type: type, label: str) -> Path:
    """Write a task model (SOD, multi-task) whose ``metadata()`` rebuilds it: ``.safetensors`` + JSON sidecar,
    the model's own metadata winning over ``metadata`` (e.g. ``{"dataset": ..., "training": summary}``)."""
    from advbench.records import now_iso

    if not isinstance(model, model_type):
        raise CheckpointError(f"saving {label} needs a {model_type.__name__}, got {type(model).__name__}")
    if Path(path).suffix != ".safetensors":
        raise CheckpointError(f"{path}: {label} checkpoints are written as .safetensors; change the file name")
    return save_checkpoint(model, path, {"created_at": now_iso(), **(metadata or {}), **model.metadata()})
