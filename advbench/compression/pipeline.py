"""Prune a dense checkpoint into a child checkpoint (safetensors + sidecar with the compression facts)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from advbench.checkpoints import file_sha256, save_checkpoint
from advbench.compression.admm import PruneConfig, admm_prune, compression_stats
from advbench.compression.targets import resolve_targets, short_name
from advbench.errors import ConfigError
from advbench.models.loading import load_model
from advbench.records import now_iso


def prune_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    cfg: PruneConfig,
    *,
    out: str | Path,
    target: float | None = None,
    per_layer: dict[str, float] | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Prune ``checkpoint`` (ADMM or magnitude, optional quantization and adversarial training) on
    ``dataset`` and write ``out``; returns the child's sidecar metadata.  The model trains on ``device``
    (batches are drawn on the CPU and moved there); the child is written from CPU tensors either way."""
    from advbench.datasets import load_dataset
    from advbench.devices import check_device
    from advbench.runner import device_entry
    from advbench.training import accuracy

    if Path(out).suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got '{out}'")
    dev = check_device(device)
    model = load_model(checkpoint).to(dev)
    parent = dict(getattr(model, "checkpoint_meta", {}))
    split_seed = int(parent.get("training", {}).get("seed", 0))
    data = load_dataset(dataset, seed=split_seed)
    if tuple(data.input_shape) != tuple(model.input_shape) or data.num_classes != model.num_classes:
        raise ConfigError(f"{checkpoint} was built for inputs {tuple(model.input_shape)} with {model.num_classes} "
                          f"classes; dataset {dataset} has {tuple(data.input_shape)} and {data.num_classes}")
    targets = resolve_targets(model, structure=cfg.structure, target=target, per_layer=per_layer)
    dense_acc = accuracy(model, data.x_test, data.y_test)
    report = admm_prune(model, data, targets, cfg, progress=progress)
    extra = None
    if cfg.structure == "nested":
        from advbench.compression.nested import calibrate_level_norms, nested_tensors, split_nested

        extra = nested_tensors(model, list(targets), report.structure["levels"])
        model.nested_masks = split_nested(dict(extra))
        extra.update(calibrate_level_norms(model, data.x_train))  # before the accuracy: level 0's statistics
    stats = compression_stats(model)
    meta = {k: v for k, v in parent.items() if k not in ("compression", "test_accuracy")}
    meta.update({
        "dataset": parent.get("dataset", dataset),
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
        "created_at": now_iso(),
        "compression": {
            "parent": str(checkpoint),
            "parent_sha256": file_sha256(checkpoint),
            "parent_test_accuracy": dense_acc,
            "config": asdict(cfg),
            "family": {"method": cfg.method, "structure": report.structure, "quantize_bits": cfg.quantize_bits,
                       "adversarial": cfg.adversarial},
            "targets": {short_name(k): v for k, v in targets.items()},
            "per_layer_sparsity": {k: v["sparsity"] for k, v in stats["per_layer"].items()},
            "compression_ratio": stats["compression_ratio"],
            "quantization": report.quantization,
            "history": report.history,
            **device_entry(dev),
        },
    })
    if cfg.structure == "nested":
        from advbench.compression.nested import level_summary

        meta["compression"]["levels"] = level_summary(model, report.structure["levels"])
    save_checkpoint(model, out, meta, extra=extra)
    return meta
