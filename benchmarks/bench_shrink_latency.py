"""CPU latency of a filter-pruned CNN before and after ``shrink_model`` physically removes the zeroed filters.

For each architecture a seeded, untrained model is built (eval mode); in every conv that ``shrink_model``
can shrink (``shrinkable_convs``: for ResNet-20 only the block-internal ``conv1`` layers, since the other
convs feed a residual add) the ``--sparsity`` fraction of filters with the smallest l2 norm is zeroed
(weights and bias), i.e. the largest-norm filters are kept.  The zeroed but dense model ("masked") is then
timed against ``shrink_model(masked)`` ("shrunk") on the same batch: median wall time of a no-grad forward
over interleaved repeats after a warm-up, in one process.  The script checks that both give the same
outputs (max abs difference printed).

Reported per architecture: parameters, multiply-accumulates (``count_flops``, Conv2d + Linear), median
latency, ``flop_reduction = masked_macs / shrunk_macs``, ``speedup = masked_ms / shrunk_ms`` and
``speedup / flop_reduction`` (goal >= 0.6: the saving in arithmetic shows up as wall time).

Run: ``.venv/bin/python benchmarks/bench_shrink_latency.py [--quick] [--json] [--threads N]``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, from any working directory

import argparse  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from _common import (  # noqa: E402
    add_run_options,
    apply_threads,
    make_parser,
    measure,
    medians,
    print_json,
    print_ratio,
    print_table,
    print_title,
    runtime_setup,
)
from torch import nn  # noqa: E402

INPUTS = {"resnet20": (3, 32, 32), "small_cnn": (1, 28, 28), "lenet5": (1, 28, 28)}
GOAL = 0.6


def zero_smallest_filters(model: nn.Module, names: list[str], sparsity: float) -> dict[str, int]:
    """Zero the ``sparsity`` fraction of smallest-l2-norm filters of each named conv; returns name -> kept."""
    modules = dict(model.named_modules())
    kept = {}
    with torch.no_grad():
        for name in names:
            conv = modules[name]
            k = max(1, round((1 - sparsity) * conv.out_channels))
            keep = torch.zeros(conv.out_channels, dtype=torch.bool)
            keep[conv.weight.flatten(1).norm(dim=1).topk(k).indices] = True
            conv.weight[~keep] = 0
            if conv.bias is not None:
                conv.bias[~keep] = 0
            kept[name] = k
    return kept


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__, "~10 s smoke run: batch 16, 5 repeats")
    p.add_argument("--arch", default="resnet20,small_cnn",
                   help="comma-separated: resnet20 (3x32x32), small_cnn, lenet5 (1x28x28); default resnet20,small_cnn")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64, 16 with --quick)")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of filters zeroed per shrinkable conv")
    p.add_argument("--channels-last", action="store_true",
                   help="run both models and the batch in torch.channels_last (often faster for CPU convs)")
    add_run_options(p, "timed repeats (default 30, 5 with --quick)")
    args = p.parse_args(argv)
    args.arch = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in args.arch if a not in INPUTS]
    if unknown:
        p.error(f"unknown --arch {', '.join(unknown)}; choose from {', '.join(INPUTS)}")
    args.batch = args.batch or (16 if args.quick else 64)
    args.repeats = args.repeats or (5 if args.quick else 30)
    return args


def run_arch(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    from advbench.compression.shrink import count_flops, count_params, shrink_model, shrinkable_convs
    from advbench.models import create_model

    shape = INPUTS[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        masked = create_model(arch, input_shape=shape, num_classes=10, mean=[0.5] * shape[0],
                              std=[0.25] * shape[0])
    masked.eval()
    targets = list(shrinkable_convs(masked))
    kept = zero_smallest_filters(masked, targets, args.sparsity)
    shrunk = shrink_model(masked)
    shrunk_mods = dict(shrunk.named_modules())
    removed = {name: shrunk_mods[name].out_channels for name in targets}

    x = torch.rand((args.batch, *shape), generator=torch.Generator().manual_seed(args.seed))
    if args.channels_last:
        masked, shrunk = (m.to(memory_format=torch.channels_last) for m in (masked, shrunk))
        x = x.contiguous(memory_format=torch.channels_last)

    def fwd(model: nn.Module):
        def call() -> torch.Tensor:
            with torch.no_grad():
                return model(x)
        return call

    times, results = measure({"masked": fwd(masked), "shrunk": fwd(shrunk)}, args.repeats, warmup=2)
    med = medians(times)
    macs = {"masked": count_flops(masked, shape), "shrunk": count_flops(shrunk, shape)}
    params = {"masked": count_params(masked), "shrunk": count_params(shrunk)}
    flop_reduction = macs["masked"] / macs["shrunk"]
    speedup = med["masked"] / med["shrunk"]
    return {
        "arch": arch,
        "input_shape": list(shape),
        "shrinkable_convs": targets,
        "filters_kept_by_mask": kept,
        "out_channels_after_shrink": removed,
        "params": params,
        "macs": macs,
        "median_s": med,
        "times_s": times,
        "max_abs_diff": float((results["masked"] - results["shrunk"]).abs().max()),
        "flop_reduction": flop_reduction,
        "param_reduction": params["masked"] / params["shrunk"],
        "speedup": speedup,
        "speedup_over_flop_reduction": speedup / flop_reduction,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    apply_threads(args)
    runs = [run_arch(arch, args) for arch in args.arch]
    setup = {"batch": args.batch, "sparsity": args.sparsity, "channels_last": args.channels_last, "seed": args.seed,
             **runtime_setup(args.repeats)}
    report = {"setup": setup, "goal_speedup_over_flop_reduction": GOAL, "results": runs}
    if print_json(report, args):
        return report

    layout = "channels_last" if args.channels_last else "NCHW"
    print_title(f"shrink_model latency, batch {args.batch}, {args.sparsity:.0%} of filters zeroed, {layout}", setup,
                ("torch",))
    rows = []
    for r in runs:
        for side in ("masked", "shrunk"):
            rows.append([r["arch"], side, r["params"][side], r["macs"][side] / 1e6, r["median_s"][side] * 1e3])
    print_table([("arch", "<10"), ("model", "<7"), ("params", ">9"), ("MMACs", ">8.2f"), ("ms", ">9.2f")], rows)
    for r in runs:
        convs = len(r["shrinkable_convs"])
        print(f"{r['arch']}: {convs} shrinkable convs, max |masked - shrunk| = {r['max_abs_diff']:.2e}")
    for r in runs:
        print_ratio(f"{r['arch']} flop_reduction (masked/shrunk MACs)", r["flop_reduction"])
        print_ratio(f"{r['arch']} speedup (masked/shrunk median time)", r["speedup"])
        print_ratio(f"{r['arch']} speedup/flop_reduction (goal >= {GOAL})", r["speedup_over_flop_reduction"])
    return report


if __name__ == "__main__":
    main()
