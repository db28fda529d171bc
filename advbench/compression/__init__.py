"""Model compression: ADMM and magnitude pruning onto the structures of :mod:`advbench.compression.structures`
(unstructured, filter, channel, block, pattern, N:M), ADMM-NN quantization, masked retraining, physical
shrinking of filter-pruned CNNs, and compression statistics."""

from advbench.compression.admm import PruneConfig, PruneReport, admm_prune, apply_masks, compression_stats
from advbench.compression.projections import project_sparse, quantize, sparsity_mask
from advbench.compression.shrink import count_flops, count_params, shrink_model
from advbench.compression.structures import STRUCTURES, Structure, create_structure
from advbench.compression.targets import parse_per_layer, prunable_layers, resolve_targets

__all__ = [
    "STRUCTURES",
    "Structure",
    "PruneConfig",
    "PruneReport",
    "admm_prune",
    "apply_masks",
    "compression_stats",
    "create_structure",
    "count_flops",
    "count_params",
    "parse_per_layer",
    "project_sparse",
    "prunable_layers",
    "quantize",
    "resolve_targets",
    "shrink_model",
    "sparsity_mask",
]
